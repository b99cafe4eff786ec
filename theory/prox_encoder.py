"""SAE encoders whose activation is the proximal operator of a prior's penalty (the prior's MAP encoder).

With a Gaussian likelihood of variance t and unit-norm decoder directions, one proximal step from
a = 0 on ½‖x − D·a‖² + t·ρ(a) is a = prox_{tρ}(v) with v = Dᵀx: the encoder non-linearity a prior
implies (docs/theory.md §4; Parikh & Boyd 2014). :class:`ProxEncoder` applies the exact prox of a
one-variable penalty ρ (derived from a prior by :func:`~slt_interp.theory.penalty_from_prior`) to every
pre-activation, written as a gate times a shrinkage:

    prox_{tρ}(v) = s_t(v) · H(h_t(v) − t·c₀),   s_t(v) = argmin_{a ≥ 0} ½(a − v)² + t·g(a),

where ρ(a) = c₀ + g(a) for a ≠ 0 with g(0⁺) = 0 (c₀ is the L0 weight of a point mass at zero, plus
ρ's jump at 0), and h_t(v) = ½v² − min_a[½(a − v)² + t·g(a)] is non-decreasing (h_t′ = s_t ≥ 0), so
the gate is H(v − θ*) with the *jump threshold* θ* = inf{v : h_t(v) > t·c₀}. On the real line a
symmetric ρ gives prox(v) = sign(v)·s_t(|v|)·H(|v| − θ*). Examples: the spike-and-slab with an
exponential slab gives the JumpReLU-type (v − tλ)·H(v − tλ − √(2tc₀)); the exponential slab alone the
shifted ReLU; a Lomax slab the shrinkage ½[(v − s) + √((v + s)² − 4t(α + 1))] (with a jump).

As in JumpReLU SAEs (Rajamanoharan et al. 2024, arXiv 2407.14435) the threshold θ is a learned
per-latent parameter (initialised at θ*), trained through the pseudo-derivatives

    ∂/∂θ [s(v)·H(v − θ)] := −(s(θ)/ε)·K((v − θ)/ε),   ∂/∂θ H(v − θ) := −(1/ε)·K((v − θ)/ε),

with the rectangle kernel K(u) = [|u| < ½] and bandwidth ε; the gate passes no gradient to v, the
shrinkage passes its exact derivative s′(v) = 1/(1 + t·g″(s)) (implicit function theorem on the
stationarity equation s − v + t·g′(s) = 0). :class:`JumpReLU` is the baseline v·H(v − θ).

Example:
    >>> import sympy as sp
    >>> from slt_interp.theory import PRIOR_CATALOGUE
    >>> enc = ProxEncoder(PRIOR_CATALOGUE["spike_and_slab"](), 4, step=0.5, pi_0=0.9, **{"lambda": 1.0})
    >>> round(enc.exact_threshold(), 6)   # tλ + √(2t·log(π₀/((1 − π₀)λ))) = 0.5 + √(log 9)
    1.982303
"""
from __future__ import annotations

import math

import sympy as sp
import torch
from torch import Tensor

from ._lambdify import torch_function
from ._validate import parameter_values, positive_int, real_penalty_values
from .priors import PriorPenalty
from .proximal import T as _T, V as _V, _X, _positive_piece, _prox_grid, _stationary_roots

__all__ = ["ProxEncoder", "JumpReLU", "heaviside_ste", "jump_ste"]


# ------------------------------------------------------------------------------------------------
# straight-through gates (Rajamanoharan et al. 2024, arXiv 2407.14435, section 3)
# ------------------------------------------------------------------------------------------------
def _kernel(v: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """(1/ε)·K((v − θ)/ε) with the rectangle kernel K(u) = [|u| < ½]."""
    return ((v - threshold).abs() < 0.5 * bandwidth).to(v.dtype) / bandwidth


def _reduce_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient back to ``shape`` (the threshold's, usually ``(num_latents,)``)."""
    while grad.ndim > len(shape):
        grad = grad.sum(0)
    for k, n in enumerate(shape):
        if n == 1 and grad.shape[k] != 1:
            grad = grad.sum(k, keepdim=True)
    return grad


class _Heaviside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, threshold, bandwidth):
        ctx.save_for_backward(v, threshold)
        ctx.bandwidth = bandwidth
        return (v > threshold).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        v, threshold = ctx.saved_tensors
        g_theta = None
        if ctx.needs_input_grad[1]:
            g_theta = _reduce_to(-grad * _kernel(v, threshold, ctx.bandwidth), threshold.shape)
        return None, g_theta, None


class _Jump(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, v, threshold, value_at_threshold, bandwidth):
        gate = v > threshold
        ctx.save_for_backward(v, threshold, value_at_threshold, gate)
        ctx.bandwidth = bandwidth
        return torch.where(gate, value, torch.zeros_like(value))

    @staticmethod
    def backward(ctx, grad):
        v, threshold, value_at_threshold, gate = ctx.saved_tensors
        g_value = torch.where(gate, grad, torch.zeros_like(grad)) if ctx.needs_input_grad[0] else None
        g_theta = None
        if ctx.needs_input_grad[2]:
            g_theta = _reduce_to(-grad * value_at_threshold * _kernel(v, threshold, ctx.bandwidth), threshold.shape)
        return g_value, None, g_theta, None, None


def _check_bandwidth(bandwidth) -> float:
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not math.isfinite(bandwidth) \
            or bandwidth <= 0:
        raise ValueError(f"the bandwidth ε must be a finite positive number, got {bandwidth!r}; "
                         "use about 1/100 of the pre-activations' scale")
    return float(bandwidth)


def heaviside_ste(v: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """H(v − θ) = [v > θ] with the pseudo-derivative ∂/∂θ := −(1/ε)·K((v − θ)/ε) and none to v.

    The L0 count of a JumpReLU SAE, Σ_i H(v_i − θ_i), made trainable in θ (Rajamanoharan et al. 2024,
    arXiv 2407.14435, eq. 11), with the rectangle kernel K(u) = [|u| < ½].

    Args:
        v: pre-activations, any shape broadcastable with ``threshold``.
        threshold: θ (e.g. shape ``(num_latents,)``).
        bandwidth: ε > 0.

    Returns:
        The 0/1 gate, the broadcast shape, dtype of ``v``.

    Raises:
        ValueError: a non-positive or non-finite bandwidth.
    """
    return _Heaviside.apply(v, threshold.to(v), _check_bandwidth(bandwidth))


def jump_ste(value: Tensor, v: Tensor, threshold: Tensor, value_at_threshold: Tensor, bandwidth: float) -> Tensor:
    """value·H(v − θ) with ∂/∂θ := −(value(θ)/ε)·K((v − θ)/ε) and ∂/∂value = H(v − θ).

    For value = v this is the JumpReLU activation and its pseudo-derivative (Rajamanoharan et al. 2024,
    arXiv 2407.14435, eq. 10): the kernel density estimate of d/dθ E[value·H(v − θ)] = −value(θ)·p(θ).

    Args:
        value: the output where the gate is open (shape of ``v``); gradients pass through it.
        v: the gated variable.
        threshold: θ.
        value_at_threshold: value(θ), broadcastable with ``v`` (treated as a constant).
        bandwidth: ε > 0.

    Returns:
        ``value`` where v > θ, else 0.

    Raises:
        ValueError: a non-positive or non-finite bandwidth.
    """
    return _Jump.apply(value, v, threshold.to(v), value_at_threshold.detach().to(v), _check_bandwidth(bandwidth))


# ------------------------------------------------------------------------------------------------
# the encoders
# ------------------------------------------------------------------------------------------------
class JumpReLU(torch.nn.Module):
    """The JumpReLU activation v·H(v − θ) with a learned per-latent threshold θ (the baseline).

    Rajamanoharan et al. 2024, arXiv 2407.14435: trained with the L0 penalty Σ_i H(v_i − θ_i)
    (:meth:`l0`) through the pseudo-derivatives of :func:`jump_ste` and :func:`heaviside_ste`.

    Args:
        num_latents: the number of latents m.
        threshold: the initial θ (all latents).
        bandwidth: the kernel bandwidth ε.

    Attributes:
        threshold: θ, shape ``(num_latents,)`` (a parameter; cast to the inputs' dtype and device).
        bandwidth: ε.

    Raises:
        ValueError: a bad number of latents or bandwidth.
    """

    def __init__(self, num_latents: int, threshold: float = 0.1, bandwidth: float = 0.05):
        super().__init__()
        self.bandwidth = _check_bandwidth(bandwidth)
        self.threshold = torch.nn.Parameter(torch.full((positive_int(num_latents, "num_latents"),), float(threshold)))

    def forward(self, v: Tensor) -> Tensor:
        """v·H(v − θ).

        Args:
            v: pre-activations ``(..., num_latents)``.

        Returns:
            The codes, shape, dtype and device of ``v``.
        """
        theta = self.threshold.to(v)
        return jump_ste(v, v, theta, theta, self.bandwidth)

    def l0(self, v: Tensor) -> Tensor:
        """Σ_i H(v_i − θ_i) per row, trainable in θ.

        Args:
            v: pre-activations ``(..., num_latents)``.

        Returns:
            Shape ``(...)``.
        """
        return heaviside_ste(v, self.threshold, self.bandwidth).sum(-1)


class ProxEncoder(torch.nn.Module):
    """The prior's MAP encoder a = prox_{tρ}(v), gate H(v − θ) with a learned θ (see the module docstring).

    prox_{tρ}(v) = argmin_a ½(a − v)² + t·ρ(a), applied to every pre-activation; the threshold θ starts
    at the exact jump θ* (:meth:`exact_threshold`), so before training the output equals the exact prox.

    The threshold is a float64 parameter of shape ``(num_latents,)``; it is cast to the inputs' dtype
    and device in :meth:`forward` (device follows inputs; gradients reach the parameter).

    Args:
        prior: a one-variable :class:`~slt_interp.theory.PriorPenalty` (on the real line: symmetric).
        num_latents: the number of latents m.
        step: t > 0 (the likelihood variance: the penalty's strength).
        bandwidth: ε of the threshold's pseudo-derivative.
        learn_threshold: learn θ (JumpReLU-style); False: θ = θ*(t) always (recomputed when t changes,
            to about 1e-6 relative), so the encoder is the exact prox at every step and has no
            parameters (the L0 part of ρ then passes no gradient).
        **params: a number for every parameter of the prior.

    Attributes:
        prior: the prior given.
        support: ``"nonnegative"`` or ``"real"`` (then the encoder acts on |v| and keeps the sign).
        l0_weight: c₀ = ρ(0⁺) − ρ(0), the cost of leaving zero (the L0 weight of a point mass).
        slab: g(x) = ρ(x) − c₀ for x > 0 (sympy, in a positive symbol x), g(0⁺) = 0.
        method: how s_t is computed: ``"closed form"`` (stationarity of degree ≤ 2), ``"cubic roots"``
            (degree 3, Cardano / trigonometric) or ``"numerical"`` (a zooming grid).
        bandwidth: ε.
        threshold: θ, the per-latent gate (a float64 parameter; held at θ*(t) without a gradient when
            ``learn_threshold`` is False).
        learn_threshold: whether θ is learned.

    Raises:
        ValueError: a prior of several variables; a real-line penalty that is not symmetric; ρ(0⁺)
            infinite; a bad number of latents, step, bandwidth or parameter value.
    """

    def __init__(self, prior: PriorPenalty, num_latents: int, *, step: float = 1.0, bandwidth: float = 0.05,
                 learn_threshold: bool = True, **params: float):
        super().__init__()
        num_latents = positive_int(num_latents, "num_latents")
        if prior.dim != 1:
            raise ValueError(f"a prox encoder needs a one-variable prior (the penalty of one latent), got d = "
                             f"{prior.dim}; for a group penalty use its prior's .prox on groups of latents")
        values = parameter_values(prior.parameters, params, where="ProxEncoder")
        real_penalty_values(prior.penalty, prior.variables, prior.support, values)
        self.prior = prior
        self.bandwidth = _check_bandwidth(bandwidth)
        self.support = prior.support
        a = prior.variables[0]
        rho = prior.penalty.subs(values)
        piece = _positive_piece(rho, a, 1)  # ρ(x), x > 0
        if self.support == "real":
            _check_symmetric(rho, a)
        at_zero = float(rho.subs(a, 0)) if rho.subs(a, 0).is_finite else math.nan
        c0 = sp.limit(piece, _X, 0, "+")
        if not (c0.is_finite and math.isfinite(at_zero)):
            raise ValueError(f"ρ = {rho} is infinite at a = 0 or as a → 0⁺, so the prox never leaves zero or "
                             "is undefined there; use a prior whose density is finite and positive near 0⁺")
        #: the jump of ρ at 0 (the L0 weight of a point mass, plus ρ's own jump): ρ(a) = c₀ + g(a) off 0.
        self.l0_weight = float(c0) - at_zero
        self.slab = sp.simplify(piece - c0)  # g(x), g(0⁺) = 0
        self._g = _compile(self.slab, (_X,))
        self._g1 = _compile(sp.diff(self.slab, _X), (_X,))
        self._g2 = _compile(sp.diff(self.slab, _X, 2), (_X,))
        self._closed = _stationary_roots(self.slab, 1)
        self._poly = None if self._closed is not None else _stationarity_polynomial(self.slab)
        self.method = "closed form" if self._closed is not None else ("cubic roots" if self._poly is not None
                                                                      else "numerical")
        formulas = self._closed if self._closed is not None else (self._poly or ())
        self._formulas = [_compile(c, (_V, _T)) for c in formulas]  # candidates / cubic coefficients in (v, t)
        self.step = step
        theta = self.exact_threshold()
        self.learn_threshold = bool(learn_threshold)
        self.threshold = torch.nn.Parameter(torch.full((int(num_latents),), theta if math.isfinite(theta) else -1e6,
                                                       dtype=torch.float64), requires_grad=self.learn_threshold)
        self._threshold_step = self._step

    # -- the step -----------------------------------------------------------------------------
    @property
    def step(self) -> float:
        """t > 0, the penalty's strength (set it to change the shrinkage; the threshold stays learned)."""
        return self._step

    @step.setter
    def step(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"the step t must be a finite positive number, got {value!r}")
        self._step = float(value)

    # -- the shrinkage s_t ------------------------------------------------------------------------
    def _objective(self, a: Tensor, v: Tensor) -> Tensor:
        """½(a − v)² + t·g(a) − ½v² = a·(½a − v) + t·g(a): the objective relative to a = 0, no cancellation."""
        return a * (0.5 * a - v) + self._step * self._g(a)

    def _candidates(self, v: Tensor) -> list[Tensor]:
        t = self._step
        if self._closed is None and self._poly is None:
            return [_prox_grid(v, t, self._g, "nonnegative")]  # its objective omits ½v²: the argmin is the same
        values = [f(v, t) for f in self._formulas]
        return values if self._closed is not None else _cubic_real_roots(*values)

    def _shrink_values(self, v: Tensor) -> Tensor:
        """s_t(v) = argmin_{a ≥ 0} ½(a − v)² + t·g(a), no gradient."""
        with torch.no_grad():
            best = torch.zeros_like(v)
            best_obj = torch.zeros_like(v)  # the objective at a = 0, relative to itself
            for a in self._candidates(v):
                ok = torch.isfinite(a) & (a > 0)
                a = torch.where(ok, a, torch.ones_like(a))
                obj = torch.where(ok, self._objective(a, v), torch.full_like(v, math.inf))
                obj = torch.nan_to_num(obj, nan=math.inf)
                better = obj < best_obj
                best = torch.where(better, a, best)
                best_obj = torch.where(better, obj, best_obj)
            return best

    def shrink(self, v: Tensor) -> Tensor:
        """The shrinkage s_t(v) ≥ 0 with its exact derivative 1/(1 + t·g″(s)) (0 where s = 0).

        Computed in float64 for float64 inputs (else float32) and returned in the dtype of ``v``; one
        Newton step on s − v + t·g′(s) = 0 from the exact minimiser carries the gradient (its value
        changes by the rounding only).

        Args:
            v: any shape (non-negative part of the real line: pass |v| for a symmetric prior).

        Returns:
            s_t(v), shape, dtype and device of ``v``.
        """
        vc = v if v.dtype == torch.float64 else v.to(torch.float32)
        s0 = self._shrink_values(vc.detach())
        active = s0 > 0
        at = torch.where(active, s0, torch.ones_like(s0))
        t = self._step
        residual = at - vc + t * self._g1(at)
        slope = 1 + t * self._g2(at)
        slope = torch.where(active & torch.isfinite(slope), slope.clamp_min(1e-6), torch.ones_like(slope))
        newton = at - torch.where(active, residual, torch.zeros_like(residual)) / slope
        return torch.where(active, newton, torch.zeros_like(newton)).to(v.dtype)

    def _gap(self, v: float) -> float:
        """h_t(v) = ½v² − min_a[½(a − v)² + t·g(a)] = s·v − ½s² − t·g(s), s = s_t(v)."""
        x = torch.tensor([v], dtype=torch.float64)
        s = self._shrink_values(x)
        return float(-self._objective(s, x))

    def _above(self, v: Tensor) -> Tensor:
        """h_t(v) > t·c₀ (with no L0 cost: s_t(v) > 0), element-wise; monotone in v (h_t′ = s_t ≥ 0)."""
        shrunk = self._shrink_values(v)
        if self.l0_weight > 0:
            return -self._objective(shrunk, v) > self._step * self.l0_weight
        return shrunk > 0

    def exact_threshold(self, *, zooms: int = 8) -> float:
        """θ* = inf{v : h_t(v) > t·c₀}, where the exact prox jumps from 0 (float64).

        With c₀ ≤ 0 there is no L0 cost: θ* is where s_t first leaves 0 (the prox equals s_t there). A
        bracket found by doubling is refined ``zooms`` times on a grid of 129 points (the predicate is
        monotone in v), so the bracket shrinks by 128^zooms (8: to the float64 resolution).

        Args:
            zooms: refinements (3 gives about 1e-6 relative, at a third of the cost).

        Returns:
            θ* (−inf when s_t(v) > 0 for every v).

        Raises:
            ValueError: the prox stays at 0 for every v < 10¹² (a penalty that grows too fast).
        """
        def above(x: float) -> bool:
            return bool(self._above(torch.tensor([x], dtype=torch.float64)))

        lo, hi = 0.0, 1.0
        while above(lo):
            lo = 2 * lo - 1
            if lo < -1e12:
                return -math.inf
        while not above(hi):
            lo, hi = hi, 2 * hi
            if hi > 1e12:
                raise ValueError("the prox stays at 0 for every v < 1e12; the penalty grows too fast")
        grid = torch.linspace(0, 1, 129, dtype=torch.float64)
        for _ in range(zooms):
            pts = lo + (hi - lo) * grid
            pts[-1] = hi
            first = int(self._above(pts).to(torch.int8).argmax())  # the first True (pts[0] = lo is False)
            if first == 0:
                break
            lo, hi = float(pts[first - 1]), float(pts[first])
            if hi - lo <= 4 * math.ulp(max(abs(lo), abs(hi))):
                break
        return hi

    def reset_threshold(self) -> None:
        """Set every latent's θ to the exact jump θ* (the exact prox)."""
        with torch.no_grad():
            value = self.exact_threshold()
            self.threshold.fill_(value if math.isfinite(value) else -1e6)
        self._threshold_step = self._step

    # -- the encoder ------------------------------------------------------------------------------
    def forward(self, v: Tensor) -> Tensor:
        """a = s_t(v)·H(v − θ) (on the real line sign(v)·s_t(|v|)·H(|v| − θ)).

        Args:
            v: pre-activations ``(..., num_latents)``.

        Returns:
            The codes, shape, dtype and device of ``v``.
        """
        return self.encode(v)[0]

    def encode(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """The codes and their penalty ρ(a) = Σ_i [c₀ + g(s_t(v_i))]·H(v_i − θ_i), both trainable in θ.

        The penalty's θ-gradient is the pseudo-derivative −(c₀ + g(s(θ)))/ε·K((v − θ)/ε) (the kernel
        estimate of d/dθ E[ρ(a)], as for the codes); its v-gradient is g′(s)·s′(v) where the gate is open.

        Args:
            v: pre-activations ``(..., num_latents)``.

        Returns:
            (codes, penalty): codes of the shape of ``v``; the penalty summed over latents, shape ``(...)``.
        """
        if not self.learn_threshold and self._threshold_step != self._step:
            with torch.no_grad():
                value = self.exact_threshold(zooms=3)
                self.threshold.fill_(value if math.isfinite(value) else -1e6)
            self._threshold_step = self._step
        theta = self.threshold.to(v)
        u = v.abs() if self.support == "real" else v
        theta_pos = theta.detach().clamp_min(0) if self.support == "real" else theta.detach()
        s_theta = self.shrink(theta_pos)
        s = self.shrink(u)
        codes = jump_ste(s, u, theta, s_theta, self.bandwidth)
        if self.support == "real":
            codes = torch.sign(v) * codes
        on = s > 0
        slab = self._g(torch.where(on, s, torch.ones_like(s)))  # the double where: no NaN leaks into the gradient
        cost = torch.where(on, self.l0_weight + slab, torch.zeros_like(s))
        cost_theta = self.l0_weight + self._g(s_theta)
        penalty = jump_ste(cost, u, theta, cost_theta, self.bandwidth).sum(-1)
        return codes, penalty

    def extra_repr(self) -> str:
        """The step, the shrinkage's method, c₀ and the slab penalty g."""
        return (f"num_latents={self.threshold.numel()}, step={self._step}, method={self.method!r}, "
                f"l0_weight={self.l0_weight:.4g}, slab={self.slab}")


def _compile(expr: sp.Expr, symbols: tuple[sp.Symbol, ...]):
    """``expr`` as a torch function of ``symbols`` (tensors or floats, by position), compiled once.

    Add, Mul, Pow, exp, log (``log(1 + u)`` as log1p) and Abs become closures with their constants
    evaluated once (the library's :func:`torch_function` re-evaluates constants per call, 10× slower
    here); an expression with any other node is evaluated by :func:`torch_function` instead.

    Returns:
        ``fn(*xs)``: the first argument a tensor, the others tensors or floats.
    """
    index = {sym: k for k, sym in enumerate(symbols)}

    def build(e):
        if e in index:
            k = index[e]
            return lambda xs: xs[k]
        if e.is_number:
            value = complex(sp.N(e, 30))
            if value.imag:
                raise NotImplementedError
            c = float(value.real)
            return lambda xs: c
        if isinstance(e, sp.Add):
            parts = [build(a) for a in e.args]
            return lambda xs: sum(f(xs) for f in parts)
        if isinstance(e, sp.Mul):
            parts = [build(a) for a in e.args]

            def product(xs):
                out = parts[0](xs)
                for f in parts[1:]:
                    out = out * f(xs)
                return out
            return product
        if isinstance(e, sp.Pow):
            base, ex = build(e.base), e.exp
            if ex == 2:
                return lambda xs: base(xs) * base(xs)
            if ex == -1:
                return lambda xs: 1 / base(xs)
            if ex == sp.Rational(1, 2):
                return lambda xs: torch.sqrt(base(xs))
            if ex.is_number:
                c = float(ex)
                return lambda xs: base(xs) ** c
            power = build(ex)
            return lambda xs: base(xs) ** power(xs)
        if isinstance(e, (sp.log, sp.exp, sp.Abs)):
            arg = e.args[0]
            if isinstance(e, sp.log) and isinstance(arg, sp.Add) and 1 in arg.args:
                rest = build(arg - 1)
                return lambda xs: torch.log1p(rest(xs))
            inner, op = build(arg), {sp.log: torch.log, sp.exp: torch.exp, sp.Abs: torch.abs}[type(e)]
            return lambda xs: op(torch.as_tensor(inner(xs)))
        raise NotImplementedError

    try:
        compiled = build(expr)
    except (NotImplementedError, TypeError, ValueError):
        compiled = None

    def fn(*xs):
        first = xs[0]
        if compiled is None:
            return torch_function(expr, symbols[:1], dict(zip(symbols[1:], map(float, xs[1:]))), reduce=False)(first)
        out = compiled(xs)
        return out if isinstance(out, Tensor) else torch.full_like(first, out)
    return fn


def _check_symmetric(rho: sp.Expr, a: sp.Symbol) -> None:
    for x in (0.3, 1.1, 2.7):
        left, right = complex(sp.N(rho.subs(a, -x))), complex(sp.N(rho.subs(a, x)))
        if abs(left - right) > 1e-12 * max(1.0, abs(right)):
            raise ValueError(f"ρ = {rho} is not symmetric (ρ({-x}) ≠ ρ({x})); a prox encoder on the real line "
                             "needs ρ(−a) = ρ(a). Use a prior on a ≥ 0 or a symmetric one")


def _stationarity_polynomial(g: sp.Expr):
    """The numerator of x − v + t·g′(x) as cubic coefficients (c₃, c₂, c₁, c₀) in (v, t), or None."""
    num, _ = sp.fraction(sp.together(_X - _V + _T * sp.diff(g, _X)))
    try:
        poly = sp.Poly(sp.expand(num), _X)
    except sp.PolynomialError:
        return None
    if poly.degree() != 3 or any(c.has(_X) for c in poly.all_coeffs()):
        return None
    return tuple(sp.simplify(c) for c in poly.all_coeffs())


def _cubic_real_roots(c3: Tensor, c2: Tensor, c1: Tensor, c0: Tensor) -> list[Tensor]:
    """The real roots of c₃x³ + c₂x² + c₁x + c₀ (NaN where a root is not real), element-wise.

    Depressed cubic y³ + py + q = 0 with x = y − b/3: three real roots by the trigonometric formula
    when 4p³ + 27q² < 0, else one by Cardano's formula (each is then polished by a Newton step).

    Returns:
        Three tensors of candidate roots (the second and third NaN where only one root is real).
    """
    b, c, d = c2 / c3, c1 / c3, c0 / c3
    p = c - b * b / 3
    q = 2 * b ** 3 / 27 - b * c / 3 + d
    disc = 4 * p ** 3 + 27 * q * q
    three = disc < 0
    nan = torch.full_like(p, math.nan)
    # three real roots (p < 0 there)
    ps = torch.where(three, p, -torch.ones_like(p))
    r = 2 * torch.sqrt(-ps / 3)
    arg = torch.where(three, (3 * q / (2 * ps)) * torch.sqrt(-3 / ps), torch.zeros_like(p)).clamp(-1, 1)
    phi = torch.arccos(arg) / 3
    trig = [r * torch.cos(phi - 2 * math.pi * k / 3) - b / 3 for k in range(3)]
    # one real root
    root = torch.sqrt(torch.where(three, torch.zeros_like(disc), disc / 108))
    u1, u2 = -q / 2 + root, -q / 2 - root
    cardano = torch.sign(u1) * u1.abs() ** (1 / 3) + torch.sign(u2) * u2.abs() ** (1 / 3) - b / 3
    return [torch.where(three, trig[0], cardano), torch.where(three, trig[1], nan), torch.where(three, trig[2], nan)]
