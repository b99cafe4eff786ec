"""Learning coefficient of a non-degenerate polynomial from its Newton polyhedron.

For K(w) = Σ_α c_α w^α ≥ 0 near 0 with K(0) = 0, the Newton polyhedron is
``Γ₊ = conv ∪_{c_α ≠ 0} (α + R^d_≥0)`` and the Newton distance is ``t* = min{t : (t, …, t) ∈ Γ₊}``.
If K is non-degenerate — for every compact face τ of Γ₊ the face polynomial
``K_τ = Σ_{α ∈ τ} c_α w^α`` has no critical point with all coordinates non-zero — then

    λ = 1/t*,   m = codimension of the smallest face of Γ₊ containing (t*, …, t*).

References: A. N. Varchenko, "Newton polyhedra and estimation of oscillating integrals", Functional
Analysis and its Applications 10:175–196, 1976; S. Watanabe, *Algebraic Geometry and Statistical
Learning Theory* (Cambridge, 2009), ch. 7 (Newton diagrams and the real log canonical threshold).

Everything is exact: the facets of Γ₊ are enumerated in rational arithmetic (``fractions.Fraction``),
and non-degeneracy is certified with sympy (square-free decomposition and Sturm counts for
one-dimensional faces; Gröbner bases and rational interval arithmetic on isolated real roots for
higher-dimensional ones). When non-degeneracy fails or cannot be certified, :class:`DegenerateError`
is raised instead of returning a value that may be wrong — the classic trap is K = (w1 − w2²)²,
where the polyhedron says 3/4 but the truth is 1/2.

Limits: the facet enumeration visits every d-subset of exponents and coordinate rays, so it is
meant for a handful of variables (d ≤ 5 in well under a second on the examples tried). A face whose
complex critical locus is positive-dimensional after the quasi-homogeneous reduction cannot be
certified and raises :class:`DegenerateError` even when K is in fact non-degenerate. The check that
K ≥ 0 near 0 is exact on vertices and one-dimensional faces; on higher faces a negative value is
searched for numerically (and verified exactly when found), which is a necessary condition only.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Sequence

import numpy as np
import sympy as sp

from .learning_coefficient import LearningCoefficient

__all__ = ["DegenerateError", "NewtonPolyhedronResult", "newton_polyhedron"]

Exponent = tuple[int, ...]


class DegenerateError(ValueError):
    """K is degenerate on a compact face of its Newton polyhedron (or that could not be excluded).

    Then 1/t* need not be its learning coefficient.
    """


@dataclass(frozen=True, repr=False)
class NewtonPolyhedronResult(LearningCoefficient):
    """λ = 1/t* and m from the Newton polyhedron, with what produced them.

    Attributes:
        value: λ = 1/t* (inherited from :class:`LearningCoefficient`, as are the next two).
        multiplicity: m, the codimension of the smallest face containing (t*, …, t*).
        source: the theorem used.
        newton_distance: t*, the exact Newton distance.
        face_exponents: exponents α of K lying on the smallest face containing (t*, …, t*).
        face_dimension: dimension of that face (d − m).
        compact_faces: number of compact faces whose non-degeneracy was certified.
    """

    newton_distance: Fraction = Fraction(0)
    face_exponents: tuple[Exponent, ...] = ()
    face_dimension: int = 0
    compact_faces: int = 0

    def __repr__(self) -> str:
        face = ", ".join(str(a) for a in self.face_exponents)
        return (
            f"NewtonPolyhedronResult(λ = {self.value}, m = {self.multiplicity}, t* = {self.newton_distance}, "
            f"face of dim {self.face_dimension} through {{{face}}}, {self.compact_faces} compact faces certified)"
        )


# --------------------------------------------------------------------------------------------
# exact linear algebra on Fractions
# --------------------------------------------------------------------------------------------
def _nullspace(rows: Sequence[Sequence[Fraction]], ncols: int) -> list[list[Fraction]]:
    """A basis of {x : rows·x = 0} by Gauss–Jordan elimination in exact arithmetic."""
    m = [list(map(Fraction, r)) for r in rows]
    pivots: list[int] = []
    row = 0
    for col in range(ncols):
        pivot = next((i for i in range(row, len(m)) if m[i][col] != 0), None)
        if pivot is None:
            continue
        m[row], m[pivot] = m[pivot], m[row]
        p = m[row][col]
        m[row] = [v / p for v in m[row]]
        for i in range(len(m)):
            if i != row and m[i][col] != 0:
                f = m[i][col]
                m[i] = [a - f * b for a, b in zip(m[i], m[row])]
        pivots.append(col)
        row += 1
        if row == len(m):
            break
    basis = []
    for free in (c for c in range(ncols) if c not in pivots):
        x = [Fraction(0)] * ncols
        x[free] = Fraction(1)
        for i, pc in enumerate(pivots):
            x[pc] = -m[i][free]
        basis.append(x)
    return basis


def _rank(rows: Sequence[Sequence[Fraction]], ncols: int) -> int:
    return ncols - len(_nullspace(rows, ncols)) if rows else 0


def _primitive(v: Sequence[Fraction]) -> tuple[int, ...]:
    """The integer vector with coprime entries on the ray of v."""
    lcm = 1
    for x in v:
        lcm = lcm * x.denominator // math.gcd(lcm, x.denominator)
    ints = [int(x * lcm) for x in v]
    g = math.gcd(*ints) or 1
    return tuple(i // g for i in ints)


def _dot(a: Sequence, b: Sequence) -> Fraction:
    return sum((Fraction(x) * y for x, y in zip(a, b)), Fraction(0))


# --------------------------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------------------------
def _parse(K, variables) -> tuple[tuple[sp.Symbol, ...], dict[Exponent, Fraction]]:
    if isinstance(variables, sp.Symbol):
        variables = (variables,)
    try:
        ws = tuple(variables)
    except TypeError:
        raise ValueError(f"variables must be a sequence of sympy Symbols, got {variables!r}") from None
    if not ws:
        raise ValueError("variables is empty: list the sympy Symbols K depends on")
    for w in ws:
        if not isinstance(w, sp.Symbol):
            raise ValueError(f"variables must be sympy Symbols, got {w!r} of type {type(w).__name__}")
    if len(set(ws)) != len(ws):
        raise ValueError(f"variables {ws} contain a repeated symbol")
    if not isinstance(K, sp.Basic):
        try:
            K = sp.sympify(K, strict=True)
        except (sp.SympifyError, TypeError):
            raise ValueError(
                f"K must be a sympy polynomial expression in {ws}, got {type(K).__name__}"
            ) from None
    extra = K.free_symbols - set(ws)
    if extra:
        raise ValueError(
            f"K depends on {sorted(map(str, extra))}, which are not among the variables {ws}: substitute "
            "numbers for parameters or list them as variables"
        )
    if not K.is_polynomial(*ws):
        raise ValueError(f"K = {K} is not a polynomial in {ws}: the Newton polyhedron needs a polynomial")
    poly = sp.Poly(K, *ws)
    terms: dict[Exponent, Fraction] = {}
    for monom, c in poly.terms():
        if c == 0:
            continue
        if not isinstance(c, sp.Rational):
            hint = " (use sympy.nsimplify(K, rational=True) to make float coefficients exact)" if c.is_Float else ""
            raise ValueError(f"coefficient {c} of {sp.Mul(*[w**e for w, e in zip(ws, monom)])} is not rational{hint}")
        terms[tuple(int(e) for e in monom)] = Fraction(int(c.p), int(c.q))
    if not terms:
        raise ValueError("K is identically zero: every point is a minimum and there is no isolated singularity")
    zero = (0,) * len(ws)
    if zero in terms:
        raise ValueError(f"K(0) = {terms[zero]} ≠ 0: give K(w) − K(0), which vanishes at the origin")
    return ws, terms


# --------------------------------------------------------------------------------------------
# the polyhedron
# --------------------------------------------------------------------------------------------
def _minimal(points: Iterable[Exponent]) -> list[Exponent]:
    """Exponents not lying in another exponent's orthant α' + R^d_≥0 (they generate Γ₊)."""
    pts = sorted(set(points))
    return [p for p in pts if not any(q != p and all(a <= b for a, b in zip(q, p)) for q in pts)]


def _facets(points: list[Exponent], d: int) -> list[tuple[tuple[int, ...], int]]:
    """All facets {x : ⟨a, x⟩ = b} of Γ₊ = conv(points) + R^d_≥0 as primitive integer (a ≥ 0, b).

    Every facet is spanned by d affinely independent generators (points and the rays e_j), so
    enumerate the hyperplanes through d generators and keep the supporting ones.

    Returns:
        The facets as pairs (a, b), a the primitive inner normal and b = ⟨a, x⟩ on the facet.
    """
    facets = set()
    for k in range(1, min(d, len(points)) + 1):
        for pts in itertools.combinations(points, k):
            for rays in itertools.combinations(range(d), d - k):
                # unknowns (a_1, …, a_d, b): ⟨a, p⟩ − b = 0 for the points, a_j = 0 for the rays
                rows = [[Fraction(x) for x in p] + [Fraction(-1)] for p in pts]
                rows += [[Fraction(int(i == j)) for i in range(d)] + [Fraction(0)] for j in rays]
                basis = _nullspace(rows, d + 1)
                if len(basis) != 1:
                    continue
                v = basis[0]
                a = v[:d]
                if all(x <= 0 for x in a):
                    v = [-x for x in v]
                    a = v[:d]
                if any(x < 0 for x in a) or all(x == 0 for x in a):
                    continue
                prim = _primitive(v)
                normal, b = prim[:d], prim[d]
                if all(_dot(normal, p) >= b for p in points):
                    facets.add((normal, b))
    return sorted(facets)


@dataclass(frozen=True)
class _Face:
    points: frozenset  # exponents of K on the face
    facets: tuple  # the facets containing it

    @property
    def compact(self) -> bool:
        d = len(next(iter(self.points)))
        return all(any(normal[j] > 0 for normal, _ in self.facets) for j in range(d))


def _faces(terms: dict[Exponent, Fraction], facets: list[tuple[tuple[int, ...], int]]) -> list[_Face]:
    """Every non-empty face of Γ₊ that contains exponents of K, from the intersections of facets."""
    on = [frozenset(a for a in terms if _dot(n, a) == b) for n, b in facets]
    seen = set(s for s in on if s)
    frontier = list(seen)
    while frontier:
        new = []
        for s in frontier:
            for f in on:
                t = s & f
                if t and t not in seen:
                    seen.add(t)
                    new.append(t)
        frontier = new
    faces = []
    for s in seen:
        containing = tuple(fc for fc, pts in zip(facets, on) if s <= pts)
        closed = frozenset(a for a in terms if all(_dot(n, a) == b for n, b in containing))
        if closed == s:
            faces.append(_Face(s, containing))
    return faces


# --------------------------------------------------------------------------------------------
# face polynomials: sign and non-degeneracy
# --------------------------------------------------------------------------------------------
Poly = dict[Exponent, Fraction]


def _monomial_str(ws, alpha) -> str:
    return str(sp.Mul(*[w**e for w, e in zip(ws, alpha)]))


def _poly_str(ws, poly: Poly) -> str:
    return str(_to_sympy(poly, ws))


def _to_sympy(poly: Poly, xs) -> sp.Expr:
    return sp.Add(*[sp.Rational(c.numerator, c.denominator) * sp.Mul(*[x**e for x, e in zip(xs, a)]) for a, c in poly.items()])


def _components(ws, terms: Poly, face: _Face) -> list[tuple[tuple[sp.Symbol, ...], Poly]]:
    """K_τ split into sums of polynomials in disjoint sets of variables, each with its variables.

    K_τ = f(x) + g(y) ≥ 0 with f(0) = g(0) = 0 forces f, g ≥ 0, so K_τ is ≥ 0 iff each part is,
    and K_τ has a real zero (equivalently, a critical point) in the torus iff every part has one.

    Returns:
        One (variables, polynomial in those variables) pair per part.
    """
    d = len(ws)
    parent = list(range(d))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a in face.points:
        js = [j for j in range(d) if a[j] > 0]
        for j in js[1:]:
            parent[find(j)] = find(js[0])
    groups: dict[int, list[int]] = {}
    for j in sorted({j for a in face.points for j in range(d) if a[j] > 0}):
        groups.setdefault(find(j), []).append(j)
    parts = []
    for idx in groups.values():
        poly = {tuple(a[j] for j in idx): terms[a] for a in face.points if any(a[j] > 0 for j in idx)}
        parts.append((tuple(ws[j] for j in idx), poly))
    return parts


def _reduction(points: list[Exponent], d: int) -> tuple[list[int], list[int]]:
    """Split the coordinates into J (fixed to ±1) and F (free), |F| = dimension of the face.

    A face polynomial is quasi-homogeneous for every weight n ⊥ (α − α₀) (α on the face); the real
    scalings w_j → s^{n_j}·w_j (s > 0) act transitively on |w_J| when those weights restricted to J
    are invertible, so every real torus point is equivalent to one with w_J ∈ {±1}^J.

    Returns:
        The index lists (J, F).

    Raises:
        RuntimeError: no invertible minor exists (impossible for a face; a bug).
    """
    base = points[0]
    directions = [[Fraction(a - b) for a, b in zip(p, base)] for p in points[1:]]
    normals = _nullspace(directions, d) if directions else [[Fraction(int(i == j)) for i in range(d)] for j in range(d)]
    r = len(normals)
    for J in itertools.combinations(range(d), r):
        if _rank([[n[j] for j in J] for n in normals], r) == r:
            return list(J), [j for j in range(d) if j not in J]
    raise RuntimeError("no invertible minor among the face normals; please report this as a bug")


def _restricted(poly: Poly, J, F, signs) -> Poly:
    """The polynomial with w_J = signs, as exponents in the free variables F → coefficient."""
    out: Poly = {}
    for a, c in poly.items():
        sign = -1 if sum(a[j] for j, s in zip(J, signs) if s < 0) % 2 else 1
        key = tuple(a[j] for j in F)
        out[key] = out.get(key, Fraction(0)) + sign * c
    return {k: v for k, v in out.items() if v != 0}


def _evaluate(poly: Poly, x: Sequence[Fraction]) -> Fraction:
    return sum((c * math.prod((xi**e for xi, e in zip(x, a)), start=Fraction(1)) for a, c in poly.items()), Fraction(0))


_GRID = (1 / 3, 1 / 2, 1.0, 2.0, 3.0, -1 / 3, -1 / 2, -1.0, -2.0, -3.0)


def _negative_point(poly: Poly, k: int) -> tuple[Fraction, ...] | None:
    """A rational point where poly < 0, verified in exact arithmetic.

    Searched on a grid and by normalised gradient descent from every grid point.

    Returns:
        The point, or None when none is found.
    """
    exps = np.array(list(poly.keys()), dtype=float).reshape(len(poly), k)  # (terms, k)
    coefs = np.array([float(c) for c in poly.values()])  # (terms,)
    x = np.array(list(itertools.product(_GRID, repeat=k)))  # (starts, k)

    def values(x):
        return (np.prod(x[:, None, :] ** exps[None], axis=2) * coefs).sum(1)  # (starts,)

    candidates = [x.copy()]
    step = 0.5
    with np.errstate(all="ignore"):
        for _ in range(300):
            grad = np.stack(
                [((coefs * exps[:, i]) * np.prod(x[:, None, :] ** (exps - np.eye(k)[i])[None], axis=2)).sum(1) for i in range(k)],
                axis=1,
            )  # (starts, k)
            norm = np.linalg.norm(grad, axis=1, keepdims=True)
            x = np.clip(x - step * grad / np.where(norm > 0, norm, 1.0), -20.0, 20.0)
            step *= 0.97
        candidates.append(x)
        for pts in candidates:
            v = values(pts)
            for i in np.argsort(v)[:8]:
                if np.isfinite(v[i]) and v[i] < 0:
                    point = tuple(Fraction(float(t)).limit_denominator(10**6) for t in pts[i])
                    if _evaluate(poly, point) < 0:
                        return point
    return None


def _positive_even(poly: Poly) -> bool:
    """A sum of even monomials with positive coefficients: > 0 on the torus."""
    return all(c > 0 and all(e % 2 == 0 for e in a) for a, c in poly.items())


def _check_sign(ws, terms: Poly, face: _Face) -> None:
    """Raise unless the face polynomial K_τ can be ≥ 0 on R^d, as K ≥ 0 near 0 requires.

    K ≥ 0 near 0 forces K_τ ≥ 0 on R^d for each compact face τ (K(s^n·w)/s^b → K_τ(w) as s → 0⁺
    for a positive weight n selecting τ). Monomials alone (vertices) are checked exactly (even
    exponents, positive coefficient); elsewhere a negative value is searched for on a grid and by
    local descent and verified in exact arithmetic — a necessary condition: a negative region the
    search misses goes undetected (on one-dimensional faces sign changes are also found exactly,
    in :func:`_certify_one_variable`).

    Raises:
        ValueError: K_τ takes a negative value, so K is not ≥ 0 near 0.
    """
    for xs, poly in _components(ws, terms, face):
        if len(poly) == 1:
            ((a, c),) = poly.items()
            if c < 0 or any(e % 2 for e in a):
                where = "the vertex monomial" if len(face.points) == 1 else "the monomial"
                raise ValueError(
                    f"K is not ≥ 0 near 0: {where} {c}·{_monomial_str(xs, a)} of its Newton polyhedron "
                    f"{'has a negative coefficient' if c < 0 else 'has an odd exponent'}, so K takes negative values "
                    "arbitrarily close to 0"
                )
            continue
        if _positive_even(poly):
            continue
        J, F = _reduction(list(poly), len(xs))
        for signs in itertools.product((1, -1), repeat=len(J)):
            x = _negative_point(_restricted(poly, J, F, signs), len(F))
            if x is not None:
                w = [Fraction(0)] * len(xs)
                for j, sgn in zip(J, signs):
                    w[j] = Fraction(sgn)
                for j, v in zip(F, x):
                    w[j] = v
                point = ", ".join(f"{x}={v}" for x, v in zip(xs, w))
                raise ValueError(
                    f"K is not ≥ 0 near 0: its face polynomial {_poly_str(xs, poly)} is negative at {point}, so K "
                    "is negative along a curve into the origin"
                )


def _ipow(lo: Fraction, hi: Fraction, e: int) -> tuple[Fraction, Fraction]:
    if e == 0:
        return Fraction(1), Fraction(1)
    a, b = lo**e, hi**e
    if e % 2 == 0 and lo <= 0 <= hi:
        return Fraction(0), max(a, b)
    return min(a, b), max(a, b)


def _interval_excludes_zero(poly: Poly, box) -> bool:
    """Rational interval arithmetic: True when poly is certainly non-zero on the box."""
    lo_sum, hi_sum = Fraction(0), Fraction(0)
    for a, c in poly.items():
        lo, hi = Fraction(c), Fraction(c)
        for (blo, bhi), e in zip(box, a):
            plo, phi = _ipow(blo, bhi, e)
            cands = (lo * plo, lo * phi, hi * plo, hi * phi)
            lo, hi = min(cands), max(cands)
        lo_sum += lo
        hi_sum += hi
    return lo_sum > 0 or hi_sum < 0


def _derivative(poly: Poly, i: int) -> Poly:
    out = {}
    for a, c in poly.items():
        if a[i] > 0:
            b = list(a)
            b[i] -= 1
            out[tuple(b)] = c * a[i]
    return out


def _certify_one_variable(xs, face_poly: Poly, poly: Poly) -> None:
    """Certify a face polynomial restricted to a line of the torus (a univariate polynomial).

    A real non-zero root of odd multiplicity is a sign change (K not ≥ 0), one of even multiplicity
    a critical point.

    Raises:
        ValueError: a sign change (K is not ≥ 0 near 0).
        DegenerateError: a real critical point with all coordinates non-zero.
    """
    x = sp.Symbol("x")
    _, factors = sp.Poly(_to_sympy(poly, (x,)), x).sqf_list()
    for factor, mult in factors:
        if factor.degree() == 1 and factor.eval(0) == 0:  # the factor x: not in the torus
            continue
        if factor.count_roots() == 0:
            continue
        root = min(factor.real_roots(), key=lambda r: abs(float(r)))
        if mult % 2:
            raise ValueError(
                f"K is not ≥ 0 near 0: its face polynomial {_poly_str(xs, face_poly)} changes sign (a simple real "
                f"zero with all coordinates non-zero, near {float(root):.6g} on a torus line)"
            )
        raise DegenerateError(
            f"K is degenerate: the face polynomial {_poly_str(xs, face_poly)} of its Newton polyhedron has real "
            f"critical points with all coordinates non-zero (a zero of order {mult} near {float(root):.6g} on a "
            "torus line), so 1/t* need not be λ; resolve the singularity by a change of variables first "
            "(e.g. for (w1 − w2²)², substitute u = w1 − w2²)"
        )


def _certify_several_variables(xs, face_poly: Poly, poly: Poly, k: int) -> None:
    """Certify that (P, ∇P) has no real zero with all free coordinates non-zero.

    Certified with a Gröbner basis (the unit ideal: no complex solution) or, for a zero-dimensional
    ideal, by isolating the real roots of each eliminant and excluding every candidate box with
    interval arithmetic.

    Raises:
        DegenerateError: a real critical point in the torus, or its absence could not be certified.
    """
    ys = sp.symbols(f"x0:{k}")
    t = sp.Symbol("t")
    eqs = [_to_sympy(poly, ys)] + [_to_sympy(_derivative(poly, i), ys) for i in range(k)]
    eqs.append(1 - t * sp.Mul(*ys))
    G = sp.groebner(eqs, t, *ys, order="grevlex")
    if G.exprs == [1]:
        return
    cannot = DegenerateError(
        f"could not certify that the face polynomial {_poly_str(xs, face_poly)} has no real critical point with "
        "all coordinates non-zero; the Newton-polyhedron value 1/t* may be wrong, so none is returned"
    )
    if not G.is_zero_dimensional:
        raise cannot
    root_boxes = []
    for i, y in enumerate(ys):
        order = [t] + [z for z in ys if z != y] + [y]
        uni = [g for g in sp.groebner(eqs, *order, order="lex").exprs if g.free_symbols == {y}]
        if not uni:
            raise cannot
        p = sp.Poly(uni[-1], y)
        intervals = [(lo, hi) for (lo, hi), _ in p.intervals() if not lo == hi == 0]
        if not intervals:
            return  # this coordinate has no real non-zero value: no real torus solution
        root_boxes.append((p, len(intervals)))
    polys = [_derivative(poly, i) for i in range(k)] + [poly]
    for combo in itertools.product(*[range(n) for _, n in root_boxes]):
        for digits in (10, 30, 80):
            box = []
            for (p, _), idx in zip(root_boxes, combo):
                roots = [iv for iv, _ in p.intervals(eps=sp.Rational(1, 10**digits)) if not iv[0] == iv[1] == 0]
                lo, hi = roots[idx]
                box.append((Fraction(str(lo)), Fraction(str(hi))))
            if any(_interval_excludes_zero(q, box) for q in polys):
                break
        else:
            approx = ", ".join(f"{float((lo + hi) / 2):.6g}" for lo, hi in box)
            raise DegenerateError(
                f"K is degenerate: the face polynomial {_poly_str(xs, face_poly)} of its Newton polyhedron has a "
                f"real critical point with all coordinates non-zero (free coordinates ≈ ({approx}) after fixing the "
                "others to ±1), so 1/t* need not be λ"
            )


def _certify_part(xs, poly: Poly) -> None:
    """Return when the part has no real critical point with all coordinates non-zero; else raise.

    Equivalently no real zero, by Euler's relation, as the part is ≥ 0.
    """
    if len(poly) == 1 or _positive_even(poly):
        return  # c·w^α (α ≠ 0) has no critical point in the torus; a positive even sum is > 0 there
    J, F = _reduction(list(poly), len(xs))
    for signs in itertools.product((1, -1), repeat=len(J)):
        restricted = _restricted(poly, J, F, signs)
        if len(F) == 1:
            _certify_one_variable(xs, poly, restricted)
        else:
            _certify_several_variables(xs, poly, restricted, len(F))


def _certify(ws, terms: Poly, face: _Face) -> None:
    """Raise unless K_τ is certified to have no real critical point in (R∖{0})^d.

    K_τ = Σ parts in disjoint variables has one iff every part has one, so one certified part
    suffices.

    Raises:
        DegenerateError: no part could be certified.
    """
    failures = []
    for xs, poly in _components(ws, terms, face):
        try:
            _certify_part(xs, poly)
            return
        except DegenerateError as err:
            failures.append(err)
    if len(failures) == 1:
        raise failures[0]
    raise DegenerateError("; and ".join(str(e) for e in failures))


# --------------------------------------------------------------------------------------------
# public
# --------------------------------------------------------------------------------------------
def newton_polyhedron(K, variables: Sequence[sp.Symbol]) -> NewtonPolyhedronResult:
    """λ = 1/t* and m from the Newton polyhedron of a non-degenerate polynomial K ≥ 0, K(0) = 0.

    ``Γ₊ = conv ∪_α (α + R^d_≥0)`` over the exponents α with c_α ≠ 0;
    ``t* = min{t : (t, …, t) ∈ Γ₊} = max over facets ⟨a, x⟩ ≥ b of b/Σa``; λ = 1/t*, and m is the
    codimension of the smallest face of Γ₊ containing (t*, …, t*) (Varchenko 1976; Watanabe 2009,
    ch. 7). Valid when K is non-degenerate: every compact face polynomial K_τ has no critical point
    in (R∖{0})^d. That is certified exactly, else :class:`DegenerateError` is raised.

    Because K ≥ 0 near 0, its compact face polynomials are ≥ 0 on R^d, and at a real critical
    point in the torus K_τ = 0 (Euler's relation for quasi-homogeneous K_τ); so a sum of even
    monomials with positive coefficients is certified at once, and otherwise the real zeros of the
    critical system are excluded with sympy (see the module docstring).

    Args:
        K: a sympy polynomial in ``variables`` with rational coefficients, K(0) = 0, K ≥ 0 near 0.
        variables: the sympy Symbols w1, …, wd (coordinates K does not depend on still count).

    Returns:
        :class:`NewtonPolyhedronResult`, a :class:`LearningCoefficient` with ``value`` = 1/t*,
        ``multiplicity`` = m, and the Newton distance and the face that produced them.

    Raises:
        ValueError: K is not a polynomial in ``variables``, has non-rational coefficients, is
            identically 0, has K(0) ≠ 0, or is not ≥ 0 near 0 (a vertex monomial with a negative
            coefficient or an odd exponent, or a face polynomial — such as an indefinite
            lowest-order part — that takes negative values).
        DegenerateError: a compact face polynomial has a real critical point in the torus, or its
            absence could not be certified.

    Example:
        >>> w1, w2 = sympy.symbols("w1 w2")
        >>> newton_polyhedron(w1**2 + w2**4, [w1, w2])
        NewtonPolyhedronResult(λ = 3/4, m = 1, t* = 4/3, face of dim 1 through {(0, 4), (2, 0)}, 3 compact faces certified)
    """
    ws, terms = _parse(K, variables)
    d = len(ws)
    facets = _facets(_minimal(terms), d)
    t_star = max(Fraction(b, sum(a)) for a, b in facets)
    diagonal = (t_star,) * d
    hit = [(a, b) for a, b in facets if _dot(a, diagonal) == b]
    codim = _rank([[Fraction(x) for x in a] for a, _ in hit], d)
    face_points = tuple(sorted(a for a in terms if all(_dot(n, a) == b for n, b in hit)))
    compact = [f for f in _faces(terms, facets) if f.compact]
    compact.sort(key=lambda f: (len(f.points), sorted(f.points)))
    for face in compact:
        _check_sign(ws, terms, face)
    for face in compact:
        _certify(ws, terms, face)
    return NewtonPolyhedronResult(
        Fraction(1) / t_star,
        codim,
        "Newton polyhedron (Varchenko 1976; Watanabe 2009, ch. 7)",
        newton_distance=t_star,
        face_exponents=face_points,
        face_dimension=d - codim,
        compact_faces=len(compact),
    )
