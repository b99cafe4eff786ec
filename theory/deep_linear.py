"""Learning coefficient of a deep linear network (Aoyagi 2024).

Model ``f(x) = W_L ⋯ W_1 x`` with ``W_j ∈ R^{H_j × H_{j−1}}``, widths ``H_0`` (input), …, ``H_L``
(output), the truth a product of rank r and ``E[xxᵀ]`` positive definite. Reference: M. Aoyagi,
"Consideration on the learning efficiency of multiple-layered neural networks with linear units",
Neural Networks 172:106132, 2024 (the Main Theorem); restated in M. Aoyagi, "Singular learning
coefficients and efficiency in learning theory", arXiv 2501.12747 (2025). For L = 2 it reduces to the
reduced-rank formula of Aoyagi & Watanabe (2005); :mod:`tests.theory` checks that on every case with
all dimensions ≤ 8.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

from ._validate import nonnegative_int, positive_int
from .learning_coefficient import LearningCoefficient

__all__ = ["deep_linear_network"]


def _choose_subset(m: list[int]) -> list[int]:
    """The set S of Aoyagi (2024), docs/theory.md §2.

    S is the shortest prefix (at least two entries) of the ascending M_j such that, with
    ``ℓ = |S| − 1``,

        max_S M_j < min_{∉S} M_k,   Σ_S M_j ≥ ℓ·max_S M_j,   Σ_S M_j < ℓ·min_{∉S} M_k

    (the conditions on the complement are vacuous when S is everything).

    Returns:
        The M_j in S, ascending.

    Raises:
        RuntimeError: no prefix qualifies (Aoyagi 2024, Lemma 3, excludes this; a bug).
    """
    ordered = sorted(m)
    for size in range(2, len(ordered) + 1):
        inside, outside = ordered[:size], ordered[size:]
        ell, total = size - 1, sum(inside)
        if total < ell * inside[-1]:
            continue
        if outside and not (inside[-1] < outside[0] and total < ell * outside[0]):
            continue
        return inside
    # Aoyagi (2024, Lemma 3) proves that such a prefix exists; reaching this line is a bug.
    raise RuntimeError(f"no admissible subset S for M = {m}; please report this as a bug")


def deep_linear_network(widths: Sequence[int], true_rank: int) -> LearningCoefficient:
    """Exact λ and m of a deep linear network at a truth of rank r (Aoyagi 2024, Main Theorem).

    With M_j = H_j − r (j = 0, …, L) and S the set chosen by the three conditions of
    :func:`_choose_subset` (``|S| = ℓ + 1``), Σ = Σ_{j∈S} M_j and a = Σ − (⌈Σ/ℓ⌉ − 1)·ℓ ∈ {1, …, ℓ}:

        λ = (−r² + r·(H_0 + H_L))/2 + a(ℓ − a)/(4ℓ) − (ℓ − 1)·Σ²/(4ℓ) + ½·Σ_{i<j ∈ S} M_i·M_j,
        m = a(ℓ − a) + 1.

    Args:
        widths: ``[H_0 (input), H_1, …, H_{L−1}, H_L (output)]``, each ≥ 1, at least one hidden
            layer (L ≥ 2).
        true_rank: r = rank of the true product, 0 ≤ r ≤ min_j H_j.

    Returns:
        LearningCoefficient with exact ``value`` and ``multiplicity``.

    Raises:
        ValueError: fewer than three widths, a width that is not a positive integer, or a rank that
            is negative or above the smallest width.

    Example:
        >>> deep_linear_network([5, 5, 5], 0)
        LearningCoefficient(λ = 19/2, m = 2, Aoyagi 2024, ℓ = 2)
    """
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__"):
        raise ValueError(f"widths must be a sequence of integers [input, hidden..., output], got {widths!r}")
    hs = [positive_int(h, f"widths[{j}]") for j, h in enumerate(widths)]
    if len(hs) < 3:
        raise ValueError(
            f"widths={list(widths)} has {len(hs)} entries: give the input, at least one hidden and the output "
            "width (a network without a hidden layer is a regular linear model, λ = H_0·H_1/2)"
        )
    r = nonnegative_int(true_rank, "true_rank")
    if r > min(hs):
        raise ValueError(
            f"true_rank={r} exceeds the smallest width min(widths) = {min(hs)}: the product W_L⋯W_1 cannot "
            "have that rank"
        )
    m = [h - r for h in hs]
    subset = _choose_subset(m)
    ell, total = len(subset) - 1, sum(subset)
    a = total - (math.ceil(Fraction(total, ell)) - 1) * ell
    pairs = sum(subset[i] * subset[j] for i in range(len(subset)) for j in range(i + 1, len(subset)))
    lam = (
        Fraction(-r * r + r * (hs[0] + hs[-1]), 2)
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction((ell - 1) * total * total, 4 * ell)
        + Fraction(pairs, 2)
    )
    return LearningCoefficient(lam, a * (ell - a) + 1, f"Aoyagi 2024, ℓ = {ell}")
