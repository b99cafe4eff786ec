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

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import sympy as sp
from torch import Tensor

from ._lambdify import torch_function
from ._normaliser import analyse_1d, simplify_density as _simplify_density
from ._validate import parameter_values, real_penalty_values
from .proximal import ProxOperator, derive_prox

__all__ = ["PriorPenalty", "penalty_from_prior", "prior_from_penalty", "l0"]

SUPPORTS = ("real", "nonnegative")
# point evaluations away from kinks: DiracDelta vanishes almost everywhere, sign is math.copysign
_AE_ZERO = {"DiracDelta": lambda *x: 0.0, "sign": lambda x: (x > 0) - (x < 0)}


def l0(a: sp.Symbol) -> sp.Expr:
    """The L0 indicator [a ≠ 0] as a sympy expression (0 at a = 0, 1 elsewhere).

    Args:
        a: the variable.

    Returns:
        ``Piecewise((0, Eq(a, 0)), (1, True))``, recognised by :func:`prior_from_penalty` as a point mass.
    """
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
            ``None`` when it was not found or when sympy's closed form disagreed with quadrature at
            sampled parameter values (``notes`` says which). Never an unchecked closed form.
        proper: True, False, or ``None`` (depends on the parameters, or undecided).
        proper_condition: a sympy condition on the parameters under which the prior is proper
            (``sympy.true``/``sympy.false`` when decided outright; ``None`` when undecided). Proven
            from the tail index (and the index at 0 where ρ is singular), else from a closed form
            confirmed by quadrature (``notes`` says so).
        separable: True iff ρ is a sum of one-variable penalties (independent prior); ``None`` when
            undecided.
        coupling: over all pairs (i, j) with a non-zero ∂²ρ/∂a_i∂a_j on the open positive orthant:
            ``"competition"`` (all > 0), ``"co-activation"`` (all < 0), ``"mixed"`` (signs differ
            between pairs or within one), ``"none"`` (all zero) or ``"undecided"``.
        coupling_derivative: ∂²ρ/∂a_1∂a_2 on the positive orthant (d ≥ 2), else ``None``.
        coupling_proven: whether every pair's sign was proved symbolically (else some were found on
            sampled points).
        prox: the proximal operator.
        notes: how undecided items were left undecided, and other caveats.
        source: where the pair comes from.
        coupling_by_pair: ``(i, j, label)`` for every pair i < j (0-based), each label as ``coupling``.
        tail_index: τ = lim ρ(a)/log|a| as |a| → ∞ (one-variable priors; the smaller of the two tails
            on the real line): the density decays like |a|^(−τ), proper at infinity iff τ > 1. Checked
            by a difference quotient at |a| = 10¹⁰⁰, 10²⁰⁰; ``None`` when not found or not confirmed.
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
    coupling_proven: bool
    prox: ProxOperator | None = field(repr=False)
    notes: tuple[str, ...] = ()
    source: str = ""
    coupling_by_pair: tuple[tuple[int, int, str], ...] = ()
    tail_index: sp.Expr | None = None

    @property
    def dim(self) -> int:
        """d, the number of variables in one group."""
        return len(self.variables)

    @property
    def has_point_mass(self) -> bool:
        """Whether the prior has an atom at zero (the penalty then has an L0 term)."""
        return self.l0_weight is not None

    def to_torch(self, **params: float) -> Callable[[Tensor], Tensor]:
        """A differentiable torch function ``f(a)``: ``a`` of shape ``(..., n)`` → Σ_groups ρ, shape ``(...)``.

        The last axis holds n / d groups of d latents (d = ``dim``); a one-variable penalty is applied
        to every latent (the independent prior at any width). Device and dtype follow ``a``. Where ρ
        is not differentiable with an infinite slope (|a|^p with p < 1 at a = 0, √|a_i| in
        (Σ√|a_i|)²), the gradient is the valid subgradient 0, never NaN.

        Args:
            **params: a number for every parameter (by name), within the symbol's assumptions
                (``positive=True`` → > 0), finite, and such that the penalty is real.

        Returns:
            The function ``f``.

        Raises:
            ValueError: an unknown or missing parameter, a value that is NaN / inf / outside the
                symbol's assumptions, or values that make the penalty non-real (e.g. π₀ > 1 in a
                spike-and-slab).
        """
        values = parameter_values(self.parameters, params, where="to_torch")
        real_penalty_values(self.penalty, self.variables, self.support, values)
        return torch_function(self.penalty, self.variables, values)

    def latex(self) -> str:
        r"""LaTeX lines: the penalty, the density, and the normaliser / properness condition.

        Returns:
            The lines joined by ``\\``.
        """
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
        notes = f"; {len(self.notes)} note(s), see .notes" if self.notes else ""
        return (f"ρ = {self.penalty}  ↔  p ∝ {self.density} on {self.support} ({proper}, {sep}, "
                f"coupling {self.coupling}{notes})")


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
    if support == "real":
        declared = [str(v) for v in variables if v.is_nonnegative]
        if declared:
            raise ValueError(
                f"support='real' but {', '.join(declared)} is declared nonnegative, so sympy would simplify "
                f"with a ≥ 0 (e.g. |a| → a) and the prior on the negative half-line would be wrong; declare "
                f"Symbol('{declared[0]}', real=True) for a prior on the real line, or pass support='nonnegative'"
            )
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
        support: ``"real"`` or ``"nonnegative"``; default from the symbols' assumptions. ``"real"``
            with a variable declared nonnegative is refused.
        source: a label stored in the result.

    Returns:
        The :class:`PriorPenalty`; its normaliser, properness and tail index are cross-checked
        numerically (``None`` with a note where a check failed).

    Raises:
        ValueError: unbound free symbols; a density that is negative somewhere on the support or
            identically zero; a point mass not at zero or in several variables; ``support="real"``
            with a nonnegative variable.

    Example:
        >>> a = sp.Symbol("a", real=True)
        >>> penalty_from_prior(sp.exp(-sp.Abs(a - 1)) / 2, [a]).normaliser
        2
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

    Args:
        penalty: sympy expression ρ(a) in ``variables`` (and ``parameters``).
        variables: the symbols a_1..a_d.
        parameters: the other free symbols.
        support: ``"real"`` or ``"nonnegative"``; default from the symbols' assumptions.
        strength: a symbol s multiplying ρ (added to the parameters), or None for s = 1.
        source: a label stored in the result.

    Returns:
        The :class:`PriorPenalty`.

    Raises:
        ValueError: unbound free symbols; a penalty that is −∞ or not real somewhere; a strength that
            is not a Symbol; ``support="real"`` with a nonnegative variable.
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

    Returns:
        (terms with variables, constant).

    Raises:
        ValueError: no term depends on the variables.
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

    Raises:
        ValueError: identically zero, negative, or not real.
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
    coupling, coupling_derivative, proven, by_pair = _coupling(rho_slab, variables, parameters, notes)
    Z_slab, proper, condition, tail = _normaliser(rho_slab, variables, parameters, support, separable, pieces, notes)
    normaliser, zero_prob = Z_slab, None
    if l0_weight is not None and Z_slab is not None:
        normaliser = sp.simplify(1 + sp.exp(-l0_weight) * Z_slab)
        zero_prob = sp.simplify(1 / normaliser)
    elif l0_weight is not None:
        notes.append("the slab's normaliser is not known, so P(a = 0) is not reported")
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
        coupling_proven=proven, coupling_by_pair=by_pair, tail_index=tail, prox=prox, notes=tuple(notes),
        source=source,
    )


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
    at_base = sp.simplify(rho.subs(base))
    pieces = tuple(sp.simplify(rho.subs({u: base[u] for u in variables if u != v}) - at_base) for v in variables)
    # numerical check of the decomposition ρ(a) = Σ_k piece_k(a_k) + ρ(base) at sampled points
    residual = rho - sum(p for p in pieces) - at_base
    if _nonzero_somewhere(residual, variables, parameters, signed=True):
        notes.append("the mixed derivatives vanish but ρ ≠ Σ_k ρ_k(a_k) at sampled points; separability undecided")
        return None, None
    return True, (pieces, at_base)


def _nonzero_somewhere(expr, variables, parameters, points=32, signed=False):
    rng = random.Random(1)
    fn = sp.lambdify(tuple(variables) + tuple(parameters), expr, [_AE_ZERO, "math"])
    for _ in range(points):
        pv = _sample_parameters(parameters, rng)
        xs = [rng.uniform(0.1, 3) * (rng.choice((-1, 1)) if signed else 1) for _ in variables]
        try:
            if abs(fn(*xs, *pv.values())) > 1e-9:
                return True
        except (ZeroDivisionError, ValueError, TypeError, OverflowError):
            continue
    return False


def _pair_coupling(rho, ai, aj, variables, parameters):
    """Sign of ∂²ρ/∂a_i∂a_j on the open positive orthant → (label, derivative, proven, sampled)."""
    pos = _positive_dummies(variables)
    back = {v: k for k, v in pos.items()}
    d2 = sp.diff(rho, ai, aj)
    on_orthant = sp.simplify(d2.subs(pos))
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
        return "undecided", on_orthant.subs(back), False
    label = "mixed" if len(signs) == 2 else ("competition" if True in signs else "co-activation")
    return label, on_orthant.subs(back), False


def _coupling(rho, variables, parameters, notes):
    """The coupling over all pairs (i, j).

    ``none`` / ``competition`` / ``co-activation`` when every pair with a non-zero mixed derivative has
    that sign, ``mixed`` when the signs differ (between pairs or within one pair), ``undecided`` when a
    pair's sign could not be found.

    Returns:
        (label, ∂²ρ/∂a_1∂a_2 on the orthant, whether all signs are proven, per-pair labels).
    """
    if len(variables) < 2:
        return "none", None, True, ()
    d = len(variables)
    # ρ invariant under a transposition and a cyclic shift (which generate all permutations): every pair
    # has the coupling of (a_1, a_2), so one pair is computed (d(d − 1)/2 of them otherwise)
    swap = {variables[0]: variables[1], variables[1]: variables[0]}
    shift = {variables[k]: variables[(k + 1) % d] for k in range(d)}
    symmetric = rho.xreplace(swap) == rho and rho.xreplace(shift) == rho
    by_pair, first, proven = [], None, True
    for i in range(d):
        for j in range(i + 1, d):
            if symmetric and by_pair:
                by_pair.append((i, j, by_pair[0][2]))
                continue
            label, derivative, pair_proven = _pair_coupling(rho, variables[i], variables[j], variables, parameters)
            by_pair.append((i, j, label))
            first = derivative if first is None else first
            proven = proven and pair_proven
            if not pair_proven:
                what = "undecided (no finite non-zero value at sampled points)" if label == "undecided" else \
                    f"{label}, found on 64 sampled points of the positive orthant, not proved"
                notes.append(f"coupling of ({variables[i]}, {variables[j]}): {what}")
    labels = {lab for _, _, lab in by_pair} - {"none"}
    if "undecided" in labels:
        coupling = "undecided"
    elif not labels:
        coupling = "none"
    elif len(labels) == 1:
        coupling = labels.pop()
    else:
        coupling = "mixed"
    return coupling, first, proven, tuple(by_pair)


def _normaliser(rho, variables, parameters, support, separable, pieces, notes):
    """(Z, proper, condition, tail index) of exp(−ρ); see :mod:`._normaliser` for how each is checked."""
    if len(variables) == 1:
        r = analyse_1d(rho, variables[0], support, tuple(parameters))
        notes.extend(r.notes)
        return r.normaliser, r.proper, r.condition, r.tail_index
    if separable:
        # ρ = Σ_k piece_k(a_k) + ρ(base): Z = exp(−ρ(base))·Π_k Z_k
        pieces, at_base = pieces
        Z, proper, conds = sp.exp(-at_base), True, []
        for v, piece in zip(variables, pieces):
            r = analyse_1d(piece, v, support, tuple(parameters))
            notes.extend(f"{v}: {n}" for n in r.notes)
            if r.proper is False:
                return None, False, sp.false, None
            if r.condition is None:
                return None, None, None, None
            conds.append(r.condition)
            if r.proper is None:
                proper = None
            if r.normaliser is None:
                Z = None
            elif Z is not None:
                Z *= r.normaliser
        cond = sp.simplify(sp.And(*conds))
        return (None if Z is None else sp.simplify(Z)), (True if cond == sp.true else proper), cond, None
    notes.append("non-separable penalty: the normaliser and properness are not derived symbolically")
    return None, None, None, None
