"""Non-factorised sparsity penalties with competition between latents, as fast torch functions (docs/theory.md §4).

Both penalties have ∂²ρ/∂a_i∂a_j > 0 on the positive orthant (competition: an active latent makes the
others dearer), the dependent priors of :func:`~slt_interp.theory.priors.prior_from_penalty`:

* the product Π_i (1 + |a_i|) over a group (the catalogue's ``product_penalty``, whose sympy form takes
  minutes to build beyond a dozen latents; here it is exp(Σ log(1 + |a_i|)), any width);
* the exclusive-group penalty Σ_i |a_i| + c·Σ_{i<j} S_ij |a_i||a_j| with S = P Pᵀ for an assignment
  P (m × G) of latents to G groups (rows on the probability simplex). A hard, contiguous assignment is
  the derived penalty of the prior ∝ exp(−Σa − c·Σ_{i<j in a group} a_i a_j), which is zero-cost
  beyond L1 exactly when at most one latent per group is active (exclusive lasso's pattern; Zhou, Jin &
  Hoi 2010). A soft P = softmax(logits) lets the grouping be learned with the rest of the SAE:
  S_ij is the probability that i and j share a group.

Example:
    >>> a = torch.tensor([[1.0, 0.0, 2.0, 0.0]])
    >>> hard = torch.eye(2).repeat_interleave(2, dim=0)       # latents {0, 1}, {2, 3}
    >>> exclusive_group_penalty(a, hard, coupling=10.0)       # one active per group: L1 only
    tensor([3.])
    >>> product_code_penalty(a)
    tensor([6.])
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["product_code_penalty", "exclusive_group_penalty", "contiguous_groups"]


def _check_codes(codes) -> None:
    if not isinstance(codes, Tensor) or codes.ndim < 1 or not codes.is_floating_point():
        shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
        raise ValueError(f"codes must be a floating tensor of shape (..., n_latents), got {shape}")


def product_code_penalty(codes: Tensor, group_size: int | None = None) -> Tensor:
    """ρ(a) = Σ_groups Π_{i ∈ group} (1 + |a_i|), computed as exp(Σ log1p|a_i|) per group.

    Args:
        codes: a, shape (..., m).
        group_size: latents per group (m a multiple of it); None: one group of all m latents.

    Returns:
        ρ, shape (...), dtype and device of ``codes``.

    Raises:
        ValueError: codes not floating; m not a multiple of ``group_size``.

    Example:
        >>> product_code_penalty(torch.tensor([1.0, -1.0, 0.5, 0.0]), group_size=2)
        tensor(5.5000)
    """
    _check_codes(codes)
    m = codes.shape[-1]
    g = m if group_size is None else group_size
    if not (isinstance(g, int) and g >= 1 and m % g == 0):
        raise ValueError(f"group_size must be a positive divisor of n_latents = {m}, got {group_size!r}")
    logs = torch.log1p(codes.abs()).reshape(*codes.shape[:-1], m // g, g).sum(-1)
    return logs.exp().sum(-1)


def contiguous_groups(n_latents: int, group_size: int, *, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> Tensor:
    """The hard assignment of latents {0..g−1}, {g..2g−1}, … to groups, shape (m, m/g), one-hot rows.

    Args:
        n_latents: m.
        group_size: g, a divisor of m.
        dtype: of the result.
        device: of the result.

    Returns:
        P with P[i, i // g] = 1.

    Raises:
        ValueError: g not a positive divisor of m.
    """
    if not (isinstance(group_size, int) and group_size >= 1 and isinstance(n_latents, int) and n_latents % group_size == 0):
        raise ValueError(f"group_size must be a positive divisor of n_latents = {n_latents}, got {group_size!r}")
    return torch.eye(n_latents // group_size, dtype=dtype, device=device).repeat_interleave(group_size, dim=0)


def exclusive_group_penalty(codes: Tensor, assignment: Tensor, *, coupling: float = 10.0) -> Tensor:
    """ρ(a) = Σ_i |a_i| + c·Σ_{i<j} S_ij |a_i||a_j|, S = P Pᵀ: L1 plus a cost for co-active group mates.

    Computed as Σ|a| + (c/2)·(‖Pᵀ|a|‖² − Σ_i ‖P_i‖² a_i²) in O(m·G) per sample. Differentiable in the
    codes and in P (a soft P = softmax(logits, −1) learns the grouping).

    Args:
        codes: a, shape (..., m).
        assignment: P, shape (m, G), non-negative rows summing to 1 (hard one-hot or soft).
        coupling: c ≥ 0.

    Returns:
        ρ, shape (...), dtype and device of ``codes``.

    Raises:
        ValueError: codes not floating; P not (m, G); negative entries or rows not summing to 1
            (normalise with ``softmax`` or divide by the row sums); c negative or not finite.

    Example:
        >>> exclusive_group_penalty(torch.tensor([1.0, 1.0]), torch.ones(2, 1), coupling=2.0)
        tensor(4.)
    """
    _check_codes(codes)
    m = codes.shape[-1]
    if not isinstance(assignment, Tensor) or assignment.ndim != 2 or assignment.shape[0] != m:
        shape = tuple(assignment.shape) if isinstance(assignment, Tensor) else type(assignment).__name__
        raise ValueError(f"assignment must have shape (n_latents = {m}, n_groups), got {shape}")
    if not (isinstance(coupling, (int, float)) and math.isfinite(coupling) and coupling >= 0):
        raise ValueError(f"coupling must be a finite number ≥ 0, got {coupling!r}")
    with torch.no_grad():
        tol = 1e-6 if assignment.dtype == torch.float64 else 1e-4
        if bool((assignment < 0).any()) or not torch.allclose(assignment.sum(-1), torch.ones_like(assignment[:, 0]), atol=tol):
            raise ValueError("assignment rows must be non-negative and sum to 1 (a probability over groups per "
                             "latent); pass softmax(logits, dim=-1) or divide by the row sums")
    P = assignment.to(dtype=codes.dtype, device=codes.device)
    a = codes.abs()
    per_group = a @ P  # (..., G)
    diag = (P * P).sum(-1)  # ‖P_i‖², (m,)
    pairs = 0.5 * (per_group.pow(2).sum(-1) - (a.pow(2) * diag).sum(-1))
    return a.sum(-1) + coupling * pairs
