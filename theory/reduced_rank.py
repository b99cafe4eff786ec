"""Learning coefficient of reduced-rank regression (Aoyagi & Watanabe 2005).

Model ``y = B·A·x`` with ``A ∈ R^{H×M}``, ``B ∈ R^{N×H}``, the truth ``B₀A₀`` of rank r and
``E[xxᵀ]`` positive definite. Reference: M. Aoyagi and S. Watanabe, "Stochastic complexities of
reduced rank regression in Bayesian estimation", Neural Networks 18(7):924–933, 2005, Main Theorem.
"""
from __future__ import annotations

from fractions import Fraction

from ._validate import nonnegative_int, positive_int
from .learning_coefficient import LearningCoefficient

__all__ = ["reduced_rank_regression"]


def reduced_rank_regression(input_dim: int, hidden_dim: int, output_dim: int, true_rank: int) -> LearningCoefficient:
    """Exact λ and m of reduced-rank regression, all four cases of Aoyagi & Watanabe (2005).

    With M = input_dim, H = hidden_dim, N = output_dim, r = true_rank:

    * Case 1 (N + r ≤ M + H, M + r ≤ N + H, H + r ≤ M + N):
      M + H + N + r even: λ = [2(H + r)(M + N) − (M − N)² − (H + r)²]/8, m = 1;
      odd: λ = [2(H + r)(M + N) − (M − N)² − (H + r)² + 1]/8, m = 2.
    * Case 2 (M + H < N + r): λ = (HM − Hr + Nr)/2, m = 1.
    * Case 3 (N + H < M + r): λ = (HN − Hr + Mr)/2, m = 1.
    * Case 4 (M + N < H + r): λ = MN/2, m = 1.

    Args:
        input_dim: M ≥ 1.
        hidden_dim: H ≥ 1.
        output_dim: N ≥ 1.
        true_rank: r, 0 ≤ r ≤ min(M, H, N).

    Returns:
        LearningCoefficient with exact ``value`` and ``multiplicity``.

    Raises:
        ValueError: non-positive dimensions, or a rank outside [0, min(M, H, N)].

    Example:
        >>> reduced_rank_regression(4, 3, 4, 1)
        LearningCoefficient(λ = 6, m = 1, Aoyagi & Watanabe 2005, case 1)
    """
    M = positive_int(input_dim, "input_dim")
    H = positive_int(hidden_dim, "hidden_dim")
    N = positive_int(output_dim, "output_dim")
    r = nonnegative_int(true_rank, "true_rank")
    if r > min(M, H, N):
        raise ValueError(
            f"true_rank={r} exceeds the smallest width min(M, H, N) = {min(M, H, N)}: "
            "the product B·A cannot have that rank"
        )
    src = "Aoyagi & Watanabe 2005, case {}"
    if M + H < N + r:
        return LearningCoefficient(Fraction(H * M - H * r + N * r, 2), 1, src.format(2))
    if N + H < M + r:
        return LearningCoefficient(Fraction(H * N - H * r + M * r, 2), 1, src.format(3))
    if M + N < H + r:
        return LearningCoefficient(Fraction(M * N, 2), 1, src.format(4))
    numerator = 2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2
    if (M + H + N + r) % 2 == 0:
        return LearningCoefficient(Fraction(numerator, 8), 1, src.format(1))
    return LearningCoefficient(Fraction(numerator + 1, 8), 2, src.format(1))
