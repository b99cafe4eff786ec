"""Bounds on the local learning coefficient from the Taylor expansion of the loss at w*.

THEORY.md §3 (splitting lemma; Watanabe 2009): with r = rank ∇²K(w*) and k = d − r,
r/2 ≤ λ ≤ d/2, sharpened by the order-4 analysis on the null space (:mod:`estimators.higher_order`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from torch import Tensor

__all__ = ["LLCBounds"]


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

    def __repr__(self) -> str:
        tag = "exact" if self.exact else "bounds"
        return (
            f"LLCBounds({self.lower} ≤ λ ≤ {self.upper} [{tag}], rank {self.rank}/{self.dim}, "
            f"threshold {self.threshold:.3g}, {self.method}, order {self.order})"
        )
