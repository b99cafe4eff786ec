"""Choosing the SGLD step size from short pilot runs, and checking the localization γ.

Rule (stated in every result, :attr:`StepSizeCalibration.rule`): run one short pilot chain per
candidate step size ε_k = top·10^(−k/4), k = 0..K−1 (K = 17), top = min(10/nβ, 2/(nβ·h_max(w*) + γ)) (all candidates vectorised together, from w*,
same seed); discard the first half of each pilot; pick the LARGEST ε whose pilot did not diverge and
whose mean Metropolis-adjusted (MALA) acceptance probability of the proposed SGLD moves is at least
``target_acceptance`` (0.95 by default). The acceptance measures how well one Langevin step resolves
the localized posterior (Roberts & Tweedie 1996; docs/theory.md §1 "≳ 0.9 healthy"); larger steps mix
faster but bias the stationary distribution, smaller ones waste draws.

The acceptance rule alone is not enough (checked here on a d-dimensional Gaussian, ULA at its
stationary law): in d = 1 the acceptance still reads 0.945 at ε·h = 0.8, where ULA's E[K] is 25% too
large; in d = 31, 0.95 at ε·h = 0.2 (5%). So the rule also caps ε by a curvature bound: on a quadratic,
ULA's stationary variance along an eigen-direction is 1/(h_U·(1 − ε·h_U/4)), h_U = nβ·h + γ, so
ε ≤ 0.1/h_U,max keeps the bias ≤ 2.6% in the stiffest direction (and less in the others). At 0.2
the 1-D Gaussian ½w² came out 6.4% high (5.3% expected), too much for a default. h_U,max is found by power iteration at w*
and at the end points of the healthy pilots: a degenerate model has little curvature at w* and more
in the valleys the chains reach, which is where a step chosen at w* alone diverged (issue 10).
Summed over directions, ULA's bias of λ̂ = ½Σ_i nβh_i/h_U,i is Σ_i ½·(nβh_i/h_U,i)·(ε·h_U,i/4) =
ε·nβ·tr(H)/8 (to first order in ε; γ drops out), so the rule caps ε at 0.2·λ_ref/(nβ·tr H) (bias
≤ 2.5% of λ_ref; tr H by Hutchinson's estimator) with λ_ref the larger of the pilots' λ̂ and the
quadratic lower bound ½·nβ·tr H/h_U,max ≤ λ (so the cap is never below 0.1/h_U,max, the 2.6%-per-
direction bound), and, for stability, at 0.5/h_U,max; without a trace it falls back to 0.1/h_U,max.

γ check: under the localized posterior the prior term alone gives E‖w − w*‖² = d/γ. When the pilot's
mean ‖w − w*‖² at the chosen ε exceeds half of that, the localization — not the loss — confines the
chain and the estimate is pulled towards 0 (docs/theory.md §1: γ = 100 takes ½w1²w2⁴ from 0.22 to 0.002);
the calibration then records a warning telling the user to lower γ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

from ._chains import SGLDDivergenceError, _Problem, run_chains
from ._setup import _prepare
from .threads import choose_num_threads, intra_op_threads

__all__ = ["StepSizeCalibration", "calibrate_step_size"]

BIAS_TARGET = 0.025  # the step-size bias of λ̂ the bound allows, relative to the pilots' λ̂
STIFF_CAP = 0.5  # ε·h_U,max ≤ 0.5 in any case (ULA's bias in the stiffest direction ≤ 14%)
FALLBACK = 0.1  # ε·h_U,max ≤ 0.1 when the trace bound cannot be formed (≤ 2.6% in every direction)

RULE = (
    "largest ε on the grid top·10^(−k/4), top = min(10/nβ, 2/(nβ·h_max(w*) + γ)), whose pilot (after discarding its first half) has mean MALA "
    "acceptance ≥ {target} and no divergence, capped by the curvature bias bound ε ≤ 0.2·λ_ref/(nβ·tr H) "
    "(ULA's bias of λ̂ ≈ ε·nβ·tr H/8 ≤ 2.5% of λ_ref = max(pilots' λ̂, ½·nβ·tr H/(nβ·h_max + γ))) and "
    "ε ≤ 0.5/(nβ·h_max + γ), with tr H and h_max the largest Hessian trace and eigenvalue at w* and at the "
    "healthy pilots' end points"
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
        acceptance_step_size: the ε the acceptance rule alone picks.
        bias_bound_step_size: the curvature bias bound (module docstring).
        max_curvature: h_max, the largest Hessian eigenvalue of L found at w* and the pilots' end points.
        max_trace: the largest Hessian trace (Hutchinson, 8 probes) at the same points.
        pilot_llc: λ̂ of the pilots at and below the acceptance step (median), capped at d/2.
    """

    step_size: float
    rule: str
    candidates: tuple[float, ...]
    acceptance: tuple[float, ...]
    diverged: tuple[bool, ...]
    localization_ratio: float
    warnings: tuple[str, ...]
    pilot_steps: int
    acceptance_step_size: float = math.nan
    bias_bound_step_size: float = math.nan
    max_curvature: float = math.nan
    max_trace: float = math.nan
    pilot_llc: float = math.nan


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
    sampler: str = "sgld",
) -> StepSizeCalibration:
    if pilot_steps < 8:
        raise ValueError(f"pilot_steps must be ≥ 8, got {pilot_steps}")
    if not 0 < target_acceptance < 1:
        raise ValueError(f"target_acceptance must lie in (0, 1), got {target_acceptance}")
    # The grid's top: 10/nβ, or the ULA stability limit 2/(nβ·h_max(w*) + γ) of the stiffest direction at w*
    # when that is smaller (a stiff model, e.g. a deep linear network with O(1) weights, diverges on the
    # whole 1/nβ-anchored grid otherwise).
    h0, _ = _max_curvature(problem, problem.w0[None], batch_size, probes=0)
    top = 10.0 / nbeta
    if math.isfinite(h0) and h0 > 0:
        top = min(top, 2.0 / (nbeta * h0 + localization))
    cands = torch.tensor([top * 10.0 ** (-k / 4) for k in range(num_candidates)], dtype=torch.float64)
    eps = cands.to(device=problem.w0.device, dtype=problem.w0.dtype)
    # The pilot must not stop at the first divergent candidate: divergent candidates are parked at w*
    # and marked.
    run = run_chains(problem, num_chains=num_candidates, num_draws=pilot_steps // 2, num_burnin=pilot_steps - pilot_steps // 2,
                     step_size=eps, localization=localization, nbeta=nbeta, batch_size=batch_size, seed=seed,
                     mala_every=1, divergence_threshold=divergence_threshold, stop_on_divergence=False,
                     sampler="rmsprop" if sampler == "rmsprop" else "sgld")  # MALA is calibrated by SGLD pilots
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
    # curvature-based bias bound: ULA on a quadratic inflates each direction's E[nβK] by 1/(1 − ε·h_U/4), so
    # ε ≤ 0.1/h_U,max keeps the step-size bias ≤ 2.6% in every direction; h_U,max is measured at w* and at the
    # end points of the healthy pilots (dispersed over the posterior, where a degenerate model's valleys are
    # stiffer than at w*)
    acc_choice = float(cands[choice])
    healthy_pts = [int(c) for c in torch.nonzero(~diverged).reshape(-1) if int(c) >= choice][:4]
    points = torch.cat([problem.w0[None], run.final_w[healthy_pts]]) if healthy_pts else problem.w0[None]
    h_max, tr_max = _max_curvature(problem, points, batch_size)
    late = nbeta * (run.losses[healthy_pts, half:] - run.baseline).mean(1) if healthy_pts else torch.zeros(0)
    pilot_llc = min(float(late.median()), problem.num_sampled / 2) if late.numel() else math.nan
    hu = nbeta * h_max + localization
    if math.isfinite(h_max) and hu > 0:
        if math.isfinite(tr_max) and tr_max > 0:
            # ULA on a quadratic: Σ_i ½·nβh_i/h_U,i · ε·h_U,i/4 = ε·nβ·tr H/8 is λ̂'s step-size bias, and
            # λ = ½Σ_i nβh_i/h_U,i ≥ ½·nβ·tr H/h_U,max: the reference λ is the larger of that bound and the pilots'
            reference = max(pilot_llc if math.isfinite(pilot_llc) else 0.0, 0.5 * nbeta * tr_max / hu)
            bias_eps = min(8 * BIAS_TARGET * reference / (nbeta * tr_max), STIFF_CAP / hu)
        else:
            bias_eps = FALLBACK / hu
    else:
        bias_eps = math.inf
    step = min(acc_choice, bias_eps)
    d = problem.num_sampled
    ratio = float(run.dist2[choice, half:].mean()) / (d / localization) if localization > 0 else 0.0
    if ratio > 0.5:
        warnings.append(
            f"the localization dominates: mean ‖w − w*‖² is {ratio:.2f}·(d/γ) at γ = {localization}, so γ, not the "
            "loss, confines the chain and the estimate is biased towards 0; lower localization"
        )
    return StepSizeCalibration(
        float(step), RULE.format(target=target_acceptance), tuple(float(c) for c in cands),
        tuple(float(a) for a in acc), tuple(bool(x) for x in diverged), ratio, tuple(warnings), pilot_steps,
        acc_choice, bias_eps, h_max, tr_max, pilot_llc,
    )


def _max_curvature(problem: _Problem, points: Tensor, batch_size: int, iterations: int = 30,
                   probes: int = 8) -> tuple[float, float]:
    """Largest |eigenvalue| of ∇²L over ``points`` (P, d) by power iteration with Hessian-vector products.

    Forward-over-reverse HVPs (central differences of gradients where forward mode is missing), on the
    first ``batch_size`` samples (streamed data: the first batch).

    Returns:
        (the largest |eigenvalue|, the largest Hutchinson trace estimate with ``probes`` Rademacher
        vectors) over the points; nan where they cannot be evaluated.
    """
    P, d = points.shape
    mask = problem.mask
    streamed = problem.chain_value_and_grad is not None
    if streamed:  # batches given by the user: the first one, each point's gradient by one reverse pass

        def g(W: Tensor) -> Tensor:
            out = problem.chain_value_and_grad(W, [problem.batches[0]] * W.shape[0])[1]
            return out * mask if mask is not None else out
    else:
        batch = tuple(t[:batch_size] for t in problem.data)
        f = problem.batch_loss if problem.vectorised else vmap(problem.batch_loss, in_dims=(0,) + (None,) * len(batch))

        def g(W: Tensor) -> Tensor:
            L, pull = vjp(lambda w: f(w, *batch), W)
            out = pull(torch.ones_like(L))[0]
            return out * mask if mask is not None else out

    def hvp(W: Tensor, V: Tensor) -> Tensor:
        try:
            if streamed:
                raise NotImplementedError
            return jvp(g, (W,), (V,))[1]
        except (RuntimeError, NotImplementedError):
            delta = 1e-4 * max(1.0, float(W.abs().max()))
            return (g(W + delta * V) - g(W - delta * V)) / (2 * delta)

    gen = torch.Generator(device="cpu").manual_seed(0)
    V = torch.randn(P, d, generator=gen, dtype=torch.float64).to(device=points.device, dtype=points.dtype)
    if mask is not None:
        V = V * mask
    V = V / V.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    lam = torch.zeros(P, dtype=torch.float64)
    try:
        for _ in range(iterations):
            HV = hvp(points, V).detach()
            lam = (V * HV).sum(-1).double().abs().cpu()
            V = HV / HV.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        if probes == 0:
            value = float(lam.max())
            return (value if math.isfinite(value) else math.nan), math.nan
        R = (torch.randint(0, 2, (P * probes, d), generator=gen) * 2 - 1).to(device=points.device, dtype=points.dtype)
        if mask is not None:
            R = R * mask
        HR = hvp(points.repeat_interleave(probes, 0), R).detach()
        trace = float((R * HR).sum(-1).double().cpu().reshape(P, probes).mean(1).max())
    except Exception:  # noqa: BLE001 - the bound is an extra safeguard; without it the acceptance rule stands
        return math.nan, math.nan
    value = float(lam.max())
    return (value if math.isfinite(value) else math.nan), (trace if math.isfinite(trace) else math.nan)


def calibrate_step_size(model, loss_fn, data, **kwargs) -> StepSizeCalibration:
    """Pick the SGLD step size for ``estimate_llc(model, loss_fn, data, ...)`` by the rule above.

    Args:
        model: the network at w*.
        loss_fn: as :func:`slt_interp.estimators.estimate_llc`.
        data: as :func:`slt_interp.estimators.estimate_llc`.
        **kwargs: the keyword arguments of :func:`slt_interp.estimators.estimate_llc` that define the
            posterior (``nbeta``, ``localization``, ``batch_size``, ``params``, ``seed``, ``device``,
            ``num_threads``) and ``pilot_steps``, ``target_acceptance``.

    Returns:
        A :class:`StepSizeCalibration`.

    Example:
        >>> from slt_interp.theory import zoo
        >>> m = zoo.reduced_rank_model(2, 2, 2, 1)
        >>> cal = calibrate_step_size(m.model, m.loss_fn, m.sample(1000, seed=0), pilot_steps=40)
        >>> 0 < cal.step_size < 1
        True
    """
    pilot = {k: kwargs.pop(k) for k in ("pilot_steps", "target_acceptance") if k in kwargs}
    problem, s = _prepare(model, loss_fn, data, **kwargs)
    threads = choose_num_threads(problem.w0.device, 17 * s["batch_size"] * problem.num_sampled, s.get("num_threads"))
    with intra_op_threads(threads):
        problem.check()
        return _calibrate(problem, nbeta=s["nbeta"], localization=s["localization"], batch_size=s["batch_size"],
                          seed=s["seed"], divergence_threshold=s["divergence_threshold"], **pilot)
