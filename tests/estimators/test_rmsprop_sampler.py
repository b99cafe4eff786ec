"""RMSProp-preconditioned SGLD (Li, Chen, Carlson, Carin 2016): the step by hand, its Metropolis-adjusted
diagnostic against the direct formula, the exact Gaussian posterior on a quadratic, bit-identical resume."""
import math

import pytest
import torch
from torch.func import grad

from slt_interp.estimators import estimate_llc
from slt_interp.estimators.samplers import RMSPropSGLDKernel, SamplerState
from tests.estimators._sgld_problems import linear_problem, mse, resume_runs

NBETA, GAMMA, EPS = 4.0, 1.0, 0.03
W_STAR = torch.tensor([0.2, -0.1, 0.0], dtype=torch.float64)


def _loss(w):
    return (w[0] * w[1]) ** 2 + 0.5 * w[2] ** 2 + 2.0 * w[0] ** 2


def _vg(W, batch):
    return torch.stack([_loss(w) for w in W]), torch.stack([grad(_loss)(w) for w in W])


def test_step_and_diagnostic_match_the_formulas():
    g = torch.Generator().manual_seed(0)
    w = W_STAR + 0.3 * torch.randn(2, 3, generator=g, dtype=torch.float64)
    v = torch.rand(2, 3, generator=g, dtype=torch.float64)
    xi = torch.randn(2, 3, generator=g, dtype=torch.float64)
    kernel = RMSPropSGLDKernel(_vg, W_STAR, EPS, NBETA, GAMMA, decay=0.9, damping=1e-3)
    new, info = kernel.step(SamplerState(w, precond=v), (), xi, monitor=True)
    U = lambda p: NBETA * _loss(p) + 0.5 * GAMMA * ((p - W_STAR) ** 2).sum()  # noqa: E731
    for c in range(2):
        gl = grad(_loss)(w[c])
        vc = 0.9 * v[c] + 0.1 * gl ** 2
        G = 1 / (1e-3 + vc.sqrt())
        G = G / G.mean()
        expected = w[c] - EPS / 2 * G * grad(U)(w[c]) + (EPS * G).sqrt() * xi[c]
        torch.testing.assert_close(new.w[c], expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(new.precond[c], vc, rtol=1e-12, atol=0)
        fwd = -((expected - w[c] + EPS / 2 * G * grad(U)(w[c])) ** 2 / (2 * EPS * G)).sum()
        bwd = -((w[c] - expected + EPS / 2 * G * grad(U)(expected)) ** 2 / (2 * EPS * G)).sum()
        alpha = min(1.0, math.exp(float(U(w[c]) - U(expected) + bwd - fwd)))
        assert float(info.acceptance[c]) == pytest.approx(alpha, rel=1e-10)


def test_gaussian_posterior_of_a_quadratic_and_resume(tmp_path):
    model, x, y = linear_problem("cpu")
    n = len(x)
    nbeta = n / math.log(n)
    h = torch.linalg.eigvalsh(2 * (x.T @ x / n))
    exact = float((0.5 * nbeta * h / (nbeta * h + 1.0)).sum())
    est = estimate_llc(model, mse, (x, y), sampler="rmsprop", num_chains=4, num_draws=2000, num_burnin=300,
                       step_size=3e-3, batch_size=n, seed=0)
    assert est.settings.sampler == "rmsprop" and est.diagnostics.ess > 300
    assert abs(est.mean - exact) <= 3 * est.std_err + 0.03 * exact, (est, exact)
    assert est.diagnostics.mala_acceptance > 0.9
    resumed, straight = resume_runs(tmp_path / "rms.pt", model, x, y, num_chains=2, num_burnin=10, step_size=1e-3,
                                    batch_size=32, seed=1, sampler="rmsprop")
    assert resumed.mean == straight.mean


def test_calibrated_rmsprop_runs():
    model, x, y = linear_problem("cpu", n=64)
    est = estimate_llc(model, mse, (x, y), sampler="rmsprop", num_chains=2, num_draws=40, seed=0)
    assert est.calibration is not None and est.settings.sampler == "rmsprop" and "RMSPROP ε" in repr(est)
