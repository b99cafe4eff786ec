"""The SGLD kernel for the localized tempered posterior, as pure functions of tensors.

Target (Lau, Furman, Wang, Murfet, Wei 2023, arXiv 2308.12108, §4; docs/theory.md §1):

    p(w) ∝ exp(−U(w)),   U(w) = nβ·L_n(w) + (γ/2)·‖w − w*‖².

One SGLD step (Welling & Teh 2011, with the localization term of Lau et al.):

    w' = w − (ε/2)·(nβ·∇L_B(w) + γ·(w − w*)) + √ε·ξ,   ξ ~ N(0, I),

with L_B the loss on the current batch. With ξ = 0 this is exactly gradient descent with learning rate
ε/2 on the localized loss U. Only coordinates where ``mask`` is 1 move (weight-refined LLC, Wang et
al. 2024, arXiv 2410.02984); the others stay at w*.

The Metropolis-adjusted Langevin (MALA) acceptance probability of the same proposal (Roberts &
Tweedie 1996, Bernoulli 2(4)) measures how far the discretisation is from exact: with
q(w'|w) = N(w'; w − (ε/2)∇U(w), ε·I),

    α = min(1, exp(U(w) − U(w') + log q(w|w') − log q(w'|w))).

SGLD never rejects; α ≳ 0.9 says the step size resolves the posterior (docs/theory.md §1).

All functions act on a leading chain dimension: ``w`` of shape (C, d), scalars per chain (C,), and a
step size that is a float or a (C,) tensor (one step size per chain, used by the calibration).

Example (no noise: one gradient-descent step on U = nβ·½w² + (γ/2)w², from w = 1):
    >>> import torch
    >>> w = torch.ones(1, 1, dtype=torch.float64)
    >>> sgld_step(w, grad_loss=w, w_star=torch.zeros(1, dtype=torch.float64), step_size=0.1,
    ...           nbeta=2.0, localization=1.0, noise=torch.zeros_like(w)).item()
    0.85
"""
from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

__all__ = ["sgld_step", "localized_potential", "mala_acceptance"]

StepSize = Union[float, Tensor]


def _per_chain(step_size: StepSize, like: Tensor) -> Tensor:
    eps = torch.as_tensor(step_size, dtype=like.dtype, device=like.device)
    return eps.reshape(-1, *([1] * (like.dim() - 1))) if eps.dim() == 1 else eps


def localized_potential(loss: Tensor, w: Tensor, w_star: Tensor, nbeta: float, localization: float) -> Tensor:
    """U(w) = nβ·L(w) + (γ/2)·‖w − w*‖² per chain; ``loss`` (C,), ``w`` (C, d). Returns (C,)."""
    return nbeta * loss + 0.5 * localization * ((w - w_star) ** 2).sum(-1)


def sgld_step(
    w: Tensor,
    grad_loss: Tensor,
    *,
    w_star: Tensor,
    step_size: StepSize,
    nbeta: float,
    localization: float,
    noise: Tensor,
    mask: Tensor | None = None,
) -> Tensor:
    """w' = w − (ε/2)·(nβ·∇L(w) + γ·(w − w*)) + √ε·ξ on the coordinates where ``mask`` is 1.

    Args:
        w: current points, shape (C, d).
        grad_loss: ∇L_B(w), shape (C, d).
        w_star: the centre w*, shape (d,).
        step_size: ε > 0, a float or a (C,) tensor.
        nbeta: inverse temperature nβ.
        localization: γ.
        noise: ξ, standard normal draws of shape (C, d) (pass zeros for gradient descent).
        mask: optional (d,) 0/1 tensor of the sampled coordinates.

    Returns:
        the new points w', shape (C, d).
    """
    eps = _per_chain(step_size, w)
    # delta = −(ε/2)(nβ·g + γ·(w − w*)) + √ε·ξ, built in one buffer (in-place ops: this is the inner
    # loop, and at d ~ 10⁵ the passes over (C, d) memory cost as much as the model's gradient)
    delta = torch.sub(w, w_star)
    if localization != 1.0:
        delta.mul_(localization)
    delta.add_(grad_loss, alpha=nbeta)
    delta.mul_(-0.5 * eps)
    delta.addcmul_(noise, eps.sqrt())
    if mask is not None:
        delta.mul_(mask)
    return delta.add_(w)


def _log_q(to: Tensor, frm: Tensor, grad_u_frm: Tensor, eps: Tensor, mask: Tensor | None) -> Tensor:
    diff = to - frm + 0.5 * eps * grad_u_frm
    if mask is not None:
        diff = diff * mask
    return -(diff ** 2).sum(-1) / (2 * eps.reshape(-1) if eps.dim() else 2 * eps)


def mala_acceptance(
    w: Tensor,
    w_new: Tensor,
    u: Tensor,
    grad_u: Tensor,
    u_new: Tensor,
    grad_u_new: Tensor,
    step_size: StepSize,
    mask: Tensor | None = None,
) -> Tensor:
    """The Metropolis-adjusted acceptance probability α of the Langevin proposal w → w' per chain.

    Args:
        w: (C, d) current points.
        w_new: (C, d) proposed points.
        u: (C,) localized potential U at w.
        grad_u: (C, d) its gradient ∇U(w).
        u_new: (C,) U at w' (on the same batch as ``u``).
        grad_u_new: (C, d) ∇U(w').
        step_size: ε, float or (C,).
        mask: (d,) 0/1 sampled coordinates (the proposal lives on them).

    Returns:
        (C,) tensor of α = min(1, exp(U(w) − U(w') + log q(w|w') − log q(w'|w))); 0 where not finite.
    """
    eps = _per_chain(step_size, w)
    log_alpha = u - u_new + _log_q(w, w_new, grad_u_new, eps, mask) - _log_q(w_new, w, grad_u, eps, mask)
    alpha = torch.exp(torch.clamp(log_alpha, max=0.0))
    return torch.where(torch.isfinite(alpha), alpha, torch.zeros_like(alpha))
