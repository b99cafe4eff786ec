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
        G = G.clamp(0.1, 10.0)
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


def _held_and_adapting(hold_from, steps=2500, burn=1000, chains=128, eps=2e-3, n=100):
    """nβ·K of 128 independent RMSProp chains on ½(w1² + w2⁴), from step ``burn`` on, with V held from
    ``hold_from`` (None: always adapting): (mean, SE over chains, exact finite-n target)."""
    from slt_interp.estimators._chains import _ChainLoop, potential_problem
    from slt_interp.theory import finite_n_target
    from slt_interp.theory.zoo import POTENTIALS

    pot = POTENTIALS["½(w1² + w2⁴)"]()
    nbeta = n / math.log(n)
    loop = _ChainLoop(potential_problem(pot.fn, 2, n), num_chains=chains, step_size=eps, localization=1.0,
                      nbeta=nbeta, batch_size=1, seed=0, mala_every=0, divergence_threshold=1e6, sampler="rmsprop")
    loop.hold_from = hold_from
    assert loop.advance(steps) is None
    per_chain = nbeta * loop.losses[:, burn:].mean(1)
    return float(per_chain.mean()), float(per_chain.std() / math.sqrt(chains)), finite_n_target(pot, n).value


def test_held_preconditioner_samples_the_exact_target_and_adapting_one_does_not():
    # pSGLD drops the Γ term (the divergence of G(w)); with V held fixed it is zero and the chains
    # target p ∝ exp(−U) exactly (up to the O(ε) step bias, ≈ 1% here). 128 independent chains: the SE
    # is that of their per-chain means. The always-adapting V is biased high on this potential
    # (the measurement in the _adaptive docstring) — the check that this test can fail.
    mean, se, target = _held_and_adapting(hold_from=500)
    assert abs(mean - target) <= 4 * se + 0.015 * target, (mean, se, target)
    mean_a, se_a, _ = _held_and_adapting(hold_from=None)
    assert mean_a - target > 4 * se_a + 0.03 * target, (mean_a, se_a, target)


def test_preconditioner_is_held_from_the_step_the_driver_chose_and_over_a_resume(tmp_path):
    model, x, y = linear_problem("cpu", n=64)
    kw = dict(sampler="rmsprop", num_chains=2, num_burnin=40, step_size=1e-3, batch_size=16, seed=3)
    est = estimate_llc(model, mse, (x, y), num_draws=20, **kw)
    assert est.settings.preconditioner_held_from == 20  # half the explicit burn-in
    path = tmp_path / "held.pt"
    estimate_llc(model, mse, (x, y), num_draws=20, checkpoint_path=path, checkpoint_every=5, **kw)
    v_saved = torch.load(path, weights_only=False)["precond"].clone()
    resumed = estimate_llc(model, mse, (x, y), num_draws=50, checkpoint_path=path, resume=True, **kw)
    v_after = torch.load(path, weights_only=False)["precond"]
    assert torch.equal(v_saved, v_after)  # 30 more steps after the hold: V did not move
    assert resumed.settings.preconditioner_held_from == 20
    adaptive = estimate_llc(model, mse, (x, y), sampler="rmsprop", num_chains=2, step_size=1e-3, seed=3, max_steps=3000)
    assert adaptive.settings.preconditioner_held_from == 500 and adaptive.settings.num_burnin >= 500
    sgld = estimate_llc(model, mse, (x, y), num_chains=2, num_draws=20, num_burnin=10, step_size=1e-3, seed=3,
                        sampler="sgld")
    assert sgld.settings.preconditioner_held_from == -1


def test_preconditioner_is_clipped_to_its_ratio_bound():
    # a V of 1e-13 beside 1e-3 (flat and stiff directions at a degenerate w*) would give G̃ ratios of 1e5
    v = torch.tensor([[1e-13, 1e-13, 1e-3, 4e-4], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    G = RMSPropSGLDKernel(_vg, W_STAR, EPS, NBETA, GAMMA)._precondition(v)
    torch.testing.assert_close(G.mean(-1), torch.ones(2, dtype=torch.float64))
    assert float(G[0].max() / G[0].min()) <= 100.0 + 1e-9
    torch.testing.assert_close(G[1], torch.ones(4, dtype=torch.float64))


def test_held_kernel_reuses_its_preconditioner_and_steps_as_if_recomputed():
    g = torch.Generator().manual_seed(1)
    w = W_STAR + 0.3 * torch.randn(2, 3, generator=g, dtype=torch.float64)
    v = torch.rand(2, 3, generator=g, dtype=torch.float64)
    xi = torch.randn(2, 3, generator=g, dtype=torch.float64)
    held = RMSPropSGLDKernel(_vg, W_STAR, EPS, NBETA, GAMMA, adapt=False)
    first, _ = held.step(SamplerState(w, precond=v), (), xi)
    assert torch.equal(first.precond, v) and torch.equal(first.scale, held._precondition(v))
    cached, _ = held.step(first, (), xi)                                   # G̃ taken from the state
    fresh, _ = held.step(SamplerState(first.w, precond=first.precond), (), xi)  # G̃ recomputed (a resume)
    assert torch.equal(cached.w, fresh.w)
    adapting, _ = RMSPropSGLDKernel(_vg, W_STAR, EPS, NBETA, GAMMA).step(SamplerState(w, precond=v), (), xi)
    assert adapting.scale is None  # an adapting V changes G̃ at every step: nothing to keep
