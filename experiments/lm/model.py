"""A nanoGPT-style causal transformer language model (Radford et al. 2019, GPT-2; Karpathy's nanoGPT).

Architecture, for tokens ``x`` of shape (B, T)::

    h_0 = W_E[x] + W_P[0:T]                               token + learned positional embeddings
    h_l = h_{l−1} + Attn_l(LN(h_{l−1}))                    pre-LayerNorm residual blocks
    h_l = h_l + MLP_l(LN(h_l)),    MLP(u) = W_2 GELU(W_1 u + b_1) + b_2
    logits = LN_f(h_L) · W_U^T,    W_U = W_E when tied

with softmax causal self-attention (Vaswani et al. 2017, arXiv 1706.03762)
``A = softmax(Q K^T / √d_head + causal mask)``, computed explicitly (no fused kernel), so that the
attention pattern can be read out and every operation has forward- and reverse-mode derivatives.

The model is a plain ``nn.Module`` with no parameter tricks, so it works with
``torch.func.functional_call(model, params, (tokens,))``; device and dtype follow the module
(``model.to(device, dtype)``). :func:`config_for_size` picks configs of about 0.1M, 1M and 10M
parameters and :func:`count_parameters` counts a config's parameters without building it.

    >>> cfg = config_for_size(100_000, vocab_size=64, seq_len=64)
    >>> model = CausalLM(cfg, seed=0)
    >>> logits = model(torch.zeros(2, 64, dtype=torch.long))     # (2, 64, 64)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LMConfig", "CausalLM", "count_parameters", "config_for_size", "SIZES"]

#: the three model sizes of issue 13, in parameters
SIZES = {"0.1M": 100_000, "1M": 1_000_000, "10M": 10_000_000}

# (num_layers, num_heads) used by config_for_size for each size; d_model is then solved for
_SHAPES = {100_000: (2, 4), 1_000_000: (4, 4), 10_000_000: (8, 8)}


@dataclass(frozen=True)
class LMConfig:
    """Settings of :class:`CausalLM`.

    Attributes:
        vocab_size: number of tokens V.
        seq_len: the longest context T (size of the positional embedding).
        num_layers: number of transformer blocks.
        num_heads: attention heads per block.
        d_model: residual stream width; a multiple of ``num_heads``.
        mlp_ratio: MLP hidden width / d_model (4 as in GPT-2).
        tie_embeddings: unembedding W_U is the token embedding W_E.
        bias: biases in the linear layers and LayerNorms.
        layer_norm_eps: LayerNorm epsilon.
        init_std: standard deviation of the normal initialisation (GPT-2: 0.02); residual output
            projections use ``init_std / √(2·num_layers)``.
    """

    vocab_size: int = 64
    seq_len: int = 64
    num_layers: int = 2
    num_heads: int = 4
    d_model: int = 64
    mlp_ratio: int = 4
    tie_embeddings: bool = True
    bias: bool = True
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "num_layers", "num_heads", "d_model", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LMConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"LMConfig.d_model={self.d_model} is not a multiple of num_heads={self.num_heads}; "
                             "choose d_model = num_heads · d_head")

    @property
    def d_head(self) -> int:
        """Width of one attention head, d_model / num_heads."""
        return self.d_model // self.num_heads


def count_parameters(config: LMConfig) -> int:
    """Number of parameters of ``CausalLM(config)``, without building it.

    With d = d_model, r = mlp_ratio, b = 1 if bias else 0:
    ``V·d + T·d`` (embeddings) ``+ L·(4d² + 2r·d² + b·(4d + r·d + d) + 2(d + b·d))`` (blocks)
    ``+ (d + b·d)`` (final LayerNorm) ``+ (0 if tied else V·d)`` (unembedding).

    Args:
        config: the model settings.

    Returns:
        The parameter count.
    """
    d, r, b = config.d_model, config.mlp_ratio, int(config.bias)
    ln = d + b * d
    block = 2 * ln + (4 * d * d + b * 4 * d) + (2 * r * d * d + b * (r * d + d))
    unembed = 0 if config.tie_embeddings else config.vocab_size * d
    return (config.vocab_size + config.seq_len) * d + config.num_layers * block + ln + unembed


def config_for_size(num_parameters: int, *, vocab_size: int, seq_len: int, **overrides) -> LMConfig:
    """A config with about ``num_parameters`` parameters, for the sizes of issue 13.

    The depth and head count come from the size class nearest ``num_parameters`` in log scale
    (0.1M: 2 layers × 4 heads; 1M: 4 × 4; 10M: 8 × 8); ``d_model`` is the multiple of ``num_heads``
    whose :func:`count_parameters` is closest to the target.

    Args:
        num_parameters: the target count, e.g. ``SIZES["1M"]``.
        vocab_size: V of the language.
        seq_len: T of the language.
        **overrides: other :class:`LMConfig` fields (e.g. ``tie_embeddings=False``); ``num_layers`` and
            ``num_heads`` here replace the size class's.

    Returns:
        The :class:`LMConfig`.

    Raises:
        ValueError: if ``num_parameters`` is not a positive int, or an override is not a field.
    """
    if not isinstance(num_parameters, int) or num_parameters < 1:
        raise ValueError(f"num_parameters must be a positive int, got {num_parameters!r}")
    unknown = set(overrides) - set(LMConfig.__dataclass_fields__) | ({"d_model"} & set(overrides))
    if unknown:
        raise ValueError(f"config_for_size: unknown or fixed field(s) {sorted(unknown)}; "
                         f"pass fields of LMConfig other than d_model")
    size_class = min(_SHAPES, key=lambda s: abs(math.log(num_parameters / s)))
    num_layers, num_heads = _SHAPES[size_class]
    num_layers = overrides.pop("num_layers", num_layers)
    num_heads = overrides.pop("num_heads", num_heads)

    def make(d):
        return LMConfig(vocab_size=vocab_size, seq_len=seq_len, num_layers=num_layers, num_heads=num_heads,
                        d_model=d, **overrides)

    candidates = [make(num_heads * k) for k in range(1, 4097)]
    return min(candidates, key=lambda c: abs(count_parameters(c) - num_parameters))


class CausalSelfAttention(nn.Module):
    """Multi-head softmax attention with a causal mask; returns the output and the pattern."""

    def __init__(self, config: LMConfig):
        super().__init__()
        self.num_heads, self.d_head = config.num_heads, config.d_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        causal = torch.ones(config.seq_len, config.seq_len, dtype=torch.bool).tril()
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)                                # each (B, T, d)
        q = q.view(B, T, self.num_heads, self.d_head).transpose(1, 2)        # (B, H, T, d_head)
        k = k.view(B, T, self.num_heads, self.d_head).transpose(1, 2)
        v = v.view(B, T, self.num_heads, self.d_head).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)          # (B, H, T, T)
        scores = scores.masked_fill(~self.causal[:T, :T], float("-inf"))
        pattern = torch.softmax(scores, dim=-1)                              # rows: queries
        y = (pattern @ v).transpose(1, 2).reshape(B, T, d)                   # (B, T, d)
        return self.proj(y), pattern


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: LMConfig):
        super().__init__()
        d, h = config.d_model, config.mlp_ratio * config.d_model
        self.ln_1 = nn.LayerNorm(d, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(d, eps=config.layer_norm_eps, bias=config.bias)
        self.fc = nn.Linear(d, h, bias=config.bias)
        self.fc_proj = nn.Linear(h, d, bias=config.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, pattern = self.attn(self.ln_1(x))
        x = x + a
        x = x + self.fc_proj(F.gelu(self.fc(self.ln_2(x))))
        return x, pattern


class CausalLM(nn.Module):
    """nanoGPT-style causal transformer LM (module docstring).

    Args:
        config: the :class:`LMConfig`.
        seed: seed of the initialisation (normal(0, init_std) weights, zero biases, unit LayerNorm
            gains; residual projections scaled by 1/√(2·num_layers) as in GPT-2).

    Example:
        >>> model = CausalLM(LMConfig(vocab_size=16, seq_len=8, num_layers=1, num_heads=2, d_model=8))
        >>> model(torch.zeros(3, 8, dtype=torch.long)).shape
        torch.Size([3, 8, 16])
    """

    def __init__(self, config: LMConfig, *, seed: int = 0):
        super().__init__()
        if not isinstance(config, LMConfig):
            raise TypeError(f"CausalLM takes an LMConfig, got {type(config).__name__}")
        self.config = config
        d = config.d_model
        self.wte = nn.Embedding(config.vocab_size, d)
        self.wpe = nn.Embedding(config.seq_len, d)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(d, eps=config.layer_norm_eps, bias=config.bias)
        self.lm_head = None if config.tie_embeddings else nn.Linear(d, config.vocab_size, bias=False)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif ".ln_" in name or name.startswith("ln_f"):
                    p.fill_(1.0)
                else:
                    residual_out = name.endswith(("attn.proj.weight", "fc_proj.weight"))
                    std = config.init_std / math.sqrt(2 * config.num_layers) if residual_out else config.init_std
                    nn.init.normal_(p, 0.0, std, generator=g)

    def forward(self, tokens: Tensor, *, return_attention: bool = False):
        """Next-token logits.

        Args:
            tokens: (B, T) integer tokens, T ≤ ``config.seq_len``.
            return_attention: also return the attention patterns.

        Returns:
            logits (B, T, V) in the module's dtype; entry ``[:, k]`` predicts token ``k + 1``. With
            ``return_attention``, ``(logits, patterns)`` with patterns (num_layers, B, H, T, T), rows
            the queries.

        Raises:
            ValueError: if tokens are not (B, T) with T ≤ seq_len.
        """
        if tokens.dim() != 2 or tokens.shape[1] > self.config.seq_len:
            raise ValueError(f"tokens must be (batch, T) with T <= seq_len={self.config.seq_len}, "
                             f"got shape {tuple(tokens.shape)}")
        T = tokens.shape[1]
        positions = torch.arange(T, device=tokens.device)
        x = self.wte(tokens) + self.wpe(positions)                           # (B, T, d)
        patterns = []
        for block in self.blocks:
            x, pattern = block(x)
            patterns.append(pattern)
        x = self.ln_f(x)
        W_U = self.wte.weight if self.lm_head is None else self.lm_head.weight  # (V, d)
        logits = x @ W_U.T                                                   # (B, T, V)
        return (logits, torch.stack(patterns)) if return_attention else logits
