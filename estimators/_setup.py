"""Settings of an LLC estimate, validated once, and the sampling problem built from the user's input.

Shared by :mod:`slt_interp.estimators.llc_estimate` and :mod:`slt_interp.estimators.calibration` (so that
neither imports the other).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ._adaptive import ConvergenceTargets
from ._chains import _Problem, model_problem
from .input_checks import ParamSelection, materialize
from ._minimum_check import check_on_nonminimum
from ._streaming import is_batch_stream, streaming_problem
from .threads import choose_num_threads


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return value


def _settings(problem: _Problem, *, nbeta, localization, batch_size, seed, divergence_threshold, default_batch=None,
              sampler="sgld", num_threads=None, on_nonminimum="warn"):
    n = problem.num_samples
    if sampler not in ("sgld", "mala", "rmsprop"):
        raise ValueError(f"sampler must be 'sgld' (stochastic gradient Langevin), 'mala' (Metropolis-adjusted, "
                         f"full batch) or 'rmsprop' (RMSProp-preconditioned SGLD), got {sampler!r}")
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
    choose_num_threads(problem.w0.device, 0, num_threads)  # validates an explicit num_threads
    return dict(nbeta=nb, localization=float(localization), batch_size=min(batch_size, n), seed=seed, divergence_threshold=thr,
                num_threads=num_threads, on_nonminimum=check_on_nonminimum(on_nonminimum))


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
    num_threads: int | None = None,
    on_nonminimum: str = "warn",
) -> tuple[_Problem, dict]:
    description = getattr(loss_fn, "__name__", type(loss_fn).__name__) if loss_fn is not None else "model output .loss"
    if is_batch_stream(data):
        problem, loader_batch = streaming_problem(model, loss_fn, data, params=params, device=device,
                                                  batch_size=batch_size, description=description)
        if batch_size is not None and batch_size != loader_batch:
            raise ValueError(f"data is given as batches (of {loader_batch} samples); batch_size={batch_size} cannot "
                             "change them: leave batch_size=None or rebatch the DataLoader")
    else:
        if loss_fn is None:
            raise TypeError("loss_fn is None: give loss_fn(prediction, target), or dict batches whose model output "
                            "has a .loss (e.g. a Hugging Face model with labels in the batch)")
        tensors, loader_batch = materialize(data)
        problem = model_problem(model, loss_fn, tensors, params=params, device=device, description=description)
    s = _settings(problem, nbeta=nbeta, localization=localization, batch_size=batch_size, seed=seed,
                  divergence_threshold=divergence_threshold, default_batch=loader_batch, sampler=sampler,
                  num_threads=num_threads, on_nonminimum=on_nonminimum)
    s["sampler"] = sampler
    return problem, s


@dataclass(frozen=True)
class RunSettings:
    """Every setting of one estimate, validated and frozen before anything runs; the same object drives
    the chains, fills the result's :class:`SGLDSettings` and makes the checkpoint fingerprint.

    ``num_draws`` / ``num_burnin`` None: adaptive (``targets``); ``step_size`` None: calibrated.
    """

    sampler: str
    num_chains: int
    num_draws: int | None
    num_burnin: int | None
    step_size: float | None
    localization: float
    nbeta: float
    batch_size: int
    seed: int
    mala_every: int
    divergence_threshold: float
    noise_scale: float
    targets: ConvergenceTargets
    checkpoint_every: int | None
    num_threads: int | None
    on_nonminimum: str
    dtype: str
    device: str

    @property
    def adaptive_draws(self) -> bool:
        return self.num_draws is None

    @property
    def adaptive_burnin(self) -> bool:
        return self.num_burnin is None

    def fingerprint_items(self, step_size: float) -> dict:
        """What a resumed run must share: every setting that changes the draws (``num_draws`` may grow;
        threads, checkpoint interval and the non-minimum policy do not change them, nor does the
        wall-clock budget ``targets.max_seconds``, so a run stopped on it continues with a larger one)."""
        items = {k: v for k, v in asdict(self).items()
                 if k not in ("num_draws", "checkpoint_every", "num_threads", "on_nonminimum", "targets", "step_size")}
        items["step_size"] = float(step_size)
        items["num_draws_fixed"] = self.num_draws is not None
        items["targets"] = [f"{k}={v}" for k, v in asdict(self.targets).items() if k != "max_seconds"] if (
            self.adaptive_draws or self.adaptive_burnin) else None
        if self.sampler == "rmsprop":  # checkpoints of the earlier, always-adapting RMSProp do not resume
            items["preconditioner"] = "held after the first part of the burn-in"
        return items


def run_settings(problem: _Problem, s: dict, *, num_chains, num_draws, num_burnin, step_size, mala_every,
                 checkpoint_every, noise_scale, targets: ConvergenceTargets) -> RunSettings:
    """Validate the run settings and freeze them with the posterior settings ``s`` of :func:`_settings`."""
    _check_positive_int("num_chains", num_chains)
    if num_draws is not None:
        _check_positive_int("num_draws", num_draws, 4)
        if num_burnin is None:
            num_burnin = max(num_draws // 2, 1)
    if num_burnin is not None:
        _check_positive_int("num_burnin", num_burnin, 0)
    _check_positive_int("mala_every", mala_every, 0)
    if checkpoint_every is not None:
        _check_positive_int("checkpoint_every", checkpoint_every, 1)
    if step_size is not None and not (isinstance(step_size, (int, float)) and not isinstance(step_size, bool)
                                      and step_size > 0 and math.isfinite(step_size)):
        raise ValueError(f"step_size must be a positive number (or None to calibrate), got {step_size!r}")
    return RunSettings(
        sampler=s.get("sampler", "sgld"), num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin,
        step_size=None if step_size is None else float(step_size), localization=s["localization"], nbeta=s["nbeta"],
        batch_size=s["batch_size"], seed=s["seed"], mala_every=mala_every, divergence_threshold=s["divergence_threshold"],
        noise_scale=float(noise_scale), targets=targets, checkpoint_every=checkpoint_every,
        num_threads=s.get("num_threads"), on_nonminimum=s.get("on_nonminimum", "warn"),
        dtype=str(problem.w0.dtype).replace("torch.", ""), device=problem.w0.device.type)
