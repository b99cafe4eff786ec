"""Order-4 LLC bounds (docs/theory.md §3): the Schur-corrected quartic on the Hessian null space."""
from fractions import Fraction

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slt_interp.estimators import analyze_quartic, llc_bounds, sharpen_bounds
from slt_interp.estimators.flat import flatten
from slt_interp.estimators.llc_bounds import LLCBounds
from slt_interp.theory import zoo


def _dense_base(problem, rel_threshold: float = 1e-9):
    """Order-2 bounds from a dense float64 Hessian (the contract of slt_interp.estimators.llc_bounds, order 2)."""
    H = torch.func.hessian(problem.fn)(problem.w0)
    ev, U = torch.linalg.eigh(H)
    threshold = rel_threshold * max(float(ev.abs().max()), 1.0)
    r = int((ev > threshold).sum())
    d = problem.dim
    base = LLCBounds(lower=Fraction(r, 2), upper=Fraction(d, 2), rank=r, nullity=d - r, dim=d, exact=r == d,
                     threshold=threshold, method="dense", eigenvalues=ev)
    return base, ev, U


def _order4(fn, d, device=torch.device("cpu"), **options):
    p = flatten(fn, torch.zeros(d, dtype=torch.float64, device=device))
    base, ev, U = _dense_base(p)
    return sharpen_bounds(base, p, eigenvalues=ev, eigenvectors=U, generator=torch.Generator().manual_seed(0), **options)


# ------------------------------------------------------------------ docs/theory.md §3 checks
def test_w1sq_plus_w2quartic_is_exactly_three_quarters(device):
    b = _order4(lambda w: w[0] ** 2 + w[1] ** 4, 2, device)
    assert (b.rank, b.nullity, b.order, b.quartic) == (1, 1, 4, "positive definite")
    assert b.exact and b.lower == b.upper == Fraction(3, 4)
    assert any("sum-of-squares" in s for s in b.certified)


def test_schur_correction_on_w1_minus_w2sq():
    # T₄ alone would give w2⁴ > 0 and λ = 3/4; the truth is 1/2
    b = _order4(lambda w: (w[0] - w[1] ** 2) ** 2, 2)
    assert not b.exact
    assert b.quartic == "zero"
    assert b.lower <= Fraction(1, 2) <= b.upper
    # g₄ ≡ 0 is observed, never certified: the certified upper bound stays r/2 + k/4
    assert (b.lower, b.upper) == (Fraction(1, 2), Fraction(1, 2) + Fraction(1, 4))
    assert any("k/6" in s for s in b.observed) and not any("g₄ ≡ 0" in s for s in b.certified)


def test_normal_crossing_w1w2_squared():
    b = _order4(lambda w: (w[0] * w[1]) ** 2, 2)
    assert b.quartic == "degenerate" and not b.exact
    assert (b.lower, b.upper) == (Fraction(1, 4), Fraction(1, 2))


def test_w1sq_w2quartic_is_order_six():
    b = _order4(lambda w: w[0] ** 2 * w[1] ** 4, 2)
    assert b.quartic == "zero" and b.rank == 0
    assert (b.lower, b.upper) == (Fraction(0), Fraction(1, 2))
    assert b.lower <= Fraction(1, 4) <= b.upper


def test_full_rank_needs_no_quartic():
    b = _order4(lambda w: w[0] ** 2 + 3 * w[1] ** 2 + w[0] ** 4, 2)
    assert b.exact and b.lower == b.upper == 1 and b.quartic is None


def test_indefinite_quartic_keeps_order_two_bounds():
    b = _order4(lambda w: w[0] ** 2 - w[1] ** 4, 2)
    assert b.quartic == "indefinite"
    assert (b.lower, b.upper) == (Fraction(1, 2), Fraction(1))
    assert any("would not be a local minimum" in s for s in b.certified)


# ------------------------------------------------------------------ certificates do not depend on units (issue 11.7)
def test_small_quartic_next_to_large_quadratic_is_not_zero():
    # a² + 1e-7·b⁴: λ = 3/4. The old tolerance (1e-6·λ_max(H)) called g₄ = 1e-7·b⁴ zero: [1/2, 2/3]
    b = _order4(lambda w: w[0] ** 2 + 1e-7 * w[1] ** 4, 2)
    assert b.lower <= Fraction(3, 4) <= b.upper, b
    assert b.quartic == "positive definite" and b.exact and b.lower == Fraction(3, 4)


def test_unbalanced_units_normal_crossing_on_the_null_space():
    # 1e3·a² + 1e-3·(bc)²: λ = 1/2 + 1/2 = 1. The old tolerance gave [1/2, 5/6]
    b = _order4(lambda w: 1e3 * w[0] ** 2 + 1e-3 * (w[1] * w[2]) ** 2, 3)
    assert b.lower <= 1 <= b.upper, b
    assert b.quartic == "degenerate" and (b.lower, b.upper) == (Fraction(3, 4), Fraction(1))


@pytest.mark.parametrize("c", [1.0, 0.03, 30.0])
def test_rescaling_the_parameters_changes_no_verdict(c):
    # K(w) = a² + 1e-3·b⁴ has exact λ = 3/4; K(c·w) is the same model in other units
    b = _order4(lambda w: (c * w[0]) ** 2 + 1e-3 * (c * w[1]) ** 4, 2)
    assert b.quartic == "positive definite" and b.exact and b.lower == b.upper == Fraction(3, 4), (c, b)
    p = flatten(lambda w: (c * w[0]) ** 2 + 1e-3 * (c * w[1]) ** 4 + (c * w[2]) ** 2 * (c * w[3]) ** 2,
                torch.zeros(4, dtype=torch.float64))
    base, ev, U = _dense_base(p)
    qa = analyze_quartic(p, rank=base.rank, eigenvalues=ev, eigenvectors=U, generator=torch.Generator().manual_seed(0))
    assert (qa.classification, qa.proven) == ("degenerate", True), (c, qa)


# ------------------------------------------------------------------ certified vs observed
def test_sphere_search_only_observes_positive_definiteness():
    # forcing the large-null-space path: positive definiteness is seen, not proven, so no exact claim
    f = lambda w: w[0] ** 2 + w[1] ** 4 + w[2] ** 4 + (w[1] * w[2]) ** 2  # noqa: E731
    p = flatten(f, torch.zeros(3, dtype=torch.float64))
    base, ev, U = _dense_base(p)
    qa = analyze_quartic(p, rank=base.rank, eigenvalues=ev, eigenvectors=U, max_monomials=0,
                         generator=torch.Generator().manual_seed(0))
    assert qa.method == "sphere search" and qa.classification == "positive definite" and not qa.proven
    # min of w1⁴ + w2⁴ + w1²w2² on the circle is 3/4 (at |w1| = |w2|)
    assert abs(qa.minimum - 0.75) < 1e-8
    b = sharpen_bounds(base, p, eigenvalues=ev, eigenvectors=U, max_monomials=0)
    assert not b.exact and (b.lower, b.upper) == (Fraction(3, 4), Fraction(1))
    assert any("appears positive definite" in s for s in b.observed)
    # the coefficient method proves it
    exact = sharpen_bounds(base, p, eigenvalues=ev, eigenvectors=U)
    assert exact.exact and exact.lower == Fraction(1)


def test_sampled_zero_does_not_claim_order_six():
    p = flatten(lambda w: (w[0] - w[1] ** 2) ** 2 + w[2] ** 6, torch.zeros(3, dtype=torch.float64))
    base, ev, U = _dense_base(p)
    b = sharpen_bounds(base, p, eigenvalues=ev, eigenvectors=U, max_monomials=0)
    assert b.quartic == "zero"
    assert (b.lower, b.upper) == (Fraction(1, 2), Fraction(1, 2) + Fraction(2, 4))
    assert any("k/6" in s for s in b.observed)


def test_matrix_free_path_matches_dense():
    f = lambda w: (w[0] + w[1]) ** 2 + 2 * w[2] ** 2 + (w[0] - w[1]) ** 4 + (w[3] * w[0]) ** 2  # noqa: E731
    p = flatten(f, torch.zeros(4, dtype=torch.float64))
    base, ev, U = _dense_base(p)
    hvp = lambda v: torch.func.jvp(torch.func.grad(p.fn), (p.w0,), (v,))[1]  # noqa: E731
    dense = sharpen_bounds(base, p, eigenvalues=ev, eigenvectors=U)
    free = sharpen_bounds(base, p, hvp=hvp, generator=torch.Generator().manual_seed(1))
    assert dense.quartic == free.quartic == "degenerate"
    assert (dense.lower, dense.upper) == (free.lower, free.upper) == (Fraction(5, 4), Fraction(3, 2))


# ------------------------------------------------------------------ property test
_BLOCKS = {  # exponents of ½·Π w_i^(2k_i); "pure" blocks make g₄ positive definite or have no null space
    (1,): True, (2,): True, (1, 1): False, (1, 2): False, (3,): False, (2, 2): False,
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blocks=st.lists(st.sampled_from(sorted(_BLOCKS)), min_size=1, max_size=3).filter(lambda b: sum(map(len, b)) <= 5),
    seed=st.integers(0, 2 ** 31 - 1),
)
def test_rotated_sums_of_normal_crossings(blocks, seed):
    parts = [zoo.normal_crossing_potential(list(b)) for b in blocks]
    pot = parts[0] if len(parts) == 1 else zoo.sum_potential(*parts)
    g = torch.Generator().manual_seed(seed)
    Q, R = torch.linalg.qr(torch.randn(pot.dim, pot.dim, generator=g, dtype=torch.float64))
    pot = zoo.rotate_potential(pot, Q * torch.sign(torch.diagonal(R)))
    p = flatten(pot.fn, torch.zeros(pot.dim, dtype=torch.float64))
    base, ev, U = _dense_base(p)
    b = sharpen_bounds(base, p, eigenvalues=ev, eigenvectors=U, generator=g)
    truth = pot.llc.value
    assert b.lower <= truth <= b.upper, (blocks, b)
    should_be_exact = all(_BLOCKS[blk] for blk in blocks)
    assert b.exact == should_be_exact, (blocks, b, b.certified, b.observed)
    if b.exact:
        assert b.lower == truth


# ------------------------------------------------------------------ errors
def test_invalid_input_raises():
    p = flatten(lambda w: (w ** 4).sum(), torch.zeros(2, dtype=torch.float64))
    base, ev, U = _dense_base(p)
    with pytest.raises(ValueError, match="rank must be an integer"):
        analyze_quartic(p, rank=3, eigenvalues=ev, eigenvectors=U)
    with pytest.raises(ValueError, match="eigendecomposition .* or an hvp"):
        analyze_quartic(p, rank=0)
    with pytest.raises(ValueError, match=r"eigenvectors \(2, 2\)"):
        analyze_quartic(p, rank=0, eigenvalues=ev, eigenvectors=U[:, :1])
    with pytest.raises(ValueError, match="non-positive eigenvalue"):
        analyze_quartic(p, rank=1, eigenvalues=ev, eigenvectors=U)
    with pytest.raises(TypeError, match="base must be an LLCBounds"):
        sharpen_bounds((0, 1), p, eigenvalues=ev, eigenvectors=U)
    other = flatten(lambda w: (w ** 4).sum(), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="base.dim = 2 but the problem has 3"):
        sharpen_bounds(base, other, eigenvalues=ev, eigenvectors=U)
    hvp = lambda v: 2 * v  # noqa: E731
    with pytest.raises(ValueError, match="max_rank"):
        analyze_quartic(other, rank=2, hvp=hvp, max_rank=1)


def test_through_llc_bounds_when_available():
    import importlib

    llc_bounds = getattr(importlib.import_module("slt_interp.estimators.llc_bounds"), "llc_bounds", None)
    if llc_bounds is None:
        pytest.skip("slt_interp.estimators.llc_bounds.llc_bounds (issue 3) not written yet")
    b = llc_bounds(lambda w: w[0] ** 2 + w[1] ** 4, torch.zeros(2, dtype=torch.float64), order=4)
    assert b.exact and b.lower == Fraction(3, 4) and b.order == 4
    # true λ = 1/2 + 1/2 + 1/4 + 1/2 + 1 = 11/4; g₄ = w4⁴ + (w5w6)² on the null space (w2, w4, w5, w6)
    f = lambda w: (w[0] - w[1] ** 2) ** 2 + w[2] ** 2 + w[3] ** 4 + (w[4] * w[5]) ** 2 + w[6] ** 2 + w[7] ** 2  # noqa: E731
    w = torch.zeros(8, dtype=torch.float64)
    dense = llc_bounds(f, w, order=4, method="dense")
    assert (dense.lower, dense.upper, dense.quartic) == (Fraction(9, 4), Fraction(3), "degenerate")
    assert any("order 4 on the null space" in s for s in dense.certified)
    # stochastic rank (SLQ) + matrix-free range: the same interval, but only as an observation
    slq = llc_bounds(f, w, order=4, method="slq")
    assert (slq.lower, slq.upper, slq.quartic) == (Fraction(9, 4), Fraction(3), "degenerate") and not slq.exact
    assert any(s.startswith("given the estimated rank") for s in slq.observed)
    assert not any("order 4 on the null space" in s for s in slq.certified)


def test_non_smooth_loss_raises():
    p = flatten(lambda w: w[0] ** 2 + (w[1] ** 2) ** 1.5, torch.zeros(2, dtype=torch.float64))
    base, ev, U = _dense_base(p)
    with pytest.raises(FloatingPointError, match="not smooth at w"):
        analyze_quartic(p, rank=base.rank, eigenvalues=ev, eigenvectors=U)


def test_positivity_certificates_on_known_quartics():
    import numpy as np

    from slt_interp.estimators.higher_order import _certify_positive, _certify_sos, _exponents

    E = np.array(_exponents(3))
    # Σ x_i⁴ + x1²x2²: minimum on the sphere 3/7 (at x1² = x2² = 2/7, x3² = 3/7)
    c = np.array([1.0 if max(a) == 4 else (1.0 if tuple(a) == (2, 2, 0) else 0.0) for a in E])
    ok, bound = _certify_sos(E, c, 1e-6)
    assert ok and 0 < bound <= 3 / 7 + 1e-12
    ok, bound, boxes = _certify_positive(E, c, 1e-6, 50_000)
    assert ok and boxes > 1
    # x1²x2² + x3⁴ vanishes at e1: neither certificate may succeed
    c = np.array([1.0 if tuple(a) in {(2, 2, 0), (0, 0, 4)} else 0.0 for a in E])
    assert not _certify_sos(E, c, 1e-6)[0]
    assert not _certify_positive(E, c, 1e-6, 50_000)[0]


def test_cubic_allowed_by_a_tiny_null_eigenvalue():
    # along w2: ε t² + c t³ + t⁴ ≥ 0 iff c² ≤ 4ε; ε = 1e-10 is below the rank threshold (null direction)
    eps = 1e-10
    ok = _order4(lambda w: w[0] ** 2 + eps * w[1] ** 2 + 1e-5 * w[1] ** 3 + w[1] ** 4, 2)  # c² = 1e-10 ≤ 4ε
    assert ok.rank == 1 and ok.quartic == "positive definite" and ok.exact and ok.lower == Fraction(3, 4)
    assert any("allow at a minimum" in s for s in ok.observed)
    bad = _order4(lambda w: w[0] ** 2 + eps * w[1] ** 2 + 1e-4 * w[1] ** 3 + w[1] ** 4, 2)  # c² = 1e-8 > 4ε
    assert bad.quartic == "indefinite" and (bad.lower, bad.upper) == (Fraction(1, 2), Fraction(1))


@pytest.mark.parametrize("fn, d, truth", [
    (lambda w: w[0] ** 2 + 1e-7 * w[1] ** 4, 2, Fraction(3, 4)),
    (lambda w: 1e3 * w[0] ** 2 + 1e-3 * (w[1] * w[2]) ** 2, 3, Fraction(1)),
    (lambda w: (0.03 * w[0]) ** 2 + 1e-3 * (0.03 * w[1]) ** 4, 2, Fraction(3, 4)),
])
def test_llc_bounds_order_4_contains_lambda_in_any_units(fn, d, truth):
    b = llc_bounds(fn, torch.zeros(d, dtype=torch.float64), order=4)
    assert b.lower <= truth <= b.upper, b
