"""Bounds on the local learning coefficient from the Taylor expansion of the loss at w*.

docs/theory.md §3 (splitting lemma; Watanabe 2009): with r = rank ∇²K(w*) and k = d − r,
r/2 ≤ λ ≤ d/2, sharpened by the order-4 analysis on the null space (:mod:`slt_interp.estimators.higher_order`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import torch
from torch import Tensor

from ._flat import Params, flatten

__all__ = ["LLCBounds", "NotAMinimumWarning", "NotAMinimumError", "llc_bounds"]


@dataclass(frozen=True)
class LLCBounds:
    """Rigorous bounds lower ≤ λ ≤ upper on the local learning coefficient at w*.

    Attributes:
        lower, upper: the bounds (exact fractions).
        rank: numerical rank r of the Hessian at the threshold used.
        nullity: k = dim − rank.
        dim: number of parameters d.
        exact: True only when lower == upper is proven.
        threshold: eigenvalues above this count towards the rank.
        method: how the rank was obtained ("dense", "lanczos", "slq", ...).
        order: Taylor order used (2: Hessian only; 4: quartic on the null space).
        rank_ci: (low, high) confidence interval on the rank when it is estimated stochastically.
        quartic: order 4 only — "positive definite", "degenerate" or "zero" (g₄ on the null space).
        certified: statements that are proven (exact arithmetic, dense linear algebra in float64).
        observed: statements that rest on sampling or a numerical tolerance.
        eigenvalues: the Hessian eigenvalues when computed (dense method), else None.
        rtol: the threshold relative to the largest |eigenvalue| (threshold = rtol·max|λ|) when the
            default threshold rule was used, else None.
        max_eigenvalue, min_eigenvalue: extreme Hessian eigenvalues (dense: exact; matrix-free: Lanczos
            estimate of the largest, min_eigenvalue None).
        grad_norm: ‖∇L(w*)‖.
        is_minimum: False when w* failed the critical-point or positive-semidefiniteness checks.
        num_matvecs: Hessian–vector products used.
    """

    lower: Fraction
    upper: Fraction
    rank: int
    nullity: int
    dim: int
    exact: bool
    threshold: float
    method: str
    order: int = 2
    rank_ci: tuple[float, float] | None = None
    quartic: str | None = None
    certified: tuple[str, ...] = ()
    observed: tuple[str, ...] = ()
    eigenvalues: Tensor | None = field(default=None, repr=False, compare=False)
    rtol: float | None = None
    max_eigenvalue: float | None = None
    min_eigenvalue: float | None = None
    grad_norm: float | None = None
    is_minimum: bool | None = None
    num_matvecs: int = 0

    def __repr__(self) -> str:
        tag = "exact" if self.exact else "bounds"
        return (
            f"LLCBounds({self.lower} ≤ λ ≤ {self.upper} [{tag}], rank {self.rank}/{self.dim}, "
            f"threshold {self.threshold:.3g}, {self.method}, order {self.order})"
        )


class NotAMinimumWarning(UserWarning):
    """w* is not a local minimum of the loss: Hessian-rank bounds on the LLC do not hold there."""


class NotAMinimumError(ValueError):
    """Raised instead of :class:`NotAMinimumWarning` with ``on_nonminimum="raise"``."""


_DEFAULT_SLQ_RTOL = 1e-3


def llc_bounds(
    loss: Callable[[Params], Tensor],
    params: Params,
    *,
    order: int = 2,
    threshold: float | None = None,
    rtol: float | None = None,
    method: str = "auto",
    max_dense_dim: int = 3000,
    num_probes: int = 32,
    max_steps: int | None = None,
    confidence: float = 0.95,
    grad_tol: float | None = None,
    on_nonminimum: str = "warn",
    mode: str = "auto",
    generator: torch.Generator | None = None,
) -> LLCBounds:
    """Bounds on the local learning coefficient from the rank of the Hessian at w*.

    Splitting lemma (Watanabe 2009, Algebraic Geometry and Statistical Learning Theory; docs/theory.md §3): at
    a local minimum, K(w) = |u|² + g(v) in analytic coordinates with u ∈ R^r, r = rank ∇²L(w*), so

        r/2 ≤ λ ≤ d/2,

    with equality (λ = d/2, a regular model) exactly when r = d. ``order=4`` sharpens the bounds with
    the quartic part on the null space (:func:`slt_interp.estimators.sharpen_bounds`).

    The rank is the number of eigenvalues above an explicit threshold τ. Default: τ = rtol·max|λ| with
    rtol = d·ε(dtype) for the dense method (the LAPACK/numpy numerical-rank convention) and rtol = 1e-3 for
    the matrix-free method (resolvable by a few hundred Lanczos steps). At finite n, directions with
    h ≲ γ/(nβ) are effectively flat (docs/theory.md §3): pass that as ``threshold``, or use
    :func:`slt_interp.estimators.rank_curve` for the whole curve.

    Methods: "dense" (d ≤ ``max_dense_dim``): the Hessian assembled from d HVPs and diagonalised in
    float64. "slq" (larger d): the count by stochastic Lanczos quadrature with a confidence interval
    (:func:`slt_interp.estimators.count_eigenvalues`); its lower bound rests on sampling and is listed in
    ``observed``.

    The bounds need w* to be a local minimum. A gradient ‖∇L(w*)‖ > ``grad_tol`` (default
    √ε·max|λ|·max(1, ‖w*‖)) or eigenvalues clearly below −τ trigger a :class:`NotAMinimumWarning`
    (``on_nonminimum="raise"``: :class:`NotAMinimumError`; "ignore": nothing); the result then has
    ``is_minimum=False``. The behavioral loss (:func:`slt_interp.estimators.behavioral_loss`) has w* as a minimum
    by construction.

    Args:
        loss: ``loss(params) -> scalar``, e.g. from :func:`slt_interp.estimators.training_loss`.
        params: w*, a Tensor or a dict of Tensors.
        order: 2 (Hessian) or 4 (plus the quartic on the null space).
        threshold: τ, absolute; overrides ``rtol``.
        rtol: τ relative to max|λ|.
        method: "auto", "dense" or "slq".
        max_dense_dim: largest d for the dense method under "auto".
        num_probes, max_steps, confidence: SLQ settings.
        grad_tol: gradient-norm tolerance of the minimum check.
        on_nonminimum: "warn", "raise" or "ignore".
        mode: how HVPs are computed ("auto", "forward", "reverse"; see :class:`slt_interp.estimators.HessianOperator`).
        generator: seeds the stochastic parts (``None``: a CPU generator with seed 0).

    Returns:
        :class:`LLCBounds`.

    Raises:
        ValueError: unsupported ``order``, ``method``, ``on_nonminimum``, negative threshold, invalid params;
            :class:`NotAMinimumError` with ``on_nonminimum="raise"`` at a non-minimum.

    Example:
        >>> b = llc_bounds(lambda w: w[0] ** 2 + (w[1] * w[2]) ** 2, torch.zeros(3, dtype=torch.float64))
        >>> (b.lower, b.upper, b.rank)
        (Fraction(1, 2), Fraction(3, 2), 1)
    """
    from .curvature import HessianOperator
    from .slq import count_eigenvalues
    from .spectrum import dense_spectrum

    if order not in (2, 4):
        raise ValueError(f"order must be 2 (Hessian) or 4 (with the quartic on the null space), got {order!r}")
    if method not in ("auto", "dense", "slq"):
        raise ValueError(f"method must be 'auto', 'dense' or 'slq', got {method!r}")
    if on_nonminimum not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_nonminimum must be 'warn', 'raise' or 'ignore', got {on_nonminimum!r}")
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite number ≥ 0, got {threshold}")
    if rtol is not None and not (math.isfinite(rtol) and rtol >= 0):
        raise ValueError(f"rtol must be a finite number ≥ 0, got {rtol}")
    problem = flatten(loss, params)
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    op = HessianOperator(loss, params, mode=mode)
    d = problem.dim
    eps = torch.finfo(problem.w0.dtype).eps
    if method == "auto":
        method = "dense" if d <= max_dense_dim else "slq"

    evals = evecs = None
    rank_ci = None
    observed: list[str] = []
    if method == "dense":
        spec = dense_spectrum(op)
        evals, evecs = spec.eigenvalues, spec.eigenvectors
        lam_max = float(evals.abs().max())
        lam_min = float(evals[0])
        used_rtol = (d * eps if rtol is None else rtol) if threshold is None else None
        tau = float(threshold) if threshold is not None else used_rtol * lam_max
        rank = int((evals > tau).sum())
        clearly_negative = lam_min < -tau
        observed.append(f"rank {rank} = #{{eigenvalues > τ = {tau:.3g}}} of the dense float64 Hessian")
    else:
        from .lanczos import lanczos

        top = lanczos(op, 1, tol=1e-4, max_steps=200, generator=generator)  # λ_max only sets the scale of τ
        lam_max = abs(float(top.eigenvalues[-1]))
        lam_min = None
        used_rtol = (_DEFAULT_SLQ_RTOL if rtol is None else rtol) if threshold is None else None
        tau = float(threshold) if threshold is not None else used_rtol * lam_max
        count = count_eigenvalues(
            op, tau, num_probes=num_probes, max_steps=max_steps, confidence=confidence, generator=generator
        )
        rank = min(d, max(0, int(round(count.count))))
        rank_ci = count.ci
        negative = count.quadrature.count(-tau, above=False, confidence=confidence)
        clearly_negative = negative.ci[0] >= 1
        observed.append(
            f"rank ≈ {count.count:.1f} ± {count.stderr:.1f} (SE; {100 * confidence:.0f}% CI [{count.ci[0]:.1f}, "
            f"{count.ci[1]:.1f}]) eigenvalues > τ = {tau:.3g} by SLQ, {count.num_probes} probes × {count.num_steps} steps"
            + ("" if count.converged else " — the count had not settled at max_steps")
        )
        if clearly_negative:
            observed.append(f"≈ {negative.count:.1f} ± {negative.stderr:.1f} eigenvalues < −τ (SLQ)")

    grad_norm = float(op.gradient().norm())
    scale = max(1.0, float(problem.w0.norm()))
    gtol = math.sqrt(eps) * max(lam_max, torch.finfo(torch.float64).tiny) * scale if grad_tol is None else float(grad_tol)
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

    base = LLCBounds(
        lower=Fraction(rank, 2),
        upper=Fraction(d, 2),
        rank=rank,
        nullity=d - rank,
        dim=d,
        exact=bool(rank == d and method == "dense" and is_minimum),
        threshold=tau,
        method=method,
        order=2,
        rank_ci=rank_ci,
        certified=("λ ≤ d/2 at any point (Watanabe 2009)",)
        + ((f"λ = d/2 = {Fraction(d, 2)}: full-rank Hessian, a regular minimum",) if rank == d and method == "dense" and is_minimum else ()),
        observed=tuple(observed),
        eigenvalues=evals,
        rtol=used_rtol,
        max_eigenvalue=lam_max if method == "slq" else float(evals[-1]),
        min_eigenvalue=lam_min,
        grad_norm=grad_norm,
        is_minimum=is_minimum,
        num_matvecs=op.num_matvecs,
    )
    if order == 2:
        return base
    from .higher_order import sharpen_bounds

    return sharpen_bounds(base, problem, eigenvalues=evals, eigenvectors=evecs, hvp=op.matvec, generator=generator)
