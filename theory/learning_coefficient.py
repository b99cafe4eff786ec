"""The result type shared by every exact learning coefficient in :mod:`theory`.

The (local) learning coefficient λ and its multiplicity m describe the volume scaling
``vol{w : K(w) < ε} ≈ c·ε^λ·(−log ε)^(m−1)`` as ε → 0; equivalently −λ is the largest pole of
``ζ(z) = ∫ K(w)^z φ(w) dw`` and m its order (Watanabe, *Algebraic Geometry and Statistical
Learning Theory*, 2009).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

__all__ = ["LearningCoefficient"]


@dataclass(frozen=True)
class LearningCoefficient:
    """An exact learning coefficient.

    Attributes:
        value: λ as an exact fraction.
        multiplicity: m ≥ 1, the order of the pole of ζ at −λ.
        source: where the value comes from (formula, case, reference).
    """

    value: Fraction
    multiplicity: int = 1
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", Fraction(self.value))
        if self.value < 0:
            raise ValueError(f"a learning coefficient is ≥ 0, got {self.value}")
        if int(self.multiplicity) != self.multiplicity or self.multiplicity < 1:
            raise ValueError(f"the multiplicity is an integer ≥ 1, got {self.multiplicity}")

    def __float__(self) -> float:
        return float(self.value)

    def __repr__(self) -> str:
        src = f", {self.source}" if self.source else ""
        return f"LearningCoefficient(λ = {self.value}, m = {self.multiplicity}{src})"

    def __str__(self) -> str:
        return f"λ = {self.value} (m = {self.multiplicity})"

    def __add__(self, other: "LearningCoefficient") -> "LearningCoefficient":
        """λ of a sum of potentials in disjoint variables: λ = λ_f + λ_g, m = m_f + m_g − 1."""
        if not isinstance(other, LearningCoefficient):
            return NotImplemented
        return LearningCoefficient(
            self.value + other.value,
            self.multiplicity + other.multiplicity - 1,
            "sum in disjoint variables",
        )
