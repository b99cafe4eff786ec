"""Bounds on the local learning coefficient from the Taylor expansion of the loss at w*.

docs/theory.md §3 (splitting lemma; Watanabe 2009): with r = rank ∇²K(w*) and k = d − r,
r/2 ≤ λ ≤ d/2, sharpened by the order-4 analysis on the null space (:mod:`slt_interp.estimators.higher_order`).
"""
from __future__ import annotations

import math
import warnings
from fractions import Fraction
from typing import Callable

import torch
from torch import nn

from .curvature import HessianOperator
from .distributed import ShardedLoss
from .flat import Params
from .higher_order import sharpen_bounds
from .input_checks import materialize
from .lanczos import lanczos
from .llc_bounds_result import LLCBounds, NotAMinimumError, NotAMinimumWarning
from .model_losses import DataLoss, training_loss
from .rank_curve import threshold_for_sample_size
from .slq import count_eigenvalues
from .spectrum import dense_spectrum

__all__ = ["LLCBounds", "NotAMinimumWarning", "NotAMinimumError", "llc_bounds"]


_DEFAULT_SLQ_RTOL = 1e-3


def _nonnegative(name: str, value) -> None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number ≥ 0, got {value!r}")


def _as_loss_and_params(loss, params, data, batch_size):
    """Normalise the three accepted inputs to (loss, params) (see :func:`llc_bounds`)."""
    if isinstance(loss, nn.Module):
        if data is None or not callable(params):
            raise TypeError(
                "llc_bounds(model, loss_fn, data): pass the loss function loss_fn(prediction, target) second and "
                "the data (inputs, targets) third, as for estimate_llc"
            )
        tensors, loader_batch = materialize(data)  # the samplers' reader: tensors, a Dataset or a DataLoader
        if len(tensors) != 2:
            raise TypeError(f"data must hold (inputs, targets); got {len(tensors)} tensors per sample")
        return training_loss(loss, params, *tensors, batch_size=batch_size if batch_size is not None else loader_batch)
    if data is not None or batch_size is not None:
        raise TypeError("data= and batch_size= are for llc_bounds(model, loss_fn, data); a loss already holds its data")
    if not callable(loss):
        raise TypeError(f"loss must be callable (loss(params) -> scalar), a DataLoss or an nn.Module, got {type(loss).__name__}")
    if params is None:
        if isinstance(loss, (DataLoss, ShardedLoss)):
            return loss, loss.parameters()
        raise TypeError("params (w*) is required for a plain loss callable: llc_bounds(loss, params)")
    return loss, params


def llc_bounds(
    loss,
    params: Params | Callable | None = None,
    data=None,
    *,
    order: int = 2,
    threshold: float | None = None,
    rtol: float | None = None,
    num_samples: int | None = None,
    localization: float = 1.0,
    nbeta: float | None = None,
    method: str = "auto",
    max_dense_dim: int = 3000,
    num_probes: int = 32,
    max_steps: int | None = None,
    confidence: float = 0.95,
    grad_tol: float | None = None,
    on_nonminimum: str = "warn",
    mode: str = "auto",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> LLCBounds:
    """Bounds on the local learning coefficient from the rank of the Hessian at w*.

    Splitting lemma (Watanabe 2009, Algebraic Geometry and Statistical Learning Theory; docs/theory.md §3): at
    a local minimum, K(w) = |u|² + g(v) in analytic coordinates with u ∈ R^r, r = rank ∇²L(w*), so

        r/2 ≤ λ ≤ d/2,

    with equality (λ = d/2, a regular model) exactly when r = d. ``order=4`` sharpens the bounds with
    the quartic part on the null space (:func:`slt_interp.estimators.sharpen_bounds`).

    Inputs (the same kinds as :func:`slt_interp.estimators.estimate_llc`): ``llc_bounds(loss, params)``
    with any ``loss(params) -> scalar``; ``llc_bounds(data_loss)`` with a :class:`DataLoss` from
    :func:`slt_interp.estimators.training_loss` / :func:`slt_interp.estimators.behavioral_loss` (w* = the
    model's parameters); or ``llc_bounds(model, loss_fn, data)`` with ``data`` = (inputs, targets), a
    ``Dataset`` or a ``DataLoader`` of such pairs (the training loss, evaluated in batches of
    ``batch_size``).

    The rank is the number of eigenvalues above an explicit threshold τ, and the result's ``target``
    says which quantity the bounds are about:

    * ``num_samples=None`` (default): τ = rtol·max|λ| with rtol = d·ε(dtype) for the dense method (the
      LAPACK/numpy numerical-rank convention) and rtol = 1e-3 for the matrix-free method (resolvable by a
      few hundred Lanczos steps). The bounds are about λ, the n → ∞ coefficient (``target`` "λ (n → ∞)").
    * ``num_samples=n``: τ = γ/(nβ) with γ = ``localization`` and nβ = ``nbeta`` (default n/log n), the
      settings of :func:`slt_interp.estimators.estimate_llc`. The constant is 1: on a quadratic basin the
      localized SGLD target is ½·Σ nβh/(nβh + γ) (docs/theory.md §3, finite-data note), and h = γ/(nβ)
      is where a direction's share crosses one half — above it a direction counts more than half as
      "quadratic" at that n, below it more than half as flat. The rank at that τ (never below the
      floating-point threshold above) is then the number of directions that are effectively quadratic
      at n, and r/2 is what they contribute to the finite-n target; ``target`` names n, nβ and γ, and
      the statement that the bounds bracket the finite-n target is listed in ``observed`` (it holds for
      the quadratic approximation, not as a theorem about λ).

    Methods: "dense" (d ≤ ``max_dense_dim``): the Hessian assembled from d HVPs and diagonalised in
    float64. "slq" (larger d): the count by stochastic Lanczos quadrature with a confidence interval
    (:func:`slt_interp.estimators.count_eigenvalues`); its lower bound rests on sampling and is listed in
    ``observed``.

    The bounds need w* to be a local minimum. A gradient ‖∇L(w*)‖ > ``grad_tol`` or eigenvalues clearly
    below −τ trigger a :class:`NotAMinimumWarning` (``on_nonminimum="raise"``: :class:`NotAMinimumError`;
    "ignore": nothing); the result then has ``is_minimum=False`` and its ``repr`` says so. The default
    ``grad_tol`` = 16·ε(dtype)·max|λ|·max(1, ‖w*‖) is the rounding level of a gradient computed by
    automatic differentiation in that dtype (each term of ∇L ≈ H(w − w_c) has size ≲ max|λ|·‖w*‖, and
    reverse-mode AD has no truncation error), so a float32 and a float64 evaluation of the same model
    reach the same verdict whenever the true gradient is above float32's rounding level. The behavioral
    loss (:func:`slt_interp.estimators.behavioral_loss`) has w* as a minimum by construction.

    Args:
        loss: ``loss(params) -> scalar``, a :class:`DataLoss`, or an ``nn.Module`` (then ``params`` is
            ``loss_fn`` and ``data`` the data set).
        params: w*, a Tensor or a dict of Tensors; ``None`` for a DataLoss (its model's parameters);
            ``loss_fn(prediction, target)`` (mean over the batch) when ``loss`` is a model.
        data: (inputs, targets), a Dataset or a DataLoader (as for :func:`slt_interp.estimators.estimate_llc`), only when ``loss`` is
            a model; a DataLoader's batch size is the evaluation batch size unless ``batch_size`` is given.
        order: 2 (Hessian) or 4 (plus the quartic on the null space).
        threshold: τ, absolute; overrides ``rtol`` and ``num_samples``.
        rtol: τ relative to max|λ|; overrides ``num_samples``.
        num_samples: n, the sample size the bounds are compared at (see above); ``None``: n → ∞.
        localization: γ for the threshold from ``num_samples`` (default 1, as in estimate_llc).
        nbeta: nβ for the threshold from ``num_samples`` (default n/log n).
        method: "auto", "dense" or "slq".
        max_dense_dim: largest d for the dense method under "auto".
        num_probes: SLQ probe vectors.
        max_steps: SLQ Lanczos steps (``None``: grown until the count settles).
        confidence: SLQ confidence level of the rank interval.
        grad_tol: gradient-norm tolerance of the minimum check (default above).
        on_nonminimum: "warn", "raise" or "ignore".
        mode: how HVPs are computed ("auto", "forward", "reverse"; see :class:`slt_interp.estimators.HessianOperator`).
        batch_size: rows per batch, only for ``llc_bounds(model, loss_fn, data)``.
        generator: seeds the stochastic parts (``None``: a CPU generator with seed 0).

    Returns:
        :class:`LLCBounds`.

    Raises:
        TypeError: an input of the wrong kind (see the accepted inputs above), a loss that does not
            return a tensor depending on the parameters, non-floating parameters.
        ValueError: unsupported ``order``, ``method``, ``on_nonminimum``, negative threshold, a bad
            ``num_samples``, invalid params or data (NaN/inf, mismatched rows), a non-scalar loss.
        NotAMinimumError: with ``on_nonminimum="raise"`` at a non-minimum (a ValueError).
        NotImplementedError: ``order=4`` with a :class:`~slt_interp.estimators.ShardedLoss`.

    Example:
        >>> b = llc_bounds(lambda w: w[0] ** 2 + (w[1] * w[2]) ** 2, torch.zeros(3, dtype=torch.float64))
        >>> (b.lower, b.upper, b.rank)
        (Fraction(1, 2), Fraction(3, 2), 1)
    """
    if order not in (2, 4):
        raise ValueError(f"order must be 2 (Hessian) or 4 (with the quartic on the null space), got {order!r}")
    if method not in ("auto", "dense", "slq"):
        raise ValueError(f"method must be 'auto', 'dense' or 'slq', got {method!r}")
    if on_nonminimum not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_nonminimum must be 'warn', 'raise' or 'ignore', got {on_nonminimum!r}")
    _nonnegative("threshold", threshold)
    _nonnegative("rtol", rtol)
    _nonnegative("grad_tol", grad_tol)
    target, tau_n, nb = "λ (n → ∞)", None, None
    if num_samples is not None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
            raise ValueError(f"num_samples must be an int ≥ 2 (β = 1/log n needs n > 1), got {num_samples!r}")
        if not (isinstance(localization, (int, float)) and math.isfinite(localization) and localization > 0):
            raise ValueError(f"localization must be a finite number > 0, got {localization!r}")
        if nbeta is not None and not (isinstance(nbeta, (int, float)) and math.isfinite(nbeta) and nbeta > 0):
            raise ValueError(f"nbeta must be a finite number > 0, got {nbeta!r}")
        nb = float(num_samples / math.log(num_samples)) if nbeta is None else float(nbeta)
        tau_n = float(threshold_for_sample_size(num_samples, localization=localization, nbeta=nb))
        target = f"finite-n target at n = {num_samples}, nβ = {nb:.4g}, γ = {localization:g}"
    elif nbeta is not None:
        raise ValueError("nbeta sets the threshold from num_samples: pass num_samples=n as well (or threshold=)")
    loss, params = _as_loss_and_params(loss, params, data, batch_size)
    if order == 4 and isinstance(loss, ShardedLoss):
        raise NotImplementedError("order=4 with a ShardedLoss: the quartic analysis differentiates the loss four times "
                                  "and is not data parallel; use order=2 (Hessian-rank bounds, sharded), or give one "
                                  "process the whole data set for order=4")
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    op = HessianOperator(loss, params, mode=mode)  # validates params, data and the loss value
    problem = op.problem
    d = problem.dim
    eps = torch.finfo(problem.w0.dtype).eps
    if method == "auto":
        method = "dense" if d <= max_dense_dim else "slq"

    def choose_threshold(lam_max: float, default_rtol: float) -> tuple[float, float | None]:
        if threshold is not None:
            return float(threshold), None
        if rtol is not None or tau_n is None:
            used = default_rtol if rtol is None else rtol
            return used * lam_max, used
        return max(tau_n, default_rtol * lam_max), None

    evals = evecs = None
    rank_ci = None
    observed: list[str] = []
    if method == "dense":
        spec = dense_spectrum(op)
        evals, evecs = spec.eigenvalues, spec.eigenvectors
        lam_max = float(evals.abs().max())
        lam_min = float(evals[0])
        tau, used_rtol = choose_threshold(lam_max, d * eps)
        rank = int((evals > tau).sum())
        clearly_negative = lam_min < -tau
        observed.append(f"rank {rank} = #{{eigenvalues > τ = {tau:.3g}}} of the dense float64 Hessian")
    else:
        top = lanczos(op, 1, tol=1e-4, max_steps=200, generator=generator)  # λ_max only sets the scale of τ
        lam_max = abs(float(top.eigenvalues[-1]))
        lam_min = None
        tau, used_rtol = choose_threshold(lam_max, _DEFAULT_SLQ_RTOL)
        count = count_eigenvalues(
            op, tau, num_probes=num_probes, max_steps=max_steps, confidence=confidence, generator=generator
        )
        rank = min(d, max(0, int(round(count.count))))
        rank_ci = count.ci
        negative = count.quadrature.count(-tau, above=False, confidence=confidence)
        clearly_negative = negative.ci[0] >= 1
        observed.append(
            f"rank ≈ {count.count:.1f} ± {count.std_err:.1f} (SE; {100 * confidence:.0f}% CI [{count.ci[0]:.1f}, "
            f"{count.ci[1]:.1f}]) eigenvalues > τ = {tau:.3g} by SLQ, {count.num_probes} probes × {count.num_steps} steps"
            + ("" if count.converged else " — the count had not settled at max_steps")
        )
        if clearly_negative:
            observed.append(f"≈ {negative.count:.1f} ± {negative.std_err:.1f} eigenvalues < −τ (SLQ)")
    if tau_n is not None and threshold is None and rtol is None:
        observed.append(
            f"τ = {tau:.3g} from n = {num_samples}: γ/(nβ) = {tau_n:.3g} (nβ = {nb:.4g}, γ = {localization:g})"
            + ("" if tau == tau_n else ", raised to the floating-point rank threshold")
            + f"; the bounds describe the {target} (the quadratic-basin share ½·nβh/(nβh + γ) of each "
            "direction); at order 2, r/2 ≤ λ ≤ d/2 also holds for λ as n → ∞ (raising τ only lowers the rank), "
            "at order 4 the statements treat directions with h ≤ τ as flat and are about the finite-n target only"
        )

    grad_norm = float(op.gradient().norm())
    scale = max(1.0, float(problem.w0.norm()))
    gtol = 16 * eps * max(lam_max, torch.finfo(torch.float64).tiny) * scale if grad_tol is None else float(grad_tol)
    reasons = []
    if grad_norm > gtol:
        reasons.append(f"‖∇L(w*)‖ = {grad_norm:.3g} > grad_tol = {gtol:.3g}")
    if clearly_negative:
        if lam_min is not None:
            reasons.append(f"the smallest Hessian eigenvalue {lam_min:.3g} is below −τ = {-tau:.3g}")
        else:
            reasons.append(f"SLQ finds eigenvalues below −τ = {-tau:.3g}")
    is_minimum = not reasons
    if not is_minimum:
        message = (
            "w* is not a local minimum of this loss (" + "; ".join(reasons) + "): the Hessian-rank bounds "
            "rank/2 ≤ λ ≤ d/2 assume a minimum and do not hold here. Use the behavioral loss "
            "(slt_interp.estimators.behavioral_loss(model, inputs)), for which w* is always a minimum, or train to convergence."
        )
        observed.append("not a minimum: " + "; ".join(reasons))
        if on_nonminimum == "raise":
            raise NotAMinimumError(message)
        if on_nonminimum == "warn":
            warnings.warn(message, NotAMinimumWarning, stacklevel=2)

    regular = rank == d and method == "dense" and is_minimum
    base = LLCBounds(
        lower=Fraction(rank, 2),
        upper=Fraction(d, 2),
        rank=rank,
        nullity=d - rank,
        dim=d,
        exact=bool(regular),
        threshold=tau,
        method=method,
        order=2,
        rank_ci=rank_ci,
        certified=("λ ≤ d/2 at any point (Watanabe 2009)",)
        + ((f"λ = d/2 = {Fraction(d, 2)}: full-rank Hessian, a regular minimum",) if regular else ()),
        observed=tuple(observed),
        eigenvalues=evals,
        rtol=used_rtol,
        max_eigenvalue=lam_max if method == "slq" else float(evals[-1]),
        min_eigenvalue=lam_min,
        grad_norm=grad_norm,
        is_minimum=is_minimum,
        num_matvecs=op.num_matvecs,
        target=target,
        num_samples=num_samples,
        nbeta=nb,
        localization=float(localization) if num_samples is not None else None,
    )
    if order == 2:
        return base
    return sharpen_bounds(base, problem, eigenvalues=evals, eigenvectors=evecs, hvp=op.matvec, generator=generator)
