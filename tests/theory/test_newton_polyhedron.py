"""newton_polyhedron: published examples, cross-checks with normal crossings, sums in disjoint variables
and an LP, degeneracy detection, and every invalid-input path."""
import importlib
import itertools
from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from slt_interp.theory import DegenerateError, LearningCoefficient, NewtonPolyhedronResult, newton_polyhedron, normal_crossing

W = sp.symbols("w1:13", real=True)
w1, w2, w3 = W[:3]


def lm(c: LearningCoefficient) -> tuple[Fraction, int]:
    return c.value, c.multiplicity


@pytest.mark.parametrize(
    "K, nvars, value, mult",
    [
        (w1**2 + w2**4, 2, Fraction(3, 4), 1),  # docs/theory.md §2
        ((w1 * w2) ** 2, 2, Fraction(1, 2), 2),
        ((w1**2 + w2**2) ** 2, 2, Fraction(1, 2), 1),
        (w1**2 + w2**2 + w3**2, 3, Fraction(3, 2), 1),  # regular: d/2
        (w1**2, 2, Fraction(1, 2), 1),  # K independent of w2
        (sp.Rational(1, 2) * w1**2 * w2**4, 2, Fraction(1, 4), 1),
        (w1**4 - w1**2 * w2**2 + w2**4, 2, Fraction(1, 2), 1),  # negative coefficient, positive face polynomial
        (w1**4 - w1 * w2 * w3**2 + w2**4 + w3**4, 3, Fraction(3, 4), 1),  # 2-dim face, Gröbner certificate
    ],
)
def test_examples(K, nvars, value, mult):
    r = newton_polyhedron(K, W[:nvars])
    assert isinstance(r, NewtonPolyhedronResult) and isinstance(r, LearningCoefficient)
    assert lm(r) == (value, mult)
    assert r.newton_distance == 1 / value
    assert r.face_dimension == nvars - mult
    assert "t* =" in repr(r)


def test_result_details():
    r = newton_polyhedron(w1**2 + w2**4, [w1, w2])
    assert r.face_exponents == ((0, 4), (2, 0))
    assert r.compact_faces == 3  # two vertices and the edge


@pytest.mark.parametrize(
    "K, match",
    [
        ((w1 - w2**2) ** 2, "degenerate"),  # docs/theory.md: the polyhedron would say 3/4, truth 1/2
        ((w1 - w2) ** 2, "degenerate"),
        ((w1**2 - w2**3) ** 2, "degenerate"),
        # Motzkin's polynomial: ≥ 0, zero at |w1| = |w2| = |w3|: found by root isolation on a 2-dim face
        (w1**4 * w2**2 + w1**2 * w2**4 - 3 * w1**2 * w2**2 * w3**2 + w3**6, "real critical point"),
        # real-positive but with a 2-dim complex critical locus: cannot be certified, so it refuses
        ((w1**2 + w2**2) ** 2 * (w1**2 - w1 * w3 + w3**2), "could not certify"),
    ],
)
def test_degenerate_raises(K, match):
    with pytest.raises(DegenerateError, match=match):
        newton_polyhedron(K, [w1, w2, w3][: len(K.free_symbols)])
    assert issubclass(DegenerateError, ValueError)


@pytest.mark.parametrize(
    "K, variables, match",
    [
        (sp.sin(w1) ** 2, [w1], "not a polynomial"),
        (w1**2 / (1 + w2**2), [w1, w2], "not a polynomial"),
        (w1**2 + 1, [w1], r"K\(0\) = 1 ≠ 0"),
        (sp.Integer(0) * w1, [w1], "identically zero"),
        (w1**2 + w2**2, [w1], "not among the variables"),
        (0.5 * w1**2, [w1], "nsimplify"),
        (sp.sqrt(2) * w1**2, [w1], "not rational"),
        (w1**2, [], "variables is empty"),
        (w1**2, [w1, w1], "repeated symbol"),
        (w1**2, ["w1"], "must be sympy Symbols"),
        (lambda w: w**2, [w1], "must be a sympy polynomial"),
        (-(w1**2) + w2**4, [w1, w2], "negative coefficient"),
        (w1**2 * w2, [w1, w2], "odd exponent"),
        (w1 * w2 + w1**4 + w2**4, [w1, w2], "odd exponent"),
        (w1**2 - 3 * w1 * w2 + w2**2, [w1, w2], "face polynomial .* is negative"),  # indefinite lowest order
        ((w1 - 2 * w2) * (w1 - 3 * w2), [w1, w2], "is negative at"),  # indefinite, positive at (±1, ±1)
        # negative only in a thin wedge around w1 = w2
        ((w1 - w2) ** 2 * (w1**2 + w2**2) - sp.Rational(1, 10**6) * w1**2 * w2**2, [w1, w2], "is negative at"),
        (w1**4 + w2**4 + w3**4 - 3 * w1**2 * w2 * w3, [w1, w2, w3], "face polynomial .* is negative"),
    ],
)
def test_invalid_input(K, variables, match):
    with pytest.raises(ValueError, match=match) as info:
        newton_polyhedron(K, variables)
    assert not isinstance(info.value, DegenerateError)


def test_sign_change_on_an_edge_is_found_exactly(monkeypatch):
    """Without the numerical search for negative values, the exact root count on one-dimensional
    faces still finds the sign change (a real zero of odd multiplicity)."""
    module = importlib.import_module("slt_interp.theory.newton_polyhedron")  # the package re-exports a function of that name

    monkeypatch.setattr(module, "_negative_point", lambda poly, k: None)
    with pytest.raises(ValueError, match="changes sign"):
        newton_polyhedron((w1 - 2 * w2) * (w1 - 3 * w2), [w1, w2])


def _monomial(ws, exps):
    return sp.Mul(*[w ** (2 * k) for w, k in zip(ws, exps)])


exponent_lists = st.lists(st.integers(0, 4), min_size=1, max_size=4).filter(any)


@given(exponent_lists, st.fractions(min_value=Fraction(1, 10), max_value=10))
@settings(max_examples=40, deadline=None)
def test_agrees_with_normal_crossing(ks, c):
    K = sp.Rational(c.numerator, c.denominator) * _monomial(W, ks)
    assert lm(newton_polyhedron(K, W[: len(ks)])) == lm(normal_crossing(ks))


@given(exponent_lists, exponent_lists)
@settings(max_examples=30, deadline=None)
def test_sum_in_disjoint_variables(ks, ls):
    """λ(f(x) + g(y)) = λ_f + λ_g and m = m_f + m_g − 1 (docs/theory.md §1)."""
    xs, ys = W[: len(ks)], W[len(ks) : len(ks) + len(ls)]
    f, g = _monomial(xs, ks), _monomial(ys, ls)
    total = newton_polyhedron(f + g, xs + ys)
    expected = normal_crossing(ks) + normal_crossing(ls)
    assert lm(total) == lm(expected)
    assert lm(total) == lm(newton_polyhedron(f, xs) + newton_polyhedron(g, ys))


NON_MONOMIAL = [
    (lambda a, b: a**2 + b**4, 2),
    (lambda a, b: (a**2 + b**2) ** 2, 2),
    (lambda a, b: a**4 - a**2 * b**2 + b**4, 2),
    (lambda a, b: a**2 * b**2 + a**6, 2),
]


@pytest.mark.parametrize("f_spec, g_spec", list(itertools.product(NON_MONOMIAL, repeat=2)))
def test_sum_of_non_monomial_potentials(f_spec, g_spec):
    (f, df), (g, dg) = f_spec, g_spec
    xs, ys = W[:df], W[df : df + dg]
    rf, rg = newton_polyhedron(f(*xs), xs), newton_polyhedron(g(*ys), ys)
    assert lm(newton_polyhedron(f(*xs) + g(*ys), xs + ys)) == (rf.value + rg.value, rf.multiplicity + rg.multiplicity - 1)


def _lp_distance(exponents: list[tuple[int, ...]], d: int) -> float:
    """t* = min t s.t. t·1 = Σ μ_α α + s, μ ≥ 0, Σ μ = 1, s ≥ 0 (scipy linprog, the cross-check)."""
    n = len(exponents)
    # variables: t, μ_1..μ_n, s_1..s_d
    c = np.zeros(1 + n + d)
    c[0] = 1
    A_eq = np.zeros((d + 1, 1 + n + d))
    b_eq = np.zeros(d + 1)
    for j in range(d):
        A_eq[j, 0] = 1
        A_eq[j, 1 : 1 + n] = [-a[j] for a in exponents]
        A_eq[j, 1 + n + j] = -1
    A_eq[d, 1 : 1 + n] = 1
    b_eq[d] = 1
    res = linprog(c, A_eq=A_eq, b_eq=b_eq, bounds=[(0, None)] * (1 + n + d), method="highs")
    return res.fun


@given(st.integers(2, 4).flatmap(lambda d: st.lists(st.lists(st.integers(0, 3), min_size=d, max_size=d).filter(any), min_size=1, max_size=6)))
@settings(max_examples=30, deadline=None)
def test_newton_distance_matches_linear_programming(halves):
    """Random sums of even monomials with positive coefficients (always non-degenerate): the exact
    facet enumeration and scipy's LP give the same Newton distance."""
    d = len(halves[0])
    K = sum((i + 1) * _monomial(W, h) for i, h in enumerate(halves))
    r = newton_polyhedron(K, W[:d])
    assert float(r.newton_distance) == pytest.approx(_lp_distance([tuple(2 * k for k in h) for h in halves], d), abs=1e-9)


def test_invariant_under_scaling_and_permutation():
    K = w1**4 - w1 * w2 * w3**2 + w2**4 + w3**4 + w3**6
    base = lm(newton_polyhedron(K, [w1, w2, w3]))
    assert lm(newton_polyhedron(7 * K, [w1, w2, w3])) == base
    assert lm(newton_polyhedron(K, [w3, w1, w2])) == base
