"""SGLD estimates of the local learning coefficient (LLC) and of the behavioral LLC.

Estimator (Lau, Furman, Wang, Murfet, Wei 2023, arXiv 2308.12108; Furman & Lau 2024, arXiv 2402.03698):

    λ̂ = nβ·(E_w[L_n(w)] − L_n(w*)),   β = 1/log n (so nβ = n/log n by default),

with the expectation over the localized tempered posterior p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²),
sampled by SGLD (:mod:`slt_interp.estimators.sgld`) from w* in several chains. How this estimator avoids the
known pitfalls (docs/theory.md §1):

* ``sampler="mala"`` (Metropolis-adjusted Langevin, Roberts & Tweedie 1996, Bernoulli 2(4)) uses the
  full-batch U(w) = nβ·L_n(w) + (γ/2)‖w − w*‖², proposes w' = w − (ε/2)∇U(w) + √ε·ξ and accepts with
  the Metropolis–Hastings probability, so its stationary law is exactly the localized tempered
  posterior for every ε: no step-size (discretisation) bias, at the price of full-batch gradients.
  SGLD (the default) never rejects and is biased by O(ε);
* a Geweke-style z-score (first 10% against last 50% of the draws, pooled over chains, with
  autocorrelation-aware standard errors) flags chains that have not equilibrated (|z| > 3);

* the baseline L_n(w*) is the loss on the FULL data set; each draw's L is the loss of the chain's
  current batch at w_t, an unbiased estimate of L_n(w_t) (the batch is drawn independently of w_t);
* burn-in draws are excluded from every average (they are kept in ``burnin_traces`` for plots);
* every chain has its own noise stream and its own batch order, spawned from one seed;
* the standard error accounts for autocorrelation (per-chain effective sample sizes) and is never
  smaller than the spread of the chain means (:func:`slt_interp.estimators.diagnostics.mean_std_err`);
* all chains advance together in one ``torch.func.vmap``-ed gradient evaluation; traces are float64.

Refined LLCs (Wang, Farrugia-Roberts, Hoogland, Carroll, Wei, Murfet 2024, arXiv 2410.02984):
weight-refined via ``params`` (names, or name → boolean mask; the rest stay at w*); data-refined by
passing another data set as ``data`` (its n sets nβ unless ``nbeta`` is given).

Behavioral LLC (Bushnaq et al. 2024, arXiv 2405.10927, §2.2): the same estimator for
L_B(w) = (1/n)·Σ_x ‖f(x; w) − f(x; w*)‖² (or the KL version for classifiers), whose minimum
L_B(w*) = 0 holds at every point of training.

Example (a regular model: λ = d/2 = 1 for a 2-parameter linear regression):
    >>> import torch
    >>> from torch import nn
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    >>> y = x @ torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    >>> model = nn.Linear(2, 1, bias=False).double()
    >>> with torch.no_grad(): model.weight.copy_(torch.tensor([[1.0, -1.0]]))
    >>> est = estimate_llc(model, lambda p, t: ((p - t) ** 2).sum(-1).mean(), (x, y), seed=0)
    >>> abs(est.mean - 1.0) < 4 * est.std_err + 0.1
    True
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Literal, Mapping

import torch
from torch import Tensor, nn

from . import _checkpoint, _rank_loop
from ._adaptive import ConvergenceTargets, drive
from ._chains import _STATE_KEYS, SGLDDivergenceError, _ChainLoop, _Problem, _Run, potential_problem
from ._minimum_check import below_baseline_message, gradient_at_centre, report, slope_message
from ._setup import RunSettings, _check_positive_int, _prepare, _settings, run_settings
from .threads import choose_num_threads, intra_op_threads
from .calibration import StepSizeCalibration, _calibrate
from .diagnostics import effective_sample_size, geweke_z, mean_std_err, split_rhat
from .distributed import broadcast_object, chain_block, process_group
from .input_checks import ParamSelection, materialize
from .losses import behavioral_kl, behavioral_mse
from .model_losses import DataLoss, reference_outputs

__all__ = [
    "ConvergenceTargets",
    "LLCConvergenceWarning",
    "SGLDSettings",
    "LLCDiagnostics",
    "LLCEstimate",
    "SGLDDivergenceError",
    "estimate_llc",
    "estimate_behavioral_llc",
    "estimate_potential_llc",
]


class LLCConvergenceWarning(UserWarning):
    """An LLC estimate that did not converge, or whose diagnostics flag a problem.

    Raised as a warning when the chains miss a convergence target, or R̂, ESS, acceptance,
    non-stationarity or a step-size back-off flag a problem; the text names the fix.
    """


@dataclass(frozen=True)
class SGLDSettings:
    """The settings an estimate was made with (units in the names).

    Attributes:
        num_chains: chains in the estimate.
        num_draws: draws per chain after burn-in (the length the run ended with).
        num_burnin: burn-in steps per chain (the length the run ended with).
        step_size: ε in parameter units² per step (the final one, after any back-off).
        localization: γ.
        nbeta: nβ.
        num_samples: n.
        batch_size: samples per gradient.
        seed: the one seed of all chains.
        num_sampled_params: the number of coordinates that moved (weight refinement).
        mala_every: the MALA acceptance was measured every that many steps (one extra gradient then).
        divergence_threshold: the runaway bound on nβ·(L − L*).
        device: where the chains ran.
        dtype: the parameters' dtype.
        loss: what was estimated, in words.
        sampler: "sgld", "mala" or "rmsprop".
        num_threads: the torch intra-op threads used.
        adaptive_burnin: whether the burn-in length was chosen by ``targets``.
        adaptive_draws: whether the number of draws was chosen by ``targets``.
        targets: the :class:`ConvergenceTargets` in force.
        initial_step_size: the step before any back-off.
        steps_total: all steps per chain, back-offs included.
        requested: the frozen ``RunSettings`` (validated before the run) the run was made from.
        num_processes: the ``torch.distributed`` processes the chains were spread over (1: one process).
        preconditioner_held_from: ``sampler="rmsprop"``: the step from which V was held fixed
            (:mod:`slt_interp.estimators._adaptive`); -1 for the other samplers.
    """

    num_chains: int
    num_draws: int
    num_burnin: int
    step_size: float
    localization: float
    nbeta: float
    num_samples: int
    batch_size: int
    seed: int
    num_sampled_params: int
    mala_every: int
    divergence_threshold: float
    device: str
    dtype: str
    loss: str
    sampler: str = "sgld"
    num_threads: int = 1
    adaptive_burnin: bool = False
    adaptive_draws: bool = False
    targets: ConvergenceTargets | None = None
    initial_step_size: float = math.nan
    steps_total: int = 0
    requested: RunSettings | None = field(default=None, repr=False)
    num_processes: int = 1
    preconditioner_held_from: int = -1


@dataclass(frozen=True)
class LLCDiagnostics:
    """Convergence diagnostics of the chains (on the draws after burn-in).

    Attributes:
        rhat: split R̂ of the λ̂ draws across chains (≲ 1.05 healthy).
        ess: total effective sample size (sum over chains).
        ess_per_chain: ESS of each chain.
        mala_acceptance: mean Metropolis-adjusted acceptance probability of the Langevin proposals
            (SGLD: ≳ 0.9 healthy, low values say the step size is too large and biases the estimate;
            MALA: the acceptance rate of the sampler, unbiased at any value, ≈ 0.57 mixes best).
        mala_acceptance_per_chain: the same per chain.
        diverged: per chain, whether it diverged (always all False in a returned estimate; see
            :class:`SGLDDivergenceError` for runs that stopped).
        localization_ratio: mean ‖w − w*‖² / (d/γ); above 0.5 the localization dominates.
        warnings: human-readable problems found.
        stationarity_z: Geweke-style z of the λ̂ draws (first 10% minus last 50%, pooled over chains,
            :func:`slt_interp.estimators.diagnostics.geweke_z`); |z| > 3: not equilibrated. nan with < 8 draws.
        stationarity_z_per_chain: the same per chain.
    """

    rhat: float
    ess: float
    ess_per_chain: tuple[float, ...]
    mala_acceptance: float
    mala_acceptance_per_chain: tuple[float, ...]
    diverged: tuple[bool, ...]
    localization_ratio: float
    warnings: tuple[str, ...]
    stationarity_z: float = math.nan
    stationarity_z_per_chain: tuple[float, ...] = ()


@dataclass(frozen=True, eq=False)
class LLCEstimate:
    """An SGLD estimate λ̂ = nβ·(mean sampled loss − L_n(w*)) with its uncertainty and settings.

    Attributes:
        mean: λ̂ averaged over chains and draws after burn-in.
        std_err: its standard error, accounting for autocorrelation (see module docstring).
        per_chain: λ̂ of each chain, shape (C,), float64.
        per_chain_std_err: s_c/√ESS_c of each chain.
        baseline_loss: L_n(w*) on the full data set.
        loss_traces: sampled losses after burn-in, (C, num_draws), float64.
        burnin_traces: sampled losses during burn-in, (C, num_burnin), float64.
        diagnostics: :class:`LLCDiagnostics`.
        settings: :class:`SGLDSettings`.
        calibration: the :class:`StepSizeCalibration` when the step size was calibrated, else None.
        converged: whether every convergence target was met (else the unmet ones are the first
            warning, printed by ``repr``/``str``).
        step_size_backoffs: (step, old ε, new ε, reason) for each back-off of a calibrated step.
    """

    mean: float
    std_err: float
    per_chain: Tensor = field(repr=False)
    per_chain_std_err: Tensor = field(repr=False)
    baseline_loss: float
    loss_traces: Tensor = field(repr=False)
    burnin_traces: Tensor = field(repr=False)
    diagnostics: LLCDiagnostics = field(repr=False)
    settings: SGLDSettings = field(repr=False)
    calibration: StepSizeCalibration | None = field(default=None, repr=False)
    converged: bool = True
    step_size_backoffs: tuple[tuple[int, float, float, str], ...] = field(default=(), repr=False)

    @property
    def llc_traces(self) -> Tensor:
        """nβ·(L(w_t) − L_n(w*)) after burn-in, (C, num_draws)."""
        return self.settings.nbeta * (self.loss_traces - self.baseline_loss)

    def __repr__(self) -> str:
        d = self.diagnostics
        return (
            f"LLCEstimate({self.mean:.4g} ± {self.std_err:.2g}, {self.settings.num_chains} chains × "
            f"{self.settings.num_draws} draws, {self.settings.sampler.upper()} ε = {self.settings.step_size:.3g}, γ = {self.settings.localization:g}, "
            f"nβ = {self.settings.nbeta:.4g}; R̂ {d.rhat:.3f}, ESS {d.ess:.0f}, MALA {d.mala_acceptance:.3f}"
            + ("" if self.converged else "; NOT CONVERGED") + ")"
            + "".join(f"\n  step: ε {old:.3g} → {new:.3g} at step {at} ({why})"
                      for at, old, new, why in self.step_size_backoffs if why.startswith("MALA acceptance"))
            + "".join(f"\n  warning: {w}" for w in d.warnings)
        )

    __str__ = __repr__

    def plot(self, ax=None, title: str | None = None):
        """Plot nβ·(L(w_t) − L*) per chain over all steps (burn-in shaded) and the estimate ± 2 SE.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure).
            title: the plot title (default: the loss and the sampler settings).

        Returns:
            The matplotlib Figure.
        """
        import matplotlib.pyplot as plt

        s = self.settings
        fig = ax.figure if ax is not None else plt.figure(figsize=(7, 3.5))
        ax = ax if ax is not None else fig.add_subplot(111)
        full = torch.cat([self.burnin_traces, self.loss_traces], dim=1)
        llc = s.nbeta * (full - self.baseline_loss)
        steps = torch.arange(llc.shape[1])
        for c in range(llc.shape[0]):
            ax.plot(steps, llc[c], lw=0.6, alpha=0.7)
        if s.num_burnin:
            ax.axvspan(0, s.num_burnin, color="0.85", label="burn-in (excluded)")
        ax.axhline(self.mean, color="k", lw=1.2, label=f"λ̂ = {self.mean:.3g} ± {self.std_err:.2g}")
        ax.axhspan(self.mean - 2 * self.std_err, self.mean + 2 * self.std_err, color="k", alpha=0.15)
        ax.set_xlabel("SGLD step")
        ax.set_ylabel("nβ·(L(w) − L(w*))")
        ax.set_title(title or f"{s.loss}: {s.num_chains} chains, ε = {s.step_size:.2g}, γ = {s.localization:g}")
        ax.legend(loc="best", fontsize=8)
        return fig


def _summarise(run: _Run, problem: _Problem, cfg: RunSettings, *, num_burnin, step_size, loss_name: str,
               calibration: StepSizeCalibration | None, chains: slice | Tensor | None = None,
               prior_warnings: tuple[str, ...] = (), final: bool = True, record=None) -> LLCEstimate:
    losses = run.losses if chains is None else run.losses[chains]
    b = min(num_burnin, losses.shape[1])
    num_draws = losses.shape[1] - b
    post = losses[:, b:]
    llc = cfg.nbeta * (post - run.baseline)
    mean, se, per_chain, per_chain_se = mean_std_err(llc)
    ess = effective_sample_size(llc)
    acc_rows = run.acceptance if chains is None else run.acceptance[chains]
    after = run.acceptance_steps >= num_burnin
    acc = acc_rows[:, after] if bool(after.any()) else acc_rows
    acc_chain = acc.nanmean(dim=1) if acc.numel() else torch.full((llc.shape[0],), float("nan"))
    dist = (run.dist2 if chains is None else run.dist2[chains])[:, b:]
    ratio = float(dist.mean()) / (problem.num_sampled / cfg.localization) if cfg.localization > 0 else 0.0
    rhat = split_rhat(llc) if llc.shape[0] > 1 else float("nan")
    warns = list(prior_warnings) + (list(calibration.warnings) if calibration is not None else [])
    if mean < 0 and mean + 3 * se < 0:
        msg = below_baseline_message(mean, se)
        warns.append(msg)
        if final:
            report(msg, cfg.on_nonminimum)
    unconverged = record is not None and final and not record.converged  # R̂ / ESS are then in "not converged"
    if llc.shape[0] > 1 and rhat > cfg.targets.max_rhat and not unconverged:
        warns.append(f"R̂ = {rhat:.3f} > {cfg.targets.max_rhat:g}: chains disagree; raise num_burnin/num_draws or "
                     "check the step size")
    if float(ess.sum()) < cfg.targets.target_ess and not unconverged:
        warns.append(f"only {float(ess.sum()):.0f} effective draws (< {cfg.targets.target_ess:g}): raise num_draws for "
                     "a reliable standard error")
    sampler = cfg.sampler
    if sampler in ("sgld", "rmsprop") and float(acc_chain.nanmean()) < 0.9:
        warns.append(f"MALA acceptance {float(acc_chain.nanmean()):.2f} < 0.9: the step size is likely too large "
                     "(SGLD is then biased; sampler='mala' removes the bias)")
    if sampler == "mala" and float(acc_chain.nanmean()) < 0.1:
        warns.append(f"MALA acceptance rate {float(acc_chain.nanmean()):.2f} < 0.1: the chains rarely move; "
                     "lower step_size")
    z, z_chain = geweke_z(llc) if llc.shape[1] >= 8 else (math.nan, torch.full((llc.shape[0],), math.nan))
    if abs(z) > 3:
        trend = "still rise" if z < 0 else "still fall"
        warns.append(f"non-stationary draws: the first 10% of the draws differ from the last 50% by z = {z:+.1f} "
                     f"(|z| > 3; the λ̂ traces {trend}): the chains have not equilibrated; raise num_burnin / num_draws, "
                     "or the step size (slow directions relax in ~2/(ε·nβ·h) steps)")
    if ratio > 0.5:
        warns.append(f"localization dominates (mean ‖w − w*‖² = {ratio:.2f}·d/γ): lower localization")
    relax = float(step_size) * cfg.localization * (b if b > 0 else losses.shape[1])
    if cfg.localization > 0 and relax < 1 and not cfg.adaptive_burnin:  # adaptive: ‖w − w*‖² drift is tested
        warns.append(f"ε·γ·(burn-in steps) = {relax:.2g} < 1: directions held only by the localization relax in "
                     f"~2/(ε·γ) = {2 / (float(step_size) * cfg.localization):.3g} steps, longer than the burn-in, so "
                     "the draws may not be equilibrated there; raise num_burnin (or leave num_draws and num_burnin None: adaptive)")
    backoffs = tuple(tuple(x) for x in record.backoffs) if record is not None else ()
    for at, old, new, why in backoffs:
        if why.startswith("MALA acceptance"):  # the acceptance check working as designed: recorded, not a warning
            continue
        warns.append(f"the calibrated step size {old:.3g} diverged at step {at} ({why}); the run restarted from the last "
                     f"healthy state with ε = {new:.3g}")
    converged = True
    if record is not None and final:
        converged = bool(record.converged)
        if not converged:
            warns.insert(0, "not converged: " + "; ".join(record.unmet) + "; raise max_steps (or num_draws / "
                         "num_burnin), or check the step size")
    dev = problem.w0.device
    settings = SGLDSettings(
        num_chains=int(losses.shape[0]), num_draws=num_draws, num_burnin=num_burnin, step_size=float(step_size),
        localization=cfg.localization, nbeta=cfg.nbeta, num_samples=problem.num_samples, batch_size=cfg.batch_size,
        seed=cfg.seed, num_sampled_params=problem.num_sampled, mala_every=cfg.mala_every,
        divergence_threshold=cfg.divergence_threshold, device=str(dev), dtype=cfg.dtype,
        loss=loss_name, sampler=sampler, num_threads=torch.get_num_threads(),
        adaptive_burnin=cfg.adaptive_burnin, adaptive_draws=cfg.adaptive_draws,
        targets=cfg.targets, initial_step_size=float(backoffs[0][1] if backoffs else step_size),
        steps_total=record.steps_total if record is not None else losses.shape[1], requested=cfg,
        preconditioner_held_from=record.hold_from if record is not None else -1,
    )
    diag = LLCDiagnostics(
        rhat=rhat, ess=float(ess.sum()), ess_per_chain=tuple(float(e) for e in ess),
        mala_acceptance=float(acc_chain.nanmean()), mala_acceptance_per_chain=tuple(float(a) for a in acc_chain),
        diverged=tuple(False for _ in range(llc.shape[0])), localization_ratio=ratio, warnings=tuple(warns),
        stationarity_z=float(z), stationarity_z_per_chain=tuple(float(v) for v in z_chain),
    )
    return LLCEstimate(mean, se, per_chain, per_chain_se, run.baseline, post.clone(), losses[:, :b].clone(), diag,
                       settings, calibration, converged, backoffs)


def _estimate(
    problem: _Problem,
    s: dict,
    *,
    num_chains: int,
    num_draws: int | None,
    num_burnin: int | None,
    step_size: float | None,
    mala_every: int,
    checkpoint_path,
    checkpoint_every: int | None,
    resume: bool,
    loss_name: str,
    noise_scale: float = 1.0,
    targets: ConvergenceTargets | None = None,
    distributed: bool | None = False,
) -> LLCEstimate:
    cfg = run_settings(problem, s, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin,
                       step_size=step_size, mala_every=mala_every, checkpoint_every=checkpoint_every,
                       noise_scale=noise_scale, targets=targets if targets is not None else ConvergenceTargets())
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path (the file the interrupted run saved)")
    batch = cfg.batch_size if problem.has_data else 1
    threads = choose_num_threads(problem.w0.device, cfg.num_chains * batch * problem.num_sampled, cfg.num_threads)
    group = process_group(distributed)
    if group is not None and cfg.targets.max_seconds is not None:
        raise ValueError("max_seconds cannot be used in a distributed run: each process would stop at a different "
                         "step; give max_steps (reproducible) instead")
    with intra_op_threads(threads):
        return _estimate_in(problem, cfg, checkpoint_path=checkpoint_path, resume=resume, loss_name=loss_name,
                            group=group)


def _estimate_in(problem: _Problem, cfg: RunSettings, *, checkpoint_path, resume, loss_name, group=None) -> LLCEstimate:
    ckpt = _checkpoint.check_path(checkpoint_path) if checkpoint_path is not None else None
    chains = chain_block(cfg.num_chains, group.rank, group.size) if group is not None else None
    if group is not None and ckpt is not None:
        ckpt = _rank_loop.checkpoint_path(ckpt, group)
    problem.check()
    slope = gradient_at_centre(problem, cfg.nbeta, cfg.localization)
    prior_warnings: tuple[str, ...] = ()
    if not slope.is_minimum:
        prior_warnings = (slope_message(slope),)
        report(prior_warnings[0], cfg.on_nonminimum)
    calibration = None
    step_size = cfg.step_size
    if step_size is None:
        calibration = _calibrate(problem, nbeta=cfg.nbeta, localization=cfg.localization, batch_size=cfg.batch_size,
                                 seed=cfg.seed, divergence_threshold=cfg.divergence_threshold, sampler=cfg.sampler)
        step_size = calibration.step_size
        if group is not None:  # every process calibrated from the same seed; rank 0's value makes sure
            step_size = broadcast_object(step_size)

    def make_loop(eps: float) -> _ChainLoop:
        loop = _ChainLoop(problem, num_chains=cfg.num_chains, step_size=eps, localization=cfg.localization,
                          nbeta=cfg.nbeta, batch_size=cfg.batch_size, seed=cfg.seed, mala_every=cfg.mala_every,
                          divergence_threshold=cfg.divergence_threshold, noise_scale=cfg.noise_scale, sampler=cfg.sampler,
                          chains=chains)
        return loop if group is None else _rank_loop.RankLoop(loop, group, chains, cfg.num_chains)

    def on_divergence(run: _Run, step: int, chains: tuple[int, ...], reason: str, eps: float, rec) -> None:
        healthy = torch.tensor([c not in chains for c in range(cfg.num_chains)])
        part = None
        burn = rec.burnin_end
        if burn >= 0 and step - burn >= 4 and bool(healthy.any()):
            part = _summarise(run, problem, cfg, num_burnin=burn, step_size=eps, loss_name=loss_name,
                              calibration=calibration, chains=healthy, prior_warnings=prior_warnings, final=False,
                              record=rec)
        saved = f" The state before the divergence is saved in {checkpoint_path}." if checkpoint_path else ""
        kept = (f" The {int(healthy.sum())} healthy chains' {step - burn} finished draws are in the "
                "exception's .partial estimate." if part is not None else "")
        tried = (f" (the calibrated step was already backed off {len(rec.backoffs)} times)" if rec.backoffs else "")
        raise SGLDDivergenceError(
            f"SGLD chain(s) {list(chains)} diverged at step {step} ({reason}){tried}. The likely cause is a step size "
            f"ε = {eps:.3g} too large for the curvature of nβ·L (nβ = {cfg.nbeta:.4g}), or a localization "
            f"γ = {cfg.localization:g} too weak to hold the chain near w*: lower step_size (try {eps / 10:.3g}, "
            "or pass step_size=None to calibrate it) or raise localization." + kept + saved,
            partial=part, step=step, chains=chains,
        )

    items = cfg.fingerprint_items(step_size)
    if group is not None:
        items["process"] = f"{group.rank} of {group.size}"
    fp = _checkpoint.fingerprint(problem.identity(), items) if ckpt is not None else None
    spread = {} if group is None or ckpt is None else dict(
        load_state=lambda: _rank_loop.common_state(ckpt, fp, _STATE_KEYS + ("driver",)), agree=_rank_loop.agree,
        keep_previous=True)
    run, rec = drive(make_loop, step_size=step_size, nbeta=cfg.nbeta, num_burnin=cfg.num_burnin,
                     num_draws=cfg.num_draws, targets=cfg.targets, backoff=calibration is not None, checkpoint_path=ckpt,
                     checkpoint_every=cfg.checkpoint_every, fingerprint=fp, resume=resume, on_divergence=on_divergence,
                     check_acceptance=calibration is not None and cfg.sampler != "mala" and cfg.mala_every > 0,
                     hold_preconditioner=cfg.sampler == "rmsprop", **spread)
    est = _summarise(run, problem, cfg, num_burnin=rec.burnin_end, step_size=rec.step_size, loss_name=loss_name,
                     calibration=calibration, prior_warnings=prior_warnings, record=rec)
    if group is not None:
        est = replace(est, settings=replace(est.settings, num_processes=group.size))
    shown = [w for w in est.diagnostics.warnings if w not in prior_warnings and "not a local minimum" not in w]
    if shown and (group is None or group.rank == 0):  # once per job, not once per process  # the non-minimum warnings were already emitted as NotAMinimumWarning
        warnings.warn(f"{est.settings.loss}: λ̂ = {est.mean:.4g} ± {est.std_err:.2g}"
                      + ("" if est.converged else " (NOT converged)") + ": " + "; ".join(shown),
                      LLCConvergenceWarning, stacklevel=4)
    return est


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------
def _unpack_data_loss(model, loss_fn, data, batch_size):
    """``(model, loss_fn, data, batch_size)`` from a :class:`DataLoss` given in place of the model."""
    if not isinstance(model, DataLoss):
        if data is None:
            raise TypeError("estimate_llc needs data: estimate_llc(model, loss_fn, (inputs, targets)), or a DataLoss "
                            "from training_loss / behavioral_loss: estimate_llc(*training_loss(model, loss_fn, x, y))")
        return model, loss_fn, data, batch_size
    if data is not None or (loss_fn is not None and not isinstance(loss_fn, Mapping)):
        raise TypeError("with a DataLoss, give neither loss_fn nor data: the DataLoss carries its model, loss and data "
                        "(estimate_llc(loss) or estimate_llc(*training_loss(model, loss_fn, x, y)))")
    if isinstance(loss_fn, Mapping):  # the params dict returned with the DataLoss: it must be the model's w*
        current = dict(model.model.named_parameters())
        for name, value in loss_fn.items():
            if name not in current or not torch.equal(current[name].detach(), value.detach()):
                raise ValueError(f"params[{name!r}] is not the model's current parameter: estimate_llc samples around "
                                 "the model's parameters; load w* into the model (model.load_state_dict) instead")
    return model.model, model.batch_loss, model.data, batch_size if batch_size is not None else model.batch_size


def estimate_llc(
    model: nn.Module | DataLoss,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    data=None,
    *,
    num_chains: int = 4,
    num_draws: int | None = None,
    num_burnin: int | None = None,
    step_size: float | None = None,
    localization: float = 1.0,
    nbeta: float | None = None,
    batch_size: int | None = None,
    params: ParamSelection = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    mala_every: int = 5,
    divergence_threshold: float | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    sampler: Literal["sgld", "mala", "rmsprop"] = "sgld",
    num_threads: int | None = None,
    on_nonminimum: Literal["warn", "raise", "ignore"] = "warn",
    max_steps: int | None = None,
    max_seconds: float | None = None,
    targets: ConvergenceTargets | None = None,
    distributed: bool | None = False,
) -> LLCEstimate:
    """SGLD estimate of the local learning coefficient of ``loss_fn(model(x), y)`` at w*.

    λ̂ = nβ·(E_w[L_n(w)] − L_n(w*)) at the model's current parameters w* (Lau et al. 2023,
    arXiv 2308.12108; docs/theory.md §1).

    The problem can also be given as :func:`llc_bounds` takes it: ``estimate_llc(loss)`` or
    ``estimate_llc(*training_loss(model, loss_fn, x, y))`` with a :class:`DataLoss` (its model, batch
    loss, data and batch size are used; a :func:`behavioral_loss` gives the behavioral LLC).

    Args:
        model: any ``nn.Module``; its current parameters are w* (not modified). It is evaluated in
            eval mode (dropout off, batch-norm running statistics), its mode restored afterwards.
            Or a :class:`DataLoss` (then ``loss_fn`` is omitted or the params dict that came with it,
            and ``data`` is omitted).
        loss_fn: ``loss_fn(prediction, target)`` returning the MEAN loss over the batch; for dict
            batches ``loss_fn(model_output, batch)``, or None to use the model output's ``.loss``
            (Hugging Face models with ``labels`` in the batch).
        data: ``(inputs, targets)`` tensors, a torch ``Dataset`` of (input, target) items, or a
            ``DataLoader`` over one (held in memory on the sampling device; the DataLoader's batch
            size is the default ``batch_size``); or batches: a ``DataLoader`` of dict items, an
            iterable data set, or any re-iterable of ``(x, y)`` tuples or dicts (read once, kept on
            the host, each chain walking its own shuffled order, moved to the device per step; the
            baseline L(w*) is the size-weighted mean over all batches). Another data set than the
            training set gives the data-refined LLC.
        num_chains: independent chains, run together (vectorised).
        num_draws: draws per chain after burn-in (one per step). None (default): adaptive — draw until
            the ESS of λ̂ reaches 400 and its standard error 3% of |λ̂| (with R̂ ≤ 1.05 and |z| ≤ 3 for
            λ̂ and ‖w − w*‖²), within ``max_steps``; see :class:`ConvergenceTargets`.
        num_burnin: steps discarded at the start of every chain. None: adaptive when ``num_draws``
            is None (until λ̂ and ‖w − w*‖² are stationary), else num_draws // 2.
        step_size: ε; None (default) calibrates it with :func:`slt_interp.estimators.calibrate_step_size`'s rule.
        localization: γ of the localizing prior (γ/2)‖w − w*‖².
        nbeta: nβ; default n/log n with n the number of samples in ``data``.
        batch_size: samples per SGLD gradient (default: the DataLoader's, else min(n, 512)).
        params: weight refinement: parameter names to sample, or name → boolean mask; others frozen.
        seed: the one seed all chains' noise and batch orders are spawned from.
        device: where to sample (default: the model's device). Data is moved there.
        mala_every: measure the MALA acceptance every that many steps (0: never; costs one gradient).
        divergence_threshold: a chain diverges when nβ·(L − L*) exceeds this (default 10⁴·max(1, d/2)).
        checkpoint_path: file to save the sampler state to (every ``checkpoint_every`` steps, burn-in
            included, at the end, and before raising on a divergence); checked before sampling.
        checkpoint_every: steps between checkpoints; None (default): whenever 60 s have passed.
        resume: continue from ``checkpoint_path``. The checkpoint's fingerprint (content hashes of the
            data and w*, the ``params`` selection, the loss's name and source, the model's
            architecture, every sampler setting) must match, else a ValueError names what differs;
            only ``num_draws`` and ``max_seconds`` may change. The result is bit-identical to an
            uninterrupted run; a run that stopped on ``max_seconds`` continues, with a larger or no
            wall-clock budget, as if it had never stopped. A missing file warns and starts afresh.
        sampler: "sgld" (default: minibatch Langevin, never rejects, O(ε) bias), "rmsprop"
            (RMSProp-preconditioned SGLD, Li, Chen, Carlson, Carin 2016: per-coordinate steps ε·G̃
            with G̃ ∝ 1/√(running mean of g²), normalised to mean 1 and clipped to [1/10, 10],
            adapted over the first part of the burn-in and then held fixed, so that the dropped Γ
            term is zero over the draws; its diagnostic is the Metropolis-adjusted acceptance of the
            preconditioned proposal) or "mala" (Metropolis-adjusted Langevin on the full batch: exact
            stationary law for every ε; the acceptance rate is ``diagnostics.mala_acceptance``;
            ``batch_size`` must be None or n). Why SGLD is still the default (measured 2026-12-07/08):
            RMSProp won the deep-linear-network benchmark (results/llc_accuracy.md: closer to
            Aoyagi's λ than SGLD on 17 of the 20 networks both ran, within 10% on 15 of 20 against
            7 of 20, every run of both unconverged at the 20 000-step budget) and matched it on the zoo
            (results/llc_defaults_rmsprop.md: 90 of 100 within 3 SE + 5%, SGLD 88, at the same cost),
            but SGLD converged more often there (44 against 33 of 100), and on the smallest transformer
            LM (tests/experiments/test_lm_problem.py, γ = 100) the RMSProp default stopped unconverged
            at 4.90 ± 0.40, where SGLD converges to 4.98 ± 0.14 in under a minute. A tighter clip,
            [1/3, 3] (measured 2026-12-08), converged on that LM (4.68 ± 0.13, 155 s) but lost the
            benchmark's gain: within 10% on 3 of the 8 networks (median |error| 11.9%, further from λ
            than [1/10, 10] on 6 of 8), and 90 of 100 on the zoo with 36 converged
            (results/llc_defaults_rmsprop_k3.md); so the clip stays [1/10, 10] and SGLD the default.
        num_threads: torch intra-op threads for the run (None: one thread on CPU when a step's
            batched gradient is small, chains × batch × parameters < 2²⁸, else torch's setting); the
            caller's setting is restored afterwards, also on an exception.
        on_nonminimum: what to do when w* is not a local minimum — the gradient at w* is large
            relative to the curvature along it (λ̂ would be biased down by more than
            max(0.5, 0.025·d)), or the draws' mean loss falls significantly below L(w*):
            "warn" (:class:`NotAMinimumWarning`, also in ``diagnostics.warnings``), "raise"
            (:class:`NotAMinimumError`) or "ignore".

        max_steps: budget of an adaptive run, steps per chain including burn-in (default 20 000).
        max_seconds: wall-clock budget of an adaptive run (default: none).
        targets: all convergence targets (:class:`ConvergenceTargets`); ``max_steps`` and
            ``max_seconds`` override its fields. A run that stops on its budget returns
            ``converged=False``; every unmet target is in ``diagnostics.warnings``, printed by
            ``repr``/``str`` and emitted as an :class:`LLCConvergenceWarning`. With a calibrated
            step size a divergence backs off (restart from the last healthy state with ε/√10,
            recorded in ``step_size_backoffs``) instead of failing.
        distributed: ``True``: spread the chains over the processes of the initialised
            ``torch.distributed`` process group (:mod:`slt_interp.estimators.distributed`); every process
            must call with the same arguments and gets the same estimate, chain for chain the
            single-process one. ``False`` (default): this process alone (e.g. on rank 0 only of a DDP
            job). ``None``: distribute whenever a group of more than one process is initialised.

    Returns:
        :class:`LLCEstimate`.

    Raises:
        SGLDDivergenceError: a chain diverged (explicit step size, or after 4 back-offs); the message names the cause and the setting to change,
            ``.partial`` keeps the estimate from the finished draws of the healthy chains.
        NotAMinimumError: w* is not a local minimum and ``on_nonminimum="raise"``.
        ValueError / TypeError: invalid settings or data, naming the fix.
    """
    model, loss_fn, data, batch_size = _unpack_data_loss(model, loss_fn, data, batch_size)
    if checkpoint_path is not None:
        _checkpoint.check_path(checkpoint_path)  # before the model is evaluated at all
    problem, s = _prepare(model, loss_fn, data, nbeta=nbeta, localization=localization, batch_size=batch_size,
                          params=params, seed=seed, device=device, divergence_threshold=divergence_threshold,
                          sampler=sampler, num_threads=num_threads, on_nonminimum=on_nonminimum)
    return _estimate(problem, s, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, step_size=step_size,
                     mala_every=mala_every, checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every,
                     resume=resume, loss_name=f"LLC of {problem.description}",
                     targets=_targets(targets, max_steps, max_seconds), distributed=distributed)


def estimate_behavioral_llc(
    model: nn.Module,
    data,
    *,
    kind: Literal["mse", "kl"] = "mse",
    **kwargs,
) -> LLCEstimate:
    """SGLD estimate of the behavioral LLC, the LLC of the behavioral loss L_B at w*.

    L_B(w) = (1/n)·Σ_x ‖f(x; w) − f(x; w*)‖² (``kind="mse"``) or (1/n)·Σ_x KL(p(·|x, w*) ‖ p(·|x, w))
    on softmax outputs (``kind="kl"``, for classifiers) (Bushnaq et al. 2024, arXiv 2405.10927,
    §2.2). L_B(w*) = 0; the reference f(x; w*) is computed once, in eval mode with the buffers
    (:func:`slt_interp.estimators.model_losses.reference_outputs`).

    Args:
        model: the network at w*.
        data: the inputs: a tensor, a pair (inputs, anything), a Dataset or a DataLoader (only the
            first element of each item is used). Other inputs than the training set: data-refined.
        kind: "mse" or "kl".
        **kwargs: as :func:`estimate_llc` (num_chains, step_size, localization, params, ...).

    Returns:
        :class:`LLCEstimate`.

    Raises:
        ValueError: an unknown ``kind`` or invalid settings.
        TypeError: ``model`` is not an ``nn.Module`` or an unknown setting is passed.
    """
    losses = {"mse": behavioral_mse, "kl": behavioral_kl}
    if kind not in losses:
        raise ValueError(f"kind must be 'mse' or 'kl', got {kind!r}")
    tensors, loader_batch = materialize(data)
    x = tensors[0]
    if kwargs.get("batch_size") is None and loader_batch is not None:
        kwargs["batch_size"] = loader_batch
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    p = next(model.parameters())
    dev = kwargs.get("device") or p.device
    xin = x.to(device=dev, dtype=p.dtype) if x.is_floating_point() else x.to(dev)
    reference = reference_outputs(model, xin)  # f(x; w*) in eval mode with buffers, the one reference computation
    problem, s = _prepare(model, losses[kind], (xin, reference), **{k: kwargs.pop(k) for k in list(kwargs) if k in (
        "nbeta", "localization", "batch_size", "params", "seed", "device", "divergence_threshold", "sampler",
        "num_threads", "on_nonminimum")})
    return _estimate(problem, s, loss_name=f"behavioral LLC ({kind})", **_run_kwargs(kwargs))


def _targets(targets: ConvergenceTargets | None, max_steps, max_seconds) -> ConvergenceTargets:
    t = targets if targets is not None else ConvergenceTargets()
    if not isinstance(t, ConvergenceTargets):
        raise TypeError(f"targets must be a ConvergenceTargets, got {type(t).__name__}")
    if max_steps is not None:
        _check_positive_int("max_steps", max_steps, 8)
        t = replace(t, max_steps=max_steps)
    if max_seconds is not None:
        if not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
            raise ValueError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
        t = replace(t, max_seconds=float(max_seconds))
    return t


def _run_kwargs(kwargs: dict) -> dict:
    allowed = {"num_chains": 4, "num_draws": None, "num_burnin": None, "step_size": None, "mala_every": 5,
               "checkpoint_path": None, "checkpoint_every": None, "resume": False, "max_steps": None,
               "max_seconds": None, "targets": None, "distributed": False}
    unknown = set(kwargs) - set(allowed)
    if unknown:
        raise TypeError(f"unknown setting(s) {sorted(unknown)}; allowed: {sorted(allowed)} and nbeta, localization, "
                        "batch_size, params, seed, device, divergence_threshold, sampler, num_threads, on_nonminimum")
    out = {k: kwargs.get(k, v) for k, v in allowed.items()}
    out["targets"] = _targets(out.pop("targets"), out.pop("max_steps"), out.pop("max_seconds"))
    return out


def estimate_potential_llc(
    potential,
    num_samples: float,
    *,
    num_chains: int = 4,
    num_draws: int | None = None,
    num_burnin: int | None = None,
    step_size: float | None = None,
    localization: float = 1.0,
    nbeta: float | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    mala_every: int = 5,
    noise_scale: float = 1.0,
    sampler: Literal["sgld", "mala", "rmsprop"] = "sgld",
    **kwargs,
) -> LLCEstimate:
    """SGLD estimate for a potential K (the population loss, K(0) = 0 at w* = 0) at "sample size" n.

    λ̂ = nβ·E_p[K], p ∝ exp(−nβK − (γ/2)‖w‖²). Its exact target is
    :func:`slt_interp.theory.finite_n_target`.

    Args:
        potential: a :class:`slt_interp.theory.zoo.Potential` (or any object with ``.fn`` and ``.dim``).
        num_samples: n, which sets nβ = n/log n unless ``nbeta`` is given.
        num_chains: as :func:`estimate_llc`.
        num_draws: as :func:`estimate_llc` (None: adaptive).
        num_burnin: as :func:`estimate_llc` (None: adaptive).
        step_size: as :func:`estimate_llc` (None: calibrated).
        localization: γ.
        nbeta: nβ (default n/log n).
        seed: the one seed of all chains.
        device: where to sample.
        dtype: the dtype of w (float64 by default).
        mala_every: as :func:`estimate_llc`.
        noise_scale: multiplies the Langevin noise (1: SGLD; 0: gradient descent — for tests only).
        sampler: "sgld", "mala" (Metropolis-adjusted: no step-size bias) or "rmsprop", as :func:`estimate_llc`.
        **kwargs: ``divergence_threshold``, ``num_threads``, ``on_nonminimum``, ``checkpoint_path``,
            ``checkpoint_every``, ``resume``, ``max_steps``, ``max_seconds``, ``targets``, as
            :func:`estimate_llc`.

    Returns:
        :class:`LLCEstimate`.

    Raises:
        TypeError: ``potential`` lacks ``.fn`` / ``.dim``, or an unknown setting is passed.
        ValueError: invalid settings (``num_samples`` ≤ 1, ``noise_scale`` ≠ 1 with MALA, ...).
    """
    fn, dim = getattr(potential, "fn", None), getattr(potential, "dim", None)
    if fn is None or dim is None:
        raise TypeError(f"potential must be a slt_interp.theory.zoo.Potential (with .fn and .dim), got {type(potential).__name__}")
    if not num_samples > 1:
        raise ValueError(f"num_samples must be > 1 (β = 1/log n), got {num_samples}")
    problem = potential_problem(fn, dim, int(num_samples), dtype=dtype, device=device)
    s = _settings(problem, nbeta=nbeta, localization=localization, batch_size=1, seed=seed,
                  divergence_threshold=kwargs.pop("divergence_threshold", None), sampler=sampler,
                  num_threads=kwargs.pop("num_threads", None), on_nonminimum=kwargs.pop("on_nonminimum", "warn"))
    s["sampler"] = sampler
    if sampler == "mala" and noise_scale != 1.0:
        raise ValueError("noise_scale must be 1 with sampler='mala' (the Metropolis test assumes the Langevin proposal)")
    return _estimate(problem, s, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, step_size=step_size,
                     mala_every=mala_every, loss_name=f"potential {getattr(potential, 'name', '')}", noise_scale=noise_scale,
                     **{k: v for k, v in _run_kwargs(kwargs).items() if k in ("checkpoint_path", "checkpoint_every", "resume",
                                                                             "targets")})
