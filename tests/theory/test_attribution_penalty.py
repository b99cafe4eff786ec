"""Attribution penalty: against dense float64 Jacobians, exact averages, and its stochastic estimator's mean."""
import itertools
import math

import pytest
import torch
from scipy import integrate

from slt_interp.theory import attribution, attribution_penalty, exact_attribution_penalty

DT = torch.float64


def _net(m=5, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    W1 = torch.randn(4, m, generator=g, dtype=DT)
    W2 = torch.randn(k, 4, generator=g, dtype=DT)
    b = torch.randn(4, generator=g, dtype=DT)
    return lambda c: torch.tanh(c @ W1.T + b) @ W2.T  # sample by sample, non-linear


def _codes(batch=4, m=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(batch, m, generator=g, dtype=DT) * (torch.rand(batch, m, generator=g, dtype=DT) < 0.7)
    f[:, 0] += 0.5  # no sample with all latents off
    return f


def _dense_jacobian(codes, fn):
    """J[b] = ∂y_b/∂f_b by torch.func.jacrev, one sample at a time: (batch, k, m)."""
    return torch.stack([torch.func.jacrev(lambda c: fn(c[None])[0])(row) for row in codes])


def test_attribution_equals_codes_times_dense_jacobian_projection():
    fn, f = _net(), _codes()
    J = _dense_jacobian(f, fn)
    u = torch.tensor([0.3, -1.2, 2.0], dtype=DT)
    assert torch.allclose(attribution(f, fn, u), f * torch.einsum("k,bkm->bm", u, J), atol=1e-13)
    per_sample = torch.randn(4, 3, dtype=DT, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(attribution(f, fn, per_sample), f * torch.einsum("bk,bkm->bm", per_sample, J), atol=1e-13)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0])
def test_exact_rademacher_is_the_average_over_all_sign_vectors(p):
    fn, f = _net(), _codes()
    J = _dense_jacobian(f, fn)
    brute = torch.zeros(f.shape[0], dtype=DT)
    signs = list(itertools.product((-1.0, 1.0), repeat=3))
    for s in signs:
        brute += (f * torch.einsum("k,bkm->bm", torch.tensor(s, dtype=DT), J)).abs().pow(p).sum(-1) / len(signs)
    assert torch.allclose(exact_attribution_penalty(f, fn, p=p, directions="rademacher"), brute, atol=1e-12)


@pytest.mark.parametrize("p", [0.25, 1.0])
def test_exact_gaussian_matches_quadrature_of_the_normal_moment(p):
    fn, f = _net(), _codes(batch=2)
    J = _dense_jacobian(f, fn)
    sigma = J.pow(2).sum(1).sqrt()  # (batch, m): (uᵀJ)_i ~ N(0, σ_i²)
    ref = torch.zeros(2, dtype=DT)
    for b, i in itertools.product(range(2), range(f.shape[1])):
        s, a = float(sigma[b, i]), abs(float(f[b, i]))
        moment, _ = integrate.quad(lambda z: abs(a * s * z) ** p * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
                                   -math.inf, math.inf, epsabs=1e-13, epsrel=1e-12)
        ref[b] += moment
    assert torch.allclose(exact_attribution_penalty(f, fn, p=p, directions="gaussian"), ref, rtol=1e-9, atol=1e-12)


def test_p2_exact_averages_agree_and_equal_the_jacobian_column_norms():
    fn, f = _net(), _codes()
    J = _dense_jacobian(f, fn)
    want = (f.pow(2) * J.pow(2).sum(1)).sum(-1)
    for kind in ("gaussian", "rademacher"):
        assert torch.allclose(exact_attribution_penalty(f, fn, p=2.0, directions=kind), want, atol=1e-12)


@pytest.mark.parametrize("kind,p", [("rademacher", 1.0), ("rademacher", 0.5), ("gaussian", 1.0), ("gaussian", 0.5)])
def test_stochastic_estimator_mean_equals_exact_within_standard_errors(kind, p):
    fn, f = _net(), _codes()
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():  # evaluation only: no graph is kept
        draws = torch.stack([attribution_penalty(f, fn, p=p, directions=kind, generator=g) for _ in range(400)])
    assert not draws.requires_grad
    mean, std_err = draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])
    exact = exact_attribution_penalty(f, fn, p=p, directions=kind)
    assert bool((std_err > 0).all())
    assert bool(((mean - exact).abs() < 4 * std_err).all()), (mean, exact, std_err)


def test_the_mean_test_has_power_a_25_percent_bias_is_rejected():
    """The std_err check above is not vacuous: the same draws reject an exact value 25 % off."""
    fn, f = _net(), _codes()
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        draws = torch.stack([attribution_penalty(f, fn, p=1.0, directions="rademacher", generator=g) for _ in range(400)])
    mean, std_err = draws.mean(0), draws.std(0) / math.sqrt(400)
    wrong = 1.25 * exact_attribution_penalty(f, fn, p=1.0, directions="rademacher")
    assert bool(((mean - wrong).abs() > 4 * std_err).all())


def test_one_direction_estimate_is_the_penalty_of_that_direction_and_gradients_flow():
    fn, f = _net(), _codes()
    W = torch.randn(5, 5, dtype=DT, generator=torch.Generator().manual_seed(4), requires_grad=True)
    codes = torch.relu(f @ W)  # codes produced by an "encoder" W
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    est = attribution_penalty(codes, fn, p=1.0, generator=g1)
    u = torch.randint(0, 2, (3,), generator=g2).to(DT) * 2 - 1
    want = attribution(codes, fn, u).abs().sum(-1)
    assert torch.allclose(est, want, atol=1e-13)
    (grad,) = torch.autograd.grad(est.sum(), W, retain_graph=True)
    (ref,) = torch.autograd.grad(want.sum(), W)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0 and torch.allclose(grad, ref, atol=1e-12)


def test_exact_penalty_gradient_passes_gradcheck():
    fn = _net()
    f = (torch.rand(2, 5, dtype=DT, generator=torch.Generator().manual_seed(5)) + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: exact_attribution_penalty(c, fn, p=1.0, directions="gaussian"), (f,))
    assert torch.autograd.gradcheck(lambda c: exact_attribution_penalty(c, fn, p=0.5, directions="rademacher"), (f,))


def test_p_below_one_has_subgradient_zero_at_inactive_latents():
    fn, f = _net(), _codes()
    f = f.clone().requires_grad_(True)
    assert bool((f == 0).any())
    pen = attribution_penalty(f, fn, p=0.25, generator=torch.Generator().manual_seed(0)).sum()
    (grad,) = torch.autograd.grad(pen, f)
    assert torch.isfinite(grad).all()


def test_bad_input_is_refused_with_the_cause_and_fix():
    fn, f, g = _net(), _codes(), torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="p must be a finite number > 0"):
        attribution_penalty(f, fn, p=0.0, generator=g)
    with pytest.raises(ValueError, match="directions must be one of"):
        attribution_penalty(f, fn, directions="sphere", generator=g)
    with pytest.raises(ValueError, match="num_directions"):
        attribution_penalty(f, fn, num_directions=0, generator=g)
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        attribution_penalty(f, fn, generator=0)
    with pytest.raises(ValueError, match="does not depend on codes"):
        attribution_penalty(f, lambda c: torch.ones(c.shape[0], 2, dtype=DT), generator=g)
    w = torch.ones(2, dtype=DT, requires_grad=True)
    with pytest.raises(ValueError, match="does not depend on codes"):
        attribution_penalty(f, lambda c: w.expand(c.shape[0], 2) * 1.0, generator=g)
    with pytest.raises(ValueError, match="outputs \\(batch, k\\)"):
        attribution_penalty(f, lambda c: c.sum(), generator=g)
    with pytest.raises(ValueError, match="shape \\(batch, n_latents\\)"):
        attribution_penalty(f[0], fn, generator=g)
    with pytest.raises(ValueError, match="direction must have shape"):
        attribution(f, fn, torch.ones(4, dtype=DT))
    W = torch.randn(17, 5, dtype=DT)
    with pytest.raises(ValueError, match="2\\^k .* use directions='gaussian'"):
        exact_attribution_penalty(f, lambda c: c @ W.T, directions="rademacher")


def test_device_follows_the_inputs(device):
    W = torch.randn(3, 5, dtype=DT, device=device)
    f = torch.rand(4, 5, dtype=DT, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    assert attribution_penalty(f, lambda c: c @ W.T, generator=g).device.type == device.type
    assert exact_attribution_penalty(f, lambda c: c @ W.T).device.type == device.type
