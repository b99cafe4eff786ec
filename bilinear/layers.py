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

__all__ = ["BilinearMLP", "LinearAttention", "position_normaliser", "causal_weights", "weight_generator"]


def position_normaliser(n_ctx: int, kind: str, *, dtype=None, device=None) -> Tensor:
    """The fixed attention normaliser n(t) for t = 0..n_ctx-1.

    Args:
        n_ctx: number of positions.
        kind: "none" (n(t) = 1) or "position" (n(t) = 1/(t+1)).
        dtype: dtype of the result (default: torch's default dtype).
        device: device of the result.

    Returns:
        n(t), shape (n_ctx,).

    Raises:
        ValueError: an unknown ``kind``.
    """
    t = torch.arange(n_ctx, dtype=dtype or torch.get_default_dtype(), device=device)
    if kind == "none":
        return torch.ones_like(t)
    if kind == "position":
        return 1.0 / (t + 1.0)
    raise ValueError(f"unknown normaliser {kind!r}; use 'none' or 'position'")


def causal_weights(n_ctx: int, kind: str, *, dtype=None, device=None) -> Tensor:
    """The weights n(t)·[s ≤ t] that multiply the attention score of query t and key s.

    Args:
        n_ctx: number of positions T.
        kind: the normaliser, "none" or "position" (see :func:`position_normaliser`).
        dtype: dtype of the result.
        device: device of the result.

    Returns:
        A (T, T) lower-triangular matrix with row t equal to n(t) on columns s ≤ t.

    Raises:
        ValueError: an unknown ``kind``.
    """
    n = position_normaliser(n_ctx, kind, dtype=dtype, device=device)
    return torch.tril(torch.ones(n_ctx, n_ctx, dtype=n.dtype, device=device)) * n[:, None]  # (T, T)


def weight_generator(seed: int = 0, generator: torch.Generator | None = None) -> torch.Generator:
    """The generator that initial weights are drawn from: ``generator`` if given, else one seeded with ``seed``.

    The global RNG is never used, so two models built with the same seed have identical weights.

    Args:
        seed: integer seed, used when ``generator`` is None.
        generator: an explicit CPU :class:`torch.Generator` (its state advances).

    Returns:
        A CPU :class:`torch.Generator`.

    Raises:
        TypeError: ``seed`` is not an int, or ``generator`` is not a torch.Generator.
        ValueError: ``generator`` is not a CPU generator (initial weights are drawn on the CPU; move the
            model with ``.to(device)`` afterwards).
    """
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator (weights are drawn on the CPU, then moved "
                             f"with .to(device)), got one on {generator.device}")
        return generator
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}; or pass generator=torch.Generator().manual_seed(...)")
    return torch.Generator().manual_seed(seed)


class BilinearMLP(nn.Module):
    """y = P·((W·x) ⊙ (V·x)); no bias, so the layer is a homogeneous quadratic form.

    Parameters: W, V of shape (d_mlp, d_model), P of shape (d_model, d_mlp). Sharkey 2023 (arXiv
    2305.03452).

    Args:
        d_model: residual stream width.
        d_mlp: hidden width.
        init_std: scale of the fan-in initialisation of W and V.
        seed: seeds the initial weights (when ``generator`` is None).
        generator: CPU generator the initial weights are drawn from (see :func:`weight_generator`).

    Raises:
        TypeError: a bad ``seed`` or ``generator``.
    """

    def __init__(self, d_model: int, d_mlp: int, *, init_std: float = 1.0, seed: int = 0,
                 generator: torch.Generator | None = None):
        """Draw the initial weights (see the class docstring)."""
        super().__init__()
        g = weight_generator(seed, generator)
        s = init_std / math.sqrt(d_model)  # fan-in scaling
        self.W = nn.Parameter(torch.randn(d_mlp, d_model, generator=g) * s)
        self.V = nn.Parameter(torch.randn(d_mlp, d_model, generator=g) * s)
        self.P = nn.Parameter(torch.randn(d_model, d_mlp, generator=g) / math.sqrt(d_mlp))

    def forward(self, x: Tensor) -> Tensor:
        """Compute y = P·((W·x) ⊙ (V·x)).

        Args:
            x: residual stream, shape (..., d_model).

        Returns:
            The layer output, shape (..., d_model).
        """
        return ((x @ self.W.T) * (x @ self.V.T)) @ self.P.T


class LinearAttention(nn.Module):
    """H causal linear-attention heads with a fixed normaliser (no softmax).

    z_t^h = n(t)·Σ_{s≤t} (x_tᵀ W_Q^hᵀ W_K^h x_s)·W_O^h W_V^h x_s; the layer returns Σ_h z^h
    (Katharopoulos et al. 2020, arXiv 2006.16236, identity feature map).
    Parameters: W_Q, W_K, W_V of shape (H, d_head, d_model), W_O of shape (H, d_model, d_head).

    Args:
        d_model: residual stream width.
        n_heads: number of heads H.
        d_head: query/key/value width per head.
        n_ctx: maximum sequence length.
        normaliser: "none" (n(t) = 1) or "position" (n(t) = 1/(t+1)).
        init_std: scale of the fan-in initialisation of W_Q and W_K.
        seed: seeds the initial weights (when ``generator`` is None).
        generator: CPU generator the initial weights are drawn from (see :func:`weight_generator`).

    Raises:
        ValueError: an unknown ``normaliser``.
        TypeError: a bad ``seed`` or ``generator``.
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int, n_ctx: int, *,
                 normaliser: str = "position", init_std: float = 1.0, seed: int = 0,
                 generator: torch.Generator | None = None):
        """Draw the initial weights (see the class docstring)."""
        super().__init__()
        position_normaliser(1, normaliser)  # validates the kind
        g = weight_generator(seed, generator)
        s_qk = init_std / math.sqrt(d_model)  # fan-in scaling
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_head, d_model, generator=g) * s_qk)
        self.W_K = nn.Parameter(torch.randn(n_heads, d_head, d_model, generator=g) * s_qk)
        self.W_V = nn.Parameter(torch.randn(n_heads, d_head, d_model, generator=g) / math.sqrt(d_model))
        self.W_O = nn.Parameter(torch.randn(n_heads, d_model, d_head, generator=g) / math.sqrt(d_head))
        self.normaliser = normaliser
        self.n_ctx = n_ctx

    def pattern(self, x_q: Tensor, x_k: Tensor) -> Tensor:
        """Attention scores n(t)·[s ≤ t]·x_tᵀ W_Qᵀ W_K x_s.

        Args:
            x_q: query-side residual stream, shape (B, T, d_model).
            x_k: key-side residual stream, shape (B, T, d_model).

        Returns:
            Scores of shape (B, H, T, T).

        Raises:
            ValueError: T exceeds n_ctx.
        """
        T = x_q.shape[-2]
        if T > self.n_ctx:
            raise ValueError(f"sequence length {T} exceeds n_ctx = {self.n_ctx}; use shorter sequences")
        q = torch.einsum("hkd,btd->bhtk", self.W_Q, x_q)  # (B, H, T, d_head)
        k = torch.einsum("hkd,btd->bhtk", self.W_K, x_k)  # (B, H, T, d_head)
        scores = q @ k.transpose(-1, -2)  # (B, H, T, T)
        return scores * causal_weights(T, self.normaliser, dtype=x_q.dtype, device=x_q.device)

    def head_outputs(self, x: Tensor) -> Tensor:
        """Per-head outputs z^h.

        Args:
            x: residual stream, shape (B, T, d_model).

        Returns:
            Shape (B, H, T, d_model).
        """
        pattern = self.pattern(x, x)  # (B, H, T, T)
        v = torch.einsum("hkd,btd->bhtk", self.W_V, x)  # (B, H, T, d_head)
        z = pattern @ v  # (B, H, T, d_head)
        return torch.einsum("hdk,bhtk->bhtd", self.W_O, z)  # (B, H, T, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """Sum the heads: Σ_h z^h.

        Args:
            x: residual stream, shape (B, T, d_model).

        Returns:
            The layer output, shape (B, T, d_model).
        """
        return self.head_outputs(x).sum(dim=1)  # (B, T, d_model)
