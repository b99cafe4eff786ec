"""Choosing the SGLD step size from short pilot runs, and checking the localization γ.

Rule (stated in every result, :attr:`StepSizeCalibration.rule`): run one short pilot chain per
candidate step size ε_k = 10^(1 − k/4)/nβ, k = 0..K−1 (K = 17) (all candidates vectorised together, from w*,
same seed); discard the first half of each pilot; pick the LARGEST ε whose pilot did not diverge and
whose mean Metropolis-adjusted (MALA) acceptance probability of the proposed SGLD moves is at least
``target_acceptance`` (0.95 by default). The acceptance measures how well one Langevin step resolves
the localized posterior (Roberts & Tweedie 1996; docs/theory.md §1 "≳ 0.9 healthy"); larger steps mix
faster but bias the stationary distribution, smaller ones waste draws.

γ check: under the localized posterior the prior term alone gives E‖w − w*‖² = d/γ. When the pilot's
mean ‖w − w*‖² at the chosen ε exceeds half of that, the localization — not the loss — confines the
chain and the estimate is pulled towards 0 (docs/theory.md §1: γ = 100 takes ½w1²w2⁴ from 0.22 to 0.002);
the calibration then records a warning telling the user to lower γ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._chains import SGLDDivergenceError, _Problem, run_chains

__all__ = ["StepSizeCalibration", "calibrate_step_size"]

RULE = (
    "largest ε on the grid 10^(1 − k/4)/nβ whose pilot (after discarding its first half) has mean MALA "
    "acceptance ≥ {target} and no divergence"
)


@dataclass(frozen=True)
class StepSizeCalibration:
    """The outcome of :func:`calibrate_step_size`.

    Attributes:
        step_size: the chosen ε.
        rule: the rule that chose it, in words.
        candidates: the step sizes tried (largest first).
        acceptance: mean MALA acceptance of each candidate's pilot (nan if it diverged).
        diverged: whether each candidate's pilot diverged.
        localization_ratio: mean ‖w − w*‖² / (d/γ) of the chosen pilot (> 0.5: γ dominates).
        warnings: problems found (γ too strong, no candidate reaching the target, ...).
        pilot_steps: steps per pilot.
    """

    step_size: float
    rule: str
    candidates: tuple[float, ...]
    acceptance: tuple[float, ...]
    diverged: tuple[bool, ...]
    localization_ratio: float
    warnings: tuple[str, ...]
    pilot_steps: int


def _calibrate(
    problem: _Problem,
    *,
    nbeta: float,
    localization: float,
    batch_size: int,
    seed: int,
    divergence_threshold: float,
    pilot_steps: int = 200,
    num_candidates: int = 17,
    target_acceptance: float = 0.95,
) -> StepSizeCalibration:
    if pilot_steps < 8:
        raise ValueError(f"pilot_steps must be ≥ 8, got {pilot_steps}")
    if not 0 < target_acceptance < 1:
        raise ValueError(f"target_acceptance must lie in (0, 1), got {target_acceptance}")
    cands = torch.tensor([10.0 ** (1 - k / 4) / nbeta for k in range(num_candidates)], dtype=torch.float64)
    eps = cands.to(device=problem.w0.device, dtype=problem.w0.dtype)
    # The pilot must not stop at the first divergent candidate: divergent candidates are parked at w*
    # and marked.
    run = run_chains(problem, num_chains=num_candidates, num_draws=pilot_steps // 2, num_burnin=pilot_steps - pilot_steps // 2,
                     step_size=eps, localization=localization, nbeta=nbeta, batch_size=batch_size, seed=seed,
                     mala_every=1, divergence_threshold=divergence_threshold, stop_on_divergence=False)
    half = pilot_steps - pilot_steps // 2
    late = run.acceptance[:, half:]
    diverged = torch.tensor(run.diverged)
    acc = torch.where(diverged, torch.full_like(late[:, 0], float("nan")), late.mean(1))
    ok = (~diverged) & (acc >= target_acceptance)
    warnings: list[str] = []
    if bool(ok.any()):
        choice = int(torch.nonzero(ok)[0])
    else:
        healthy = torch.nonzero(~diverged).reshape(-1)
        if len(healthy) == 0:
            raise SGLDDivergenceError(
                "every pilot step size diverged (down to "
                f"{float(cands[-1]):.3g}): the loss is not locally bounded below near w* or nβ = {nbeta:.4g} is far "
                "too large; check w* (is it a minimum?), raise localization, or pass a step_size explicitly"
            )
        choice = int(healthy[-1])
        warnings.append(
            f"no candidate reached MALA acceptance {target_acceptance}; using the smallest healthy step size "
            f"{float(cands[choice]):.3g} (acceptance {float(acc[choice]):.3f}); pass a smaller step_size"
        )
    d = problem.num_sampled
    ratio = float(run.dist2[choice, half:].mean()) / (d / localization) if localization > 0 else 0.0
    if ratio > 0.5:
        warnings.append(
            f"the localization dominates: mean ‖w − w*‖² is {ratio:.2f}·(d/γ) at γ = {localization}, so γ, not the "
            "loss, confines the chain and the estimate is biased towards 0; lower localization"
        )
    return StepSizeCalibration(
        float(cands[choice]), RULE.format(target=target_acceptance), tuple(float(c) for c in cands),
        tuple(float(a) for a in acc), tuple(bool(x) for x in diverged), ratio, tuple(warnings), pilot_steps,
    )


def calibrate_step_size(model, loss_fn, data, **kwargs) -> StepSizeCalibration:
    """Pick the SGLD step size for ``estimate_llc(model, loss_fn, data, ...)`` by the rule above.

    Accepts the keyword arguments of :func:`slt_interp.estimators.estimate_llc` that define the posterior
    (``nbeta``, ``localization``, ``batch_size``, ``params``, ``seed``, ``device``) and
    ``pilot_steps``, ``target_acceptance``. Returns a :class:`StepSizeCalibration`.

    Example:
        >>> from theory import zoo
        >>> m = zoo.reduced_rank_model(2, 2, 2, 1)
        >>> cal = calibrate_step_size(m.model, m.loss_fn, m.sample(1000, seed=0), pilot_steps=40)
        >>> 0 < cal.step_size < 1
        True
    """
    from .llc_estimate import _prepare

    pilot = {k: kwargs.pop(k) for k in ("pilot_steps", "target_acceptance") if k in kwargs}
    problem, s = _prepare(model, loss_fn, data, **kwargs)
    return _calibrate(problem, nbeta=s["nbeta"], localization=s["localization"], batch_size=s["batch_size"],
                      seed=s["seed"], divergence_threshold=s["divergence_threshold"], **pilot)
