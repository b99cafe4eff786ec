"""The estimator's run driver: adaptive burn-in and draws, step-size back-off, checkpoints.

A small driver over :class:`slt_interp.estimators._chains._ChainLoop` (which advances the chains of
one sampler kernel):

* **Burn-in** (``num_burnin=None``): run in doubling chunks (from ``min_burnin`` steps) until the
  second half of what has run is stationary — the Geweke-style z of both λ̂ = nβ·(L − L*) and the
  distance ‖w − w*‖² below ``burnin_max_abs_z`` and the split R̂ of λ̂ below ``max_rhat`` — then keep that
  second half as the first draws (everything before is burn-in). Watching ‖w − w*‖² catches slow
  drifts in directions held only by the localization, which λ̂ alone can miss. The burn-in is never
  shorter than the relaxation floor 2/(ε·γ) steps (at most ``max_steps``/4): near a minimum every direction
  of U = nβ·L + (γ/2)‖w − w*‖² has curvature ≥ γ, and one held by γ alone relaxes like an
  Ornstein–Uhlenbeck process, w ← (1 − εγ/2)·w + √ε·ξ, whose variance started at w* (0) reaches
  1 − e^(−εγt) of 1/γ after t steps (86% at the floor). A drift that slow hides in the autocorrelation
  of a short window, so the z test alone passes it: on devinterp's reduced-rank case (5, 3, 5), n = 1000
  (gauge directions B·A = (B·g)(g⁻¹·A) held by γ only), the burn-in stopped at 400 steps and λ̂ came out
  6.94 ± 0.18 against the exact 6.21 ± 0.11 (full-batch MALA, 8000 burn-in); with the floor (1700 steps)
  6.26 ± 0.15 (experiments/benchmarks/devinterp_ported.py). The floor is necessary, not sufficient: on
  the other RRR cases there the z against the exact target went +1.1 → +3.3 (5, 4, 5), +1.5 → +0.4
  (4, 3, 8), +2.7 → +3.0 (8, 3, 4), +3.1 → +2.3 (3, 8, 4) — repeat runs differ by more than their standard errors, so slower
  modes than 2/(εγ) remain (the loss in the factors is not convex).
* **Draws** (``num_draws=None``): continue until the effective sample size of λ̂ reaches
  ``target_ess`` and its standard error reaches ``target_rel_std_err``·|λ̂| (or
  ``target_abs_std_err``), with split R̂ of λ̂ ≤ ``max_rhat`` and |z| ≤ ``max_abs_z`` for λ̂ and ‖w − w*‖²;
  the next chunk is sized from the current ESS and SE (SE ∝ 1/√N). A late |z| or R̂ failure moves
  the burn-in boundary to the middle of the draws.
* **Budget**: at most ``max_steps`` steps per chain (and ``max_seconds`` of wall clock, if given);
  a run that stops on the budget reports ``converged=False`` with the unmet targets.
* **RMSProp's preconditioner is held** (``sampler="rmsprop"``): V adapts over the first
  max(500, floor/2) steps (half of an explicit ``num_burnin``) and is then held fixed, and the burn-in
  does not end before its stationarity window lies wholly after that step. pSGLD drops the Γ term
  (the divergence of G(w)); with V still adapting the chain then targets a distorted law, and the
  error does not vanish with n: on ½(w1² + w2⁴) (λ = 3/4) the default rmsprop run came out +12% to +28%
  high on all four seeds at n = 100 and at n = 10 000 (z up to +4.8), on ½(w1·w2)² (λ = 1/2, m = 2)
  −8% to −33% low. Holding V after 500 steps: −1.2% to +5.7% (|z| ≤ 2.1) and −2.8% to +7.1%
  (|z| ≤ 1.7) on the first, +4.9% to −9.5% (|z| ≤ 1.8) on the second (n = 100; 2026-12-04, four seeds).
  A fixed diagonal preconditioner leaves p ∝ exp(−U) exactly stationary (up to the O(ε) step bias).
* **Back-off** (calibrated step sizes only): a divergence restarts the run from the last healthy
  state (saved at every chunk boundary) with the step size divided by √10, and records it; explicit
  step sizes raise :class:`SGLDDivergenceError` as before.
* **Acceptance check** (calibrated SGLD / RMSProp steps): the calibration measures the Metropolis
  acceptance of the Langevin proposal at w* and nearby, but a degenerate model's curvature grows as the
  chains spread into the typical set. When the MALA acceptance monitored over the draws (or over the
  second half of a burn-in, ≥ 20 monitored steps either way) falls below 0.85, the step was too large for the equilibrated chains — its
  discretisation bias inflates λ̂ (on deep linear networks by +30% at acceptance 0.54) — and the step
  is cut to ε·((1 − 0.92)/(1 − acc))^{2/3} (clamped to [ε/10, 0.7·ε]; 1 − acc grows like ε^{3/2} for a
  Langevin proposal), recorded as a back-off. The chains go on from where they are, and burn-in starts
  again there: everything before the cut is burn-in. (An earlier rule restarted them from w*, so each
  cut threw away the progress of the slow directions, and allowed one cut in the burn-in: on a
  rank-0 deep linear network, d = 1635, the acceptance kept falling as the chains spread — 0.45 at
  6.8e-5, then 0.55 at 1.9e-5 after the one cut — and λ̂ came out 42% above λ with the warning as the
  only remedy.) Up to ``MAX_CUTS`` cuts are made while at least half of ``max_steps`` is left to
  re-equilibrate; later, the run goes on and its result warns of the low acceptance.

Targets, budget and every back-off are stated in the result (:class:`ConvergenceTargets`,
``LLCEstimate.step_size_backoffs``).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from . import _checkpoint
from ._chains import _STATE_KEYS, _ChainLoop, _Run
from .diagnostics import effective_sample_size, geweke_z, mean_std_err, split_rhat

BACKOFF = math.sqrt(10.0)
MAX_BACKOFFS = 4
# in-run acceptance check of a calibrated step (module docstring): below MIN_ACCEPTANCE the step is cut
# so that the Langevin proposal's MALA acceptance would reach about TARGET_ACCEPTANCE
MIN_ACCEPTANCE = 0.85
TARGET_ACCEPTANCE = 0.92
MIN_MONITORED = 20
MAX_CUTS = 4
# adaptive burn-in floor RELAXATION/(ε·γ) steps, capped at max_steps·FLOOR_SHARE (module docstring)
RELAXATION = 2.0
FLOOR_SHARE = 0.25
# RMSProp: V adapts for at least HOLD_MIN steps (or half the floor), then is held fixed (module docstring)
HOLD_MIN = 500


@dataclass(frozen=True)
class ConvergenceTargets:
    """When an adaptive run stops (module docstring). Stated in every result's settings.

    Attributes:
        target_ess: total effective sample size of λ̂ over chains.
        target_rel_std_err: standard error of λ̂ relative to |λ̂|.
        target_abs_std_err: an absolute standard error that also suffices (for λ̂ near 0).
        max_rhat: split R̂ of λ̂ across chains.
        max_abs_z: |non-stationarity z| of the draws (λ̂ and ‖w − w*‖²).
        burnin_max_abs_z: |z| of the second half of the burn-in that ends it.
        min_burnin: the first burn-in chunk (steps).
        max_steps: the budget, steps per chain, burn-in included.
        max_seconds: a wall-clock budget (None: none). With it the run length, and so the result,
            depends on the machine's speed; ``max_steps`` alone is reproducible.
    """

    target_ess: float = 400.0
    target_rel_std_err: float = 0.03
    target_abs_std_err: float = 0.01
    max_rhat: float = 1.05
    max_abs_z: float = 3.0
    burnin_max_abs_z: float = 2.0
    min_burnin: int = 100
    max_steps: int = 20_000
    max_seconds: float | None = None


@dataclass
class DriverRecord:
    burnin_end: int
    step_size: float
    backoffs: list
    converged: bool
    unmet: list
    steps_total: int
    burnin_start: int = 0  # the burn-in (re)started here: the last step-size cut, or 0
    hold_from: int = -1  # RMSProp: V is held fixed from this step of the loop on (-1: never)


def _z_and_rhat(x: torch.Tensor) -> tuple[float, float]:
    if x.shape[1] < 8:
        return math.nan, math.nan
    z = geweke_z(x)[0]
    r = split_rhat(x) if x.shape[0] > 1 else 1.0
    return z, r


def stationary(llc: torch.Tensor, dist2: torch.Tensor, max_abs_z: float, max_rhat: float) -> list[str]:
    """The stationarity checks that fail on these draws (λ̂ and ‖w − w*‖²), in words."""
    out = []
    for name, x, use_rhat in (("λ̂", llc, True), ("‖w − w*‖²", dist2, False)):
        # ‖w − w*‖² is checked for drift only: along exact symmetries (e.g. B·A = (B·g)(g⁻¹·A)) the chains
        # spread slowly at different rates without changing λ̂, so its R̂ would fail forever
        z, r = _z_and_rhat(x)
        if math.isfinite(z) and abs(z) > max_abs_z:
            out.append(f"{name} still drifts (non-stationarity z = {z:+.1f}, |z| > {max_abs_z:g})")
        if use_rhat and math.isfinite(r) and r > max_rhat:
            out.append(f"chains disagree on {name} (split R̂ = {r:.3f} > {max_rhat:g})")
    return out


def unmet_targets(llc: torch.Tensor, dist2: torch.Tensor, t: ConvergenceTargets) -> list[str]:
    """Every convergence target these draws miss, in words (empty: converged)."""
    if llc.shape[1] < 8:
        return ["fewer than 8 draws"]
    mean, se, _, _ = mean_std_err(llc)
    ess = float(effective_sample_size(llc).sum())
    out = []
    if ess < t.target_ess:
        out.append(f"ESS {ess:.0f} < {t.target_ess:g}")
    goal = max(t.target_rel_std_err * abs(mean), t.target_abs_std_err)
    if se > goal:
        out.append(f"standard error {se:.3g} > {goal:.3g} ({t.target_rel_std_err:.0%} of |λ̂| or {t.target_abs_std_err:g})")
    return out + stationary(llc, dist2, t.max_abs_z, t.max_rhat)


def burnin_floor(step_size: float, localization: float, max_steps: int) -> int:
    """Fewest adaptive burn-in steps: 2/(ε·γ), the relaxation time of a direction held by γ alone
    (module docstring), at most ``max_steps``/4; 0 without localization."""
    if not localization > 0 or not step_size > 0:
        return 0
    return int(min(math.ceil(RELAXATION / (step_size * localization)), FLOOR_SHARE * max_steps))


def hold_step(step_size: float, localization: float, targets: ConvergenceTargets, num_burnin: int | None) -> int:
    """The step from which RMSProp's preconditioner V is held fixed (module docstring): half of an
    explicit burn-in, else max(``HOLD_MIN``, half the relaxation floor)."""
    if num_burnin is not None:
        return num_burnin // 2
    return max(HOLD_MIN, burnin_floor(step_size, localization, targets.max_steps) // 2)


def _inner(loop):
    """The :class:`_ChainLoop` itself, or the one a distributed rank loop wraps (``.local``)."""
    return getattr(loop, "local", loop)


def _localization(loop) -> float:
    """γ of a :class:`_ChainLoop`, or of the one a distributed rank loop wraps (``.local``)."""
    return float(_inner(loop).kernel.localization)


def _next_chunk(llc: torch.Tensor, t: ConvergenceTargets) -> int:
    n = llc.shape[1]
    mean, se, _, _ = mean_std_err(llc)
    ess = max(float(effective_sample_size(llc).sum()), 1.0)
    goal = max(t.target_rel_std_err * abs(mean), t.target_abs_std_err)
    factor = max(t.target_ess / ess, (se / goal) ** 2 if goal > 0 else 4.0, 1.25)
    return max(100, int(math.ceil(n * min(1.1 * factor, 4.0))) - n)


def drive(
    make_loop: Callable[[float], _ChainLoop],
    *,
    step_size: float,
    nbeta: float,
    num_burnin: int | None,
    num_draws: int | None,
    targets: ConvergenceTargets,
    backoff: bool,
    checkpoint_path=None,
    checkpoint_every: int | None = None,
    fingerprint: dict | None = None,
    resume: bool = False,
    on_divergence: Callable | None = None,
    load_state: Callable[[], dict | None] | None = None,
    agree: Callable[[bool], bool] | None = None,
    keep_previous: bool = False,
    check_acceptance: bool = False,
    hold_preconditioner: bool = False,
) -> tuple[_Run, DriverRecord]:
    """Run the chains to convergence (or fixed lengths) and return the raw run and the driver record.

    ``on_divergence(run, step, chains, reason, step_size)`` is called (and must raise) on a divergence
    that is not backed off. A distributed run (:mod:`slt_interp.estimators._rank_loop`) passes
    ``load_state`` (the checkpoint every process can resume from), ``agree`` (one wall-clock decision
    for all processes) and ``keep_previous`` (two checkpoint generations per process).
    ``hold_preconditioner`` (RMSProp): V adapts until ``rec.hold_from`` (:func:`hold_step`) and is held
    fixed after, and the burn-in does not end before it.
    """
    ckpt = checkpoint_path
    rec = DriverRecord(burnin_end=-1, step_size=float(step_size), backoffs=[], converged=False, unmet=[], steps_total=0)
    phase, chunk_end = "burnin", None
    new_loop = make_loop

    def make_loop(eps: float):
        made = new_loop(eps)
        _inner(made).hold_from = rec.hold_from if rec.hold_from >= 0 else None
        return made

    loop = make_loop(rec.step_size)
    if hold_preconditioner:
        rec.hold_from = hold_step(rec.step_size, _localization(loop), targets, num_burnin)
        _inner(loop).hold_from = rec.hold_from
    if ckpt is not None and resume:
        state = load_state() if load_state is not None else _checkpoint.load(ckpt, fingerprint, _STATE_KEYS + ("driver",))
        if state is not None:
            drv = state["driver"]
            rec = DriverRecord(**{k: drv[k] for k in asdict(rec) if k in drv})
            phase, chunk_end = drv["phase"], drv["chunk_end"]
            loop = make_loop(rec.step_size)
            loop.load_state_dict(state)
            if num_draws is not None and rec.burnin_end >= 0 and loop.t > rec.burnin_end + num_draws:
                raise ValueError(f"checkpoint {ckpt} already holds {loop.t - rec.burnin_end} draws, more than "
                                 f"num_draws = {num_draws}; raise num_draws")
    t0, advanced = time.monotonic(), False
    last_save = [time.monotonic()]
    healthy = loop.state_dict()
    spent = rec.steps_total - loop.t  # steps of earlier (backed-off) segments

    def save() -> None:
        if ckpt is None:
            return
        drv = dict(asdict(rec), phase=phase, chunk_end=chunk_end)
        drv["steps_total"] = spent + loop.t
        _checkpoint.save(ckpt, fingerprint, dict(loop.state_dict(), driver=drv), keep_previous=keep_previous)
        last_save[0] = time.monotonic()

    def llc_dist(start: int) -> tuple[torch.Tensor, torch.Tensor]:
        return nbeta * (loop.losses[:, start:] - loop.baseline), loop.dist2[:, start:]

    def restart(new: float, at: int, reason: str) -> None:
        """Continue with step ``new`` from the last healthy state (after a divergence); the traces of the
        old step are dropped."""
        nonlocal loop, spent, phase, chunk_end, healthy
        rec.backoffs.append((spent + at, rec.step_size, new, reason))
        spent += loop.t
        rec.step_size = new
        loop = make_loop(new)
        fresh = dict(healthy, steps_done=0, losses=healthy["losses"][:, :0], dist2=healthy["dist2"][:, :0],
                     acceptance=healthy["acceptance"][:, :0], acceptance_steps=healthy["acceptance_steps"][:0])
        loop.load_state_dict(fresh)
        rec.burnin_end, rec.burnin_start, phase, chunk_end = -1, 0, "burnin", None
        healthy = loop.state_dict()
        save()

    def cut_here(new: float, reason: str) -> None:
        """Continue with step ``new`` from the chains' current state (a chunk boundary); burn-in starts again."""
        nonlocal loop, phase, chunk_end, healthy
        rec.backoffs.append((spent + loop.t, rec.step_size, new, reason))
        state = loop.state_dict()
        rec.step_size = new
        loop = make_loop(new)
        loop.load_state_dict(state)
        rec.burnin_start, rec.burnin_end, phase, chunk_end = loop.t, -1, "burnin", None
        healthy = loop.state_dict()
        save()

    def too_large(start: int) -> tuple[float, str] | None:
        """A smaller step when the MALA acceptance since ``start`` says the calibrated one is too large."""
        cuts = sum(1 for b in rec.backoffs if b[3].startswith("MALA acceptance"))
        if not check_acceptance or cuts >= MAX_CUTS:
            return None
        if spent + loop.t > targets.max_steps / 2:  # too late to re-equilibrate: keep the run, the result warns
            return None
        keep = [i for i, t in enumerate(loop.acceptance_steps) if t >= start]
        if len(keep) < MIN_MONITORED:
            return None
        acc = float(loop.acceptance[:, keep].nanmean())
        if not acc < MIN_ACCEPTANCE:
            return None
        factor = ((1 - TARGET_ACCEPTANCE) / max(1 - acc, 1e-12)) ** (2 / 3)
        new = rec.step_size * min(max(factor, 0.1), 0.7)
        where = "over the draws" if phase == "draws" else "over the second half of the burn-in"
        return new, (f"MALA acceptance {acc:.2f} < {MIN_ACCEPTANCE} {where}: the calibrated step is too large "
                     "for the spread-out chains")

    while True:
        if chunk_end is None:  # decide the next chunk from what has run
            if phase == "burnin":
                b0 = rec.burnin_start
                tb = loop.t - b0  # burn-in steps at the current step size
                cut = too_large(b0 + tb // 2) if tb >= targets.min_burnin else None
                if cut is not None:
                    cut_here(*cut)
                    continue
                if num_burnin is not None:
                    if tb >= num_burnin:
                        rec.burnin_end, phase = b0 + num_burnin, "draws"
                        continue
                    chunk_end = b0 + num_burnin
                else:
                    floor = burnin_floor(rec.step_size, _localization(loop), targets.max_steps)
                    hold = max(rec.hold_from, 0)  # the stationarity window starts after V is held
                    if tb >= max(targets.min_burnin, floor) and b0 + tb // 2 >= hold and not stationary(
                            *llc_dist(b0 + tb // 2), targets.burnin_max_abs_z, targets.max_rhat):
                        rec.burnin_end, phase = b0 + max(tb // 2, floor), "draws"
                        continue
                    chunk_end = max(b0 + max(targets.min_burnin, 2 * tb, floor), 2 * hold)
            else:
                cut = too_large(rec.burnin_end)
                if cut is not None:
                    cut_here(*cut)
                    continue
                n = loop.t - rec.burnin_end
                if num_draws is not None:
                    if n >= num_draws:
                        break
                    chunk_end = rec.burnin_end + num_draws
                else:
                    llc, dist = llc_dist(rec.burnin_end)
                    rec.unmet = unmet_targets(llc, dist, targets)
                    if not rec.unmet:
                        rec.converged = True
                        break
                    if n >= 400 and stationary(llc, dist, targets.max_abs_z, targets.max_rhat):
                        rec.burnin_end += n // 2  # the early draws were not equilibrated: more burn-in
                        llc = llc[:, n // 2:]
                    chunk_end = loop.t + (_next_chunk(llc, targets) if llc.shape[1] >= 8 else 100)
        budget = targets.max_steps - spent
        if num_burnin is not None and num_draws is not None:  # fixed lengths are asked for: max_steps is an adaptive run's budget
            budget = max(budget, rec.burnin_start + num_burnin + num_draws)
        # the wall clock is read after this call's first block of steps, so every call (a resumed one
        # too) makes progress; max_seconds is refused for distributed runs (the processes would stop at
        # different steps)
        if loop.t >= budget or (targets.max_seconds is not None and advanced
                                and time.monotonic() - t0 > targets.max_seconds):
            break
        chunk_end = min(chunk_end, budget)
        every = checkpoint_every or 50
        steps = min(every - loop.t % every, chunk_end - loop.t)
        div = loop.advance(steps)
        advanced = True
        if div is not None:
            t, chains, reason = div
            if backoff and sum(1 for b in rec.backoffs if not b[3].startswith("MALA acceptance")) < MAX_BACKOFFS:
                restart(rec.step_size / BACKOFF, t, reason)
                continue
            save()
            rec.steps_total = spent + loop.t
            if on_divergence is not None:
                on_divergence(loop.run_record(chains), t, chains, reason, rec.step_size, rec)
            raise AssertionError("on_divergence must raise")  # pragma: no cover
        if loop.t >= chunk_end:
            chunk_end = None
            healthy = loop.state_dict()
        if ckpt is not None:
            due = bool(checkpoint_every) or time.monotonic() - last_save[0] > 60.0
            if agree(due) if agree is not None else due:
                save()
    ran_out = phase == "burnin"
    if ran_out:  # the budget ran out during burn-in: keep the second half (at the current step) as draws
        save()  # resumable as it stands: still in burn-in, its end not yet set
        if (loop.t - rec.burnin_start) // 2 < 8:
            raise ValueError(
                f"the budget (max_steps = {targets.max_steps}" + (f", max_seconds = {targets.max_seconds:g}"
                                                                  if targets.max_seconds is not None else "")
                + f") ran out after {loop.t - rec.burnin_start} burn-in steps, too few to keep any draws; raise it"
                + (" (resume=True continues from the checkpoint)" if ckpt is not None else ""))
        rec.burnin_end = rec.burnin_start + (loop.t - rec.burnin_start) // 2
        if 0 <= rec.hold_from < loop.t - 16:  # draws with V held, if there are enough
            rec.burnin_end = max(rec.burnin_end, rec.hold_from)
    budget = (f"the budget (max_steps = {targets.max_steps}"
              + (f", max_seconds = {targets.max_seconds:g}" if targets.max_seconds is not None else "") + ") ran out")
    rec.unmet = ([budget + " during burn-in"] if ran_out else []) + unmet_targets(*llc_dist(rec.burnin_end), targets)
    if num_draws is None and rec.unmet and not ran_out:
        rec.unmet.insert(0, budget)
    rec.converged = not rec.unmet
    rec.steps_total = spent + loop.t
    if not ran_out:
        save()
    return loop.run_record(), rec
