"""Attribution sparsity: penalise what a latent does downstream, not how large it is (docs/theory.md §4).

For codes f ∈ ℝ^m of one sample and a downstream output y(f) ∈ ℝ^k (e.g. the rest of the network
after the SAE decoder), the attribution of latent i along an output direction u ∈ ℝ^k is

    A_i(u) = f_i · ⟨u, ∂y/∂f_i⟩ = f_i · (uᵀ J)_i,   J = ∂y/∂f  (k × m),

the first-order change of ⟨u, y⟩ when latent i is switched off (gradient × input; Shrikumar et al. 2016,
arXiv 1605.01713). End-to-end SAEs train the dictionary on the downstream output (Braun et al. 2024,
arXiv 2405.12241); penalising attributions instead of activations asks for sparsity in what latents do
downstream.
The penalty averages |A_i|^p over output directions with E[u uᵀ] = I:

    ρ_p(f) = Σ_i E_u |f_i (uᵀ J)_i|^p,

and the estimator draws **one** direction per batch (one vector–Jacobian product, shared by all
samples): ρ̂_p(f) = Σ_i |f_i (uᵀ J)_i|^p, unbiased for ρ_p. Exact values (:func:`exact_attribution_penalty`):

* Gaussian u ~ N(0, I): (uᵀJ)_i ~ N(0, ‖J_{:,i}‖²), so ρ_p = c_p Σ_i |f_i|^p ‖J_{:,i}‖^p with
  c_p = E|z|^p = 2^{p/2} Γ((p + 1)/2)/√π (c_1 = √(2/π), c_2 = 1);
* Rademacher u ∈ {±1}^k: the average over the 2^k sign vectors (k ≤ 16).

For p = 2 both equal Σ_i f_i² ‖J_{:,i}‖². For p ≤ 1 the penalty is sparsity-inducing in the attributions;
|x|^p with p < 1 gets the subgradient 0 at x = 0 (never NaN).

Example:
    >>> W = torch.randn(3, 5, dtype=torch.float64)
    >>> f = torch.rand(4, 5, dtype=torch.float64)
    >>> exact = exact_attribution_penalty(f, lambda c: c @ W.T, p=2.0)
    >>> torch.allclose(exact, (f**2 * (W**2).sum(0)).sum(-1))
    True
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import torch
from torch import Tensor

__all__ = ["attribution", "attribution_penalty", "exact_attribution_penalty"]

DIRECTIONS = ("rademacher", "gaussian")
_MAX_RADEMACHER_K = 16


def _check_p(p: float) -> float:
    if not (isinstance(p, (int, float)) and math.isfinite(p) and p > 0):
        raise ValueError(f"the exponent p must be a finite number > 0 (p ≤ 1 for sparsity), got {p!r}")
    return float(p)


def _check_codes(codes) -> None:
    if not isinstance(codes, Tensor) or codes.ndim != 2 or not codes.is_floating_point():
        shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
        raise ValueError(f"codes must be a floating tensor of shape (batch, n_latents), got {shape}; "
                         "reshape a single sample with codes[None]")


def _abs_pow(x: Tensor, p: float) -> Tensor:
    """|x|^p with the subgradient 0 at x = 0 when p < 1 (the slope is infinite there)."""
    if p >= 1:
        return x.abs() ** p
    zero = x == 0
    safe = torch.where(zero, torch.ones_like(x), x.abs())
    return torch.where(zero, torch.zeros_like(x), safe**p)


def _outputs(codes: Tensor, output_fn: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """(codes that autograd can differentiate against, y = output_fn(codes) of shape (batch, k))."""
    with torch.enable_grad():  # the Jacobian is needed even when the caller evaluates under no_grad
        if not codes.requires_grad:
            codes = codes.detach().requires_grad_(True)
        y = output_fn(codes)
    if not isinstance(y, Tensor) or y.ndim != 2 or y.shape[0] != codes.shape[0]:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"output_fn must map codes (batch, m) to outputs (batch, k) sample by sample, got {shape}; "
                         "flatten the output of each sample to one axis")
    if not y.requires_grad:
        raise ValueError("output_fn(codes) does not depend on codes (no autograd graph): compute the downstream "
                         "output from the codes with torch operations, not under torch.no_grad() or via .detach()")
    return codes, y


def _vjp(y: Tensor, u: Tensor, leaf: Tensor, create_graph: bool, retain_graph: bool) -> Tensor:
    with torch.enable_grad():
        (grad,) = torch.autograd.grad((y * u).sum(), leaf, create_graph=create_graph, retain_graph=retain_graph,
                                      allow_unused=True)
    if grad is None:
        raise ValueError("output_fn(codes) does not depend on codes (the autograd graph never uses them): compute "
                         "the downstream output from the codes passed in")
    return grad


def attribution(codes: Tensor, output_fn: Callable[[Tensor], Tensor], direction: Tensor) -> Tensor:
    """The attributions A_i(u) = f_i · ⟨u, ∂y/∂f_i⟩ of every latent along one output direction.

    One vector–Jacobian product for the whole batch: ``output_fn`` must act sample by sample (row b of
    the output depends only on row b of the codes), as a network without batch statistics does. The
    graph is kept (``create_graph``) when gradients are enabled, so a penalty on the result trains the
    encoder, the decoder and anything inside ``output_fn``.

    Args:
        codes: f, shape (batch, m).
        output_fn: f ↦ y, (batch, m) → (batch, k).
        direction: u, shape (k,) (shared by the batch) or (batch, k).

    Returns:
        A, shape (batch, m), dtype and device of ``codes``.

    Raises:
        ValueError: codes not (batch, m) floating; an output that is not (batch, k) or does not depend on
            the codes; a direction whose shape is neither (k,) nor (batch, k).

    Example:
        >>> W = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
        >>> attribution(torch.tensor([[3.0, 1.0]]), lambda c: c @ W.T, torch.tensor([1.0, 0.0])).tolist()
        [[3.0, 2.0]]
    """
    _check_codes(codes)
    leaf, y = _outputs(codes, output_fn)
    if not isinstance(direction, Tensor) or direction.shape not in ((y.shape[1],), tuple(y.shape)):
        shape = tuple(direction.shape) if isinstance(direction, Tensor) else type(direction).__name__
        raise ValueError(f"direction must have shape ({y.shape[1]},) or {tuple(y.shape)} (the output's), got {shape}")
    u = direction.to(dtype=y.dtype, device=y.device)
    keep = torch.is_grad_enabled()
    grad = _vjp(y, u, leaf, keep, keep)
    return leaf * grad if keep else (leaf * grad).detach()


def _random_direction(k: int, kind: str, like: Tensor, generator: torch.Generator) -> Tensor:
    device = generator.device
    if kind == "rademacher":
        u = torch.randint(0, 2, (k,), generator=generator, device=device).to(like.dtype) * 2 - 1
    else:
        u = torch.randn(k, generator=generator, device=device, dtype=like.dtype)
    return u.to(like.device)


def attribution_penalty(codes: Tensor, output_fn: Callable[[Tensor], Tensor], *, p: float = 1.0,
                        generator: torch.Generator, directions: str = "rademacher",
                        num_directions: int = 1) -> Tensor:
    """The stochastic attribution penalty ρ̂_p(f) = (1/K) Σ_k Σ_i |f_i (u_kᵀ J)_i|^p, one u_k per batch.

    Unbiased for ρ_p(f) = Σ_i E_u |f_i (uᵀ J)_i|^p (the module docstring) with u_k i.i.d. Rademacher or
    N(0, I) directions (E[u uᵀ] = I), each shared by the whole batch: K vector–Jacobian products.
    Differentiable (double backward) when gradients are enabled.

    Args:
        codes: f, shape (batch, m).
        output_fn: f ↦ y, (batch, m) → (batch, k), sample by sample.
        p: the exponent (> 0; 1 gives L1 of attributions, < 1 a sparser target).
        directions: ``"rademacher"`` or ``"gaussian"``.
        num_directions: K ≥ 1.
        generator: the source of the directions (drawn on its device, then moved to the codes').

    Returns:
        ρ̂_p per sample, shape (batch,).

    Raises:
        ValueError: bad ``p``, ``directions``, ``num_directions`` or ``generator``; bad codes or outputs (see
            :func:`attribution`).

    Example:
        >>> W = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
        >>> g = torch.Generator().manual_seed(0)
        >>> attribution_penalty(torch.tensor([[1.0, 1.0]]), lambda c: c @ W.T, p=1.0, generator=g).shape
        torch.Size([1])
    """
    p = _check_p(p)
    if directions not in DIRECTIONS:
        raise ValueError(f"directions must be one of {DIRECTIONS}, got {directions!r}")
    if not (isinstance(num_directions, int) and num_directions >= 1):
        raise ValueError(f"num_directions must be an int ≥ 1, got {num_directions!r}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), got {generator!r}")
    _check_codes(codes)
    leaf, y = _outputs(codes, output_fn)
    keep = torch.is_grad_enabled()
    total = torch.zeros(codes.shape[0], dtype=codes.dtype, device=codes.device)
    for k in range(num_directions):
        u = _random_direction(y.shape[1], directions, y, generator)
        grad = _vjp(y, u, leaf, keep, keep or k + 1 < num_directions)
        total = total + _abs_pow(leaf * grad, p).sum(-1)
    total = total / num_directions
    return total if keep else total.detach()


def _jacobian(leaf: Tensor, y: Tensor) -> Tensor:
    """J[b, j, i] = ∂y_{b j}/∂f_{b i} by k vector–Jacobian products (sample by sample outputs)."""
    rows, keep = [], torch.is_grad_enabled()
    basis = torch.eye(y.shape[1], dtype=y.dtype, device=y.device)
    for j in range(y.shape[1]):
        g = _vjp(y, basis[j], leaf, keep, True)
        rows.append(g if keep else g.detach())
    return torch.stack(rows, dim=1)  # (batch, k, m)


def exact_attribution_penalty(codes: Tensor, output_fn: Callable[[Tensor], Tensor], *, p: float = 1.0,
                              directions: str = "gaussian") -> Tensor:
    """The exact ρ_p(f) = Σ_i E_u |f_i (uᵀ J)_i|^p from the full Jacobian J = ∂y/∂f (k products).

    Gaussian u: c_p Σ_i |f_i|^p ‖J_{:,i}‖^p with c_p = 2^{p/2} Γ((p + 1)/2)/√π. Rademacher u: the mean
    over all 2^k sign vectors (k ≤ 16). The mean of :func:`attribution_penalty` with the same
    ``directions``. Differentiable when gradients are enabled.

    Args:
        codes: f, shape (batch, m).
        output_fn: f ↦ y, (batch, m) → (batch, k), sample by sample.
        p: the exponent (> 0).
        directions: ``"gaussian"`` or ``"rademacher"``.

    Returns:
        ρ_p per sample, shape (batch,).

    Raises:
        ValueError: bad ``p`` or ``directions``; Rademacher with k > 16 outputs (2^k terms: use
            ``"gaussian"`` or the stochastic estimator); bad codes or outputs.

    Example:
        >>> W = torch.tensor([[3.0], [4.0]], dtype=torch.float64)  # y = W f, ‖J‖ = 5
        >>> f = torch.tensor([[2.0]], dtype=torch.float64)
        >>> round(float(exact_attribution_penalty(f, lambda c: c @ W.T, p=2.0).detach()), 9)
        100.0
    """
    p = _check_p(p)
    if directions not in DIRECTIONS:
        raise ValueError(f"directions must be one of {DIRECTIONS}, got {directions!r}")
    _check_codes(codes)
    leaf, y = _outputs(codes, output_fn)
    k = y.shape[1]
    if directions == "rademacher" and k > _MAX_RADEMACHER_K:
        raise ValueError(f"the exact Rademacher average has 2^k = 2^{k} terms (k = {k} outputs > {_MAX_RADEMACHER_K}); "
                         "use directions='gaussian' (closed form) or the stochastic attribution_penalty")
    J = _jacobian(leaf, y)  # (batch, k, m)
    if not torch.is_grad_enabled():
        leaf = leaf.detach()
    if directions == "gaussian":
        c_p = 2 ** (p / 2) * math.gamma((p + 1) / 2) / math.sqrt(math.pi)
        col = J.pow(2).sum(1).sqrt()  # ‖J_{:,i}‖, (batch, m)
        return c_p * (_abs_pow(leaf, p) * _abs_pow(col, p)).sum(-1)
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=k)), dtype=J.dtype, device=J.device)  # (2^k, k)
    proj = torch.einsum("sk,bkm->bsm", signs, J)  # (batch, 2^k, m)
    return _abs_pow(leaf.unsqueeze(1) * proj, p).sum(-1).mean(-1)
