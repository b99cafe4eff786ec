"""The two layers of a polynomial transformer: a bilinear MLP and linear (softmax-free) attention.

* Bilinear MLP (Sharkey 2023, arXiv 2305.03452; Pearce, Dooms, Rigg et al. 2024, arXiv 2410.08417):
  y = P·((W·x) ⊙ (V·x)), i.e. y_a = Σ_ij B_aij x_i x_j with B_aij = Σ_h P_ah W_hi V_hj.
* Linear attention, head h, without softmax (Katharopoulos et al. 2020, arXiv 2006.16236, with the
  identity feature map): z_t = n(t)·Σ_{s≤t} (x_tᵀ W_Qᵀ W_K x_s)·W_O W_V x_s, with a fixed normaliser
  n(t) = 1 or 1/(t+1). Cubic in the residual stream.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["BilinearMLP", "LinearAttention", "position_normaliser"]


def position_normaliser(n_ctx: int, kind: str, *, dtype=None, device=None) -> Tensor:
    """n(t) for t = 0..n_ctx-1: ones for "none", 1/(t+1) for "position". Shape (n_ctx,)."""
    t = torch.arange(n_ctx, dtype=dtype or torch.get_default_dtype(), device=device)
    if kind == "none":
        return torch.ones_like(t)
    if kind == "position":
        return 1.0 / (t + 1.0)
    raise ValueError(f"unknown normaliser {kind!r}; use 'none' or 'position'")


class BilinearMLP(nn.Module):
    """y = P·((W·x) ⊙ (V·x)); no bias, so the layer is a homogeneous quadratic form.

    Parameters: W, V of shape (d_mlp, d_model), P of shape (d_model, d_mlp).
    """

    def __init__(self, d_model: int, d_mlp: int, *, init_std: float = 1.0):
        super().__init__()
        s = init_std / math.sqrt(d_model)  # fan-in scaling
        self.W = nn.Parameter(torch.randn(d_mlp, d_model) * s)
        self.V = nn.Parameter(torch.randn(d_mlp, d_model) * s)
        self.P = nn.Parameter(torch.randn(d_model, d_mlp) / math.sqrt(d_mlp))

    def forward(self, x: Tensor) -> Tensor:
        # x: (..., d_model) -> (..., d_model)
        return ((x @ self.W.T) * (x @ self.V.T)) @ self.P.T


class LinearAttention(nn.Module):
    """H causal linear-attention heads with a fixed normaliser (no softmax).

    z_t^h = n(t)·Σ_{s≤t} (x_tᵀ W_Q^hᵀ W_K^h x_s)·W_O^h W_V^h x_s; the layer returns Σ_h z^h.
    Parameters: W_Q, W_K, W_V of shape (H, d_head, d_model), W_O of shape (H, d_model, d_head).
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int, n_ctx: int, *,
                 normaliser: str = "position", init_std: float = 1.0):
        super().__init__()
        s_qk = init_std / math.sqrt(d_model)  # fan-in scaling
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_head, d_model) * s_qk)
        self.W_K = nn.Parameter(torch.randn(n_heads, d_head, d_model) * s_qk)
        self.W_V = nn.Parameter(torch.randn(n_heads, d_head, d_model) / math.sqrt(d_model))
        self.W_O = nn.Parameter(torch.randn(n_heads, d_model, d_head) / math.sqrt(d_head))
        self.normaliser = normaliser
        self.n_ctx = n_ctx
        position_normaliser(1, normaliser)  # validates the kind

    def pattern(self, x_q: Tensor, x_k: Tensor) -> Tensor:
        """Attention scores n(t)·[s ≤ t]·x_tᵀ W_Qᵀ W_K x_s, shape (B, H, T, T) for x of shape (B, T, d)."""
        T = x_q.shape[-2]
        if T > self.n_ctx:
            raise ValueError(f"sequence length {T} exceeds n_ctx = {self.n_ctx}; use shorter sequences")
        q = torch.einsum("hkd,btd->bhtk", self.W_Q, x_q)  # (B, H, T, d_head)
        k = torch.einsum("hkd,btd->bhtk", self.W_K, x_k)  # (B, H, T, d_head)
        scores = q @ k.transpose(-1, -2)  # (B, H, T, T)
        n = position_normaliser(T, self.normaliser, dtype=x_q.dtype, device=x_q.device)
        mask = torch.tril(torch.ones(T, T, dtype=x_q.dtype, device=x_q.device)) * n[:, None]  # (T, T)
        return scores * mask

    def head_outputs(self, x: Tensor) -> Tensor:
        """Per-head outputs, shape (B, H, T, d_model) for x of shape (B, T, d_model)."""
        pattern = self.pattern(x, x)  # (B, H, T, T)
        v = torch.einsum("hkd,btd->bhtk", self.W_V, x)  # (B, H, T, d_head)
        z = pattern @ v  # (B, H, T, d_head)
        return torch.einsum("hdk,bhtk->bhtd", self.W_O, z)  # (B, H, T, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.head_outputs(x).sum(dim=1)  # (B, T, d_model)
