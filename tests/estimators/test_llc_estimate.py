"""SGLD LLC estimators: exact oracles (ULA on a quadratic, finite-n quadrature), known λ, behavioral
LLC, devinterp side by side, divergence, checkpoint/resume, and the error paths."""
import math

import pytest
import torch
from torch import nn
from torch.func import grad
from torch.utils.data import DataLoader, TensorDataset

from slt_interp.estimators import (
    LLCEstimate,
    SGLDDivergenceError,
    calibrate_step_size,
    estimate_behavioral_llc,
    estimate_llc,
    estimate_potential_llc,
)
from slt_interp.estimators._chains import model_problem, run_chains
from tests.estimators._sgld_problems import linear_problem as _linear_problem, mse as _mse, resume_runs
from slt_interp.theory import finite_n_target, zoo




def _ula_target(H, nbeta, gamma, eps):
    """Exact stationary E[nβ·K] of unadjusted Langevin on K = ½wᵀHw + (γ/2)‖w‖² (full batch):
    per eigen-direction var = 1/(h_U(1 − ε·h_U/4)), h_U = nβh + γ; E[nβK] = ½Σ nβh·var."""
    h = torch.linalg.eigvalsh(H)
    hu = nbeta * h + gamma
    return float((0.5 * nbeta * h / (hu * (1 - eps * hu / 4))).sum())


def _within(est, target, k=3.0):
    assert est.diagnostics.ess > 300, f"too few effective samples ({est.diagnostics.ess:.0f}) for a k-SE check"
    assert abs(est.mean - target) <= k * est.std_err, f"{est.mean} ± {est.std_err} vs {target}"


def test_quadratic_matches_exact_ula_target_full_and_weight_refined(device):
    model, x, y = _linear_problem(device)
    n = len(x)
    nbeta, gamma, eps = n / math.log(n), 1.0, 5e-3
    H = 2 * (x.T @ x / n).cpu()  # Hessian of the mean squared error
    est = estimate_llc(model, _mse, (x, y), num_chains=4, num_draws=1200, num_burnin=100, step_size=eps,
                       localization=gamma, batch_size=n, seed=1, mala_every=0, sampler="sgld")  # ULA's target
    assert isinstance(est, LLCEstimate) and est.settings.nbeta == pytest.approx(nbeta)
    assert est.baseline_loss == pytest.approx(0.0, abs=1e-20)
    _within(est, _ula_target(H, nbeta, gamma, eps))
    # weight refinement: only coordinate 1 moves; the others stay at w* exactly
    mask = {"weight": torch.tensor([[False, True, False]])}
    ref = estimate_llc(model, _mse, (x, y), num_chains=4, num_draws=1200, num_burnin=100, step_size=4 * eps,
                       localization=gamma, batch_size=n, seed=1, params=mask, mala_every=0, sampler="sgld")
    assert ref.settings.num_sampled_params == 1
    _within(ref, _ula_target(H[1:2, 1:2], nbeta, gamma, 4 * eps))
    assert ref.mean < est.mean


@pytest.mark.parametrize("name", ["½w1²w2⁴", "½(w1w2)²", "½(w1² + w2⁴)"])
def test_potentials_match_finite_n_oracle(name):
    pot = zoo.POTENTIALS[name]()
    target = finite_n_target(pot, 100, localization=4.0).value
    est = estimate_potential_llc(pot, 100, localization=4.0, num_chains=8, num_draws=2000, num_burnin=300,
                                 step_size=2e-3, seed=0, mala_every=0)
    _within(est, target)


def test_zero_noise_reduces_to_gradient_descent():
    model, x, y = _linear_problem("cpu")
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    problem = model_problem(model, _mse, (x, y))
    nbeta, gamma, eps, steps = 30.0, 2.0, 1e-2, 15
    run = run_chains(problem, num_chains=2, num_draws=steps, num_burnin=0, step_size=eps, localization=gamma,
                     nbeta=nbeta, batch_size=len(x), seed=0, mala_every=0, divergence_threshold=math.inf,
                     noise_scale=0.0)
    w0 = problem.w0
    U = lambda w: nbeta * problem.full_loss(w) + 0.5 * gamma * ((w - w0) ** 2).sum()  # noqa: E731
    w = w0.clone()
    for t in range(steps):
        assert float(run.losses[0, t]) == pytest.approx(float(problem.full_loss(w)), rel=1e-12, abs=1e-15)
        w = w - 0.5 * eps * grad(U)(w)
    torch.testing.assert_close(run.final_w[1], w, rtol=1e-12, atol=1e-14)


# The all-defaults accuracy check on reduced-rank regressions (≈ 30 s each) is a study:
# experiments/benchmarks/llc_defaults.py; tests/estimators/test_llc_convergence.py checks defaults on potentials.


def test_behavioral_llc_upper_bounds_llc_on_interpolating_model():
    # the training loss sees only output 0 of a zero-noise (interpolating) regression, the behavioral
    # loss all outputs: L − L* ≤ L_B, so λ ≤ λ_B (docs/theory.md §1)
    m = zoo.reduced_rank_model(3, 2, 3, 2)
    x, y = m.sample(400, seed=1)
    loss0 = lambda p, t: ((p[:, :1] - t[:, :1]) ** 2).sum(-1).mean()  # noqa: E731
    kw = dict(num_chains=4, num_draws=500, step_size=2e-4, seed=0, batch_size=400)
    llc = estimate_llc(m.model, loss0, (x, y), **kw)
    beh = estimate_behavioral_llc(m.model, x, **kw)
    assert beh.baseline_loss == 0.0
    assert beh.mean >= llc.mean - 3 * math.hypot(beh.std_err, llc.std_err)
    assert beh.mean > llc.mean  # here strictly: the other outputs constrain more directions


def test_behavioral_kl_runs_and_data_refined_uses_other_data():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    x = torch.randn(300, 3, generator=g, dtype=torch.float64)
    est = estimate_behavioral_llc(model, DataLoader(TensorDataset(x), batch_size=100), kind="kl",
                                  num_chains=2, num_draws=50, step_size=1e-4)
    assert est.settings.batch_size == 100 and est.settings.num_samples == 300 and est.mean > 0
    sub = estimate_behavioral_llc(model, x[:50], num_chains=2, num_draws=50, step_size=1e-4)
    assert sub.settings.num_samples == 50 and sub.settings.nbeta == pytest.approx(50 / math.log(50))


def test_tensor_dataset_and_dataloader_inputs_agree():
    model, x, y = _linear_problem("cpu", n=128)
    kw = dict(num_chains=2, num_draws=20, num_burnin=5, step_size=1e-3, batch_size=32, seed=3)
    a = estimate_llc(model, _mse, (x, y), **kw)
    b = estimate_llc(model, _mse, TensorDataset(x, y), **kw)
    kw.pop("batch_size")
    c = estimate_llc(model, _mse, DataLoader(TensorDataset(x, y), batch_size=32), **kw)
    assert torch.equal(a.loss_traces, b.loss_traces) and torch.equal(a.loss_traces, c.loss_traces)
    # every chain its own noise and batches: chains differ from the first step on
    assert not torch.equal(a.loss_traces[0], a.loss_traces[1])


def test_agrees_with_devinterp_side_by_side():
    pytest.importorskip("devinterp")
    from experiments.devinterp_side import devinterp_llc

    m = zoo.reduced_rank_model(3, 2, 3, 2)
    x, y = m.sample(256, seed=2)
    kw = dict(num_chains=4, num_draws=400, num_burnin=100, step_size=5e-4, localization=1.0, batch_size=64, seed=0)
    ours = estimate_llc(m.model, m.loss_fn, (x, y), mala_every=0, **kw)
    theirs = devinterp_llc(m.model, m.loss_fn, x, y, **kw)
    assert theirs.baseline == pytest.approx(ours.baseline_loss)
    assert abs(ours.mean - theirs.mean) <= 3 * math.hypot(ours.std_err, theirs.std_err), (ours, theirs)


class _Trap:
    """½·0.01·‖w‖² with a NaN outside |w| < 2: a chain with weak confinement walks into it."""

    dim, name = 2, "trap"

    @staticmethod
    def fn(w):
        k = 0.005 * (w ** 2).sum(-1)
        return torch.where(w.abs().max(-1).values > 2.0, torch.full_like(k, float("nan")), k)


def test_divergence_stops_with_message_and_keeps_finished_draws(tmp_path):
    path = tmp_path / "ckpt.pt"
    with pytest.raises(SGLDDivergenceError, match="lower step_size") as info:
        estimate_potential_llc(_Trap(), 20, localization=1e-3, num_chains=4, num_draws=2000, num_burnin=5,
                               step_size=0.05, seed=0, checkpoint_path=path)
    err = info.value
    assert err.step > 5 and err.chains
    assert isinstance(err.partial, LLCEstimate)
    assert err.partial.settings.num_chains == 4 - len(err.chains)
    assert err.partial.loss_traces.shape[1] == err.step - 5
    assert torch.isfinite(err.partial.loss_traces).all()
    assert path.exists()
    with pytest.raises(SGLDDivergenceError, match="runaway loss"):
        estimate_llc(*_linear_problem("cpu")[:1], _mse, _linear_problem("cpu")[1:], step_size=10.0, num_draws=10)


def test_resume_equals_uninterrupted_run(tmp_path):
    model, x, y = _linear_problem("cpu", n=96)
    kw = dict(num_chains=3, num_burnin=10, step_size=1e-3, batch_size=32, seed=5, mala_every=3)
    path = tmp_path / "run.pt"
    resumed, straight = resume_runs(path, model, x, y, **kw)
    assert resumed.mean == straight.mean and resumed.diagnostics.mala_acceptance == straight.diagnostics.mala_acceptance
    with pytest.raises(ValueError, match="different sampler setting"):
        estimate_llc(model, _mse, (x, y), num_draws=70, checkpoint_path=path, resume=True, **{**kw, "seed": 6})


def test_plot_and_repr():
    import matplotlib

    matplotlib.use("Agg")
    model, x, y = _linear_problem("cpu", n=64)
    est = estimate_llc(model, _mse, (x, y), num_chains=2, num_draws=20, step_size=1e-3)
    fig = est.plot()
    assert len(fig.axes[0].lines) >= 3
    assert "LLCEstimate(" in repr(est) and "±" in repr(est)


def test_calibration_helper_and_gamma_check():
    model, x, y = _linear_problem("cpu", n=200)
    cal = calibrate_step_size(model, _mse, (x, y), pilot_steps=40)
    assert cal.acceptance_step_size in cal.candidates and not cal.warnings
    i = cal.candidates.index(cal.acceptance_step_size)
    assert cal.acceptance[i] >= 0.95 and all(not (a >= 0.95) for a in cal.acceptance[:i])
    assert cal.step_size == min(cal.acceptance_step_size, cal.bias_bound_step_size)
    # a flat direction (the loss ignores weight 2) with a tiny γ: the localization confines the chain
    strong = calibrate_step_size(model, lambda p, t: _mse(p, t) * 0 + 1e-8 * p.mean() ** 2, (x, y),
                                 pilot_steps=40, localization=1e3)
    assert any("localization" in w for w in strong.warnings)


def test_error_paths():
    model, x, y = _linear_problem("cpu", n=64)
    with pytest.raises(TypeError, match="pair"):
        estimate_llc(model, _mse, "data")
    with pytest.raises(ValueError, match="first .sample. dimension"):
        estimate_llc(model, _mse, (x, y[:10]))
    with pytest.raises(ValueError, match="unknown parameter 'nope'"):
        estimate_llc(model, _mse, (x, y), params=["nope"])
    with pytest.raises(ValueError, match="boolean mask of shape"):
        estimate_llc(model, _mse, (x, y), params={"weight": torch.ones(3)})
    with pytest.raises(ValueError, match="batch_size 100 exceeds"):
        estimate_llc(model, _mse, (x, y), batch_size=100)
    with pytest.raises(ValueError, match="step_size must be a positive"):
        estimate_llc(model, _mse, (x, y), step_size=-1.0)
    with pytest.raises(ValueError, match="num_draws must be an integer ≥ 4"):
        estimate_llc(model, _mse, (x, y), num_draws=2, step_size=1e-3)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_path"):
        estimate_llc(model, _mse, (x, y), resume=True, step_size=1e-3)
    with pytest.raises(ValueError, match="localization"):
        estimate_llc(model, _mse, (x, y), localization=-1.0)
    with pytest.raises(TypeError, match="unknown setting"):
        estimate_behavioral_llc(model, x, num_chain=3)
    with pytest.raises(ValueError, match="kind must be"):
        estimate_behavioral_llc(model, x, kind="l1")
    with pytest.raises(TypeError, match="nn.Module"):
        estimate_llc(lambda v: v, _mse, (x, y))
    bad = nn.Linear(3, 1).double()
    with torch.no_grad():
        bad.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        estimate_llc(bad, _mse, (x, y))
