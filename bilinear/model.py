"""A transformer that is a polynomial in its input embeddings: linear attention + bilinear MLPs.

residual r⁰_t = E[x_t] (+ P[t]); for each block l: r ← r + Σ_h Attn_{l,h}(r); r ← r + MLP_l(r);
logits_t = W_U r_t. No softmax and no normalisation layer anywhere, so every logit is a polynomial in
the embeddings (docs/theory.md §5) and :func:`slt_interp.bilinear.expand` can write it as a sum of named terms.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from .config import BilinearConfig
from .layers import BilinearMLP, LinearAttention, weight_generator

__all__ = ["BilinearTransformer", "Block", "save_model", "load_model"]


class Block(nn.Module):
    """Linear attention then (when d_mlp > 0) a bilinear MLP, each with a residual connection.

    Args:
        config: the model's :class:`BilinearConfig`.
        seed: seeds the initial weights (when ``generator`` is None).
        generator: CPU generator the initial weights are drawn from.
    """

    def __init__(self, config: BilinearConfig, *, seed: int = 0, generator: torch.Generator | None = None):
        """Build the layers and draw their initial weights (see the class docstring)."""
        super().__init__()
        c = config
        g = weight_generator(seed, generator)
        self.attn = LinearAttention(c.d_model, c.n_heads, c.d_head, c.n_ctx,
                                    normaliser=c.normaliser, init_std=c.init_std, generator=g)
        self.mlp = BilinearMLP(c.d_model, c.d_mlp, init_std=c.init_std, generator=g) if c.d_mlp > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        """Apply x ← x + Attn(x), then (with an MLP) x ← x + MLP(x).

        Args:
            x: residual stream, shape (B, T, d_model).

        Returns:
            The residual stream after the block, shape (B, T, d_model).
        """
        x = x + self.attn(x)
        if self.mlp is not None:
            x = x + self.mlp(x)
        return x


class BilinearTransformer(nn.Module):
    """Token (and positional) embedding, L blocks, unembedding; see the module docstring.

    The initial weights are drawn from an explicit generator (``seed``, default 0, or ``generator``),
    never from the global RNG: two models built with the same seed are identical.

    Args:
        config: a :class:`BilinearConfig`.
        seed: seeds the initial weights (when ``generator`` is None).
        generator: a CPU :class:`torch.Generator` to draw the initial weights from instead.

    Raises:
        TypeError: ``config`` is not a BilinearConfig, or a bad ``seed`` / ``generator``.

    Example:
        >>> model = BilinearTransformer(BilinearConfig(vocab_size=5, n_ctx=4, d_model=8), seed=0)
        >>> model(torch.tensor([[0, 1, 2]])).shape
        torch.Size([1, 3, 5])
    """

    def __init__(self, config: BilinearConfig, *, seed: int = 0, generator: torch.Generator | None = None):
        """Build the layers and draw the initial weights (see the class docstring)."""
        super().__init__()
        if not isinstance(config, BilinearConfig):
            raise TypeError(f"config must be a BilinearConfig, got {type(config).__name__}")
        g = weight_generator(seed, generator)
        c = self.config = config
        scale = c.init_std / math.sqrt(c.d_model)  # ‖embedding‖ ≈ init_std
        self.W_E = nn.Parameter(torch.randn(c.vocab_size, c.d_model, generator=g) * scale)
        self.W_pos = nn.Parameter(torch.randn(c.n_ctx, c.d_model, generator=g) * 0.5 * scale) if c.positional else None
        self.blocks = nn.ModuleList(Block(c, generator=g) for _ in range(c.n_layers))
        # logits ≈ ‖r‖ at initialisation
        self.W_U = nn.Parameter(torch.randn(c.vocab_size, c.d_model, generator=g))

    def as_tokens(self, tokens) -> Tensor:
        """Validate token ids, converting a nested list (or a NumPy array) of ints to a tensor.

        Every entry point (forward, the expansions, ``prune``) goes through this check.

        Args:
            tokens: integer tensor of shape (batch, seq) with seq ≤ n_ctx, or a nested list of ints
                (made a tensor on the model's device).

        Returns:
            The tokens as an integer tensor of shape (batch, seq).

        Raises:
            TypeError: not integers (e.g. floats), or not convertible to a tensor.
            ValueError: not 2-d, longer than n_ctx, or ids outside [0, vocab_size).
        """
        if not isinstance(tokens, Tensor):
            try:
                tokens = torch.as_tensor(tokens, device=self.W_E.device)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise TypeError(f"tokens must be an integer tensor of shape (batch, seq) or a nested list of ints, "
                                f"got a {type(tokens).__name__} that does not convert ({exc}); e.g. "
                                "torch.tensor([[0, 1, 2]])") from exc
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"tokens must be an integer tensor of shape (batch, seq), got dtype {tokens.dtype}; "
                            "convert with tokens.long()")
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (batch, seq), got {tuple(tokens.shape)}; a single sequence "
                             "is tokens[None]")
        if tokens.shape[1] > self.config.n_ctx:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds n_ctx = {self.config.n_ctx}; use shorter "
                             "sequences")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.vocab_size):
            raise ValueError(f"tokens must lie in [0, {self.config.vocab_size}), got range "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        return tokens

    def embed(self, tokens: Tensor) -> Tensor:
        """r⁰ = E[tokens] (+ P[:T]).

        Args:
            tokens: integer tensor (B, T) or nested list of ints (see :meth:`as_tokens`).

        Returns:
            The embedding, shape (B, T, d_model).

        Raises:
            TypeError, ValueError: invalid tokens (see :meth:`as_tokens`).
        """
        tokens = self.as_tokens(tokens)
        x = self.W_E[tokens]  # (B, T, d_model)
        if self.W_pos is not None:
            x = x + self.W_pos[: tokens.shape[1]]
        return x

    def residual(self, tokens: Tensor) -> Tensor:
        """The final residual stream r^L.

        Args:
            tokens: integer tensor (B, T) or nested list of ints (see :meth:`as_tokens`).

        Returns:
            Shape (B, T, d_model).
        """
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, tokens: Tensor) -> Tensor:
        """Compute the logits W_U r^L.

        Args:
            tokens: integer tensor (B, T) or nested list of ints (see :meth:`as_tokens`).

        Returns:
            Shape (B, T, vocab_size).
        """
        return self.residual(tokens) @ self.W_U.T

    def component_outputs(self, tokens: Tensor) -> dict[str, Tensor]:
        """What each component writes into the residual stream, in forward order.

        Names: "emb" (embedding, positional included), "L{l}.H{h}" (head h of layer l), "L{l}.mlp".
        The final residual stream is the sum of all of them.

        Args:
            tokens: integer tensor (B, T) or nested list of ints (see :meth:`as_tokens`).

        Returns:
            ``{name: output}``, each of shape (B, T, d_model).
        """
        x = self.embed(tokens)
        out = {"emb": x}
        for l, block in enumerate(self.blocks):
            heads = block.attn.head_outputs(x)  # (B, H, T, d_model)
            for h in range(heads.shape[1]):
                out[f"L{l}.H{h}"] = heads[:, h]
            x = x + heads.sum(dim=1)
            if block.mlp is not None:
                y = block.mlp(x)
                out[f"L{l}.mlp"] = y
                x = x + y
        return out


def save_model(model: BilinearTransformer, path: str | Path) -> None:
    """Save the config and weights to ``path`` (a torch file loadable with ``weights_only=True``).

    Args:
        model: the model to save.
        path: file to write.

    Raises:
        TypeError: ``model`` is not a BilinearTransformer.
    """
    if not isinstance(model, BilinearTransformer):
        raise TypeError(f"save_model expects a BilinearTransformer, got {type(model).__name__}")
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, Path(path))


def load_model(path: str | Path, *, map_location=None) -> BilinearTransformer:
    """Load a model written by :func:`save_model` (same dtype as saved).

    Args:
        path: file written by :func:`save_model`.
        map_location: passed to :func:`torch.load`.

    Returns:
        The model.

    Raises:
        ValueError: the file was not written by :func:`save_model`.
    """
    data = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(data, dict) or set(data) != {"config", "state_dict"}:
        raise ValueError(f"{path} is not a file written by slt_interp.bilinear.save_model")
    model = BilinearTransformer(BilinearConfig.from_dict(data["config"]))
    dtype = next(iter(data["state_dict"].values())).dtype
    model = model.to(dtype)
    model.load_state_dict(data["state_dict"])
    return model
