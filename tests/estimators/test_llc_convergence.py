"""Convergence by default: adaptive burn-in and draws to stated targets, converged=False with printed
warnings on the budget, step-size back-off for calibrated steps, and the calibration's bias bound."""
import math

import pytest
import torch

import slt_interp.estimators.llc_estimate as llc_estimate
from slt_interp.estimators import (
    ConvergenceTargets,
    LLCConvergenceWarning,
    SGLDDivergenceError,
    StepSizeCalibration,
    calibrate_step_size,
    estimate_llc,
    estimate_potential_llc,
)
from slt_interp.estimators._adaptive import stationary
from slt_interp.theory import finite_n_target, zoo
from tests.estimators._sgld_problems import linear_problem, mse

QUICK = ConvergenceTargets(target_rel_std_err=0.05)  # targets only: step, draws and burn-in stay automatic


@pytest.mark.parametrize("name", ["½(w1² + w2⁴)", "½(w1w2)²"])
def test_defaults_within_3se_plus_5pct_of_finite_n_target(name):
    pot = zoo.POTENTIALS[name]()
    target = finite_n_target(pot, 100, localization=1.0).value
    est = estimate_potential_llc(pot, 100, seed=0, targets=QUICK)  # no step size, draws or burn-in given
    assert est.converged and est.calibration is not None
    assert est.settings.adaptive_burnin and est.settings.adaptive_draws and est.settings.targets == QUICK
    assert est.diagnostics.ess >= QUICK.target_ess and est.std_err <= 0.05 * abs(est.mean)
    assert abs(est.mean - target) <= 3 * est.std_err + 0.05 * target, (est, target)


def test_budget_exhausted_is_not_converged_and_says_so():
    pot = zoo.POTENTIALS["½(w1² + w2⁴)"]()
    with pytest.warns(LLCConvergenceWarning, match="NOT converged.*max_steps = 300"):
        est = estimate_potential_llc(pot, 100, seed=0, max_steps=300)
    assert not est.converged and est.settings.targets.max_steps == 300 and est.settings.steps_total <= 300
    assert "NOT CONVERGED" in repr(est) and "warning: not converged" in str(est)
    with pytest.raises(ValueError, match="max_steps must be an integer"):
        estimate_potential_llc(pot, 100, max_steps=0)


def test_calibrated_step_that_diverges_backs_off(monkeypatch):
    model, x, y = linear_problem("cpu")
    too_large = StepSizeCalibration(0.05, "test: a step 4× beyond the stability limit", (0.05,), (1.0,), (False,), 0.0,
                                    (), 8)
    monkeypatch.setattr(llc_estimate, "_calibrate", lambda *a, **k: too_large)
    with pytest.warns(LLCConvergenceWarning, match="diverged at step .* restarted from the last healthy state"):
        est = estimate_llc(model, mse, (x, y), num_chains=2, num_draws=200, num_burnin=50, seed=0, batch_size=200,
                           sampler="sgld")  # the step sizes of this test are SGLD's
    assert est.step_size_backoffs and est.step_size_backoffs[0][1] == 0.05
    assert est.settings.step_size == pytest.approx(0.05 / math.sqrt(10) ** len(est.step_size_backoffs))
    assert est.settings.initial_step_size == 0.05
    assert torch.isfinite(est.loss_traces).all() and est.loss_traces.shape == (2, 200)
    monkeypatch.undo()
    with pytest.raises(SGLDDivergenceError, match="lower step_size"):  # an explicit step size still raises
        estimate_llc(model, mse, (x, y), num_chains=2, num_draws=200, num_burnin=50, seed=0, batch_size=200,
                     step_size=0.05)


def test_calibration_caps_the_step_by_the_curvature_bias_bound():
    # one parameter: the acceptance rule alone admits ε·h_U ≈ 0.7 (ULA's E[nβK] 20% high at acceptance 0.95)
    model, x, y = linear_problem("cpu", d=1, n=200)
    n = len(x)
    nbeta = n / math.log(n)
    h = float(2 * (x ** 2).mean())  # the Hessian of the mean squared error
    cal = calibrate_step_size(model, mse, (x, y))
    assert cal.max_curvature == pytest.approx(h, rel=1e-6) and cal.max_trace == pytest.approx(h, rel=1e-6)
    hu = nbeta * h + 1.0
    assert 0 < cal.pilot_llc <= 0.5
    reference = max(cal.pilot_llc, 0.5 * nbeta * h / hu)  # the pilots' λ̂, or the quadratic lower bound on λ
    bound = min(0.2 * reference / (nbeta * h), 0.5 / hu)  # ULA's bias of λ̂ ≈ ε·nβ·tr H/8 ≤ 2.5% of it
    assert cal.step_size == pytest.approx(min(cal.acceptance_step_size, bound))
    # ULA's relative bias at the chosen step: ≤ 2.5% of λ_ref (+ the 2nd-order term), and λ_ref is the pilots'
    # λ̂ when that exceeds the exact λ = ½·nβh/h_U of this quadratic
    exact = 0.5 * nbeta * h / hu
    assert 1 / (1 - cal.step_size * hu / 4) - 1 <= 0.0257 * max(1.0, reference / exact)
    assert 1 / (1 - cal.acceptance_step_size * hu / 4) - 1 > 0.05  # what the acceptance rule alone gave


def test_distance_drift_is_flagged_even_when_the_llc_trace_is_stationary():
    g = torch.Generator().manual_seed(0)
    llc = torch.randn(4, 400, generator=g, dtype=torch.float64)
    dist = torch.randn(4, 400, generator=g, dtype=torch.float64) + torch.linspace(0, 3, 400, dtype=torch.float64)
    assert stationary(llc, llc.clone(), 3.0, 1.05) == []
    msgs = stationary(llc, dist, 3.0, 1.05)
    assert len(msgs) == 1 and "‖w − w*‖² still drifts" in msgs[0]


def test_adaptive_run_checkpoints_and_resumes(tmp_path):
    pot = zoo.POTENTIALS["½(w1² + w2⁴)"]()
    path = tmp_path / "adaptive.pt"
    kw = dict(seed=1, step_size=5e-3, max_steps=500, checkpoint_every=100)
    with pytest.warns(LLCConvergenceWarning):
        first = estimate_potential_llc(pot, 100, checkpoint_path=path, **kw)
        again = estimate_potential_llc(pot, 100, checkpoint_path=path, resume=True, **kw)
    assert torch.equal(first.loss_traces, again.loss_traces) and first.mean == again.mean
    # the budget ran out in burn-in: the checkpoint is still in burn-in, so a larger budget continues it
    driver = torch.load(path, weights_only=True)["driver"]
    assert driver["phase"] == "burnin" and driver["burnin_end"] == -1 and first.settings.num_burnin == 250


def test_calibration_grid_follows_the_curvature_of_a_stiff_model():
    # inputs of scale 300: h = 2·E[x²] ≈ 1.8e5, so every step on the old grid 10^(1 − k/4)/nβ (down to
    # 1e-3/nβ, ε·nβ·h ≈ 180) diverged; the grid now starts at the stability limit 2/(nβ·h + γ)
    model, x, y = linear_problem("cpu", d=1, n=200)
    x = 300.0 * x
    with torch.no_grad():
        y = model(x)
    n = len(x)
    nbeta = n / math.log(n)
    h = float(2 * (x ** 2).mean())
    cal = calibrate_step_size(model, mse, (x, y))
    assert cal.candidates[0] == pytest.approx(2 / (nbeta * h + 1.0), rel=1e-6)
    assert not all(cal.diverged)
    assert cal.step_size * (nbeta * h + 1.0) <= 0.5


def test_calibrated_step_with_low_acceptance_in_the_run_is_cut(monkeypatch):
    """A calibrated step that is stable but resolves p poorly once the chains spread (MALA acceptance
    ≈ 0.7 < 0.85 over the draws) is cut towards acceptance 0.92 and the burn-in starts again from the
    chains' current state; an explicit step is left alone."""
    model, x, y = linear_problem("cpu")
    loose = StepSizeCalibration(0.0058, "test: stable but coarse", (0.0058,), (1.0,), (False,), 0.0, (), 8)
    monkeypatch.setattr(llc_estimate, "_calibrate", lambda *a, **k: loose)
    kw = dict(num_chains=2, num_draws=400, num_burnin=100, seed=0, batch_size=200, sampler="sgld")  # SGLD's steps
    est = estimate_llc(model, mse, (x, y), **kw)
    cuts = [b for b in est.step_size_backoffs if b[3].startswith("MALA acceptance")]
    assert len(cuts) == 1 and cuts[0][1] == 0.0058 and est.settings.initial_step_size == 0.0058
    assert 0.0058 / 10 <= est.settings.step_size <= 0.7 * 0.0058
    # the chains go on from where the cut found them and burn-in starts again there: every step before the
    # cut is burn-in, none is lost (a restart from w* would have dropped them)
    at = cuts[0][0]
    assert est.settings.num_burnin == at + 100 and est.burnin_traces.shape == (2, at + 100)
    assert est.settings.steps_total == at + 100 + 400
    assert est.diagnostics.mala_acceptance >= 0.85 and est.loss_traces.shape == (2, 400)
    assert "step: ε 0.0058 →" in repr(est) and not any("MALA acceptance" in w for w in est.diagnostics.warnings)
    # past half of the step budget there is no time to re-equilibrate: no cut, and the result warns
    with pytest.warns(LLCConvergenceWarning, match="MALA acceptance 0.[0-8][0-9] < 0.9"):
        late = estimate_llc(model, mse, (x, y), max_steps=800, **kw)
    assert not late.step_size_backoffs and late.settings.step_size == 0.0058
    monkeypatch.undo()
    fixed = estimate_llc(model, mse, (x, y), step_size=0.0058, **kw)
    assert not fixed.step_size_backoffs and fixed.diagnostics.mala_acceptance < 0.85


def test_run_stopped_on_its_wall_clock_budget_continues_with_a_larger_one(tmp_path):
    pot = zoo.POTENTIALS["½(w1² + w2⁴)"]()
    path = tmp_path / "budget.pt"
    kw = dict(seed=1, step_size=5e-3, max_steps=500, checkpoint_every=50)
    with pytest.warns(LLCConvergenceWarning):
        whole = estimate_potential_llc(pot, 100, **kw)
        cut = estimate_potential_llc(pot, 100, checkpoint_path=path, max_seconds=1e-9, **kw)  # stops after 50 steps
        assert cut.loss_traces.shape[1] < whole.loss_traces.shape[1]
        more = estimate_potential_llc(pot, 100, checkpoint_path=path, resume=True, **kw)
    assert torch.equal(more.loss_traces, whole.loss_traces) and more.mean == whole.mean


def test_budget_too_short_for_any_draw_is_a_clear_error(tmp_path):
    pot = zoo.POTENTIALS["½(w1² + w2⁴)"]()
    with pytest.raises(ValueError, match=r"max_seconds = 1e-09\) ran out after 10 burn-in steps.*resume=True"):
        estimate_potential_llc(pot, 100, seed=1, step_size=5e-3, max_seconds=1e-9, checkpoint_every=10,
                               checkpoint_path=tmp_path / "short.pt")


def test_checkpoint_with_max_seconds_in_its_fingerprint_still_resumes(tmp_path):
    """Checkpoints written while the wall-clock budget was part of the fingerprint stay resumable."""
    pot = zoo.POTENTIALS["½(w1² + w2⁴)"]()
    path = tmp_path / "old.pt"
    kw = dict(seed=1, step_size=5e-3, max_steps=500, checkpoint_every=50)
    with pytest.warns(LLCConvergenceWarning):
        whole = estimate_potential_llc(pot, 100, **kw)
        estimate_potential_llc(pot, 100, checkpoint_path=path, max_seconds=1e-9, **kw)
    state = torch.load(path, weights_only=True)
    state["fingerprint"]["setting.targets"].append("max_seconds=420.0")
    torch.save(state, path)
    with pytest.warns(LLCConvergenceWarning):
        more = estimate_potential_llc(pot, 100, checkpoint_path=path, resume=True, **kw)
    assert torch.equal(more.loss_traces, whole.loss_traces)


def test_fixed_lengths_are_run_in_full_past_max_steps():
    # max_steps is the budget of an adaptive run: explicit num_burnin and num_draws are what was asked for
    pot = zoo.POTENTIALS["½w1²"]()
    est = estimate_potential_llc(pot, 100, num_burnin=60, num_draws=80, step_size=1e-2, max_steps=50, seed=0)
    assert est.settings.num_burnin == 60 and est.settings.num_draws == 80 and est.loss_traces.shape[1] == 80
