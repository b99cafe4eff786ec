"""The Metropolis-adjusted (MALA) option of the LLC estimator and the non-stationarity diagnostic.

Oracles: the exact Gaussian posterior mean E[nβK] = ½Σ nβh/(nβh + γ) for a quadratic loss (linear
regression), the exact unadjusted-Langevin (SGLD, full batch) stationary value for the same quadratic,
and ``slt_interp.theory.finite_n_target`` (quadrature) for a zoo potential. At the large step sizes used here
SGLD is many standard errors off and MALA is within 3 SE."""
import math

import pytest
import torch

from slt_interp.estimators import effective_sample_size, estimate_llc, estimate_potential_llc, geweke_z
from tests.estimators._sgld_problems import linear_problem as _linear_problem, mse as _mse, resume_runs
from slt_interp.theory import finite_n_target, zoo




def _z(est, target):
    assert est.diagnostics.ess > 300, f"too few effective samples ({est.diagnostics.ess:.0f}) for a k-SE check"
    return (est.mean - target) / est.std_err


def test_mala_exact_at_large_step_where_sgld_is_biased_quadratic(device):
    model, x, y = _linear_problem(device)
    n = len(x)
    nbeta, gamma, eps = n / math.log(n), 1.0, 1e-2
    h = torch.linalg.eigvalsh(2 * (x.T @ x / n).cpu())
    hu = nbeta * h + gamma
    exact = float((0.5 * nbeta * h / hu).sum())  # the Gaussian posterior: no step size in it
    ula = float((0.5 * nbeta * h / (hu * (1 - eps * hu / 4))).sum())  # SGLD's stationary value at this ε
    assert ula > 2 * exact  # the step size is large: ε·h_U,max ≈ 3.4 of the stability limit 4
    kw = dict(num_chains=4, num_draws=600, num_burnin=100, step_size=eps, localization=gamma, seed=1)
    mala = estimate_llc(model, _mse, (x, y), sampler="mala", **kw)
    sgld = estimate_llc(model, _mse, (x, y), batch_size=n, mala_every=5, sampler="sgld", **kw)
    assert mala.settings.sampler == "mala" and mala.settings.batch_size == n
    assert abs(_z(mala, exact)) <= 3
    assert abs(_z(sgld, ula)) <= 3 and _z(sgld, exact) > 6  # SGLD: measurably biased, by the ULA amount
    # MALA rejects a real fraction of these proposals (that is what removes the bias) and reports it
    assert 0.2 < mala.diagnostics.mala_acceptance < 0.9
    assert len(mala.diagnostics.mala_acceptance_per_chain) == 4
    assert not any("0.9" in w for w in mala.diagnostics.warnings)  # the SGLD step-size warning is not MALA's


def test_mala_matches_finite_n_oracle_on_zoo_potential_where_sgld_is_biased():
    pot = zoo.POTENTIALS["½(w1² + w2⁴)"]()
    n, gamma, eps = 100, 4.0, 5e-2
    target = finite_n_target(pot, n, localization=gamma).value
    kw = dict(localization=gamma, num_chains=8, num_draws=1000, num_burnin=200, step_size=eps, seed=0)
    mala = estimate_potential_llc(pot, n, sampler="mala", **kw)
    sgld = estimate_potential_llc(pot, n, **kw)
    assert abs(_z(mala, target)) <= 3
    assert _z(sgld, target) > 6
    assert mala.diagnostics.mala_acceptance < 0.95


def test_geweke_z_matches_hand_computation_and_is_calibrated_on_stationary_ar1():
    g = torch.Generator().manual_seed(0)
    rho, c, n = 0.9, 400, 500
    x = torch.zeros(c, n, dtype=torch.float64)
    x[:, 0] = torch.randn(c, generator=g, dtype=torch.float64) / math.sqrt(1 - rho ** 2)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + torch.randn(c, generator=g, dtype=torch.float64)
    pooled, per_chain = geweke_z(x)
    a, b = x[:, :50], x[:, 250:]
    t = torch.arange(n, dtype=torch.float64)
    coef = torch.linalg.lstsq(torch.stack([torch.ones(n, dtype=torch.float64), t], 1), x.T).solution  # (2, c)
    resid = x - (coef[0][:, None] + coef[1][:, None] * t)
    var = resid.var(1) * (n / effective_sample_size(resid)) * (1 / 50 + 1 / 250)
    assert torch.allclose(per_chain, (a.mean(1) - b.mean(1)) / var.sqrt(), rtol=1e-12)
    assert pooled == pytest.approx(float((a.mean(1) - b.mean(1)).sum() / var.sum().sqrt()), rel=1e-12)
    # stationary chains: z ≈ N(0, 1) — the autocorrelation-aware SE matters (iid SEs give E z² ≈ 19;
    # segment-wise ESS from the short first segment gives E z² ≈ 3.2, no detrending ≈ 1.0)
    assert 0.6 < float((per_chain ** 2).mean()) < 1.6
    assert float((per_chain.abs() > 3).double().mean()) < 0.03
    assert abs(pooled) < 3
    # a drift of 1 sd across the chain is flagged
    drifting = x + torch.linspace(-1.5, 1.5, n, dtype=torch.float64) * x.std()
    assert geweke_z(drifting)[0] < -10
    with pytest.raises(ValueError, match="first and last must be fractions"):
        geweke_z(x, first=0.6, last=0.6)
    with pytest.raises(ValueError, match="at least 8 draws"):
        geweke_z(x[:, :6])


@pytest.mark.parametrize("sampler", ["sgld", "mala"])
def test_nonstationarity_flagged_when_not_equilibrated_and_not_when_equilibrated(sampler):
    pot = zoo.POTENTIALS["½(w1² + w2⁴)"]()
    # ε·(nβ + γ) ≈ 2.6e-3 and ε·γ = 4e-4: the λ̂ trace relaxes over ~400–2500 steps, beyond the 600 draws
    slow = estimate_potential_llc(pot, 100, localization=4.0, num_chains=16, num_draws=600, num_burnin=0,
                                  step_size=1e-4, seed=0, sampler=sampler)
    assert slow.diagnostics.stationarity_z < -3
    assert any("non-stationary" in w and "raise num_burnin / num_draws" in w for w in slow.diagnostics.warnings)
    ok = estimate_potential_llc(pot, 100, localization=4.0, num_chains=8, num_draws=1500, num_burnin=300,
                                step_size=2e-2, seed=0, sampler=sampler)
    assert abs(ok.diagnostics.stationarity_z) < 3
    assert not any("non-stationary" in w for w in ok.diagnostics.warnings)
    assert len(ok.diagnostics.stationarity_z_per_chain) == 8


def test_mala_resume_equals_uninterrupted_run(tmp_path):
    model, x, y = _linear_problem("cpu", n=96)
    kw = dict(num_chains=3, num_burnin=10, step_size=2e-2, seed=5, sampler="mala")
    path = tmp_path / "mala.pt"
    resumed, straight = resume_runs(path, model, x, y, **kw)
    assert resumed.mean == straight.mean
    assert resumed.diagnostics.mala_acceptance == straight.diagnostics.mala_acceptance < 1.0
    # a MALA checkpoint is not an SGLD checkpoint
    with pytest.raises(ValueError, match="different sampler setting"):
        estimate_llc(model, _mse, (x, y), num_draws=70, checkpoint_path=path, resume=True,
                     **{**kw, "sampler": "sgld", "batch_size": 96})


def test_mala_rejects_non_finite_proposals_and_error_paths():
    class _Cliff:  # K = ½‖w‖² inside |w| < 0.3, NaN outside: MALA must reject every step that leaves
        dim = 2

        @staticmethod
        def fn(w):
            k = 0.5 * (w ** 2).sum(-1)
            return torch.where(w.abs().max(-1).values > 0.3, torch.full_like(k, float("nan")), k)

    est = estimate_potential_llc(_Cliff(), 20, localization=1.0, num_chains=4, num_draws=200, num_burnin=10,
                                 step_size=0.05, seed=0, sampler="mala")
    assert torch.isfinite(est.loss_traces).all() and est.diagnostics.mala_acceptance < 0.99
    model, x, y = _linear_problem("cpu", n=64)
    with pytest.raises(ValueError, match="sampler must be 'sgld'"):
        estimate_llc(model, _mse, (x, y), step_size=1e-3, sampler="hmc")
    with pytest.raises(ValueError, match="full-batch gradients"):
        estimate_llc(model, _mse, (x, y), step_size=1e-3, sampler="mala", batch_size=16)
    with pytest.raises(ValueError, match="noise_scale must be 1"):
        estimate_potential_llc(_Cliff(), 20, step_size=1e-3, sampler="mala", noise_scale=0.0)


def test_mala_with_calibrated_step_size_and_behavioral_llc():
    from slt_interp.estimators import estimate_behavioral_llc

    model, x, y = _linear_problem("cpu", n=64)
    est = estimate_llc(model, _mse, (x, y), sampler="mala", num_chains=2, num_draws=40, seed=0)
    assert est.calibration is not None and est.settings.step_size == est.calibration.step_size
    assert est.settings.sampler == "mala" and est.settings.batch_size == 64 and "MALA ε" in repr(est)
    beh = estimate_behavioral_llc(model, x, sampler="mala", num_chains=2, num_draws=40, step_size=1e-3, seed=0)
    assert beh.settings.sampler == "mala" and beh.settings.batch_size == 64
    assert 0.5 < beh.diagnostics.mala_acceptance <= 1.0
