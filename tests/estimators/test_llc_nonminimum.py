"""estimate_llc at a point that is not a local minimum warns (or raises) and points to the behavioral LLC."""
import math
import warnings

import pytest
import torch

from slt_interp.estimators import NotAMinimumError, NotAMinimumWarning, estimate_llc, estimate_potential_llc
from slt_interp.estimators._chains import model_problem
from slt_interp.estimators._minimum_check import gradient_at_centre
from tests.estimators._sgld_problems import linear_problem, mse

KW = dict(num_chains=2, num_draws=60, num_burnin=20, step_size=2e-3, batch_size=200, seed=0, mala_every=0)


def _off_minimum():
    model, x, y = linear_problem("cpu")
    with torch.no_grad():
        model.weight.add_(0.5)  # w* moved off the truth: a slope of nβ·‖∇L‖ ≈ 10²
    return model, x, y


def test_slope_shift_is_exact_on_a_quadratic():
    model, x, y = _off_minimum()
    problem = model_problem(model, mse, (x, y))
    n = len(x)
    nbeta, gamma = n / math.log(n), 1.0
    test = gradient_at_centre(problem, nbeta, gamma)
    H = 2 * x.T @ x / n
    g = torch.func.grad(problem.full_loss)(problem.w0)
    u = g / g.norm()
    h = float(u @ H @ u)
    a = nbeta * h + gamma
    assert test.grad_norm == pytest.approx(float(g.norm()), rel=1e-10)
    assert test.curvature == pytest.approx(h, rel=1e-10)
    assert test.shift == pytest.approx((nbeta * float(g.norm())) ** 2 / a * (1 - nbeta * h / (2 * a)), rel=1e-10)
    assert not test.is_minimum


def test_not_a_minimum_warns_raises_or_is_ignored():
    model, x, y = _off_minimum()
    with pytest.warns(NotAMinimumWarning, match="not a local minimum.*estimate_behavioral_llc") as rec:
        est = estimate_llc(model, mse, (x, y), **KW)
    assert est.mean < 0  # what the estimator returns here: λ̂ far below zero
    assert any("gradient at w*" in str(w.message) for w in rec)
    assert any("mean loss lies below L(w*)" in str(w.message) for w in rec)
    assert any("not a local minimum" in w for w in est.diagnostics.warnings)
    with pytest.raises(NotAMinimumError, match="gradient at w\\*.*estimate_behavioral_llc"):
        estimate_llc(model, mse, (x, y), on_nonminimum="raise", **KW)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotAMinimumWarning)
        estimate_llc(model, mse, (x, y), on_nonminimum="ignore", **KW)
    with pytest.raises(ValueError, match="on_nonminimum must be one of"):
        estimate_llc(model, mse, (x, y), on_nonminimum="loud", **KW)


def test_no_warning_at_a_minimum():
    model, x, y = linear_problem("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotAMinimumWarning)
        estimate_llc(model, mse, (x, y), **KW)
        estimate_potential_llc(type("P", (), {"dim": 2, "fn": staticmethod(lambda w: 0.5 * (w ** 2).sum(-1))})(), 100,
                               num_chains=2, num_draws=40, step_size=1e-2)


def test_slope_on_a_potential_is_flagged():
    class Tilted:
        dim = 2

        @staticmethod
        def fn(w):
            return 0.5 * (w ** 2).sum(-1) + w[..., 0]  # minimum at (−1, 0), not at the centre 0

    with pytest.warns(NotAMinimumWarning, match="not a local minimum"):
        estimate_potential_llc(Tilted(), 100, num_chains=2, num_draws=40, step_size=1e-2)


class _Kink(torch.nn.Module):
    """L(w) = ½(w₀ − 0.9)² + |w₁|^1.5 at w = (1, 0): a finite gradient (0.1, 0) whose double backward is
    0·∞ = NaN in the second coordinate (|w|^1.5 has an infinite second derivative at 0)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, 0.0], dtype=torch.float64))

    def forward(self, x):
        return (0.5 * (self.w[0] - 0.9) ** 2 + self.w[1].abs() ** 1.5).expand(len(x))


def _kink_loss(pred, _y):
    return pred.mean()


def test_nan_double_backward_is_not_read_as_a_saddle():
    x = torch.zeros(100, 1, dtype=torch.float64)
    problem = model_problem(_Kink(), _kink_loss, (x, x))
    test = gradient_at_centre(problem, 10.0, 1.0)
    assert test.grad_norm == pytest.approx(0.1, rel=1e-9)
    # the NaN HVP is replaced by a finite difference of gradients: the curvature along e₀ is 1
    assert test.curvature == pytest.approx(1.0, rel=1e-3)
    assert math.isfinite(test.shift)


class _NaNGrad(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.0, 1.0], dtype=torch.float64))

    def forward(self, x):
        return (self.w[0].sqrt() + (self.w[1] - 1) ** 2).expand(len(x))  # d√w/dw = ∞ at 0


def test_non_finite_gradient_at_centre_names_the_cause():
    x = torch.zeros(100, 1, dtype=torch.float64)
    problem = model_problem(_NaNGrad(), _kink_loss, (x, x))
    with pytest.raises(ValueError, match="gradient of the loss at w\\* is not finite"):
        gradient_at_centre(problem, 10.0, 1.0)
