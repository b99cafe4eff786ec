"""Proximal operators of sparsity penalties: prox_{tρ}(v) = argmin_a ½‖a − v‖² + t·ρ(a).

The prox is the "encoder non-linearity" a penalty induces (Parikh & Boyd, *Proximal Algorithms*,
2014): ReLU(v − t) for L1 on a ≥ 0, a hard threshold at √(2t) for L0 (JumpReLU), TopK for the
k-sparse constraint.

For a one-variable penalty :func:`derive_prox` works symbolically: on each smooth piece (a > 0 and,
on the real line, a < 0) the minimiser is a root of the stationarity equation a − v + t·ρ'(a) = 0.
When that equation is polynomial of degree ≤ 2 in a (after clearing denominators) its roots are the
closed-form *candidates*; the prox is the candidate, or the kink a = 0, with the smallest objective.
Otherwise the prox is computed numerically (a grid over [−R, R] with R = 2|v| + 4, then zooming),
and for penalties of several variables by scipy's Nelder–Mead from v and from 0 (small inputs only).

With a point mass whose L0 weight is negative (an atom lighter than the slab's density at 0) the
infimum is approached as a → 0⁺ and not attained; the operator then returns 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import sympy as sp
import torch
from torch import Tensor

from ._lambdify import torch_function
from ._validate import parameter_values, real_penalty_values

__all__ = ["ProxOperator", "derive_prox", "soft_threshold", "block_soft_threshold", "topk_projection"]

V = sp.Symbol("v", real=True)
T = sp.Symbol("t", positive=True)
_X = sp.Symbol("x", positive=True)


@dataclass(frozen=True)
class ProxOperator:
    """prox_{tρ}(v) = argmin_a ½‖a − v‖² + t·ρ(a), applied per group of ``len(variables)`` coordinates.

    Attributes:
        penalty: ρ as a sympy expression in ``variables``.
        variables: the coordinates of one group.
        support: ``"real"`` or ``"nonnegative"``.
        method: ``"closed form"`` (argmin over exact candidates), ``"numerical"`` or the name of a
            known operator (``"block soft threshold"``, ``"top-k projection"``).
        candidates: the closed-form stationary points in (v, t), for a > 0 then a < 0; empty otherwise.
        parameters: the other symbols of ρ, bound by keyword when calling.
        n_positive: how many of ``candidates`` are for a > 0 (the rest are for a < 0).
        special: a known operator ``f(v, step, values)`` used instead (group lasso, TopK), or None.
    """

    penalty: sp.Expr
    variables: tuple[sp.Symbol, ...]
    support: str
    method: str
    candidates: tuple[sp.Expr, ...] = ()
    parameters: tuple[sp.Symbol, ...] = ()
    n_positive: int = 0
    special: Callable | None = field(default=None, repr=False, compare=False)

    def latex(self) -> str:
        """The operator in LaTeX (the candidate set when in closed form).

        Returns:
            One LaTeX line.
        """
        if self.method == "closed form":
            cands = ", ".join(["0"] + [sp.latex(c) for c in self.candidates])
            return (r"\operatorname{prox}_{t\rho}(v) = \operatorname*{arg\,min}_{a \in \{" + cands
                    + r"\}} \tfrac12 (a - v)^2 + t\rho(a)")
        return r"\operatorname{prox}_{t\rho}(v) = \operatorname*{arg\,min}_a \tfrac12\|a - v\|^2 + t\rho(a)" + \
            rf"\quad \text{{({self.method})}}"

    def __call__(self, v: Tensor, step: float = 1.0, **params: float) -> Tensor:
        """Apply the prox with step ``t = step`` to ``v``, per group of d = ``len(variables)`` coordinates.

        Args:
            v: shape ``(..., n)`` with n a multiple of d.
            step: t > 0.
            **params: a number for every parameter of ρ (see :meth:`PriorPenalty.to_torch`).

        Returns:
            prox_{tρ}(v), the shape, dtype and device of ``v``.

        Raises:
            ValueError: a non-positive or non-finite step, n not a multiple of d, or a missing, unknown
                or invalid parameter value (NaN, outside the symbol's assumptions, or making ρ
                non-real, e.g. π₀ > 1).
        """
        if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
            raise ValueError(f"the step t must be a finite positive number, got {step!r}")
        d = len(self.variables)
        if not isinstance(v, Tensor) or v.ndim == 0 or v.shape[-1] % d:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"this prox acts on groups of {d} coordinates, so the last dimension of v must be a "
                             f"multiple of {d}; got {shape}. Pad or reshape v to (..., k·{d})")
        values = parameter_values(self.parameters, params, where="prox")
        real_penalty_values(self.penalty, self.variables, self.support, values)
        if self.special is not None:
            return self.special(v, step, values)
        if d == 1:
            objective = torch_function(self.penalty, self.variables, values, reduce=False)
            if self.method == "closed form":
                return _prox_candidates(self, v, step, values, objective)
            return _prox_grid(v, step, objective, self.support)
        return _prox_nelder_mead(self.penalty, self.variables, v, step, values, self.support)


def _objective(a, v, step, objective):
    return 0.5 * (a - v) ** 2 + step * objective(a)


def _prox_candidates(op: ProxOperator, v, step, values, objective):
    vals = dict(values)
    vals[T] = step
    best = torch.zeros_like(v)
    best_obj = _objective(best, v, step, objective)
    for k, cand in enumerate(op.candidates):
        with torch.no_grad():
            a = torch_function(cand, (V,), vals, reduce=False)(v)
        sign_ok = a > 0 if k < op.n_positive else a < 0
        ok = torch.isfinite(a) & sign_ok
        a = torch.where(ok, a, torch.zeros_like(a))
        obj = torch.where(ok, _objective(a, v, step, objective), torch.full_like(v, float("inf")))
        better = obj < best_obj
        best = torch.where(better, a, best)
        best_obj = torch.where(better, obj, best_obj)
    return best


def _prox_grid(v: Tensor, step: float, objective, support: str, points: int = 1025, zooms: int = 4):
    """Grid search over [−R, R] (or [0, R]) with R = 2|v| + 4, then zoom around the best point."""
    with torch.no_grad():
        R = 2 * v.abs() + 4
        lo = torch.zeros_like(v) if support == "nonnegative" else -R
        grid = torch.linspace(0, 1, points, dtype=v.dtype, device=v.device)
        a = lo.unsqueeze(-1) + (R - lo).unsqueeze(-1) * grid  # (..., points)
        h = (R - lo) / (points - 1)
        for _ in range(zooms + 1):
            obj = _objective(a, v.unsqueeze(-1), step, objective)
            obj = torch.nan_to_num(obj, nan=float("inf"))
            centre = a.gather(-1, obj.argmin(-1, keepdim=True)).squeeze(-1)
            a = centre.unsqueeze(-1) + h.unsqueeze(-1) * torch.linspace(-2, 2, 65, dtype=v.dtype, device=v.device)
            if support == "nonnegative":
                a = a.clamp(min=0)
            h = h / 16
        zero = torch.zeros_like(v)
        at_zero = _objective(zero, v, step, objective)
        at_centre = _objective(centre, v, step, objective)
        return torch.where(at_zero <= at_centre, zero, centre)


def _prox_nelder_mead(penalty, variables, v, step, values, support):
    from scipy.optimize import minimize

    d = len(variables)
    fn = torch_function(penalty, variables, values, reduce=False)
    flat = v.detach().to("cpu", torch.float64).reshape(-1, d)
    out = np.empty(flat.shape)
    for row, vec in enumerate(flat.numpy()):
        def f(a):
            a = np.maximum(a, 0) if support == "nonnegative" else a
            return 0.5 * np.sum((a - vec) ** 2) + step * float(fn(torch.as_tensor(a)))
        best = None
        for start in (vec, np.zeros(d)):
            res = minimize(f, start, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000})
            if best is None or res.fun < best.fun:
                best = res
        out[row] = np.maximum(best.x, 0) if support == "nonnegative" else best.x
    return torch.as_tensor(out, dtype=v.dtype, device=v.device).reshape(v.shape)


def _stationary_roots(rho_piece: sp.Expr, sign: int):
    """Roots x > 0 of d/dx [½(x − s·v)² + t·ρ(s·x)] = 0, s = ±1, if polynomial of degree ≤ 2."""
    eq = sp.together(_X - sign * V + T * sp.diff(rho_piece, _X))
    num, _ = sp.fraction(eq)
    try:
        poly = sp.Poly(sp.expand(num), _X)
    except sp.PolynomialError:
        return None
    if poly.degree() > 2 or poly.degree() < 1 or any(c.has(_X) for c in poly.all_coeffs()):
        return None
    roots = sp.roots(poly, multiple=True)  # ignores the x > 0 assumption on purpose
    if len(roots) != poly.degree():
        return None
    return [sign * sp.simplify(r) for r in roots]


def derive_prox(penalty: sp.Expr, variables: Sequence[sp.Symbol], support: str,
                parameters: Sequence[sp.Symbol] = ()) -> ProxOperator:
    """The proximal operator prox_{tρ}(v) = argmin_a ½‖a − v‖² + t·ρ(a) of ``penalty``.

    See the module docstring for the method (closed-form candidates, else numerical).

    Args:
        penalty: ρ in ``variables``.
        variables: the coordinates of one group.
        support: ``"real"`` or ``"nonnegative"``.
        parameters: the other symbols of ρ.

    Returns:
        The :class:`ProxOperator`.
    """
    variables = tuple(variables)
    parameters = tuple(parameters)
    if len(variables) > 1:
        return ProxOperator(penalty, variables, support, "numerical", (), parameters)
    a = variables[0]
    pieces = [(1, _positive_piece(penalty, a, 1))]
    if support == "real":
        pieces.append((-1, _positive_piece(penalty, a, -1)))
    candidates, n_positive = [], 0
    for sign, piece in pieces:
        roots = _stationary_roots(piece, sign)
        if roots is None:
            return ProxOperator(penalty, variables, support, "numerical", (), parameters)
        candidates += roots
        if sign == 1:
            n_positive = len(roots)
    return ProxOperator(penalty, variables, support, "closed form", tuple(candidates), parameters, n_positive)


def _positive_piece(penalty: sp.Expr, a: sp.Symbol, sign: int) -> sp.Expr:
    """ρ(sign·x) for x > 0, with Abs and the a = 0 branches resolved."""
    return sp.piecewise_fold(penalty.subs(a, sign * _X))


# ------------------------------------------------------------------------------------------------
# Operators known in closed form for penalties of several variables
# ------------------------------------------------------------------------------------------------
def _check_groups(v: Tensor, group: int) -> int:
    if v.ndim == 0 or v.shape[-1] % group:
        raise ValueError(f"this prox acts on groups of {group} coordinates, so the last dimension of v must be a "
                         f"multiple of {group}; got {tuple(v.shape)}. Pad or reshape v to (..., k·{group})")
    return group


def soft_threshold(v: Tensor, threshold: float, nonnegative: bool = False) -> Tensor:
    """prox of threshold·|a|: sign(v)·max(|v| − threshold, 0); on a ≥ 0: ReLU(v − threshold).

    Args:
        v: any shape.
        threshold: t·λ ≥ 0.
        nonnegative: the support a ≥ 0.

    Returns:
        The thresholded tensor, shape of ``v``.
    """
    if nonnegative:
        return torch.relu(v - threshold)
    return torch.sign(v) * torch.relu(v.abs() - threshold)


def block_soft_threshold(v: Tensor, threshold: float, group: int) -> Tensor:
    """prox of threshold·‖a_g‖₂ per group of ``group`` coordinates: v·max(1 − threshold/‖v_g‖, 0).

    Yuan & Lin 2006 (group lasso).

    Args:
        v: shape ``(..., n)``, n a multiple of ``group``.
        threshold: t·λ ≥ 0.
        group: the group size.

    Returns:
        The shrunk tensor, shape of ``v``.

    Raises:
        ValueError: n is not a multiple of ``group``.
    """
    _check_groups(v, group)
    g = v.reshape(*v.shape[:-1], v.shape[-1] // group, group)
    norm = g.norm(dim=-1, keepdim=True)
    scale = torch.relu(1 - threshold / norm.clamp_min(torch.finfo(v.dtype).tiny))
    return (g * scale).reshape(v.shape)


def topk_projection(v: Tensor, k: int, group: int | None = None) -> Tensor:
    """Euclidean projection onto vectors with at most k non-zeros (per group): keep the k largest |v|.

    Args:
        v: shape ``(..., n)``.
        k: non-zeros kept per group (or per row when ``group`` is None).
        group: the group size, n a multiple of it; None: the whole last axis.

    Returns:
        The projection, shape of ``v``.

    Raises:
        ValueError: n is not a multiple of ``group``, or k exceeds the group size.
    """
    size = v.shape[-1] if group is None else _check_groups(v, group)
    if not 0 <= k <= size:
        raise ValueError(f"k = {k} non-zeros cannot be kept in groups of {size}; pass 0 ≤ k ≤ {size}")
    g = v if group is None else v.reshape(*v.shape[:-1], v.shape[-1] // group, group)
    idx = g.abs().topk(k, dim=-1).indices
    out = torch.zeros_like(g).scatter(-1, idx, g.gather(-1, idx))
    return out.reshape(v.shape)
