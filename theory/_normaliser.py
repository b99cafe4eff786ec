"""The normaliser Z = ∫ exp(−ρ) of a one-variable prior, its properness and its tail index (docs/theory.md §4).

Nothing here trusts sympy's word alone (issue 11):

* **Kinks first.** The integral over each half-line is split at the kinks of ρ (roots of the
  arguments of Abs / sign / Heaviside, Piecewise boundaries, Max / Min switches) and each piece is
  integrated with the kinks resolved, in the shifted variable u = x − (left end). sympy's own
  handling of ``Abs(x - 1)`` on x > 0 is wrong (it returns e for ∫₀^∞ e^{−|x−1|} dx = 2 − 1/e).
* **Properness is proved from indices, not from an integral.** On a half-line, exp(−ρ(x)) = x^{−ρ/log x};
  with the tail index τ = lim_{x→∞} ρ(x)/log x the tail is integrable if τ > 1 and not if τ < 1
  (at τ = 1 the next order κ = lim (ρ − log x)/log log x decides: > 1 integrable, < 1 not). Near the
  end point 0 the index β = lim_{x→0⁺} −ρ(x)/log x (integrable iff β > −1) is used when ρ is not finite
  there; elsewhere ρ must be proven finite (a structural check with sympy's assumptions). Each index
  is a sympy limit, cross-checked by a difference quotient at x = 10^{±100}, 10^{±200} (mpmath).
* **Every closed form is checked by quadrature.** The symbolic Z is compared with ``scipy.integrate.quad``
  (split at the kinks, tail in log coordinates) at sampled parameter values that satisfy its
  condition; on disagreement, or when no reliable check is possible, the normaliser is ``None`` with a
  note saying why.
* **No clock.** Each sympy call runs under an *operation budget* (a count of Python function calls,
  via ``sys.settrace``), never a wall-clock limit, and the integration strategies are tried in a fixed
  order (Meijer-G, then manual rules; sympy's open-ended Risch / heuristic search is never used), so
  the verdict does not depend on the machine's speed. The budget is a guard against pathological
  inputs, set far above what the catalogue needs; results are cached per expression.
"""
from __future__ import annotations

import functools
import inspect
import math
import random
import sys
import warnings
from dataclasses import dataclass

import mpmath
import sympy as sp

OPERATION_BUDGET = 1_000_000  # Python function calls one sympy integral or limit may make
_RTOL = 1e-6  # agreement between a closed form and quadrature
# point evaluations away from kinks: DiracDelta vanishes almost everywhere, sign is math.copysign-like
_AE = {"DiracDelta": lambda *x: 0.0, "sign": lambda x: (x > 0) - (x < 0)}


_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


class BudgetExhausted(BaseException):
    """Raised inside sympy when a call exceeds its operation budget (a BaseException, so that sympy's
    own ``except Exception`` clauses cannot swallow it)."""


def budgeted(fn, budget: int | None = None):
    """Run ``fn()`` allowing at most ``budget`` (default :data:`OPERATION_BUDGET`) Python function calls;
    raise BudgetExhausted beyond.

    The count is deterministic for a given expression and sympy version (up to the state of sympy's
    cache), unlike a wall-clock limit. Works in any thread; a previous trace function is restored.
    """
    budget = OPERATION_BUDGET if budget is None else budget
    count, fired = 0, False
    previous = sys.gettrace()

    def tracer(frame, event, arg):
        nonlocal count, fired
        count += 1
        # never raise into a generator being resumed or closed, or a finaliser: an exception there can be
        # "ignored" by the interpreter, which would also switch tracing off; the next plain call raises
        if count > budget and not frame.f_code.co_flags & _RESUMABLE and frame.f_code.co_name != "__del__":
            fired = True
            raise BudgetExhausted
        return None

    sys.settrace(tracer)
    try:
        result = fn()
    finally:
        sys.settrace(previous)
    if fired:  # the exception was swallowed somewhere: the rest ran without a budget, discard it
        raise BudgetExhausted
    return result


@dataclass(frozen=True)
class OneDimensional:
    """Result of :func:`analyse_1d`: Z or None, properness, its condition, the tail index, notes."""

    normaliser: sp.Expr | None
    proper: bool | None
    condition: sp.Basic | None
    tail_index: sp.Expr | None
    notes: tuple[str, ...]


def simplify_density(expr):
    """exp(−s·log u + rest) → u^(−s)·exp(rest), in every exp factor (sympy integrates powers far faster)."""

    def convert(e):
        factors, rest = [], []
        for term in sp.Add.make_args(sp.expand(e.args[0])):
            logs = [f for f in sp.Mul.make_args(term) if isinstance(f, sp.log)]
            if len(logs) == 1:
                factors.append(logs[0].args[0] ** sp.cancel(term / logs[0]))
            else:
                rest.append(term)
        return sp.Mul(*factors) * sp.exp(sp.Add(*rest)) if factors else e

    return sp.powsimp(expr.replace(lambda e: isinstance(e, sp.exp), convert), force=True)


# ------------------------------------------------------------------------------------------------
# kinks
# ------------------------------------------------------------------------------------------------
def _switch_arguments(expr, origins=False):
    out = []
    for node in sp.preorder_traversal(expr):
        if origins and isinstance(node, sp.Pow):
            out.append(node.base)  # where a power or a log is centred: natural origins
        elif origins and isinstance(node, sp.log):
            out.append(node.args[0])
        elif isinstance(node, (sp.Abs, sp.sign, sp.Heaviside)):
            out.append(node.args[0])
        elif isinstance(node, sp.Piecewise):
            for _, cond in node.args:
                if isinstance(cond, sp.Basic):
                    out.extend(r.lhs - r.rhs for r in cond.atoms(sp.Rel))
        elif isinstance(node, (sp.Max, sp.Min)):
            args = node.args
            out.extend(args[i] - args[j] for i in range(len(args)) for j in range(i + 1, len(args)))
    return out


def kinks(expr, x, positive=True):
    """Sorted exact points x > 0 where ``expr`` may switch formula, or None when some switch point is
    not an explicit root of a polynomial in x with numeric coefficients.

    With ``positive=False``: all real such points, and also the zeros of the bases of powers and of
    the arguments of logs (the natural origins of a shifted variable)."""
    points = set()
    for g in _switch_arguments(expr, origins=not positive):
        if not g.has(x):
            continue
        if g.free_symbols - {x}:
            return None
        try:
            poly = sp.Poly(g, x)
        except sp.PolynomialError:
            return None
        for r in sp.real_roots(poly):
            if r.has(sp.CRootOf):
                return None
            if r > 0 or not positive:
                points.add(r)
    return sorted(points)


def _resolve(expr, x, m):
    """``expr`` with every Abs / sign / Heaviside / Max / Min / Piecewise resolved at the point x = m
    (valid on the whole interval between two kinks containing m), or None if a switch is undecided."""
    def value(g):
        v = g.subs(x, m)
        return v if v.is_number else None

    failed = []

    def abs_(e):
        v = value(e.args[0])
        if v is None:
            failed.append(e)
            return e
        return e.args[0] if v >= 0 else -e.args[0]

    def sign_(e):
        v = value(e.args[0])
        if v is None:
            failed.append(e)
            return e
        return sp.Integer(1) if v > 0 else sp.Integer(-1)

    def heaviside(e):
        v = value(e.args[0])
        if v is None:
            failed.append(e)
            return e
        return sp.Integer(1) if v > 0 else sp.Integer(0)

    def maxmin(e):
        vals = [value(a) for a in e.args]
        if any(v is None for v in vals):
            failed.append(e)
            return e
        pick = max if isinstance(e, sp.Max) else min
        return e.args[vals.index(pick(vals))]

    def piecewise(e):
        for branch, cond in e.args:
            c = cond.subs(x, m) if isinstance(cond, sp.Basic) else cond
            if c == sp.true:
                return branch
            if c != sp.false:
                failed.append(e)
                return e
        failed.append(e)
        return e

    out = expr
    for kind, fn in ((sp.Piecewise, piecewise), (sp.Abs, abs_), (sp.sign, sign_), (sp.Heaviside, heaviside),
                     ((sp.Max, sp.Min), maxmin)):
        out = out.replace(lambda e, k=kind: isinstance(e, k), fn)
    return None if failed else out


# ------------------------------------------------------------------------------------------------
# symbolic integration, in a fixed order of strategies under an operation budget
# ------------------------------------------------------------------------------------------------
def _integrate_piece(dens, u, upper, notes, lower=0):
    """∫_lower^upper dens(u) du → (value, condition) | ("oo", None) | (None, None)."""
    # fixed order: a rational integrand by its rational antiderivative (Hermite / Lazard–Rioboo–Trager,
    # always terminates); then on [0, ∞) Meijer-G only (manual rules there only find antiderivatives and
    # take a limit, slowly), on a finite piece the manual rules first, then Meijer-G
    strategies = ({"meijerg": True},) if upper == sp.oo else ({"manual": True}, {"meijerg": True})
    if lower != 0:
        strategies = ({"manual": True}, {"meijerg": True})
    if dens.is_rational_function(u):
        strategies = ({"rational": True},) + strategies
    for kw in strategies:
        try:
            if "rational" in kw:
                Z = budgeted(lambda: _rational_integral(dens, u, lower, upper))
            else:
                Z = budgeted(lambda: sp.integrate(dens, (u, lower, upper), conds="piecewise", **kw))
        except BudgetExhausted:
            notes.append(f"sympy's {next(iter(kw))} integration exceeded its operation budget "
                         f"({OPERATION_BUDGET} calls)")
            continue
        except Exception as err:  # noqa: BLE001 - sympy raises assorted errors on hard integrals
            notes.append(f"sympy's {next(iter(kw))} integration failed ({type(err).__name__})")
            continue
        cond = sp.true
        if isinstance(Z, sp.Piecewise) and Z.args[-1].expr.has(sp.Integral):
            Z, cond = Z.args[0]  # (value, convergence condition), (unevaluated, True)
        elif isinstance(Z, sp.Piecewise) and upper != sp.oo:
            Z = _generic_branch(Z)
        if Z.has(sp.Integral):
            continue
        if Z.has(sp.oo, -sp.oo, sp.zoo, sp.nan):
            return "oo", None
        return Z, cond
    return None, None


def _rational_integral(dens, u, lower, upper):
    """∫_lower^upper of a rational function without poles there by its antiderivative (ratint)."""
    from sympy.integrals.rationaltools import ratint

    F = ratint(sp.cancel(dens), u)
    top = sp.limit(F, u, sp.oo) if upper == sp.oo else F.subs(u, upper)
    return sp.simplify(top - F.subs(u, lower))


def _generic_branch(Z):
    """The branch of a case split (e.g. s ≠ 1 / s = 1) that holds at generic parameter values.

    The integral of a continuous integrand over a finite interval is continuous in the parameters, so
    the generic formula is right everywhere as a limit (and the total is checked by quadrature)."""
    parameters = tuple(sorted(Z.free_symbols, key=str))
    samples = _parameter_samples(parameters, 3, seed=7, ones=False)
    for value, cond in Z.args:
        if all(bool(cond.subs(vals)) for vals in samples) if isinstance(cond, sp.Basic) else cond:
            return value
    return Z


def _symbolic_half(rho, x, notes):
    """∫₀^∞ exp(−ρ(x)) dx split at the kinks → (Z, condition) | ("oo", None) | (None, None)."""
    points = kinks(rho, x)
    if points is None:  # switch points depend on parameters: integrate as is (quadrature checks it)
        pieces = [(sp.Integer(0), sp.oo, rho)]
    else:
        ends = [sp.Integer(0), *points, sp.oo]
        pieces = []
        for lo, hi in zip(ends[:-1], ends[1:]):
            mid = lo + 1 if hi == sp.oo else (lo + hi) / 2
            resolved = _resolve(rho, x, mid)
            if resolved is None:
                return None, None
            pieces.append((lo, hi, resolved))
    u = sp.Dummy("u", positive=True)
    total, conds = sp.Integer(0), []
    for lo, hi, piece in pieces:
        # u measures the distance from the kink that bounds the piece (the kinks are where ρ's formula
        # changes, so |x − k|-type terms become powers of u): from lo, or from hi when lo is the origin
        at = lo + u if (lo != 0 or hi == sp.oo) else hi - u
        dens = simplify_density(sp.exp(-sp.expand(piece.subs(x, at))))
        Z, cond = _integrate_piece(dens, u, hi - lo if hi != sp.oo else sp.oo, notes)
        if Z is None and hi == sp.oo:
            # then from the natural origin r nearest to lo (e.g. −3/2 for √|x + 3/2| on x > 0, μ for
            # e^{−(x − μ)²}): ∫_{lo−r}^∞ f(r + t) dt
            origins = sorted((r for r in (kinks(rho, x, positive=False) or []) if r != lo), key=lambda r: abs(r - lo))
            if origins:
                t = sp.Dummy("t", positive=True) if origins[0] < lo else sp.Dummy("t", real=True)
                dens = simplify_density(sp.exp(-sp.expand(piece.subs(x, origins[0] + t))))
                Z, cond = _integrate_piece(dens, t, sp.oo, notes, lower=lo - origins[0])
        if Z is None or Z == "oo":
            return Z, None
        total += Z
        conds.append(cond)
    return total, sp.And(*conds)


# ------------------------------------------------------------------------------------------------
# local finiteness and the indices at 0 and ∞
# ------------------------------------------------------------------------------------------------
_BOUNDED = (sp.sin, sp.cos, sp.tanh, sp.atan, sp.erf, sp.erfc, sp.sign, sp.Heaviside)
_FINITE_OF_FINITE = (sp.exp, sp.Abs, sp.sinh, sp.cosh, sp.Max, sp.Min) + _BOUNDED


def finite_on(expr, x) -> bool:
    """True only if ``expr`` is proven finite on every compact subset of the domain of ``x`` (its
    assumptions: nonnegative → [0, ∞), positive → (0, ∞)); a structural check, False when unsure."""
    if expr.is_number:
        return bool(expr.is_finite)
    if isinstance(expr, sp.Symbol):
        return expr == x or expr.is_finite is not False
    if isinstance(expr, (sp.Add, sp.Mul)) or type(expr) in _FINITE_OF_FINITE:
        return all(finite_on(a, x) for a in expr.args)
    if isinstance(expr, sp.Pow):
        base, e = expr.args
        if not (finite_on(base, x) and finite_on(e, x)):
            return False
        if e.is_integer and e.is_nonnegative:
            return True
        if e.is_positive and base.is_nonnegative:
            return True
        # a negative or non-integer power needs a base bounded away from 0 (continuous and positive)
        return bool(base.is_positive) and not base.has(sp.Piecewise, sp.sign, sp.Heaviside)
    if isinstance(expr, (sp.log, sp.loggamma)):
        arg = expr.args[0]
        return finite_on(arg, x) and bool(arg.is_positive) and not arg.has(sp.Piecewise, sp.sign, sp.Heaviside)
    if isinstance(expr, sp.Piecewise):
        return all(finite_on(b, x) for b, _ in expr.args)
    return False


def _limit(expr, x, point, direction, notes, what):
    try:
        value = budgeted(lambda: sp.limit(expr, x, point, direction))
    except BudgetExhausted:
        notes.append(f"{what}: sympy's limit exceeded its operation budget ({OPERATION_BUDGET} calls)")
        return None
    except Exception as err:  # noqa: BLE001 - sympy's limit raises many types
        notes.append(f"{what}: sympy's limit failed ({type(err).__name__})")
        return None
    if value.has(x, sp.Limit, sp.AccumBounds, sp.zoo, sp.nan) or not (value.is_extended_real is not False):
        notes.append(f"{what}: sympy's limit is {value}, not a definite value")
        return None
    return value


def _quotient(rho_fn, x1, x2, denom):
    """(ρ(x2) − ρ(x1)) / denom in mpmath, or None when not real."""
    with mpmath.workdps(40):
        try:
            v = (rho_fn(mpmath.mpf(x2)) - rho_fn(mpmath.mpf(x1))) / denom
        except (ZeroDivisionError, ValueError, TypeError, OverflowError):
            return None
        v = complex(v)
    return v.real if abs(v.imag) <= 1e-20 * max(1.0, abs(v.real)) else None


def _agrees(numeric, exact, rtol=0.02):
    if numeric is None:
        return False
    if exact == sp.oo:
        return numeric > 100
    if exact == -sp.oo:
        return numeric < -100
    exact = float(exact)
    return abs(numeric - exact) <= rtol * max(1.0, abs(exact))


def _parameter_samples(parameters, count, condition=sp.true, seed=3, draws=64, ones=True):
    """Up to ``count`` deterministic parameter points satisfying ``condition`` (positive symbols in
    (0.3, 3), others in (−2, 2), three decimals); the first point is all-ones (with ``ones``) when it
    satisfies the condition."""
    rng = random.Random(seed)
    out = []
    for k in range(draws):
        if k == 0 and ones:
            vals = {p: sp.Integer(1) for p in parameters}
        else:
            vals = {p: sp.Rational(f"{rng.uniform(0.3, 3.0) if (p.is_positive or p.is_nonnegative) else rng.uniform(-2.0, 2.0):.3f}")
                    for p in parameters}
        try:
            ok = condition.subs(vals) if isinstance(condition, sp.Basic) else condition
        except (TypeError, ValueError):
            continue
        if ok == sp.true:
            out.append(vals)
        if len(out) == count or not parameters:
            break
    return out


def _checked_index(rho, x, parameters, at, notes):
    """The index at ∞ (τ = lim ρ/log x) or at 0 (β = lim −ρ/log x), confirmed numerically; else None."""
    what = "tail index lim ρ/log a" if at == "oo" else "index at 0, lim −ρ/log a"
    if at == "oo":
        index = _limit(rho / sp.log(x), x, sp.oo, "-", notes, what)
        x1, x2, sign = mpmath.mpf(10) ** 100, mpmath.mpf(10) ** 200, 1
    else:
        index = _limit(-rho / sp.log(x), x, 0, "+", notes, what)
        x1, x2, sign = mpmath.mpf(10) ** -100, mpmath.mpf(10) ** -200, -1
    if index is None:
        return None
    for vals in _parameter_samples(parameters, 3):
        fn = sp.lambdify(x, rho.subs(vals), [_AE, "mpmath"])
        with mpmath.workdps(40):
            q = _quotient(fn, x1, x2, sign * (mpmath.log(x2) - mpmath.log(x1)))
        exact = index.subs(vals)
        if not (exact.is_number or exact in (sp.oo, -sp.oo)) or not _agrees(q, exact):
            notes.append(f"{what} = {index} not confirmed numerically (difference quotient {q} at "
                         f"parameters {vals}); not used")
            return None
    return index


def _second_order(rho, x, parameters, notes):
    """κ = lim (ρ − log x)/log log x (used when τ = 1), confirmed numerically; else None."""
    what = "second-order tail index lim (ρ − log a)/log log a"
    kappa = _limit((rho - sp.log(x)) / sp.log(sp.log(x)), x, sp.oo, "-", notes, what)
    if kappa is None:
        return None
    x1, x2 = mpmath.mpf(10) ** 100, mpmath.mpf(10) ** 200
    for vals in _parameter_samples(parameters, 3):
        fn = sp.lambdify(x, rho.subs(vals) - sp.log(x), [_AE, "mpmath"])
        with mpmath.workdps(40):
            q = _quotient(fn, x1, x2, mpmath.log(mpmath.log(x2)) - mpmath.log(mpmath.log(x1)))
        exact = kappa.subs(vals)
        if not (exact.is_number or exact in (sp.oo, -sp.oo)) or not _agrees(q, exact, rtol=0.05):
            notes.append(f"{what} = {kappa} not confirmed numerically (difference quotient {q}); not used")
            return None
    return kappa


def _index_verdict(index, threshold):
    """sympy condition 'index > threshold' (true / false / a relation in the parameters)."""
    if index == sp.oo:
        return sp.true
    if index == -sp.oo:
        return sp.false
    return sp.simplify(sp.Gt(index, threshold))


def _half_properness(rho, x, parameters, notes):
    """Proven properness of ∫₀^∞ exp(−ρ(x)) dx → (verdict, τ): verdict is a sympy condition (true /
    false / in the parameters) or None when not proven either way."""
    xn = sp.Dummy("x", nonnegative=True)
    xp = sp.Dummy("x", positive=True)
    local = sp.true
    if not finite_on(rho.subs(x, xn), xn):
        if not finite_on(rho.subs(x, xp), xp):
            local = None
            notes.append("ρ not proven finite on (0, ∞); local integrability not proven")
        else:
            beta = _checked_index(rho, x, parameters, "0", notes)
            local = None if beta is None or beta == -1 else _index_verdict(beta, -1)
    tau = _checked_index(rho, x, parameters, "oo", notes)
    if tau is None:
        tail = None
    elif tau == 1:
        kappa = _second_order(rho, x, parameters, notes)
        tail = None if kappa is None or kappa == 1 else _index_verdict(kappa, 1)
        if tail is None:
            notes.append("tail index 1: the next order does not decide properness")
    else:
        tail = _index_verdict(tau, 1)
    if local == sp.false or tail == sp.false:
        return sp.false, tau
    if local is None or tail is None:
        return None, tau
    # a condition τ > 1 in the parameters: proper where it holds, improper where τ < 1; at the boundary
    # τ = 1 the closed form's condition is used when it agrees with this one at sampled parameters
    return sp.simplify(sp.And(local, tail)), tau


# ------------------------------------------------------------------------------------------------
# quadrature
# ------------------------------------------------------------------------------------------------
def _density_fn(rho, x):
    fast = sp.lambdify(x, rho, [_AE, "math"])
    slow = sp.lambdify(x, rho, [_AE, "mpmath"])

    def f(t):
        try:
            r = fast(t)
            if isinstance(r, complex):
                return math.nan
            return math.exp(-r)
        except OverflowError:
            pass
        except (ValueError, ZeroDivisionError, TypeError):
            return math.nan
        try:
            with mpmath.workdps(20):
                r = complex(mpmath.exp(-slow(mpmath.mpf(t))))
        except (ValueError, ZeroDivisionError, TypeError, OverflowError):
            return math.nan
        return r.real if r.imag == 0 else math.nan

    return f


def quad_half(rho, x):
    """∫₀^∞ exp(−ρ(x)) dx for a ρ with numbers only → (value, error estimate), split at the kinks,
    the tail [c, ∞) integrated in u = log(x/c) (algebraic tails become exponential)."""
    from scipy import integrate

    f = _density_fn(rho, x)
    points = [float(k) for k in (kinks(rho, x) or [])]
    c = max([1.0] + points)
    ends = [0.0] + [p for p in points if p < c] + [c]
    value, error = 0.0, 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", integrate.IntegrationWarning)
        for lo, hi in zip(ends[:-1], ends[1:]):
            if hi > lo:
                v, e = integrate.quad(f, lo, hi, limit=200, epsabs=0, epsrel=1e-11)
                value, error = value + v, error + e
        v, e = integrate.quad(lambda u: f(c * math.exp(u)) * c * math.exp(u) if u < 700 else 0.0, 0, math.inf,
                              limit=200, epsabs=0, epsrel=1e-11)
    return value + v, error + e


def _numeric(expr):
    v = complex(sp.N(expr, 20))
    return v.real if abs(v.imag) <= 1e-12 * max(1.0, abs(v.real)) else math.nan


def quadrature_check(Z, halves, x, parameters, condition, notes, samples=3):
    """Whether the closed form Z of Σ_halves ∫₀^∞ exp(−ρ_h) agrees with quadrature at up to ``samples``
    parameter points satisfying ``condition`` (at least one reliable comparison is required)."""
    checked = 0
    for vals in _parameter_samples(parameters, samples, condition):
        try:
            total, err = 0.0, 0.0
            for half in halves:
                v, e = quad_half(half.subs(vals), x)
                total, err = total + v, err + e
        except Exception:  # noqa: BLE001 - an IntegrationWarning or a non-finite integrand: no reliable check
            continue
        if not (math.isfinite(total) and err <= 1e-6 * abs(total)):
            continue
        exact = _numeric(Z.subs(vals))
        if not abs(exact - total) <= _RTOL * abs(total) + 10 * err:
            notes.append(f"sympy's normaliser {Z} disagrees with quadrature at parameters {vals} "
                         f"({exact:.12g} vs {total:.12g}); rejected")
            return False
        checked += 1
    if not checked:
        notes.append(f"sympy's normaliser {Z} could not be confirmed by quadrature (no reliable quadrature at "
                     "sampled parameters); not reported")
        return False
    return True


def _conditions_agree(c1, c2, parameters):
    if c1 == c2:
        return True
    for vals in _parameter_samples(parameters, 16, sp.true, seed=5):
        try:
            if bool(c1.subs(vals)) != bool(c2.subs(vals)):
                return False
        except (TypeError, ValueError):
            return False
    return True


# ------------------------------------------------------------------------------------------------
# the one-variable analysis
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=512)
def analyse_1d(rho: sp.Expr, a: sp.Symbol, support: str, parameters: tuple) -> OneDimensional:
    """Normaliser, properness and tail index of exp(−ρ(a)) on the support (see the module docstring)."""
    notes: list[str] = []
    x = sp.Symbol("x_int", positive=True)
    halves = [rho.subs(a, x)]
    if support == "real":
        negative = rho.subs(a, -x)
        halves.append(halves[0] if sp.simplify(halves[0] - negative) == 0 else negative)
    # proof of properness from the indices
    verdicts, taus = [], []
    for half in (halves[:1] if halves[-1] is halves[0] else halves):
        v, tau = _half_properness(half, x, parameters, notes)
        verdicts.append(v)
        taus.append(tau)
    if any(v == sp.false for v in verdicts):
        proof = sp.false
    elif any(v is None for v in verdicts):
        proof = None
    else:
        proof = sp.simplify(sp.And(*verdicts))
    tail = None if any(t is None for t in taus) else (taus[0] if len(set(taus)) == 1 else sp.Min(*taus))
    # the closed form, each distinct half once
    distinct = [(halves[0], len(halves))] if halves[-1] is halves[0] else [(h, 1) for h in halves]
    Z, sym_cond, divergent = None, None, False
    if proof != sp.false:
        total, conds = sp.Integer(0), []
        for half, multiplicity in distinct:
            Zh, ch = _symbolic_half(half, x, notes)
            if Zh is None or Zh == "oo":
                divergent = Zh == "oo"
                total = None
                if Zh is None:
                    notes.append("normaliser not found in closed form")
                break
            total += multiplicity * Zh
            conds.append(ch)
        if total is not None:
            Z = sp.simplify(sp.gammasimp(total))
            sym_cond = sp.simplify(sp.And(*conds))
    if proof == sp.false:
        return OneDimensional(None, False, sp.false, tail, tuple(notes))
    if Z is not None:
        cond = sym_cond if proof is None else proof
        if proof is not None and not _conditions_agree(sym_cond, proof, parameters):
            notes.append(f"sympy's convergence condition {sym_cond} differs from the proven condition {proof}; "
                         "normaliser not reported")
            Z = None
        elif cond == sp.false or not quadrature_check(Z, halves, x, parameters, cond, notes):
            Z = None
    if divergent and proof is None:
        notes.append("sympy reports a divergent integral, but the indices do not prove it; properness undecided")
    if proof is None:
        if Z is None:
            if not any("undecided" in n for n in notes):
                notes.append("properness undecided")
            return OneDimensional(None, None, None, tail, tuple(notes))
        notes.append("properness rests on sympy's integral, confirmed by quadrature (the indices did not decide)")
        proof = cond
    proper = True if proof == sp.true else None
    return OneDimensional(Z, proper, proof, tail, tuple(notes))
