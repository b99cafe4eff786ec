"""Translate a sympy expression into a differentiable torch function (our own ``lambdify``).

sympy 1.14's ``lambdify(..., "torch")`` mistranslates Max/Min, Heaviside, gamma and expint, and a
``Piecewise`` whose unselected branch is singular gives NaN gradients through ``torch.where``
(docs/theory.md §4). This module walks the expression tree itself:

* numbers become Python floats (no tensor allocation, dtype follows the input);
* ``x**2`` → ``x*x``, ``x**-1`` → ``1/x``, ``x**(1/2)`` → ``sqrt``, ``log(1 + x)`` → ``log1p(x)``;
* ``x**p`` with 0 < p < 1 has the subgradient 0 at x = 0 instead of torch's NaN (inf · sign'(0));
* ``Max``/``Min`` → ``torch.maximum``/``clamp``; ``Heaviside(x)`` → ``(x > 0)`` (½ at 0);
* ``Piecewise`` uses the "double where": each branch is evaluated on inputs moved, where the branch
  is not selected, to a point where it is finite, so no NaN or inf leaks into the gradient;
* functions it cannot translate exactly (``gamma``, ``expint``, ...) raise ``NotImplementedError``
  naming the function, instead of producing a silently wrong result.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import sympy as sp
import torch
from torch import Tensor

__all__ = ["torch_function"]

_UNARY = {
    sp.Abs: torch.abs,
    sp.exp: torch.exp,
    sp.sign: torch.sign,
    sp.tanh: torch.tanh,
    sp.sinh: torch.sinh,
    sp.cosh: torch.cosh,
    sp.sin: torch.sin,
    sp.cos: torch.cos,
    sp.atan: torch.atan,
    sp.erf: torch.special.erf,
    sp.erfc: torch.special.erfc,
    sp.loggamma: torch.lgamma,
}


def _num(expr: sp.Expr) -> float:
    value = complex(sp.N(expr, 30))
    if value.imag != 0:
        raise ValueError(f"the constant {expr} is not real; a penalty must be real-valued")
    return float(value.real)


class _Translator:
    """Evaluates an expression on tensors; ``env`` maps symbols to tensors or floats."""

    def __init__(self, env: Mapping[sp.Symbol, object], safe_cache: dict | None = None,
                 groups: Tensor | None = None, variables: tuple = ()):
        self.env = dict(env)
        self.safe_cache = {} if safe_cache is None else safe_cache
        self.groups = groups  # (..., G, d) when the variables are the d coordinates of each group
        self.variables = variables

    def _symmetric(self, e):
        """If ``e`` (an Add or Mul) contains f(a_1), ..., f(a_d) for every group variable, return
        (f(a_1), the other arguments); evaluated as one op on the (..., G, d) tensor, then reduced."""
        if self.groups is None or len(e.args) < len(self.variables):
            return None
        v0 = self.variables[0]
        args = list(e.args)
        for t in args:
            if t.free_symbols & set(self.variables) == {v0}:
                family = [t.xreplace({v0: v}) for v in self.variables]
                if all(f in args for f in family):
                    rest = list(args)
                    for f in family:
                        rest.remove(f)
                    return t, rest
        return None

    def _on_groups(self, template):
        env = dict(self.env)
        env[self.variables[0]] = self.groups
        return _Translator(env, self.safe_cache)(template)

    def __call__(self, e: sp.Basic):
        if e in self.env:
            return self.env[e]
        if isinstance(e, sp.Symbol):
            raise ValueError(f"the symbol {e} has no value; pass it as a keyword (to_torch({e}=...))")
        if e.is_Number or e in (sp.pi, sp.E, sp.EulerGamma):
            return _num(e)
        if not e.free_symbols:
            return _num(e)
        if isinstance(e, sp.Add):
            return self._add(e)
        if isinstance(e, sp.Mul):
            sym = self._symmetric(e)
            if sym is not None:
                template, rest = sym
                out = self._on_groups(template).prod(-1)
                return out * self(sp.Mul(*rest)) if rest else out
            factors = [self(arg) for arg in e.args]
            const = math.prod(f for f in factors if not isinstance(f, Tensor))
            tensors = [f for f in factors if isinstance(f, Tensor)]
            if not tensors:
                return const
            out = tensors[0]
            for t in tensors[1:]:
                out = out * t
            return out * const if const != 1 else out
        if isinstance(e, sp.Pow):
            return self._pow(e)
        if isinstance(e, sp.log):
            return self._log(e)
        if type(e) in _UNARY:
            x = self(e.args[0])
            fn = _UNARY[type(e)]
            return fn(x) if isinstance(x, Tensor) else fn(torch.tensor(x, dtype=torch.float64)).item()
        if isinstance(e, (sp.Max, sp.Min)):
            return self._maxmin(e)
        if isinstance(e, sp.Heaviside):
            x = self(e.args[0])
            half = 0.5 if len(e.args) == 1 else self(e.args[1])
            return torch.where(x > 0, 1.0, torch.where(x < 0, 0.0, half)).to(x.dtype)
        if isinstance(e, sp.Piecewise):
            return self._piecewise(e)
        if isinstance(e, (sp.Eq, sp.Ne, sp.Lt, sp.Le, sp.Gt, sp.Ge, sp.And, sp.Or, sp.Not)):
            return self._boolean(e)
        raise NotImplementedError(
            f"no exact torch translation of {type(e).__name__} (in {e}); rewrite the expression "
            "with Abs, log, exp, powers, erf, loggamma, Max/Min or Piecewise"
        )

    def _add(self, e: sp.Add):
        sym = self._symmetric(e)
        if sym is not None:
            template, rest = sym
            out = self._on_groups(template).sum(-1)
            return out + self(sp.Add(*rest)) if rest else out
        terms = [self(a) for a in e.args]
        tensors = [t for t in terms if isinstance(t, Tensor)]
        const = sum(t for t in terms if not isinstance(t, Tensor))
        if not tensors:
            return const
        out = tensors[0]
        for t in tensors[1:]:
            out = out + t
        return out + const if const != 0 else out

    def _pow(self, e: sp.Pow):
        base, exp = e.args
        if exp == sp.Rational(1, 2) and isinstance(base, sp.Add) and self.groups is not None:
            sym = self._symmetric(base)
            if sym is not None and not sym[1] and sym[0] == self.variables[0] ** 2:
                return torch.linalg.vector_norm(self.groups, dim=-1)  # sqrt(Σ a_i²), fused
        x = self(base)
        if not isinstance(x, Tensor) and exp.is_Number:
            return x ** _num(exp)
        if exp.is_Number:
            p = _num(exp)
            if p == 1:
                return x
            if p == 2:
                return x * x
            if p == -1:
                return 1.0 / x
            if 0 < p < 1:
                return _cusp_pow(x, p)
            if p == -0.5:
                return torch.rsqrt(x)
            if p == int(p) and isinstance(x, Tensor):
                return torch.pow(x, int(p))
            return torch.pow(x, p)
        y = self(exp)
        if not isinstance(x, Tensor) and not isinstance(y, Tensor):
            return x ** y
        if isinstance(x, Tensor) and not isinstance(y, Tensor) and 0 < y < 1:
            return _cusp_pow(x, y)
        if not isinstance(x, Tensor):
            if x == math.e:
                return torch.exp(y)
            return torch.pow(torch.as_tensor(x, dtype=y.dtype, device=y.device), y)
        return torch.pow(x, y)

    def _log(self, e: sp.log):
        arg = e.args[0]
        if isinstance(arg, sp.Add):
            consts = [a for a in arg.args if not a.free_symbols]
            if len(consts) == 1 and consts[0] == 1:
                y = self(arg - 1)
                return torch.log1p(y) if isinstance(y, Tensor) else math.log1p(y)
        x = self(arg)
        return torch.log(x) if isinstance(x, Tensor) else math.log(x)

    def _maxmin(self, e):
        vals = [self(a) for a in e.args]
        fn = torch.maximum if isinstance(e, sp.Max) else torch.minimum
        tensors = [v for v in vals if isinstance(v, Tensor)]
        consts = [v for v in vals if not isinstance(v, Tensor)]
        if not tensors:
            return max(consts) if isinstance(e, sp.Max) else min(consts)
        out = tensors[0]
        for t in tensors[1:]:
            out = fn(out, t)
        if consts:
            c = max(consts) if isinstance(e, sp.Max) else min(consts)
            out = out.clamp(min=c) if isinstance(e, sp.Max) else out.clamp(max=c)
        return out

    def _boolean(self, e):
        if isinstance(e, sp.And):
            out = self(e.args[0])
            for a in e.args[1:]:
                out = out & self(a)
            return out
        if isinstance(e, sp.Or):
            out = self(e.args[0])
            for a in e.args[1:]:
                out = out | self(a)
            return out
        if isinstance(e, sp.Not):
            return ~self(e.args[0])
        lhs, rhs = self(e.lhs), self(e.rhs)
        op = {sp.Eq: torch.eq, sp.Ne: torch.ne, sp.Lt: torch.lt, sp.Le: torch.le, sp.Gt: torch.gt, sp.Ge: torch.ge}
        if not isinstance(lhs, Tensor):
            lhs, rhs = rhs, lhs
            op = {sp.Eq: torch.eq, sp.Ne: torch.ne, sp.Lt: torch.gt, sp.Le: torch.ge, sp.Gt: torch.lt, sp.Ge: torch.le}
        return op[type(e)](lhs, rhs)

    def _piecewise(self, e: sp.Piecewise):
        # the "double where": branch k is evaluated with its symbols moved to a safe point
        # wherever it is not selected, so a singular branch cannot poison the gradient.
        symbols = sorted((s for s in e.free_symbols if isinstance(self.env.get(s), Tensor)), key=str)
        taken = None
        selectors, values = [], []
        for branch, cond in e.args:
            c = self(cond) if cond is not sp.true else True
            if isinstance(c, bool):
                c_t = None if c else False
            else:
                c_t = c
            if c_t is False:
                continue
            guard = _needs_guard(branch, set(symbols))
            if taken is None:
                sel = c_t
            elif c_t is None:  # 'otherwise': earlier wheres override it, a mask is needed only to guard
                sel = ~taken if guard else None
            else:
                sel = c_t & ~taken
            used = [s for s in symbols if s in branch.free_symbols]
            key = (branch, tuple(used))
            if key not in self.safe_cache:
                consts = {k: v for k, v in self.env.items() if not isinstance(v, Tensor)}
                self.safe_cache[key] = _safe_point(branch.subs(consts), used) if used else {}
            safe = self.safe_cache[key]
            env = dict(self.env)
            if sel is not None and guard:
                for s in used:
                    env[s] = torch.where(sel, self.env[s], safe[s])
            value = _Translator(env, self.safe_cache)(branch)
            selectors.append(None if c_t is None else sel)
            values.append(value)
            if c_t is None:
                break
            taken = sel if taken is None else taken | sel
        if not values:
            raise ValueError(f"no branch of {e} can be selected")
        out = values[-1]
        if selectors[-1] is not None:  # no 'otherwise' branch: unselected entries are NaN
            out = torch.where(selectors[-1], out, math.nan)
        for sel, value in zip(reversed(selectors[:-1]), reversed(values[:-1])):
            out = torch.where(sel, value, out)
        return out


def _cusp_pow(x: Tensor, p: float) -> Tensor:
    """x^p for 0 < p < 1 with the subgradient 0 at x = 0 (where the slope is +∞ and torch's gradient
    is inf·0 = NaN through an Abs): the "double where" — the power is taken at 1 where x = 0, so no inf
    enters the backward pass, and the value 0 is put back. 0 is a valid (Fréchet) subgradient of
    |a|^p, p < 1, at 0: the function rises faster than any linear one there."""
    zero = x == 0
    safe = torch.where(zero, torch.ones_like(x), x)
    power = torch.sqrt(safe) if p == 0.5 else torch.pow(safe, p)
    return torch.where(zero, torch.zeros_like(x), power)


def _needs_guard(expr: sp.Expr, tensor_symbols: set) -> bool:
    """Whether a branch can be non-finite (or have a non-finite gradient) somewhere: logs, division,
    fractional powers, special functions of the inputs. Polynomials, Abs, exp, sign and friends never
    are; constants (no input symbol) are evaluated once and never guarded."""
    for node in sp.preorder_traversal(expr):
        if not (node.free_symbols & tensor_symbols):
            continue
        if isinstance(node, sp.Pow) and not (node.exp.is_Integer and node.exp >= 0):
            return True
        if isinstance(node, (sp.log, sp.loggamma, sp.Piecewise)):
            return True
    return False


def _safe_point(expr: sp.Expr, symbols: Sequence[sp.Symbol]) -> dict:
    """A point where ``expr`` and its gradient are finite, used to fill unselected entries."""
    for value in (1.0, 0.5, 2.0, 0.25, 3.0, -1.0, -0.5):
        point = {s: value for s in symbols}
        try:
            v = complex(expr.subs(point).evalf())
            grads = [complex(sp.diff(expr, s).subs(point).evalf()) for s in symbols]
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        if all(math.isfinite(z.real) and z.imag == 0 for z in [v, *grads]):
            return point
    raise ValueError(f"could not find a point where the branch {expr} is finite")


def torch_function(
    expr: sp.Expr, variables: Sequence[sp.Symbol], values: Mapping[sp.Symbol, float] | None = None,
    *, reduce: bool = True,
) -> Callable[[Tensor], Tensor]:
    """Compile ``expr`` in ``variables`` (d of them) into a torch function of ``a``, shape ``(..., n)``.

    The last axis is read as ``n / d`` consecutive groups of d coordinates (d = 1: every latent on
    its own); ``expr`` is evaluated on each group and, with ``reduce=True``, summed over the groups,
    so a one-variable penalty φ gives Σ_i φ(a_i) at any width. ``values`` binds every other free
    symbol to a number; an unbound symbol raises ``ValueError``. The result has the dtype and device
    of ``a`` and gradients through autograd.

    Args:
        expr: the sympy expression.
        variables: the d symbols of one group.
        values: numbers for every other free symbol.
        reduce: sum over the groups (else one value per group).

    Returns:
        ``fn(a)``; it raises ``ValueError`` when the last dimension is not a multiple of d, and
        ``NotImplementedError`` for a function without an exact torch translation.

    Raises:
        ValueError: a free symbol of ``expr`` has no value.
    """
    values = dict(values or {})
    variables = tuple(variables)
    unbound = expr.free_symbols - set(variables) - set(values)
    if unbound:
        names = sorted(map(str, unbound))
        raise ValueError(
            f"unbound symbol(s) {', '.join(names)}: give each a number, e.g. to_torch({names[0]}=1.0)"
        )
    env0 = {s: float(v) for s, v in values.items()}
    d = len(variables)
    safe_cache: dict = {}

    def fn(a: Tensor) -> Tensor:
        if a.ndim == 0 or a.shape[-1] % d:
            raise ValueError(
                f"the last dimension must be a multiple of {d} (groups of {d} variables), got shape {tuple(a.shape)}"
            )
        env = dict(env0)
        groups = None
        if d == 1:
            env[variables[0]] = a
        else:
            groups = a.reshape(*a.shape[:-1], a.shape[-1] // d, d)  # (..., n/d, d)
            for k, v in enumerate(variables):
                env[v] = groups[..., k]
        translate = _Translator(env, safe_cache, groups, variables)
        if reduce:  # constant factors go outside the sum: c·Σ_g f(a_g)
            factor, body = expr.as_independent(*variables, as_Add=False)
            if factor != 1 and body.free_symbols:
                inner = translate(body)
                if isinstance(inner, Tensor) and inner.shape == (a.shape if d == 1 else a.shape[:-1] + (a.shape[-1] // d,)):
                    return inner.sum(-1) * translate(factor)
        out = translate(expr)
        shape = a.shape if d == 1 else a.shape[:-1] + (a.shape[-1] // d,)
        if not isinstance(out, Tensor):
            out = torch.full(shape, out, dtype=a.dtype, device=a.device)
        elif out.shape != shape:
            out = out.expand(shape)
        return out.sum(-1) if reduce else out

    return fn
