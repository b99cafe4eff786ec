"""Reduced-rank regression (Aoyagi & Watanabe 2005), deep linear networks (Aoyagi 2024), normal crossings."""
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slt_interp.theory import LearningCoefficient, deep_linear_network, normal_crossing, reduced_rank_regression


def lm(c: LearningCoefficient) -> tuple[Fraction, int]:
    return c.value, c.multiplicity


# ---- reduced-rank regression: the published examples and one hand-computed example per case ----
@pytest.mark.parametrize(
    "dims, value, mult, case",
    [
        ((4, 3, 4, 1), Fraction(6), 1, 1),  # Aoyagi & Watanabe 2005, M + H + N + r even
        ((5, 3, 5, 0), Fraction(13, 2), 2, 1),  # odd: numerator + 1, m = 2
        ((1, 1, 1, 0), Fraction(1, 2), 2, 1),
        ((2, 2, 6, 1), Fraction(4), 1, 2),  # M + H < N + r: (HM − Hr + Nr)/2 = (4 − 2 + 6)/2
        ((6, 2, 3, 1), Fraction(5), 1, 3),  # N + H < M + r: (HN − Hr + Mr)/2 = (6 − 2 + 6)/2
        ((2, 5, 2, 1), Fraction(2), 1, 4),  # M + N < H + r: MN/2
    ],
)
def test_reduced_rank_examples(dims, value, mult, case):
    c = reduced_rank_regression(*dims)
    assert lm(c) == (value, mult)
    assert f"case {case}" in c.source


@pytest.mark.parametrize("M, N", [(1, 1), (3, 2), (4, 7), (8, 8)])
def test_reduced_rank_full_rank_hidden_is_regular(M, N):
    """r = H: the rank-H matrices form a manifold of dimension H(M + N − H) and the
    parametrisation is a submersion, so λ = H(M + N − H)/2 and m = 1."""
    for H in range(1, min(M, N) + 1):
        assert lm(reduced_rank_regression(M, H, N, H)) == (Fraction(H * (M + N - H), 2), 1)


# ---- deep linear networks ----
def test_deep_linear_published_example():
    assert lm(deep_linear_network([5, 5, 5], 0)) == (Fraction(19, 2), 2)


def test_deep_linear_agrees_with_reduced_rank_for_one_hidden_layer():
    """docs/theory.md §2: for L = 2 the two formulas agree on every case with all dimensions ≤ 8."""
    count = 0
    for M in range(1, 9):
        for H in range(1, 9):
            for N in range(1, 9):
                for r in range(min(M, H, N) + 1):
                    assert lm(deep_linear_network([M, H, N], r)) == lm(reduced_rank_regression(M, H, N, r)), (M, H, N, r)
                    count += 1
    assert count == 1808


@given(st.lists(st.integers(1, 9), min_size=3, max_size=7), st.data())
@settings(max_examples=200, deadline=None)
def test_deep_linear_general_properties(widths, data):
    """For any architecture: the formula selects a subset, λ ≤ d/2 (d = number of weights), and with
    every hidden width equal to r the model is regular on the rank-r matrices: λ = r(H_0 + H_L − r)/2."""
    r = data.draw(st.integers(0, min(widths)))
    c = deep_linear_network(widths, r)
    d = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    assert 0 <= c.value <= Fraction(d, 2)
    assert c.multiplicity >= 1
    assert c.value >= Fraction(r * (widths[0] + widths[-1]) - r * r, 2)  # at least the regular part
    if r > 0:
        bottleneck = [widths[0]] + [r] * (len(widths) - 2) + [widths[-1]]
        assert lm(deep_linear_network(bottleneck, r)) == (Fraction(r * (widths[0] + widths[-1] - r), 2), 1)


# ---- normal crossings ----
def test_normal_crossing_examples():
    assert lm(normal_crossing([1, 2])) == (Fraction(1, 4), 1)
    assert lm(normal_crossing([1, 1])) == (Fraction(1, 2), 2)
    assert lm(normal_crossing([1, 1], [1, 0])) == (Fraction(1, 2), 1)  # prior |w1|: (1+1)/2 = 1 vs 1/2


# ---- invalid input ----
@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 3, 4, 1), "input_dim must be a positive integer"),
        ((4, -1, 4, 1), "hidden_dim must be a positive integer"),
        ((4, 3, 2.5, 1), "output_dim must be a positive integer"),
        ((4, 3, 4, -1), "true_rank must be a non-negative integer"),
        ((4, 3, 4, 4), "exceeds the smallest width"),
    ],
)
def test_reduced_rank_invalid(args, match):
    with pytest.raises(ValueError, match=match):
        reduced_rank_regression(*args)


@pytest.mark.parametrize(
    "widths, r, match",
    [
        ([4, 4], 0, "at least one hidden"),
        ([4], 0, "at least one hidden"),
        ([4, 0, 4], 0, r"widths\[1\] must be a positive integer"),
        ([4, -2, 4], 0, r"widths\[1\] must be a positive integer"),
        ([4, 3.0, 4], 0, r"widths\[1\] must be a positive integer"),
        ([4, 3, 4], 4, "exceeds the smallest width"),
        ([4, 3, 4], -1, "true_rank must be a non-negative integer"),
        (5, 0, "must be a sequence"),
        ("545", 0, "must be a sequence"),
    ],
)
def test_deep_linear_invalid(widths, r, match):
    with pytest.raises(ValueError, match=match):
        deep_linear_network(widths, r)
