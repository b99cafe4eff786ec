"""Directional derivatives of a loss at w* by Taylor-mode propagation of truncated polynomials.

Along the line t ↦ g(t) = f(w + t·v) the Taylor coefficients g_k = g⁽ᵏ⁾(0)/k! give the
directional derivatives

    g''(0) = vᵀHv = 2·g₂,   T₃[v, v, v] = 6·g₃,   T₄[v, v, v, v] = 24·g₄,

and the vector T₃[·, v, v] = ∇_w g''(0) is the gradient of 2·g₂ with respect to w (reverse mode over
Taylor mode). Taylor mode (Griewank & Walther 2008, *Evaluating Derivatives*, ch. 13; Bettencourt,
Johnson & Duvenaud 2019, "Taylor-mode automatic differentiation for higher-order derivatives in
JAX") pushes the truncated polynomial x(t) = x₀ + x₁t + … + x_Kt^K through every operation: a
product costs (K + 1)(K + 2)/2 products of coefficients instead of the 3^K of K nested jvps, and the
input w + t·v has only two non-zero coefficients, so the first layer costs two matrix products.

The loss is traced once to an ATen graph (``torch.fx`` ``make_fx``); the graph is then interpreted
with truncated-polynomial arithmetic. Supported operations cover MLPs, linear and bilinear models,
the toy model of superposition, MSE / cross-entropy losses (matrix products, elementwise
nonlinearities, reductions, reshapes, softmax, ``logsumexp``, ``nll_loss``) and transformer language
models (embeddings, ``gather``, ``masked_fill``, LayerNorm, ``F.scaled_dot_product_attention``; the fused
attention kernels, which have no forward-mode AD, go through the identical softmax(q·kᵀ·scale + mask)·v).
A loss that reads tensor values in Python (``F.one_hot`` checks its labels with ``.item()``) is traced
with the values at w read concretely. For any other operation, or a loss that cannot be traced,
``method="auto"`` falls back to nested ``torch.func.jvp`` (same values, slower; on the loss traced with
LayerNorm decomposed and attention on its math kernel, because torch's nested jvp through
``F.layer_norm`` is wrong in torch 2.13); ``method="taylor"`` raises.

Everything is differentiable and vmappable: a batch of directions ``v`` of shape (m, d) is handled
with ``torch.func.vmap``. Device and dtype follow ``w``.
"""
from __future__ import annotations

import math
import operator
from typing import Callable, Sequence

import torch
from torch import Tensor
from torch.func import functionalize, grad, jvp, vmap

__all__ = [
    "TaylorMode",
    "directional_derivatives",
    "third_derivative_vector",
    "fourth_derivative",
    "nested_directional_derivative",
]

aten = torch.ops.aten
_METHODS = ("auto", "taylor", "nested")


class UnsupportedOperation(NotImplementedError):
    """An ATen operation without a truncated-polynomial rule met a non-constant input."""


# --------------------------------------------------------------------------------------------
# Truncated polynomials
# --------------------------------------------------------------------------------------------
class _Jet:
    """x(t) = Σ_k c[k]·t^k truncated at degree K; c[k] is a Tensor or None (zero); c[0] is a Tensor."""

    __slots__ = ("c",)

    def __init__(self, c: list):
        self.c = c

    @property
    def K(self) -> int:
        return len(self.c) - 1


def _is_jet(x) -> bool:
    return isinstance(x, _Jet)


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _const_jet(x, K: int) -> _Jet:
    return _Jet([x] + [None] * K)


def _as_jet(x, K: int) -> _Jet:
    return x if _is_jet(x) else _const_jet(x, K)


def _cauchy(a: _Jet, b: _Jet, op: Callable) -> _Jet:
    """c_k = Σ_{i+j=k} op(a_i, b_j): the product rule of any bilinear op, truncated at K."""
    K = a.K
    out = []
    for k in range(K + 1):
        acc = None
        for i in range(k + 1):
            ai, bj = a.c[i], b.c[k - i]
            if ai is None or bj is None:
                continue
            acc = _add(acc, op(ai, bj))
        out.append(acc)
    return _Jet(out)


def _zero_fill(c: list, like: Tensor) -> list:
    return [torch.zeros_like(like) if x is None else x for x in c]


def _series_compose(x: _Jet, derivs: Sequence[Tensor]) -> _Jet:
    """y = φ(x) for elementwise φ from φ⁽ʲ⁾(x₀) (j = 0..K): y = Σ_j φ⁽ʲ⁾(x₀)/j!·Δʲ, Δ = x − x₀."""
    K = x.K
    delta = _Jet([None] + x.c[1:])
    out = [derivs[0]] + [None] * K
    power = delta
    for j in range(1, K + 1):
        scale = 1.0 / math.factorial(j)
        for k in range(j, K + 1):
            if power.c[k] is not None:
                out[k] = _add(out[k], derivs[j] * power.c[k] * scale)
        if j < K:
            power = _cauchy(power, delta, torch.mul)
    return _Jet(out)


def _elementwise_derivatives(fn: Callable[[Tensor], Tensor], x0: Tensor, K: int) -> list[Tensor]:
    """φ⁽ʲ⁾(x₀) for j = 0..K by nested jvp with unit tangents (φ acts elementwise)."""
    fns = [fn]
    for _ in range(K):
        f = fns[-1]
        fns.append(lambda x, f=f: jvp(f, (x,), (torch.ones_like(x),))[1])
    return [f(x0) for f in fns]


def _ode_rule(x: _Jet, y0: Tensor, dy: Callable[[_Jet], _Jet]) -> _Jet:
    """y = φ(x) with φ' = ψ(y, x) given as a jet: y_k = (1/k)·Σ_{j=1..k} j·x_j·[ψ]_{k−j}."""
    K = x.K
    y = _Jet([y0] + [None] * K)
    for k in range(1, K + 1):
        # ψ truncated at degree k − 1 only needs y_0..y_{k−1}
        psi = dy(_Jet(y.c[:k]), _Jet(x.c[:k]))
        acc = None
        for j in range(1, k + 1):
            if x.c[j] is None or psi.c[k - j] is None:
                continue
            acc = _add(acc, x.c[j] * psi.c[k - j] * (j / k))
        y.c[k] = acc
    return y


def _scale(a: _Jet, s) -> _Jet:
    return _Jet([None if c is None else c * s for c in a.c])


def _sum_jets(a: _Jet, b: _Jet, alpha=1) -> _Jet:
    return _Jet([_add(x, None if y is None else (y * alpha if alpha != 1 else y)) for x, y in zip(a.c, b.c)])


def _recip(x: _Jet) -> _Jet:
    """y = 1/x: y_k = −(1/x₀)·Σ_{j=1..k} x_j·y_{k−j}."""
    K = x.K
    y = [torch.reciprocal(x.c[0])] + [None] * K
    for k in range(1, K + 1):
        acc = None
        for j in range(1, k + 1):
            if x.c[j] is None or y[k - j] is None:
                continue
            acc = _add(acc, x.c[j] * y[k - j])
        y[k] = None if acc is None else -acc * y[0]
    return _Jet(y)


def _linear(fn: Callable, x: _Jet, *args, **kwargs):
    """An op linear in its first argument: apply it to every coefficient."""
    shape = x.c[0].shape  # a higher coefficient may be stored broadcast (e.g. (n, 1) for (n, C))
    outs = [None if c is None else fn(c if c.shape == shape else c.expand(shape), *args, **kwargs) for c in x.c]
    if isinstance(outs[0], (list, tuple)):  # split-like ops return several tensors
        n = len(outs[0])
        return [_Jet([None if o is None else o[i] for o in outs]) for i in range(n)]
    return _Jet(outs)


def _tanh_rule(x: _Jet) -> _Jet:
    # tanh' = 1 − y²
    return _ode_rule(x, torch.tanh(x.c[0]), lambda y, _x: _sum_jets(_const_jet(torch.ones_like(y.c[0]), y.K),
                                                                     _cauchy(y, y, torch.mul), alpha=-1))


def _exp_rule(x: _Jet) -> _Jet:
    return _ode_rule(x, torch.exp(x.c[0]), lambda y, _x: y)


def _sigmoid_rule(x: _Jet) -> _Jet:
    # σ' = σ(1 − σ)
    return _ode_rule(x, torch.sigmoid(x.c[0]), lambda y, _x: _sum_jets(y, _cauchy(y, y, torch.mul), alpha=-1))


def _log_rule(x: _Jet) -> _Jet:
    # log' = 1/x
    return _ode_rule(x, torch.log(x.c[0]), lambda _y, xx: _recip(xx))


def _relu_rule(x: _Jet) -> _Jet:
    mask = (x.c[0] > 0).to(x.c[0].dtype)
    return _Jet([torch.relu(x.c[0])] + [None if c is None else c * mask for c in x.c[1:]])


def _int_pow(x: _Jet, p: int) -> _Jet:
    out = _const_jet(torch.ones_like(x.c[0]), x.K)
    base = x
    while p:
        if p & 1:
            out = _cauchy(out, base, torch.mul)
        p >>= 1
        if p:
            base = _cauchy(base, base, torch.mul)
    return out


def _pow_rule(x: _Jet, p) -> _Jet:
    if float(p) == int(p) and int(p) >= 0:
        return _int_pow(x, int(p))
    # x·y' = p·y·x'  ⇒  y_k = (1/(k·x₀))·Σ_{j=1..k} (p·j − (k − j))·x_j·y_{k−j}
    K = x.K
    y = [torch.pow(x.c[0], p)] + [None] * K
    inv = torch.reciprocal(x.c[0])
    for k in range(1, K + 1):
        acc = None
        for j in range(1, k + 1):
            if x.c[j] is None or y[k - j] is None:
                continue
            acc = _add(acc, x.c[j] * y[k - j] * ((p * j - (k - j)) / k))
        y[k] = None if acc is None else acc * inv
    return _Jet(y)


def _tensor_pow_rule(x: _Jet, p: Tensor) -> _Jet:
    """y = x^p elementwise for a constant exponent tensor p.

    Non-negative integer exponents (the usual case, e.g. w ** k with k = 2, 4) are exact at x₀ = 0:
    the powers x⁰..x^P are built by Cauchy products and selected per element. Other exponents use
    the recurrence of :func:`_pow_rule`, which needs x₀ ≠ 0.

    Returns:
        The jet of x^p.
    """
    p = torch.as_tensor(p, device=x.c[0].device)
    if p.is_floating_point() and not bool((p == p.round()).all()) or bool((p < 0).any()):
        return _pow_rule(x, p.to(x.c[0].dtype))
    p = p.round().to(torch.int64)
    top = int(p.max()) if p.numel() else 0
    out = [None] * (x.K + 1)
    power = _const_jet(torch.ones_like(x.c[0]), x.K)
    for e in range(top + 1):
        if e:
            power = _cauchy(power, x, torch.mul)
        mask = (p == e).to(x.c[0].dtype)
        if not bool(mask.any()):
            continue
        out = [_add(o, None if c is None else c * mask) for o, c in zip(out, power.c)]
    out[0] = torch.pow(x.c[0], p) if out[0] is None else out[0]
    return _Jet(out)


def _log_softmax_rule(x: _Jet, dim: int) -> _Jet:
    m = torch.amax(x.c[0], dim=dim, keepdim=True)  # a constant shift: exact for any m
    shifted = _sum_jets(x, _const_jet(m, x.K), alpha=-1)
    s = _linear(torch.sum, _exp_rule(shifted), dim=dim, keepdim=True)
    return _sum_jets(shifted, _log_rule(s), alpha=-1)


# Elementwise ops handled by the generic Faà di Bruno rule (derivatives by nested jvp).
_GENERIC_UNARY = {
    aten.gelu.default, aten.silu.default, aten.sin.default, aten.cos.default, aten.erf.default,
    aten.log1p.default, aten.expm1.default, aten.softplus.default, aten.sqrt.default, aten.rsqrt.default,
    aten.elu.default, aten.leaky_relu.default, aten.abs.default, aten.atan.default,
}

# Ops linear in their first argument (structure, reductions, casts).
_LINEAR = {
    aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.t.default, aten.transpose.int,
    aten.permute.default, aten.expand.default, aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.default,
    aten.squeeze.dims, aten.slice.Tensor, aten.select.int, aten.sum.dim_IntList, aten.sum.default,
    aten.mean.default, aten.mean.dim, aten.neg.default, aten.clone.default, aten.alias.default,
    aten.split_with_sizes.default, aten.split.Tensor, aten.unbind.int, aten._to_copy.default,
    aten.repeat.default, aten.narrow.default, aten.diagonal.default, aten.flip.default, aten.roll.default,
    aten.index_select.default, aten.index.Tensor, aten.unfold.default, aten.lift_fresh_copy.default,
    aten.cumsum.default, aten.trace.default, aten.tril.default, aten.triu.default,
    aten.gather.default, aten.embedding.default,  # constant index / token ids: linear in the values
}

# In-place view ops that tracing leaves in the graph (e.g. matmul with a 1-D operand): replaced by
# their out-of-place version when the mutated value has no other user.
_INPLACE_VIEWS = {
    aten.squeeze_.dim: aten.squeeze.dim, aten.squeeze_.default: aten.squeeze.default,
    aten.unsqueeze_.default: aten.unsqueeze.default, aten.t_.default: aten.t.default,
    aten.transpose_.default: aten.transpose.int,
}

_PIECEWISE_CONSTANT = {
    getattr(getattr(aten, name), overload)
    for name in ("gt", "lt", "ge", "le", "eq", "ne")
    for overload in ("Scalar", "Tensor")
} | {aten.sign.default, aten.argmax.default, aten.argmin.default, aten.isfinite.default, aten.isnan.default}

_BILINEAR = {
    aten.mm.default: torch.mm, aten.bmm.default: torch.bmm, aten.matmul.default: torch.matmul,
    aten.mv.default: torch.mv, aten.dot.default: torch.dot, aten.mul.Tensor: torch.mul,
}


def _call(target, args, kwargs, K: int):
    """Apply ATen op ``target`` to arguments some of which are jets."""
    jets = [a for a in args if _is_jet(a)] + [a for v in args if isinstance(v, (list, tuple)) for a in v if _is_jet(a)]
    jets += [a for a in kwargs.values() if _is_jet(a)]
    if not jets:
        return target(*args, **kwargs)
    if target in (aten.detach.default,):  # detach: derivative zero, as in torch
        return args[0].c[0].detach()
    if target in _PIECEWISE_CONSTANT:  # comparisons, sign, argmax: depend on the value only
        a = [x.c[0] if _is_jet(x) else x for x in args]
        kw = {n: (x.c[0] if _is_jet(x) else x) for n, x in kwargs.items()}
        return target(*a, **kw)
    if target in (aten.ones_like.default, aten.zeros_like.default, aten.empty_like.default, aten.full_like.default):
        return target(args[0].c[0], *args[1:], **kwargs)
    if target in _LINEAR:
        if not _is_jet(args[0]) or any(_is_jet(a) for a in args[1:]):
            raise UnsupportedOperation(f"{target} with a non-constant index argument")
        return _linear(lambda c, *a, **k: target(c, *a, **k), args[0], *args[1:], **kwargs)
    if target in (aten.add.Tensor, aten.sub.Tensor):
        a, b = args[0], args[1]
        alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
        sign = -alpha if target is aten.sub.Tensor else alpha
        a, b = _as_jet(a, K), _as_jet(b, K)
        c0 = target(a.c[0], b.c[0], alpha=alpha) if alpha != 1 else target(a.c[0], b.c[0])
        rest = [_add(x, None if y is None else y * sign) for x, y in zip(a.c[1:], b.c[1:])]
        return _Jet([c0] + rest)
    if target in (aten.rsub.Scalar, aten.rsub.Tensor):  # other − alpha·x
        alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
        x, other = _as_jet(args[0], K), _as_jet(args[1], K)
        return _sum_jets(other, x, alpha=-alpha)
    if target in (aten.add.Scalar, aten.sub.Scalar):
        x = args[0]
        sign = 1 if target is aten.add.Scalar else -1
        alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
        return _Jet([x.c[0] + sign * alpha * args[1]] + x.c[1:])
    if target in (aten.mul.Scalar, aten.div.Scalar):
        op = torch.mul if target is aten.mul.Scalar else torch.div
        return _linear(lambda c: op(c, args[1]), args[0])
    if target in _BILINEAR:
        a, b = args[0], args[1]
        op = _BILINEAR[target]
        if not _is_jet(a):
            return _linear(lambda c: op(a, c), b)
        if not _is_jet(b):
            return _linear(lambda c: op(c, b), a)
        return _cauchy(a, b, op)
    if target is aten.addmm.default:
        bias, m1, m2 = args[:3]
        beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
        prod = _call(aten.mm.default, (m1, m2), {}, K)
        if alpha != 1:
            prod = _scale(prod, alpha)
        bias = _as_jet(bias, K)
        if beta != 1:
            bias = _scale(bias, beta)
        return _Jet([_add(x, y) for x, y in zip(bias.c, prod.c)])
    if target is aten.div.Tensor:
        a, b = args[0], args[1]
        if not _is_jet(b):
            return _linear(lambda c: torch.div(c, b), a)
        return _cauchy(_as_jet(a, K), _recip(b), torch.mul)
    if target in _UNARY_RULES:
        return _UNARY_RULES[target](args[0])
    if target is aten.pow.Tensor_Scalar:
        return _pow_rule(args[0], args[1])
    if target is aten.square.default:
        return _int_pow(args[0], 2)
    if target is aten._log_softmax.default:
        return _log_softmax_rule(args[0], args[1])
    if target is aten._softmax.default:
        return _exp_rule(_log_softmax_rule(args[0], args[1]))
    if target is aten.mse_loss.default:
        a, b = _as_jet(args[0], K), _as_jet(args[1], K)
        reduction = args[2] if len(args) > 2 else kwargs.get("reduction", 1)
        sq = _int_pow(_sum_jets(a, b, alpha=-1), 2)
        if reduction == 0:
            return sq
        return _linear(torch.mean if reduction == 1 else torch.sum, sq)
    if target in (aten.cat.default, aten.stack.default):
        tensors = [_as_jet(t, K) for t in args[0]]
        out = []
        for k in range(K + 1):
            parts = [t.c[k] for t in tensors]
            if all(p is None for p in parts):
                out.append(None)
            else:
                out.append(target([torch.zeros_like(t.c[0]) if p is None else p.expand(t.c[0].shape)
                                   for p, t in zip(parts, tensors)],
                                  *args[1:], **kwargs))
        return _Jet(out)
    if target is aten.where.self:
        cond, a, b = args
        if _is_jet(cond):
            raise UnsupportedOperation("where with a non-constant condition")
        return _where_jet(cond, a, b, K)
    if target is aten.pow.Tensor_Tensor and _is_jet(args[0]) and not _is_jet(args[1]):
        return _tensor_pow_rule(args[0], args[1])
    if target in (aten.prod.dim_int, aten.prod.default) and _is_jet(args[0]):
        x = args[0]
        dim = args[1] if len(args) > 1 else None
        keepdim = (args[2] if len(args) > 2 else kwargs.get("keepdim", False)) if dim is not None else False
        if dim is None:
            x = _linear(torch.reshape, x, (-1,))
            dim = 0
        factors = _linear(torch.unbind, x, dim)
        out = factors[0]
        for f in factors[1:]:
            out = _cauchy(out, f, torch.mul)
        return _linear(torch.unsqueeze, out, dim) if keepdim else out
    if target in _GENERIC_UNARY and _is_jet(args[0]) and not any(_is_jet(a) for a in args[1:]):
        rest, kw = args[1:], kwargs
        out = target(args[0].c[0], *rest, **kw)
        if isinstance(out, tuple):
            raise UnsupportedOperation(f"{target} returns several tensors")
        derivs = _elementwise_derivatives(lambda z: target(z, *rest, **kw), args[0].c[0], K)
        return _series_compose(args[0], derivs)
    if target in _OP_RULES:
        return _OP_RULES[target](target, args, kwargs, K)
    raise UnsupportedOperation(
        f"no truncated-polynomial rule for {target}; use method='nested' (or 'auto', which falls back)"
    )


def _interpret(gm: torch.fx.GraphModule, w: Tensor, v: Tensor, K: int) -> list[Tensor]:
    """Run the traced graph on the jet w + t·v; return the K + 1 Taylor coefficients of the output."""
    env = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node] = _Jet([w, v] + [None] * (K - 1)) if K >= 1 else _Jet([w])
        elif node.op == "get_attr":
            obj = gm
            for part in node.target.split("."):
                obj = getattr(obj, part)
            env[node] = obj
        elif node.op == "call_function":
            args = torch.fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
            target = node.target
            if target in _INPLACE_VIEWS:
                source = node.args[0]
                if not isinstance(source, torch.fx.Node) or len(source.users) != 1:
                    raise UnsupportedOperation(f"{target} on a value with other users")
                target = _INPLACE_VIEWS[target]
            if target is operator.getitem:
                env[node] = args[0][args[1]]
            else:
                env[node] = _call(target, args, kwargs, K)
        elif node.op == "output":
            out = torch.fx.node.map_arg(node.args[0], lambda n: env[n])
            out = out[0] if isinstance(out, (list, tuple)) else out
            if not _is_jet(out):
                return [out] + [torch.zeros_like(out)] * K
            if out.c[0].numel() != 1:
                raise ValueError(f"the loss must return a scalar, got shape {tuple(out.c[0].shape)}")
            return [out.c[0].reshape(()) if c is None else c.reshape(()) for c in _zero_fill(out.c, out.c[0])]
        else:
            raise UnsupportedOperation(f"graph node kind {node.op!r} is not supported")
    raise RuntimeError("traced graph has no output")


# --------------------------------------------------------------------------------------------
# Rules for the operations of language models (cross-entropy, LayerNorm, attention, masking)
# --------------------------------------------------------------------------------------------
def _bind(target, args, kwargs) -> dict:
    """The arguments of an ATen call by name (schema defaults filled in)."""
    bound = {}
    for i, a in enumerate(target._schema.arguments):
        if i < len(args) and not a.kwarg_only:
            bound[a.name] = args[i]
        elif a.name in kwargs:
            bound[a.name] = kwargs[a.name]
        elif a.has_default_value():
            bound[a.name] = a.default_value
    return bound


def _value(x):
    """The constant part of a jet (or the value itself)."""
    return x.c[0] if _is_jet(x) else x


def _where_jet(cond: Tensor, a, b, K: int) -> _Jet:
    """where(cond, a, b) for constant cond: coefficient by coefficient (a, b jets or constants)."""
    a, b = _as_jet(a, K), _as_jet(b, K)
    out = [torch.where(cond, a.c[0], b.c[0])]
    for x, y in zip(a.c[1:], b.c[1:]):
        if x is None and y is None:
            out.append(None)
        else:
            like = torch.as_tensor(x if x is not None else y)
            zero = torch.zeros_like(like)
            out.append(torch.where(cond, zero if x is None else x, zero if y is None else y))
    return _Jet(out)


def _masked_fill_rule(target, args, kwargs, K: int) -> _Jet:
    # masked_fill(x, mask, value) = where(mask, value, x); the mask is a constant
    x, mask, value = args[:3]
    if _is_jet(mask):
        raise UnsupportedOperation("masked_fill with a non-constant mask")
    x = _as_jet(x, K)
    if not _is_jet(value):
        value = torch.as_tensor(value, dtype=x.c[0].dtype, device=x.c[0].device)
    return _where_jet(mask, value, x, K)


def _nll_loss_rule(target, args, kwargs, K: int):
    # nll_loss(x, y) = −Σ_i w_{y_i}·x[i, y_i] / (Σ_i w_{y_i} or 1): linear in x for constant y, w
    x, rest = args[0], args[1:]
    if not _is_jet(x) or any(_is_jet(a) for a in rest) or any(_is_jet(a) for a in kwargs.values()):
        raise UnsupportedOperation(f"{target} with non-constant targets or class weights")
    total_weight = target(x.c[0], *rest, **kwargs)[1]
    return (_linear(lambda c: target(c, *rest, **kwargs)[0], x), total_weight)


def _logsumexp_rule(target, args, kwargs, K: int) -> _Jet:
    b = _bind(target, args, kwargs)
    x, dim, keepdim = _as_jet(b["self"], K), b["dim"], b["keepdim"]
    dims = tuple(dim) if isinstance(dim, (list, tuple)) else (dim,)
    m = torch.amax(x.c[0], dim=dims, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # a constant shift: exact for any m
    s = _linear(torch.sum, _exp_rule(_sum_jets(x, _const_jet(m, K), alpha=-1)), dim=dims, keepdim=keepdim)
    out = _log_rule(s)
    out.c[0] = out.c[0] + (m if keepdim else m.squeeze(dims))
    return out


def _safe_softmax(x: _Jet, dim: int) -> _Jet:
    """softmax(x) along ``dim``, 0 on rows that are −inf throughout (as ``aten._safe_softmax``)."""
    full = torch.isneginf(x.c[0]).all(dim=dim, keepdim=True)
    if bool(full.any()):
        x = _Jet([torch.where(full, torch.zeros_like(c), c) if c is not None else None for c in x.c])
        y = _exp_rule(_log_softmax_rule(x, dim))
        return _Jet([None if c is None else torch.where(full, torch.zeros_like(c), c) for c in y.c])
    return _exp_rule(_log_softmax_rule(x, dim))


def _safe_softmax_rule(target, args, kwargs, K: int) -> _Jet:
    b = _bind(target, args, kwargs)
    x = _as_jet(b["self"], K)
    if b.get("dtype") is not None:
        x = _linear(lambda c: c.to(b["dtype"]), x)
    return _safe_softmax(x, b["dim"])


def _layer_norm_rule(target, args, kwargs, K: int):
    # y = (x − μ)·(σ² + ε)^(−1/2)·weight + bias over the last len(normalized_shape) dimensions
    b = _bind(target, args, kwargs)
    x = _as_jet(b["input"], K)
    dims = tuple(range(-len(b["normalized_shape"]), 0))
    mean = _linear(torch.mean, x, dim=dims, keepdim=True)
    centred = _sum_jets(x, mean, alpha=-1)
    var = _linear(torch.mean, _int_pow(centred, 2), dim=dims, keepdim=True)
    rstd = _pow_rule(_Jet([var.c[0] + b["eps"]] + var.c[1:]), -0.5)
    out = _cauchy(centred, rstd, torch.mul)
    if b["weight"] is not None:
        out = _call(aten.mul.Tensor, (out, b["weight"]), {}, K)
    if b["bias"] is not None:
        out = _call(aten.add.Tensor, (out, b["bias"]), {}, K)
    return (out, mean, rstd)


def _attention(q, k, v, mask, is_causal: bool, scale, enable_gqa: bool, K: int) -> _Jet:
    """softmax(q·kᵀ·scale + mask)·v on jets, explicitly (Vaswani et al. 2017, arXiv 1706.03762)."""
    q, k, v = _as_jet(q, K), _as_jet(k, K), _as_jet(v, K)
    if enable_gqa and q.c[0].shape[-3] != k.c[0].shape[-3]:
        rep = q.c[0].shape[-3] // k.c[0].shape[-3]
        k = _linear(torch.repeat_interleave, k, rep, dim=-3)
        v = _linear(torch.repeat_interleave, v, rep, dim=-3)
    scale = 1.0 / math.sqrt(q.c[0].shape[-1]) if scale is None else scale
    scores = _cauchy(_scale(q, scale), _linear(torch.transpose, k, -2, -1), torch.matmul)
    L, S = q.c[0].shape[-2], k.c[0].shape[-2]
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=q.c[0].device).tril()
        scores = _where_jet(keep, scores, torch.tensor(-math.inf, dtype=q.c[0].dtype, device=q.c[0].device), K)
    if mask is not None:
        if not _is_jet(mask) and mask.dtype == torch.bool:
            scores = _where_jet(mask, scores, torch.tensor(-math.inf, dtype=q.c[0].dtype, device=q.c[0].device), K)
        else:
            scores = _sum_jets(scores, _as_jet(mask, K))
    return _call(aten.matmul.default, (_safe_softmax(scores, -1), v), {}, K)


def _sdpa_rule(target, args, kwargs, K: int):
    # fused attention kernels (flash, memory-efficient, cuDNN, CPU flash) have no forward-mode AD:
    # the jet goes through the mathematically identical softmax(q·kᵀ/√d + mask)·v
    b = _bind(target, args, kwargs)
    if float(b.get("dropout_p", 0.0)) != 0.0:
        raise UnsupportedOperation(f"{target} with dropout_p > 0 (random; call model.eval())")
    mask = b.get("attn_mask", b.get("attn_bias"))
    out = _attention(b["query"], b["key"], b["value"], mask, bool(b.get("is_causal", False)), b.get("scale"),
                     bool(b.get("enable_gqa", False)), K)
    if target is aten.scaled_dot_product_attention.default:
        return out
    # the kernel's other outputs (log-sum-exp, RNG state) are only read by its backward: constants
    plain = [_value(a).detach() if isinstance(_value(a), Tensor) else _value(a) for a in args]
    rest = target(*plain, **{n: _value(a) for n, a in kwargs.items()})
    return (out,) + tuple(rest[1:])


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def nested_directional_derivative(fn: Callable[[Tensor], Tensor], w: Tensor, v: Tensor, order: int) -> Tensor:
    """Dᵏf(w)[v, …, v] by ``order`` nested ``torch.func.jvp`` (the naive reference; cost ~3^order)."""
    g = fn
    for _ in range(order):
        g = (lambda h: (lambda x: jvp(h, (x,), (v,))[1]))(g)
    return g(w)


class TaylorMode:
    """Taylor-mode directional derivatives of a flat loss ``fn(w) -> scalar`` around ``w``.

    The loss is traced once at construction (a forward pass); every call then propagates truncated
    polynomials through the trace. Coefficients: ``g_k = (1/k!)·dᵏ/dtᵏ fn(w + t·v)|_{t=0}``.

    Args:
        fn: the loss as a function of a flat parameter vector (e.g. ``FlatProblem.fn``).
        w: the expansion point (1-D tensor), e.g. ``FlatProblem.w0``.
        method: "taylor" (raise on unsupported operations), "nested" (nested jvp everywhere) or
            "auto" (Taylor mode when every operation has a rule, else nested jvp on the loss traced with
            LayerNorm decomposed and attention on its math kernel, see ``_nested_reference``).

    Raises:
        ValueError: w not a 1-D floating tensor, or an unknown method.
        UnsupportedOperation: method="taylor" and the loss uses an operation without a rule.

    Example:
        >>> f = lambda w: (w[0] - w[1] ** 2) ** 2
        >>> tm = TaylorMode(f, torch.zeros(2, dtype=torch.float64))
        >>> tm.fourth(torch.tensor([0.0, 1.0], dtype=torch.float64))   # T₄[e₂⁴] = 4! · 1
        tensor(24., dtype=torch.float64)
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], w: Tensor, method: str = "auto"):
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        if not isinstance(w, Tensor) or w.dim() != 1 or not w.is_floating_point():
            raise ValueError("w must be a 1-D floating-point tensor (the flattened parameters; see slt_interp.estimators.flatten)")
        self.fn = fn
        self.w = w.detach()
        self.method = method
        self.graph = None
        self.unsupported: str | None = None
        self._nested_fn = fn
        if method != "nested":
            try:
                gm = _trace(fn, self.w)
                # a dry run at order 4 finds unsupported operations now rather than later
                value = _interpret(gm, self.w, torch.zeros_like(self.w), 4)[0]
                _check_trace_value(value, fn(self.w))
                self.graph = gm
            except UnsupportedOperation as err:
                if method == "taylor":
                    raise
                self.unsupported = str(err)
            except (RuntimeError, TypeError, IndexError) as err:  # a rule that does not fit this call
                if method == "taylor":
                    raise UnsupportedOperation(f"Taylor-mode propagation failed ({type(err).__name__}: {err})") from err
                self.unsupported = f"Taylor-mode propagation failed ({type(err).__name__}: {err})"
            if self.graph is None:
                self._nested_fn = _nested_reference(fn, self.w)

    @property
    def uses_taylor(self) -> bool:
        """True when calls propagate truncated polynomials (False: nested-jvp fallback)."""
        return self.graph is not None

    def _check_v(self, v: Tensor) -> None:
        if not isinstance(v, Tensor) or v.shape[-1:] != self.w.shape:
            raise ValueError(f"v must have shape (..., {self.w.numel()}), got {tuple(getattr(v, 'shape', ()))}")

    def _coeffs_single(self, w: Tensor, v: Tensor, order: int) -> Tensor:
        if self.graph is not None:
            return torch.stack(_interpret(self.graph, w, v, order))
        with _math_attention():  # fused attention kernels have no forward-mode AD; the math one has
            out = [self._nested_fn(w)]
            for k in range(1, order + 1):
                out.append(nested_directional_derivative(self._nested_fn, w, v, k) / math.factorial(k))
        return torch.stack(out)

    def _batched(self, single: Callable[[Tensor], Tensor], v: Tensor) -> Tensor:
        self._check_v(v)
        if v.dim() == 1:
            return single(v)
        lead = v.shape[:-1]
        out = vmap(single)(v.reshape(-1, v.shape[-1]))
        if isinstance(out, tuple):
            return tuple(o.reshape(*lead, *o.shape[1:]) for o in out)
        return out.reshape(*lead, *out.shape[1:])

    def coefficients(self, v: Tensor, order: int = 4) -> Tensor:
        """Taylor coefficients g_0..g_order of t ↦ fn(w + t·v).

        Args:
            v: directions, shape (..., d).
            order: the highest coefficient, an integer ≥ 0.

        Returns:
            The coefficients g_k = g⁽ᵏ⁾(0)/k!, shape (..., order + 1).

        Raises:
            ValueError: ``order`` is not an integer ≥ 0.
        """
        if int(order) != order or order < 0:
            raise ValueError(f"order must be an integer ≥ 0, got {order}")
        return self._batched(lambda u: self._coeffs_single(self.w, u, int(order)), v)

    def derivatives(self, v: Tensor, order: int = 4) -> Tensor:
        """Dᵏf(w)[v, …, v] for k = 0..order: the coefficients times k!.

        Args:
            v: directions, shape (..., d).
            order: the highest derivative order, an integer ≥ 0.

        Returns:
            The derivatives, shape (..., order + 1).
        """
        c = self.coefficients(v, order)
        scale = torch.tensor([math.factorial(k) for k in range(order + 1)], dtype=c.dtype, device=c.device)
        return c * scale

    def fourth(self, v: Tensor) -> Tensor:
        """T₄[v, v, v, v] = D⁴f(w)[v, v, v, v].

        Args:
            v: directions, shape (..., d).

        Returns:
            T₄[v⁴] for each direction, shape (...).
        """
        return self._batched(lambda u: 24 * self._coeffs_single(self.w, u, 4)[4], v)

    def third_vector(self, v: Tensor) -> Tensor:
        """T₃[·, v, v] = ∇_w (vᵀ∇²f(w)v).

        Args:
            v: directions, shape (..., d).

        Returns:
            The vectors T₃[·, v, v], shape (..., d).
        """

        def single(u: Tensor) -> Tensor:
            return grad(lambda x: 2 * self._coeffs_single(x, u, 2)[2])(self.w)

        return self._batched(single, v)

    def quartic_terms(self, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(T₃[·, v, v], vᵀHv, T₄[v⁴]) from one pass: reverse mode over an order-4 Taylor pass.

        Args:
            v: directions, shape (..., d).

        Returns:
            ``(T₃[·, v, v], vᵀHv, T₄[v⁴])`` of shapes (..., d), (...) and (...).
        """

        def single(u: Tensor):
            def f(x):
                c = self._coeffs_single(x, u, 4)
                return 2 * c[2], (2 * c[2], 24 * c[4])

            g, (h, t4) = grad(f, has_aux=True)(self.w)
            return g, h, t4

        return self._batched(single, v)


def _math_attention():
    """A context in which ``F.scaled_dot_product_attention`` uses its math kernel (forward-mode AD)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _trace(fn: Callable[[Tensor], Tensor], w: Tensor, decomposition_table=None) -> torch.fx.GraphModule:
    """The ATen graph of ``fn`` at ``w``.

    Python code that reads tensor values (e.g. ``F.one_hot`` checks its labels with ``.item()``) stops
    the default trace; it is traced again with the values of this point read concretely, which is
    exact at ``w`` (the point every derivative is taken at).

    Args:
        fn: the flat loss.
        w: the point.
        decomposition_table: ATen operations to trace through (``make_fx``'s table).

    Returns:
        The traced graph module.

    Raises:
        UnsupportedOperation: ``fn`` cannot be traced either way.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    try:
        return make_fx(functionalize(fn), decomposition_table)(w)
    except Exception as first:  # noqa: BLE001 - any tracing failure means: fall back
        try:
            return make_fx(functionalize(fn), decomposition_table, _error_on_data_dependent_ops=False)(w)
        except Exception as err:  # noqa: BLE001
            raise UnsupportedOperation(
                f"the loss could not be traced to an ATen graph ({type(first).__name__}: {str(first)[:200]}); "
                "use method='nested' (or 'auto', which falls back)"
            ) from err


def _nested_reference(fn: Callable[[Tensor], Tensor], w: Tensor) -> Callable[[Tensor], Tensor]:
    """The function the nested-jvp fallback differentiates: ``fn`` traced with LayerNorm decomposed.

    torch's forward-over-forward derivative of ``native_layer_norm`` is wrong (torch 2.13: the second
    directional derivative of ``F.layer_norm`` by nested ``jvp`` disagrees with finite differences,
    while its decomposition into mean, variance and rsqrt is exact), and fused attention kernels have
    no forward-mode AD; so the loss is traced under the math attention kernel with LayerNorm
    decomposed. If that trace fails, ``fn`` itself is used.

    Returns:
        A function of the flat vector with the value of ``fn``.
    """
    from torch._decomp import get_decompositions

    try:
        with _math_attention():
            gm = _trace(fn, w, get_decompositions([aten.native_layer_norm.default]))
            _check_trace_value(jvp(gm, (w,), (torch.zeros_like(w),))[0], fn(w))  # traced, and forward-mode works
        return gm
    except Exception:  # noqa: BLE001 - any failure: differentiate fn itself
        return fn


def _check_trace_value(traced: Tensor, direct: Tensor) -> None:
    """The traced graph must reproduce the loss value at w (else the trace is not the loss)."""
    direct = torch.as_tensor(direct).detach().reshape(()).to(traced.dtype)
    tol = torch.finfo(traced.dtype).eps ** 0.5  # rounding (explicit vs fused attention) stays far below
    if not torch.allclose(traced.detach(), direct, rtol=tol, atol=tol * 1e-2) and not (traced.isnan() and direct.isnan()):
        raise UnsupportedOperation(
            f"the traced loss gives {float(traced):.6g} at w, the loss itself {float(direct):.6g} (a data-dependent "
            "trace); use method='nested' (or 'auto', which falls back)"
        )


def _tm(fn, w, method) -> TaylorMode:
    return fn if isinstance(fn, TaylorMode) else TaylorMode(fn, w, method)


def directional_derivatives(fn, w: Tensor, v: Tensor, order: int = 4, method: str = "auto") -> Tensor:
    """Dᵏf(w)[v, …, v] for k = 0..order along t ↦ f(w + t·v); shape (..., order + 1) for v (..., d).

    One-shot wrapper of :class:`TaylorMode` (which traces ``fn``; build a ``TaylorMode`` yourself to
    reuse the trace across calls).

    Args:
        fn: f(w) -> scalar.
        w: the base point (flat).
        v: directions, shape (..., d).
        order: the highest derivative order.
        method: see :class:`TaylorMode`.

    Returns:
        The derivatives D⁰..D^order f(w)[v, …, v], shape (..., order + 1).

    Example:
        >>> f = lambda w: (w ** 4).sum() / 24
        >>> directional_derivatives(f, torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
        tensor([0., 0., 0., 0., 2.], dtype=torch.float64)
    """
    return _tm(fn, w, method).derivatives(v, order)


def third_derivative_vector(fn, w: Tensor, v: Tensor, method: str = "auto") -> Tensor:
    """T₃[·, v, v] = ∇_w (vᵀ∇²f(w)v): reverse mode over an order-2 Taylor pass.

    Args:
        fn: f(w) -> scalar, or a :class:`TaylorMode` (then ``w`` and ``method`` are its own).
        w: the base point (flat), shape (d,).
        v: directions, shape (..., d).
        method: see :class:`TaylorMode`.

    Returns:
        The vectors T₃[·, v, v], shape (..., d).
    """
    return _tm(fn, w, method).third_vector(v)


def fourth_derivative(fn, w: Tensor, v: Tensor, method: str = "auto") -> Tensor:
    """T₄[v, v, v, v] = d⁴/dt⁴ f(w + t·v)|_{t=0} by Taylor mode.

    Args:
        fn: f(w) -> scalar, or a :class:`TaylorMode` (then ``w`` and ``method`` are its own).
        w: the base point (flat), shape (d,).
        v: directions, shape (..., d).
        method: see :class:`TaylorMode`.

    Returns:
        T₄[v⁴] for each direction, shape (...).
    """
    return _tm(fn, w, method).fourth(v)


# One-argument elementwise ops → their Taylor-coefficient recurrences (used by _call; defined here,
# after the rules).
_UNARY_RULES = {
    aten.reciprocal.default: _recip, aten.tanh.default: _tanh_rule, aten.exp.default: _exp_rule,
    aten.log.default: _log_rule, aten.sigmoid.default: _sigmoid_rule, aten.relu.default: _relu_rule,
}

# Multi-argument ops → rules ``rule(target, args, kwargs, K)`` (used by _call).
_OP_RULES = {
    aten.masked_fill.Scalar: _masked_fill_rule, aten.masked_fill.Tensor: _masked_fill_rule,
    aten.nll_loss_forward.default: _nll_loss_rule, aten.nll_loss2d_forward.default: _nll_loss_rule,
    aten.logsumexp.default: _logsumexp_rule, aten._safe_softmax.default: _safe_softmax_rule,
    aten.native_layer_norm.default: _layer_norm_rule,
    aten.scaled_dot_product_attention.default: _sdpa_rule,
    aten._scaled_dot_product_flash_attention_for_cpu.default: _sdpa_rule,
    aten._scaled_dot_product_flash_attention.default: _sdpa_rule,
    aten._scaled_dot_product_efficient_attention.default: _sdpa_rule,
    aten._scaled_dot_product_cudnn_attention.default: _sdpa_rule,
}
