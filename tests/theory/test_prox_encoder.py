"""The prox encoder is the exact prox of the derived penalty (against scipy in float64); its gradients:
the shrinkage's implicit derivative against finite differences, the threshold's pseudo-derivative
against its exact expectation (within standard errors), and the JumpReLU baseline."""
import functools
import math

import numpy as np
import pytest
import sympy as sp
import torch
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from slt_interp.theory import PRIOR_CATALOGUE, JumpReLU, ProxEncoder, penalty_from_prior

X = sp.Symbol("a", nonnegative=True)
A = sp.Symbol("a", real=True)
PI0 = sp.Rational(9, 10)


def _half_cauchy():
    return penalty_from_prior(PI0 * sp.DiracDelta(X) + (1 - PI0) * 2 / (sp.pi * (1 + X**2)), [X])


def _spike_lomax():
    return penalty_from_prior(PI0 * sp.DiracDelta(X) + (1 - PI0) * sp.Rational(5, 2) * (1 + X) ** sp.Rational(-7, 2), [X])


def _spike_laplace():
    return penalty_from_prior(PI0 * sp.DiracDelta(A) + (1 - PI0) * sp.exp(-2 * sp.Abs(A)), [A])


# name → (prior factory, parameter values)
FAMILIES = {
    "spike_and_slab_exponential": (PRIOR_CATALOGUE["spike_and_slab"], {"pi_0": 0.9, "lambda": 1.3}),
    "exponential": (PRIOR_CATALOGUE["exponential"], {"lambda": 1.3}),
    "lomax": (PRIOR_CATALOGUE["lomax"], {"alpha": 2.5, "s": 0.7}),
    "spike_and_slab_lomax": (_spike_lomax, {}),
    "spike_and_slab_half_cauchy": (_half_cauchy, {}),
    "laplace": (PRIOR_CATALOGUE["laplace"], {"lambda": 1.3}),
    "spike_and_slab_laplace": (_spike_laplace, {}),  # signed codes with a jump at |v| = θ*
}


@functools.lru_cache(maxsize=None)
def prior(name):
    return FAMILIES[name][0]()


@functools.lru_cache(maxsize=None)
def encoder(name, step):
    return ProxEncoder(prior(name), 3, step=step, **FAMILIES[name][1])


def reference_prox(name, v, t):
    """argmin_a ½(a − v)² + t·ρ(a) by a grid and scipy's bounded search, and the point a = 0."""
    r = prior(name)
    a = r.variables[0]
    rho = r.penalty.subs({p: FAMILIES[name][1][str(p)] for p in r.parameters})
    off_zero = sp.lambdify(a, rho.args[-1].expr if isinstance(rho, sp.Piecewise) else rho, "numpy")
    lo = 0.0 if r.support == "nonnegative" else -15.0

    def obj(z):
        z = np.asarray(z, dtype=float)
        return 0.5 * (z - v) ** 2 + t * np.where(z == 0, 0.0, off_zero(np.where(z == 0, 1.0, z)))

    grid = np.linspace(lo, 15.0, 30001)
    grid = grid[grid != 0]
    k = int(np.argmin(obj(grid)))
    res = minimize_scalar(lambda z: float(obj(z)), bounds=(max(lo, grid[k] - 2e-3), grid[k] + 2e-3),
                          method="bounded", options={"xatol": 1e-13})
    best = min((float(res.fun), float(res.x)), (float(obj(0.0)), 0.0))
    return best[1], best[0], obj


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("t", [0.4, 1.7])
def test_encoder_is_the_exact_prox_of_the_derived_penalty(name, t):
    enc = encoder(name, t)
    v = torch.linspace(-3.0, 6.0, 37, dtype=torch.float64)
    out = enc(v[:, None].expand(-1, 3)).detach()
    assert out.dtype == torch.float64 and torch.equal(out[:, 0], out[:, 2])
    theta = enc.exact_threshold()
    for vi, ai in zip(v.tolist(), out[:, 0].tolist()):
        ref_a, ref_obj, obj = reference_prox(name, vi, t)
        assert float(obj(ai)) <= ref_obj + 1e-10, (name, t, vi, ai, ref_a)
        if abs(abs(vi) - theta) > 1e-6:  # at the jump both sides are minimisers
            assert ai == pytest.approx(ref_a, abs=1e-6), (name, t, vi)


def test_spike_and_slab_threshold_is_the_closed_form_jump():
    """θ* = tλ + √(2t·λ₀) with λ₀ = log(π₀/((1 − π₀)λ)) (docs/theory.md §4)."""
    enc = encoder("spike_and_slab_exponential", 0.4)
    lam0 = math.log(0.9 / (0.1 * 1.3))
    assert enc.l0_weight == pytest.approx(lam0, rel=1e-12)
    assert enc.exact_threshold() == pytest.approx(0.4 * 1.3 + math.sqrt(2 * 0.4 * lam0), rel=1e-12)
    assert encoder("exponential", 0.4).exact_threshold() == pytest.approx(0.4 * 1.3, rel=1e-12)  # ReLU(v − tλ)


@pytest.mark.parametrize("name", ["spike_and_slab_lomax", "spike_and_slab_half_cauchy", "laplace"])
def test_shrinkage_gradient_is_the_derivative_of_the_exact_prox(name):
    t, h = 0.4, 1e-6
    enc = encoder(name, t)
    theta = enc.exact_threshold()
    v = torch.tensor([theta + 0.3, theta + 1.1, theta + 2.9, -(theta + 0.7)], dtype=torch.float64)
    v = v[(v > 0) | (prior(name).support == "real")]
    x = v[:, None].expand(-1, 3).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(enc(x)[:, 0].sum(), x)
    with torch.no_grad():
        fd = (enc((v + h)[:, None].expand(-1, 3)) - enc((v - h)[:, None].expand(-1, 3)))[:, 0] / (2 * h)
    assert torch.isfinite(g).all()
    assert g[:, 0].tolist() == pytest.approx(fd.tolist(), rel=1e-6, abs=1e-8)
    assert (g[:, 1:] == 0).all() and (g[:, 0] > 0).all()


@pytest.mark.parametrize("name", ["spike_and_slab_exponential", "spike_and_slab_half_cauchy"])
def test_threshold_pseudo_derivative_matches_its_expectation_within_std_err(name):
    """With v ~ N(μ, 1): E[∂a/∂θ] = −s(θ)·(Φ(θ − μ + ε/2) − Φ(θ − μ − ε/2))/ε exactly (→ −s(θ)·φ(θ − μ),
    the derivative of E[a], as ε → 0), and E[∂H/∂θ] the same without s(θ)."""
    eps, mu, n = 0.05, 1.0, 200_000
    enc = ProxEncoder(prior(name), 1, step=0.4, bandwidth=eps, **FAMILIES[name][1])
    theta = float(enc.threshold.detach())
    v = mu + torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    codes = enc(v)
    per_sample_a = torch.autograd.grad(codes.sum(), enc.threshold)[0]  # Σ over samples
    per_sample_h = torch.autograd.grad(enc.encode(v)[1].sum(), enc.threshold)[0]
    window = ((v - theta).abs() < eps / 2).double().squeeze(1)
    s_theta = float(enc.shrink(torch.tensor([theta], dtype=torch.float64)))
    mass = (norm.cdf(theta - mu + eps / 2) - norm.cdf(theta - mu - eps / 2)) / eps
    std_err = float(window.std() / eps / math.sqrt(n))
    assert math.isfinite(float(per_sample_a)) and float(per_sample_a) < 0
    assert float(per_sample_a) / n == pytest.approx(-s_theta * mass, abs=4 * s_theta * std_err)
    cost = enc.l0_weight + float(enc._g(torch.tensor([s_theta], dtype=torch.float64)))  # ρ(s(θ))
    assert float(per_sample_h) / n == pytest.approx(-cost * mass, abs=4 * cost * std_err)


def test_threshold_gradient_signs_are_sensible():
    """Reconstruction pulls θ down (descent opens the gate); the L0 cost pushes θ up."""
    enc = ProxEncoder(prior("spike_and_slab_lomax"), 1, step=0.4, bandwidth=0.1)
    theta = float(enc.threshold.detach())
    v = torch.tensor([[theta + 0.01], [theta - 0.02], [theta + 3.0]], dtype=torch.float64)
    recon = 0.5 * (enc(v) - v).pow(2).sum()
    (g_recon,) = torch.autograd.grad(recon, enc.threshold)
    (g_l0,) = torch.autograd.grad(enc.encode(v)[1].sum(), enc.threshold)
    assert float(g_recon) > 0 and float(g_l0) < 0
    far = torch.tensor([[theta + 3.0]], dtype=torch.float64)
    (g_far,) = torch.autograd.grad(enc(far).sum(), enc.threshold)
    assert float(g_far) == 0.0  # outside the kernel window: no signal


def test_fixed_threshold_follows_the_step_and_stays_the_exact_prox():
    enc = ProxEncoder(prior("spike_and_slab_lomax"), 3, step=0.4, learn_threshold=False)
    assert not enc.threshold.requires_grad
    enc.step = 1.7
    v = torch.linspace(0.0, 8.0, 33, dtype=torch.float64)[:, None].expand(-1, 3)
    out = enc(v)
    exact = encoder("spike_and_slab_lomax", 1.7)
    assert float(enc.threshold[0]) == pytest.approx(exact.exact_threshold(), rel=1e-5)
    far = (v[:, 0] - exact.exact_threshold()).abs() > 1e-3
    assert torch.equal(out[far], exact(v)[far].detach())


def test_device_and_dtype_follow_the_inputs(device):
    enc = encoder("spike_and_slab_half_cauchy", 0.4)
    v = torch.linspace(0, 5, 12, device=device, dtype=torch.float32).reshape(4, 3).requires_grad_(True)
    out, pen = enc.encode(v)
    assert out.device == v.device and out.dtype == torch.float32 and pen.shape == (4,)
    (g,) = torch.autograd.grad(pen.sum() + out.sum(), [enc.threshold])
    assert g.device == enc.threshold.device and torch.isfinite(g).all()
    ref = encoder("spike_and_slab_half_cauchy", 0.4)(v.detach().cpu().double()).detach()
    assert out.detach().cpu().double().flatten().tolist() == pytest.approx(ref.flatten().tolist(), abs=1e-5)


def test_jumprelu_is_the_papers_activation_and_pseudo_derivative():
    """JumpReLU(v) = v·H(v − θ), ∂/∂θ := −(θ/ε)·K((v − θ)/ε) (Rajamanoharan et al. 2024, eq. 10)."""
    act = JumpReLU(2, threshold=0.5, bandwidth=0.2)
    v = torch.tensor([[0.45, 0.3], [0.55, 2.0]], requires_grad=True)
    out = act(v)
    assert out.tolist() == [[0.0, 0.0], [pytest.approx(0.55), 2.0]]
    (g_theta, g_v) = torch.autograd.grad(out.sum(), [act.threshold, v])
    assert g_theta.tolist() == pytest.approx([-2 * 0.5 / 0.2, 0.0])
    assert g_v.tolist() == [[0.0, 0.0], [1.0, 1.0]]
    (g_l0,) = torch.autograd.grad(act.l0(v).sum(), act.threshold)
    assert g_l0.tolist() == pytest.approx([-2 / 0.2, 0.0])


def test_prox_encoder_errors():
    with pytest.raises(ValueError, match="one-variable prior"):
        ProxEncoder(PRIOR_CATALOGUE["group_lasso"](), 4)
    skewed = penalty_from_prior(sp.exp(-sp.Abs(A) - A / 2), [A])
    with pytest.raises(ValueError, match="not symmetric.*a ≥ 0 or a symmetric"):
        ProxEncoder(skewed, 4)
    with pytest.raises(ValueError, match="bandwidth ε must be a finite positive"):
        ProxEncoder(prior("exponential"), 4, bandwidth=0.0, **{"lambda": 1.0})
    with pytest.raises(ValueError, match="step t must be a finite positive"):
        ProxEncoder(prior("exponential"), 4, step=-1.0, **{"lambda": 1.0})
    with pytest.raises(ValueError, match="unbound parameter"):
        ProxEncoder(prior("exponential"), 4)
    with pytest.raises(ValueError, match="num_latents must be a positive integer"):
        ProxEncoder(prior("exponential"), 0, **{"lambda": 1.0})
    with pytest.raises(ValueError, match="num_latents must be a positive integer"):
        JumpReLU(2.5)
