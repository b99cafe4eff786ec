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
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from torch import Tensor, nn

from ._chains import ParamSelection, SGLDDivergenceError, _Problem, _Run, materialize, model_problem, potential_problem, run_chains
from .calibration import StepSizeCalibration, _calibrate
from .diagnostics import effective_sample_size, geweke_z, mean_std_err, split_rhat
from .losses import behavioral_kl, behavioral_mse

__all__ = [
    "SGLDSettings",
    "LLCDiagnostics",
    "LLCEstimate",
    "SGLDDivergenceError",
    "estimate_llc",
    "estimate_behavioral_llc",
    "estimate_potential_llc",
]


@dataclass(frozen=True)
class SGLDSettings:
    """The settings an estimate was made with (units in the names).

    ``step_size`` is ε in parameter units² per step; ``nbeta`` = nβ; ``num_samples`` = n;
    ``num_sampled_params`` the number of coordinates that moved (weight refinement);
    ``mala_every``: the MALA acceptance was measured every that many steps (one extra gradient then).
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

    @property
    def llc_traces(self) -> Tensor:
        """nβ·(L(w_t) − L_n(w*)) after burn-in, (C, num_draws)."""
        return self.settings.nbeta * (self.loss_traces - self.baseline_loss)

    def __repr__(self) -> str:
        d = self.diagnostics
        return (
            f"LLCEstimate({self.mean:.4g} ± {self.std_err:.2g}, {self.settings.num_chains} chains × "
            f"{self.settings.num_draws} draws, {self.settings.sampler.upper()} ε = {self.settings.step_size:.3g}, γ = {self.settings.localization:g}, "
            f"nβ = {self.settings.nbeta:.4g}; R̂ {d.rhat:.3f}, ESS {d.ess:.0f}, MALA {d.mala_acceptance:.3f})"
        )

    def plot(self, ax=None, title: str | None = None):
        """Plot nβ·(L(w_t) − L*) per chain over all steps (burn-in shaded) and the estimate ± 2 SE.

        Returns the matplotlib Figure.
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


# --------------------------------------------------------------------------------------------
# Settings handling
# --------------------------------------------------------------------------------------------
def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return value


def _settings(problem: _Problem, *, nbeta, localization, batch_size, seed, divergence_threshold, default_batch=None,
              sampler="sgld"):
    n = problem.num_samples
    if sampler not in ("sgld", "mala"):
        raise ValueError(f"sampler must be 'sgld' (stochastic gradient Langevin) or 'mala' (Metropolis-adjusted, "
                         f"full batch), got {sampler!r}")
    if sampler == "mala":
        if problem.has_data and batch_size is not None and batch_size < n:
            raise ValueError(f"sampler='mala' uses full-batch gradients (the Metropolis test needs the exact "
                             f"potential), but batch_size = {batch_size} < n = {n}; leave batch_size=None or use "
                             "sampler='sgld' for minibatches")
        batch_size = n
    nb = float(nbeta) if nbeta is not None else n / math.log(n)
    if not (math.isfinite(nb) and nb > 0):
        raise ValueError(f"nbeta must be a positive number, got {nbeta!r}")
    if not (localization >= 0 and math.isfinite(localization)):
        raise ValueError(f"localization γ must be ≥ 0 and finite, got {localization!r}")
    if batch_size is None:
        batch_size = default_batch if default_batch is not None else min(n, 512)
    _check_positive_int("batch_size", batch_size)
    if problem.has_data and batch_size > n:
        raise ValueError(f"batch_size {batch_size} exceeds the number of samples n = {n}; use batch_size ≤ n")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    thr = float(divergence_threshold) if divergence_threshold is not None else 1e4 * max(1.0, problem.num_sampled / 2)
    return dict(nbeta=nb, localization=float(localization), batch_size=min(batch_size, n), seed=seed, divergence_threshold=thr)


def _prepare(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data,
    *,
    nbeta: float | None = None,
    localization: float = 1.0,
    batch_size: int | None = None,
    params: ParamSelection = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    divergence_threshold: float | None = None,
    sampler: str = "sgld",
) -> tuple[_Problem, dict]:
    tensors, loader_batch = materialize(data)
    problem = model_problem(model, loss_fn, tensors, params=params, device=device,
                            description=getattr(loss_fn, "__name__", type(loss_fn).__name__))
    s = _settings(problem, nbeta=nbeta, localization=localization, batch_size=batch_size, seed=seed,
                  divergence_threshold=divergence_threshold, default_batch=loader_batch, sampler=sampler)
    s["sampler"] = sampler
    return problem, s


def _summarise(run: _Run, problem: _Problem, s: dict, *, num_chains, num_draws, num_burnin, step_size, mala_every,
               loss_name: str, calibration: StepSizeCalibration | None, chains: slice | Tensor | None = None) -> LLCEstimate:
    losses = run.losses if chains is None else run.losses[chains]
    b = min(num_burnin, losses.shape[1])
    post = losses[:, b:]
    llc = s["nbeta"] * (post - run.baseline)
    mean, se, per_chain, per_chain_se = mean_std_err(llc)
    ess = effective_sample_size(llc)
    acc_rows = run.acceptance if chains is None else run.acceptance[chains]
    after = run.acceptance_steps >= num_burnin
    acc = acc_rows[:, after] if bool(after.any()) else acc_rows
    acc_chain = acc.nanmean(dim=1) if acc.numel() else torch.full((llc.shape[0],), float("nan"))
    dist = (run.dist2 if chains is None else run.dist2[chains])[:, b:]
    ratio = float(dist.mean()) / (problem.num_sampled / s["localization"]) if s["localization"] > 0 else 0.0
    rhat = split_rhat(llc) if llc.shape[0] > 1 else float("nan")
    warns = list(calibration.warnings) if calibration is not None else []
    if llc.shape[0] > 1 and rhat > 1.05:
        warns.append(f"R̂ = {rhat:.3f} > 1.05: chains disagree; raise num_burnin/num_draws or check the step size")
    if float(ess.sum()) < 400:
        warns.append(f"only {float(ess.sum()):.0f} effective draws (< 400): raise num_draws for a reliable standard error")
    sampler = s.get("sampler", "sgld")
    if sampler == "sgld" and float(acc_chain.nanmean()) < 0.9:
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
    dev = problem.w0.device
    settings = SGLDSettings(
        num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, step_size=float(step_size),
        localization=s["localization"], nbeta=s["nbeta"], num_samples=problem.num_samples, batch_size=s["batch_size"],
        seed=s["seed"], num_sampled_params=problem.num_sampled, mala_every=mala_every,
        divergence_threshold=s["divergence_threshold"], device=str(dev), dtype=str(problem.w0.dtype).replace("torch.", ""),
        loss=loss_name, sampler=sampler,
    )
    diag = LLCDiagnostics(
        rhat=rhat, ess=float(ess.sum()), ess_per_chain=tuple(float(e) for e in ess),
        mala_acceptance=float(acc_chain.nanmean()), mala_acceptance_per_chain=tuple(float(a) for a in acc_chain),
        diverged=tuple(False for _ in range(llc.shape[0])), localization_ratio=ratio, warnings=tuple(warns),
        stationarity_z=float(z), stationarity_z_per_chain=tuple(float(v) for v in z_chain),
    )
    return LLCEstimate(mean, se, per_chain, per_chain_se, run.baseline, post.clone(), losses[:, :b].clone(), diag,
                       settings, calibration)


def _estimate(
    problem: _Problem,
    s: dict,
    *,
    num_chains: int,
    num_draws: int,
    num_burnin: int | None,
    step_size: float | None,
    mala_every: int,
    checkpoint_path,
    checkpoint_every_draws: int,
    resume: bool,
    loss_name: str,
    noise_scale: float = 1.0,
) -> LLCEstimate:
    _check_positive_int("num_chains", num_chains)
    _check_positive_int("num_draws", num_draws, 4)
    if num_burnin is None:
        num_burnin = max(num_draws // 2, 1)
    _check_positive_int("num_burnin", num_burnin, 0)
    _check_positive_int("mala_every", mala_every, 0)
    _check_positive_int("checkpoint_every_draws", checkpoint_every_draws, 0)
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path (the file the interrupted run saved)")
    calibration = None
    if step_size is None:
        calibration = _calibrate(problem, nbeta=s["nbeta"], localization=s["localization"], batch_size=s["batch_size"],
                                 seed=s["seed"], divergence_threshold=s["divergence_threshold"])
        step_size = calibration.step_size
    elif not (isinstance(step_size, (int, float)) and not isinstance(step_size, bool) and step_size > 0 and math.isfinite(step_size)):
        raise ValueError(f"step_size must be a positive number (or None to calibrate), got {step_size!r}")

    def on_divergence(run: _Run, step: int, chains: tuple[int, ...], reason: str) -> None:
        healthy = torch.tensor([c not in chains for c in range(num_chains)])
        part = None
        if step - num_burnin >= 4 and bool(healthy.any()):
            part = _summarise(run, problem, s, num_chains=int(healthy.sum()), num_draws=step - num_burnin,
                              num_burnin=num_burnin, step_size=step_size, mala_every=mala_every, loss_name=loss_name,
                              calibration=calibration, chains=healthy)
        saved = f" The state before the divergence is saved in {checkpoint_path}." if checkpoint_path else ""
        kept = (f" The {int(healthy.sum())} healthy chains' {step - num_burnin} finished draws are in the "
                "exception's .partial estimate." if part is not None else "")
        raise SGLDDivergenceError(
            f"SGLD chain(s) {list(chains)} diverged at step {step} ({reason}). The likely cause is a step size "
            f"ε = {step_size:.3g} too large for the curvature of nβ·L (nβ = {s['nbeta']:.4g}), or a localization "
            f"γ = {s['localization']:g} too weak to hold the chain near w*: lower step_size (try {step_size / 10:.3g}, "
            "or pass step_size=None to calibrate it) or raise localization." + kept + saved,
            partial=part, step=step, chains=chains,
        )

    run = run_chains(problem, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, step_size=step_size,
                     localization=s["localization"], nbeta=s["nbeta"], batch_size=s["batch_size"], seed=s["seed"],
                     mala_every=mala_every, divergence_threshold=s["divergence_threshold"], noise_scale=noise_scale,
                     checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every_draws, resume=resume,
                     on_divergence=on_divergence, sampler=s.get("sampler", "sgld"))
    return _summarise(run, problem, s, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin,
                      step_size=step_size, mala_every=mala_every, loss_name=loss_name, calibration=calibration)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------
def estimate_llc(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data,
    *,
    num_chains: int = 4,
    num_draws: int = 2000,
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
    checkpoint_every_draws: int = 0,
    resume: bool = False,
    sampler: Literal["sgld", "mala"] = "sgld",
) -> LLCEstimate:
    """SGLD estimate of the local learning coefficient of ``loss_fn(model(x), y)`` at the model's
    current parameters w*: λ̂ = nβ·(E_w[L_n(w)] − L_n(w*)) (Lau et al. 2023, arXiv 2308.12108).

    Args:
        model: any ``nn.Module``; its current parameters are w* (not modified).
        loss_fn: ``loss_fn(prediction, target)`` returning the MEAN loss over the batch.
        data: ``(inputs, targets)`` tensors, a torch ``Dataset`` of (input, target) items, or a
            ``DataLoader`` (its data set is used; its batch size is the default ``batch_size``).
            Another data set than the training set gives the data-refined LLC.
        num_chains: independent chains, run together (vectorised).
        num_draws: draws per chain after burn-in (one per step).
        num_burnin: steps discarded at the start of every chain (default num_draws // 2).
        step_size: ε; None (default) calibrates it with :func:`slt_interp.estimators.calibrate_step_size`'s rule.
        localization: γ of the localizing prior (γ/2)‖w − w*‖².
        nbeta: nβ; default n/log n with n the number of samples in ``data``.
        batch_size: samples per SGLD gradient (default: the DataLoader's, else min(n, 512)).
        params: weight refinement: parameter names to sample, or name → boolean mask; others frozen.
        seed: the one seed all chains' noise and batch orders are spawned from.
        device: where to sample (default: the model's device). Data is moved there.
        mala_every: measure the MALA acceptance every that many steps (0: never; costs one gradient).
        divergence_threshold: a chain diverges when nβ·(L − L*) exceeds this (default 10⁴·max(1, d/2)).
        checkpoint_path: file to save the sampler state to (every ``checkpoint_every_draws`` draws, at
            the end, and before raising on a divergence).
        checkpoint_every_draws: 0 saves only at the end.
        resume: continue from ``checkpoint_path`` (same settings; ``num_draws`` may grow). The result
            equals an uninterrupted run.
        sampler: "sgld" (default: minibatch Langevin, never rejects, O(ε) bias) or "mala"
            (Metropolis-adjusted Langevin on the full batch: exact stationary law for every ε; the
            acceptance rate is ``diagnostics.mala_acceptance``; ``batch_size`` must be None or n).

    Returns:
        :class:`LLCEstimate`.

    Raises:
        SGLDDivergenceError: a chain diverged; the message names the cause and the setting to change,
            ``.partial`` keeps the estimate from the finished draws of the healthy chains.
        ValueError / TypeError: invalid settings or data, naming the fix.
    """
    problem, s = _prepare(model, loss_fn, data, nbeta=nbeta, localization=localization, batch_size=batch_size,
                          params=params, seed=seed, device=device, divergence_threshold=divergence_threshold,
                          sampler=sampler)
    return _estimate(problem, s, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, step_size=step_size,
                     mala_every=mala_every, checkpoint_path=checkpoint_path, checkpoint_every_draws=checkpoint_every_draws,
                     resume=resume, loss_name=f"LLC of {problem.description}")


def estimate_behavioral_llc(
    model: nn.Module,
    data,
    *,
    kind: Literal["mse", "kl"] = "mse",
    **kwargs,
) -> LLCEstimate:
    """SGLD estimate of the behavioral LLC: the LLC of L_B(w) = (1/n)·Σ_x ‖f(x; w) − f(x; w*)‖²
    (``kind="mse"``) or (1/n)·Σ_x KL(p(·|x, w*) ‖ p(·|x, w)) on softmax outputs (``kind="kl"``, for
    classifiers) (Bushnaq et al. 2024, arXiv 2405.10927, §2.2). L_B(w*) = 0.

    Args:
        model: the network at w*.
        data: the inputs: a tensor, a pair (inputs, anything), a Dataset or a DataLoader (only the
            first element of each item is used). Other inputs than the training set: data-refined.
        kind: "mse" or "kl".
        **kwargs: as :func:`estimate_llc` (num_chains, step_size, localization, params, ...).

    Returns:
        :class:`LLCEstimate`.
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
    with torch.no_grad():
        reference = model(xin).detach()
    problem, s = _prepare(model, losses[kind], (xin, reference), **{k: kwargs.pop(k) for k in list(kwargs) if k in (
        "nbeta", "localization", "batch_size", "params", "seed", "device", "divergence_threshold", "sampler")})
    return _estimate(problem, s, loss_name=f"behavioral LLC ({kind})", **_run_kwargs(kwargs))


def _run_kwargs(kwargs: dict) -> dict:
    allowed = {"num_chains": 4, "num_draws": 2000, "num_burnin": None, "step_size": None, "mala_every": 5,
               "checkpoint_path": None, "checkpoint_every_draws": 0, "resume": False}
    unknown = set(kwargs) - set(allowed)
    if unknown:
        raise TypeError(f"unknown setting(s) {sorted(unknown)}; allowed: {sorted(allowed)} and nbeta, localization, "
                        "batch_size, params, seed, device, divergence_threshold, sampler")
    return {k: kwargs.get(k, v) for k, v in allowed.items()}


def estimate_potential_llc(
    potential,
    num_samples: float,
    *,
    num_chains: int = 4,
    num_draws: int = 1000,
    num_burnin: int | None = None,
    step_size: float | None = None,
    localization: float = 1.0,
    nbeta: float | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    mala_every: int = 5,
    noise_scale: float = 1.0,
    sampler: Literal["sgld", "mala"] = "sgld",
    **kwargs,
) -> LLCEstimate:
    """SGLD estimate for a potential K (the population loss, K(0) = 0 at w* = 0) at "sample size" n:
    λ̂ = nβ·E_p[K], p ∝ exp(−nβK − (γ/2)‖w‖²). Its exact target is :func:`slt_interp.theory.finite_n_target`.

    Args:
        potential: a :class:`slt_interp.theory.zoo.Potential` (or any object with ``.fn`` and ``.dim``).
        num_samples: n, which sets nβ = n/log n unless ``nbeta`` is given.
        noise_scale: multiplies the Langevin noise (1: SGLD; 0: gradient descent — for tests only).
        sampler: "sgld" or "mala" (Metropolis-adjusted: no step-size bias), as :func:`estimate_llc`.
        other arguments: as :func:`estimate_llc`.
    """
    fn, dim = getattr(potential, "fn", None), getattr(potential, "dim", None)
    if fn is None or dim is None:
        raise TypeError(f"potential must be a slt_interp.theory.zoo.Potential (with .fn and .dim), got {type(potential).__name__}")
    if not num_samples > 1:
        raise ValueError(f"num_samples must be > 1 (β = 1/log n), got {num_samples}")
    problem = potential_problem(fn, dim, int(num_samples), dtype=dtype, device=device)
    s = _settings(problem, nbeta=nbeta, localization=localization, batch_size=1, seed=seed,
                  divergence_threshold=kwargs.pop("divergence_threshold", None), sampler=sampler)
    s["sampler"] = sampler
    if sampler == "mala" and noise_scale != 1.0:
        raise ValueError("noise_scale must be 1 with sampler='mala' (the Metropolis test assumes the Langevin proposal)")
    return _estimate(problem, s, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, step_size=step_size,
                     mala_every=mala_every, loss_name=f"potential {getattr(potential, 'name', '')}", noise_scale=noise_scale,
                     **{k: v for k, v in _run_kwargs(kwargs).items() if k in ("checkpoint_path", "checkpoint_every_draws", "resume")})
