"""Sparsity penalties and the priors over activations they correspond to.

MAP inference with a Gaussian likelihood minimises ‖x − D·a‖²/(2σ²) − log p(a), so a sparsity
penalty is ρ(a) = −log p(a) up to an additive constant and a scale (Olshausen & Field 1996;
Tibshirani 1996 for L1 ↔ Laplace). A sum of per-latent penalties is exactly an independent prior; a
penalty that is not a sum is a dependent one, and the sign of ∂²ρ/∂a_i∂a_j says how latents interact:
< 0 co-activation (group lasso, Yuan & Lin 2006), > 0 competition (exclusive lasso, Zhou, Jin & Hoi
2010; the product Π(1 + |a_i|)). See docs/theory.md §4.

:func:`penalty_from_prior` takes a density, :func:`prior_from_penalty` a penalty (times an optional
strength symbol s: p(a) ∝ exp(−s·ρ(a))); both return a :class:`PriorPenalty` with the penalty, the
unnormalised density, the dropped constant, the support, a point mass at zero when the prior has one
(spike-and-slab ↔ an L0 term), properness and its condition on the parameters, the normaliser,
separability and the coupling sign, the proximal operator, a torch function and LaTeX.

Point masses: a density term ``w·DiracDelta(a)`` is an atom at 0. Against the reference measure
δ₀ + Lebesgue the penalty is ρ(a) = λ₀·[a ≠ 0] + ρ_slab(a) with ρ(0) = 0 (so λ₀ depends on the unit
of a, as any L0 weight does). In a penalty such an L0 term is written with :func:`l0`.

Example:
    >>> import sympy as sp
    >>> a, s = sp.Symbol("a", real=True), sp.Symbol("s", positive=True)
    >>> r = prior_from_penalty(sp.log(1 + sp.Abs(a)), [a], strength=s)
    >>> r.density, r.proper_condition, r.normaliser
    ((Abs(a) + 1)**(-s), s > 1, 2/(s - 1))
"""
from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

import sympy as sp
from torch import Tensor

from ._lambdify import torch_function
from .proximal import ProxOperator, derive_prox

__all__ = ["PriorPenalty", "penalty_from_prior", "prior_from_penalty", "l0"]

SUPPORTS = ("real", "nonnegative")
# point evaluations away from kinks: DiracDelta vanishes almost everywhere, sign is math.copysign
_AE_ZERO = {"DiracDelta": lambda *x: 0.0, "sign": lambda x: (x > 0) - (x < 0)}


def l0(a: sp.Symbol) -> sp.Expr:
    """The L0 indicator [a ≠ 0] as a sympy expression (0 at a = 0, 1 elsewhere)."""
    return sp.Piecewise((0, sp.Eq(a, 0)), (1, True))


@dataclass(frozen=True)
class PriorPenalty:
    """A sparsity penalty and its prior, p(a) ∝ exp(−ρ(a)) (w.r.t. δ₀ + Lebesgue when a point mass).

    Attributes:
        variables: the coordinates a_1..a_d of one group of latents (d = 1: one latent).
        parameters: the other symbols (scales, rates, strengths).
        penalty: ρ(a), additive constants dropped; with a point mass it is 0 at a = 0 and
            ``l0_weight + slab_penalty`` elsewhere.
        density: the unnormalised continuous density exp(−ρ_slab(a)).
        dropped_constant: c in −log p(a) = ρ(a) + c for the density that was given (0 when a penalty
            was given, since its prior is defined up to normalisation: then c = log Z).
        support: ``"real"`` or ``"nonnegative"``.
        slab_penalty: ρ_slab, the penalty of the continuous part (equal to ``penalty`` without atom).
        l0_weight: λ₀, the cost of leaving zero when the prior has an atom at 0, else ``None``.
        zero_probability: P(a = 0) when the prior has an atom and it is computable, else ``None``.
        normaliser: Z = ∫ exp(−ρ) over the support (+1 for the atom), valid under ``proper_condition``;
            ``None`` when it was not found.
        proper: True, False, or ``None`` (depends on the parameters, or undecided).
        proper_condition: a sympy condition on the parameters under which the prior is proper
            (``sympy.true``/``sympy.false`` when decided outright; ``None`` when undecided).
        separable: True iff ρ is a sum of one-variable penalties (independent prior); ``None`` when
            undecided.
        coupling: ``"none"``, ``"competition"`` (∂²ρ/∂a_1∂a_2 > 0), ``"co-activation"`` (< 0),
            ``"mixed"`` or ``"undecided"``; evaluated on the open positive orthant.
        coupling_derivative: ∂²ρ/∂a_1∂a_2 on the positive orthant (d ≥ 2), else ``None``.
        coupling_certified: whether the sign was proved symbolically (else found on sampled points).
        prox: the proximal operator.
        notes: how undecided items were left undecided, and other caveats.
        source: where the pair comes from.
    """

    variables: tuple[sp.Symbol, ...]
    parameters: tuple[sp.Symbol, ...]
    penalty: sp.Expr
    density: sp.Expr
    dropped_constant: sp.Expr
    support: str
    slab_penalty: sp.Expr
    l0_weight: sp.Expr | None
    zero_probability: sp.Expr | None
    normaliser: sp.Expr | None
    proper: bool | None
    proper_condition: sp.Basic | None
    separable: bool | None
    coupling: str
    coupling_derivative: sp.Expr | None
    coupling_certified: bool
    prox: ProxOperator | None = field(repr=False)
    notes: tuple[str, ...] = ()
    source: str = ""

    @property
    def dim(self) -> int:
        return len(self.variables)

    @property
    def has_point_mass(self) -> bool:
        return self.l0_weight is not None

    def to_torch(self, **params: float) -> Callable[[Tensor], Tensor]:
        """A differentiable torch function ``f(a)``: ``a`` of shape ``(..., n)`` → ρ summed, shape ``(...)``.

        The last axis holds n / d groups of d latents (d = ``dim``); a one-variable penalty is applied
        to every latent (the independent prior at any width). Parameters are bound by keyword.
        Device and dtype follow ``a``.
        """
        names = {str(p): p for p in self.parameters}
        unknown = set(params) - set(names)
        if unknown:
            raise ValueError(f"unknown parameter(s) {sorted(unknown)}; this penalty takes {sorted(names)}")
        values = {names[k]: v for k, v in params.items()}
        return torch_function(self.penalty, self.variables, values)

    def latex(self) -> str:
        """LaTeX lines: the penalty, the density, and the normaliser/properness."""
        rho = sp.latex(self.penalty)
        lines = [rf"\rho({', '.join(map(sp.latex, self.variables))}) = {rho}",
                 rf"p \propto {sp.latex(self.density)}"]
        if self.has_point_mass:
            lines[-1] += r" \text{ on } a \neq 0, \text{ plus an atom at } 0"
        if self.normaliser is not None:
            lines.append(rf"Z = {sp.latex(self.normaliser)}")
        if self.proper_condition is not None and self.proper_condition not in (sp.true, sp.false):
            lines.append(rf"\text{{proper iff }} {sp.latex(self.proper_condition)}")
        return r" \\ ".join(lines)

    def __str__(self) -> str:
        proper = {True: "proper", False: "improper", None: f"proper if {self.proper_condition}"}[self.proper]
        if self.proper is None and self.proper_condition is None:
            proper = "properness undecided"
        sep = {True: "separable", False: "not separable", None: "separability undecided"}[self.separable]
        return f"ρ = {self.penalty}  ↔  p ∝ {self.density} on {self.support} ({proper}, {sep}, coupling {self.coupling})"


# ------------------------------------------------------------------------------------------------
# input checks
# ------------------------------------------------------------------------------------------------
def _check_variables(variables) -> tuple[sp.Symbol, ...]:
    if isinstance(variables, sp.Symbol):
        variables = (variables,)
    variables = tuple(variables)
    if not variables or not all(isinstance(v, sp.Symbol) for v in variables):
        raise ValueError(f"variables must be a non-empty sequence of sympy Symbols, got {variables!r}")
    if len(set(variables)) != len(variables):
        raise ValueError(f"variables must be distinct, got {variables}")
    return variables


def _check_symbols(expr, variables, parameters, what):
    parameters = tuple(parameters)
    unbound = expr.free_symbols - set(variables) - set(parameters)
    if unbound:
        names = ", ".join(sorted(map(str, unbound)))
        raise ValueError(
            f"the {what} has unbound free symbol(s) {names}: declare them with parameters=({names},) "
            "(preferably as positive=True symbols) or substitute numbers"
        )
    return parameters


def _support(variables, support):
    if support is None:
        return "nonnegative" if all(v.is_nonnegative for v in variables) else "real"
    if support not in SUPPORTS:
        raise ValueError(f"support must be one of {SUPPORTS}, got {support!r}")
    return support


def _sample_parameters(parameters, rng):
    values = {}
    for p in parameters:
        values[p] = rng.uniform(0.3, 3.0) if (p.is_positive or p.is_nonnegative) else rng.uniform(-2.0, 2.0)
    return values


# ------------------------------------------------------------------------------------------------
# the two directions
# ------------------------------------------------------------------------------------------------
def penalty_from_prior(density, variables, *, parameters: Sequence[sp.Symbol] = (), support: str | None = None,
                       source: str = "") -> PriorPenalty:
    """The penalty ρ = −log p(a) (constants dropped and reported) of a prior density.

    Args:
        density: sympy expression p(a), possibly unnormalised, possibly with a point mass
            ``w·DiracDelta(a)`` at zero (one variable only).
        variables: the symbols a_1..a_d.
        parameters: the other free symbols (declare them ``positive=True`` where they are).
        support: ``"real"`` or ``"nonnegative"``; default from the symbols' assumptions.

    Raises:
        ValueError: unbound free symbols; a density that is negative somewhere on the support or
            identically zero; a point mass not at zero or in several variables.
    """
    variables = _check_variables(variables)
    density = sp.sympify(density)
    parameters = _check_symbols(density, variables, parameters, "density")
    support = _support(variables, support)
    atom, continuous = _split_atom(density, variables)
    _check_nonnegative(continuous, variables, parameters, support)
    if atom is not None:
        _check_nonnegative(atom, (), parameters, support, what="point-mass weight")
    neg_log = sp.expand_log(-sp.log(continuous), force=True)
    rho_slab, const = _split_constant(neg_log, variables)
    if atom is None:
        return _analyse(rho_slab, variables, parameters, support, const, None, source)
    l0_weight = sp.simplify(const + sp.log(atom))
    return _analyse(rho_slab, variables, parameters, support, -sp.log(atom), l0_weight, source)


def prior_from_penalty(penalty, variables, *, parameters: Sequence[sp.Symbol] = (), support: str | None = None,
                       strength: sp.Symbol | None = None, source: str = "") -> PriorPenalty:
    """The prior p(a) ∝ exp(−s·ρ(a)) of a penalty ρ (s = ``strength``, a symbol, or 1).

    An L0 term (see :func:`l0`) gives a point mass at zero. Additive constants of ρ are dropped.

    Raises:
        ValueError: unbound free symbols; a penalty that is −∞ or not real somewhere.
    """
    variables = _check_variables(variables)
    penalty = sp.sympify(penalty)
    if strength is not None:
        if not isinstance(strength, sp.Symbol):
            raise ValueError(f"strength must be a sympy Symbol (e.g. Symbol('s', positive=True)), got {strength!r}")
        parameters = tuple(parameters) + (strength,)
    parameters = _check_symbols(penalty, variables, parameters, "penalty")
    support = _support(variables, support)
    slab, l0_weight = _split_l0(penalty, variables)
    scale = strength if strength is not None else sp.Integer(1)
    rho_slab, _ = _split_constant(scale * slab, variables)
    if l0_weight is not None:
        l0_weight = sp.simplify(scale * l0_weight)
    _check_nonnegative(sp.exp(-rho_slab), variables, parameters, support, what="exp(−penalty)")
    return _analyse(rho_slab, variables, parameters, support, sp.Integer(0), l0_weight, source)


# ------------------------------------------------------------------------------------------------
# pieces
# ------------------------------------------------------------------------------------------------
def _split_atom(density, variables):
    terms = sp.Add.make_args(density)
    if density.has(sp.DiracDelta) and all(t.has(sp.DiracDelta) for t in terms):
        terms = sp.Add.make_args(sp.expand(density))
    atoms = [t for t in terms if t.has(sp.DiracDelta)]
    if not atoms:
        return None, density
    if len(variables) != 1:
        raise ValueError("a point mass (DiracDelta) is supported for one-variable priors only; "
                         "write the prior per latent and apply it to every latent")
    a = variables[0]
    weight = sp.Integer(0)
    for t in atoms:
        coeff = sp.simplify(t / sp.DiracDelta(a))
        if coeff.has(a) or coeff.has(sp.DiracDelta):
            raise ValueError(f"only a point mass at zero, w·DiracDelta({a}), is supported; got the term {t}")
        weight += coeff
    rest = sp.Add(*[t for t in terms if not t.has(sp.DiracDelta)])
    if rest == 0:
        raise ValueError("the density is a pure point mass; it has no continuous part to derive a penalty from")
    return sp.simplify(weight), rest


def _split_l0(penalty, variables):
    a = variables[0]
    found = []

    def is_l0(e):
        return isinstance(e, sp.Piecewise) and len(variables) == 1 and e.args[0].cond == sp.Eq(a, 0)

    for node in sp.preorder_traversal(penalty):
        if is_l0(node):
            found.append(node)
    if not found:
        return penalty, None
    slab = penalty.replace(is_l0, lambda e: sp.Piecewise(*e.args[1:]) if len(e.args) > 2 else e.args[1].expr)
    at_zero = penalty.subs(a, 0)
    # ρ = ρ(0)·[a = 0] + slab·[a ≠ 0]; relative to ρ(0): λ₀ = (constant part of slab) − ρ(0)
    slab_var, slab_const = _split_constant(sp.expand(slab), variables)
    return slab_var, sp.simplify(slab_const - at_zero)


def _split_constant(expr, variables):
    """expr = (terms with variables) + (constant terms), splitting the top-level sum only.

    A product or power is kept whole (its hidden constants, e.g. the 1 in (1 + |a|)(1 + |b|), stay in
    the penalty), so the penalty keeps the structure that makes its torch function fast.
    """
    terms = sp.Add.make_args(expr)
    var_part = sp.Add(*[t for t in terms if t.free_symbols & set(variables)])
    const = sp.Add(*[t for t in terms if not (t.free_symbols & set(variables))])
    if var_part == 0:
        raise ValueError("the penalty does not depend on the variables (a flat prior); nothing to derive")
    return var_part, sp.simplify(const)


def _check_nonnegative(expr, variables, parameters, support, what="density", points=24, draws=8):
    """Raise if ``expr`` is not real, or negative at a sampled point for every sampled parameter set.

    Parameters are sampled in (0.3, 3) when positive (else (−2, 2)); a density that is negative only
    for some parameter values (e.g. a weight 1 − p with p > 1) is accepted: that restriction is the
    user's to state.
    """
    if expr == 0:
        raise ValueError(f"the {what} is identically zero")
    if expr.is_negative:
        raise ValueError(f"the {what} {expr} is negative; a density must be ≥ 0 on the support")
    rng = random.Random(0)
    fn = sp.lambdify(tuple(variables) + tuple(parameters), expr, "mpmath")
    witness = None
    for draw in range(draws if parameters else 1):
        pv = {p: 0.5 for p in parameters} if draw == 0 else _sample_parameters(parameters, rng)
        bad = None
        for _ in range(points):
            xs = [rng.uniform(0, 4) if support == "nonnegative" else rng.uniform(-4, 4) for _ in variables]
            try:
                value = complex(fn(*xs, *pv.values()))
            except (ZeroDivisionError, ValueError, TypeError, OverflowError):
                continue
            if abs(value.imag) > 1e-12 * max(1, abs(value.real)):
                raise ValueError(
                    f"the {what} {expr} is not real at {dict(zip(variables, xs))}; a density must be real and ≥ 0"
                )
            if value.real < 0:
                bad = (dict(zip(variables, xs)), pv)
                break
        if bad is None:
            return
        witness = bad
    raise ValueError(
        f"the {what} {expr} is negative at {witness[0]} (parameters {witness[1]}); "
        "a density must be ≥ 0 on the support"
    )


def _analyse(rho_slab, variables, parameters, support, dropped, l0_weight, source) -> PriorPenalty:
    notes = []
    density = _simplify_density(sp.exp(-rho_slab))
    if l0_weight is None:
        penalty = rho_slab
    else:
        a = variables[0]
        penalty = sp.Piecewise((0, sp.Eq(a, 0)), (l0_weight + rho_slab, True))
    separable, pieces = _separability(rho_slab, variables, parameters, notes)
    coupling, coupling_derivative, certified = _coupling(rho_slab, variables, parameters, notes)
    Z_slab, proper, condition = _normaliser(rho_slab, variables, support, separable, pieces, notes)
    normaliser, zero_prob = Z_slab, None
    if l0_weight is not None and Z_slab is not None:
        normaliser = sp.simplify(1 + sp.exp(-l0_weight) * Z_slab)
        zero_prob = sp.simplify(1 / normaliser)
    try:
        prox = derive_prox(penalty, variables, support, parameters)
    except Exception as err:  # sympy may fail on exotic penalties; fall back to numerics
        notes.append(f"closed-form prox not derived ({type(err).__name__}); numerical prox used")
        prox = ProxOperator(penalty, tuple(variables), support, "numerical", (), tuple(parameters))
    return PriorPenalty(
        variables=tuple(variables), parameters=tuple(parameters), penalty=penalty, density=density,
        dropped_constant=sp.simplify(dropped), support=support, slab_penalty=rho_slab, l0_weight=l0_weight,
        zero_probability=zero_prob, normaliser=normaliser, proper=proper, proper_condition=condition,
        separable=separable, coupling=coupling, coupling_derivative=coupling_derivative,
        coupling_certified=certified, prox=prox, notes=tuple(notes), source=source,
    )


def _simplify_density(expr):
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


def _positive_dummies(variables):
    return {v: sp.Symbol(f"{v.name}_pos", positive=True) for v in variables}


def _separability(rho, variables, parameters, notes):
    d = len(variables)
    if d == 1:
        return True, (rho,)
    mixed_nonzero = False
    for i in range(d):
        for j in range(i + 1, d):
            dij = sp.simplify(sp.diff(rho, variables[i], variables[j]))
            if dij == 0:
                continue
            if _nonzero_somewhere(dij, variables, parameters):
                mixed_nonzero = True
                break
            notes.append(f"∂²ρ/∂{variables[i]}∂{variables[j]} = {dij} not simplified to 0; separability undecided")
            return None, None
        if mixed_nonzero:
            break
    if mixed_nonzero:
        return False, None
    # separable: ρ = Σ_k [ρ(0,..,a_k,..,0) − ρ(0)] + ρ(0)
    base = {v: 0 for v in variables}
    if sp.simplify(rho.subs(base)).is_finite is not True:
        base = {v: 1 for v in variables}
    at_base = rho.subs(base)
    pieces = tuple(sp.simplify(rho.subs({u: base[u] for u in variables if u != v}) - at_base) for v in variables)
    return True, pieces


def _nonzero_somewhere(expr, variables, parameters, points=32):
    rng = random.Random(1)
    fn = sp.lambdify(tuple(variables) + tuple(parameters), expr, [_AE_ZERO, "math"])
    for _ in range(points):
        pv = _sample_parameters(parameters, rng)
        xs = [rng.uniform(0.1, 3) for _ in variables]
        try:
            if abs(fn(*xs, *pv.values())) > 1e-9:
                return True
        except (ZeroDivisionError, ValueError, TypeError, OverflowError):
            continue
    return False


def _coupling(rho, variables, parameters, notes):
    if len(variables) < 2:
        return "none", None, True
    d2 = sp.diff(rho, variables[0], variables[1])
    pos = _positive_dummies(variables)
    on_orthant = sp.simplify(d2.subs(pos))
    back = {v: k for k, v in pos.items()}
    if on_orthant == 0:
        return "none", sp.Integer(0), True
    if on_orthant.is_positive:
        return "competition", on_orthant.subs(back), True
    if on_orthant.is_negative:
        return "co-activation", on_orthant.subs(back), True
    rng = random.Random(2)
    fn = sp.lambdify(tuple(variables) + tuple(parameters), d2, [_AE_ZERO, "math"])
    signs = set()
    for _ in range(64):
        pv = _sample_parameters(parameters, rng)
        xs = [rng.uniform(0.05, 4) for _ in variables]
        try:
            val = fn(*xs, *pv.values())
        except (ZeroDivisionError, ValueError, TypeError, OverflowError):
            continue
        if math.isfinite(val) and val != 0:
            signs.add(val > 0)
    if not signs:
        notes.append("coupling sign undecided: no finite non-zero ∂²ρ/∂a₁∂a₂ at sampled points")
        return "undecided", on_orthant.subs(back), False
    notes.append("coupling sign found on 64 sampled points of the positive orthant, not proved")
    label = "mixed" if len(signs) == 2 else ("competition" if True in signs else "co-activation")
    return label, on_orthant.subs(back), False


class _SympyTimeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Interrupt a sympy call after ``seconds`` (main thread only; elsewhere no limit)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def handler(signum, frame):
        raise _SympyTimeout

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


SYMPY_SECONDS = 3.0  # the time sympy gets for one integral or limit before "undecided"


def _integrate_1d(rho, a, support, notes):
    """∫ exp(−ρ) over the support → (Z or None, proper, condition)."""
    x = sp.Symbol("x_int", positive=True)
    halves = [rho.subs(a, x)]
    if support == "real":
        halves.append(rho.subs(a, -x))
        if sp.simplify(halves[0] - halves[1]) == 0:
            halves = [halves[0], halves[0]]
    total, conditions = sp.Integer(0), []
    for half in halves:
        dens = _simplify_density(sp.exp(-half))
        try:
            with _time_limit(SYMPY_SECONDS):
                Z = sp.integrate(dens, (x, 0, sp.oo), conds="piecewise")
        except Exception as err:  # sympy raises assorted errors on hard integrals
            reason = f"timed out after {SYMPY_SECONDS} s" if isinstance(err, _SympyTimeout) else type(err).__name__
            notes.append(f"sympy could not integrate exp(−ρ) ({reason})")
            Z = sp.Integral(dens, (x, 0, sp.oo))
        if isinstance(Z, sp.Piecewise):
            value, cond = Z.args[0]
            if value.has(sp.Integral):
                value, cond = None, None
            else:
                conditions.append(cond)
                Z = value
        if Z is None or (isinstance(Z, sp.Basic) and Z.has(sp.Integral)):
            tail = _tail_index(half, x)
            if tail is not None and tail.is_number and tail < 1:
                return None, False, sp.false
            notes.append("normaliser not found in closed form; properness undecided"
                         + (f" (tail index lim ρ/log a = {tail})" if tail is not None else ""))
            return None, None, None
        if Z == sp.oo or Z.has(sp.oo, sp.zoo, sp.nan):
            return None, False, sp.false
        total += Z
    condition = sp.And(*conditions) if conditions else sp.true
    condition = sp.simplify(condition)
    Z = sp.simplify(sp.gammasimp(total))
    if condition == sp.true:
        return Z, True, sp.true
    if condition == sp.false:
        return None, False, sp.false
    return Z, None, condition


def _tail_index(rho, x):
    try:
        with _time_limit(SYMPY_SECONDS):
            return sp.limit(rho / sp.log(x), x, sp.oo)
    except Exception:  # noqa: BLE001 - sympy's limit raises many types
        return None


def _normaliser(rho, variables, support, separable, pieces, notes):
    if len(variables) == 1:
        return _integrate_1d(rho, variables[0], support, notes)
    if separable:
        Z, proper, conds = sp.Integer(1), True, []
        for v, piece in zip(variables, pieces):
            Zk, pk, ck = _integrate_1d(piece, v, support, notes)
            if pk is False:
                return None, False, sp.false
            if Zk is None:
                return None, None, None
            Z *= Zk
            conds.append(ck)
            if pk is None:
                proper = None
        cond = sp.simplify(sp.And(*conds))
        return sp.simplify(Z), (True if cond == sp.true else proper), cond
    notes.append("non-separable penalty: the normaliser and properness are not derived symbolically")
    return None, None, None
