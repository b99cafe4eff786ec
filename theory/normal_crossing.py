"""Learning coefficient of a normal crossing K(w) = Π w_i^(2k_i) with prior density Π |w_i|^(h_i).

Watanabe, *Algebraic Geometry and Statistical Learning Theory* (2009), ch. 2 and 7 (the standard
form of the resolution theorem): λ = min_i (h_i + 1)/(2k_i) over the i with k_i > 0, and m is the
number of indices attaining the minimum.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Sequence

from ._validate import nonnegative_int
from .learning_coefficient import LearningCoefficient

__all__ = ["normal_crossing"]


def normal_crossing(exponents: Sequence[int], prior_exponents: Sequence[int] | None = None) -> LearningCoefficient:
    """Exact λ and m of K(w) = Π_i w_i^(2k_i) near 0, prior density ∝ ``Π_i |w_i|^(h_i)``.

    λ = min over {i : k_i > 0} of (h_i + 1)/(2k_i); m = #{i attaining the minimum}.

    Args:
        exponents: the k_i ≥ 0 (K uses the even powers 2k_i); at least one k_i > 0.
        prior_exponents: the h_i ≥ 0 (default all 0, a prior positive at the origin).

    Returns:
        LearningCoefficient.

    Raises:
        ValueError: negative or non-integer exponents, all k_i = 0 (K ≡ 1 is not zero at 0), or
            mismatched lengths.

    Example:
        >>> normal_crossing([1, 2])   # K = w1² w2⁴
        LearningCoefficient(λ = 1/4, m = 1, normal crossing)
    """
    ks = [nonnegative_int(k, f"exponents[{i}]") for i, k in enumerate(exponents)]
    if not ks:
        raise ValueError("exponents is empty: give one k_i per variable")
    hs = [0] * len(ks) if prior_exponents is None else [
        nonnegative_int(h, f"prior_exponents[{i}]") for i, h in enumerate(prior_exponents)
    ]
    if len(hs) != len(ks):
        raise ValueError(f"prior_exponents has {len(hs)} entries but exponents has {len(ks)}")
    ratios = [Fraction(h + 1, 2 * k) for k, h in zip(ks, hs) if k > 0]
    if not ratios:
        raise ValueError("all exponents are 0: K ≡ 1 does not vanish at the origin")
    lam = min(ratios)
    return LearningCoefficient(lam, ratios.count(lam), "normal crossing")
