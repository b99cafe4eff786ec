"""The result type of the LLC bounds: :class:`LLCBounds`, and the non-minimum warning and error.

It lives apart from :mod:`slt_interp.estimators.llc_bounds` (which computes the order-2 bounds) and
:mod:`slt_interp.estimators.higher_order` (which sharpens them at order 4) so that both import it
without importing each other (docs/theory.md §3).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from torch import Tensor

__all__ = ["LLCBounds", "NotAMinimumWarning", "NotAMinimumError"]


@dataclass(frozen=True, kw_only=True)
class LLCBounds:
    """Bounds lower ≤ λ ≤ upper on the local learning coefficient at w*, from the Taylor expansion.

    Built by :func:`slt_interp.estimators.llc_bounds` (keyword arguments only). docs/theory.md §3.
    ``target`` says which quantity the bounds are about: "λ (n → ∞)" when the rank threshold is at the
    floating-point level, or the finite-n target (the quadratic-basin value ½·Σ nβh/(nβh + γ) counts
    only directions with nβh ≳ γ) when the threshold was set from ``num_samples``.

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
        target: what the bounds are about: "λ (n → ∞)" or "finite-n target at n = …, nβ = …, γ = …".
        num_samples: n when the threshold was derived from it, else None.
        nbeta, localization: nβ and γ behind that threshold, else None.
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
    target: str = "λ (n → ∞)"
    num_samples: int | None = None
    nbeta: float | None = None
    localization: float | None = None

    def __repr__(self) -> str:
        tag = "exact" if self.exact else "bounds"
        warning = "" if self.is_minimum is not False else "; WARNING: w* is not a local minimum, the bounds do not hold"
        return (
            f"LLCBounds({self.lower} ≤ λ ≤ {self.upper} [{tag}] about {self.target}, rank {self.rank}/{self.dim}, "
            f"threshold {self.threshold:.3g}, {self.method}, order {self.order}{warning})"
        )


class NotAMinimumWarning(UserWarning):
    """w* is not a local minimum of the loss: Hessian-rank bounds on the LLC do not hold there."""


class NotAMinimumError(ValueError):
    """Raised instead of :class:`NotAMinimumWarning` with ``on_nonminimum="raise"``."""
