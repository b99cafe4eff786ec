"""A trained :class:`~experiments.lm.model.CausalLM` as an LLC problem (issue 13).

For token sequences x of length T, the per-token training loss and the per-token behavioral KL are

    L_n(w)  = (1/n)·Σ_{b, k=1..T−1} −log p_w(x_{b,k} | x_{b,<k}),
    L_B(w)  = (1/n)·Σ_{b, k=0..T−2} KL(p_{w*}(·| x_{b,≤k}) ‖ p_w(·| x_{b,≤k})),

with n = B·(T − 1) predicted tokens: an autoregressive model's likelihood factorises over tokens, so
every predicted token is one sample and nβ = n/log n counts tokens, not sequences (the convention of
the LLC studies of language models, e.g. Hoogland et al. 2024, arXiv 2402.02364). Both losses see the
same T − 1 positions (:class:`NextTokenLM` drops the logits of the last position, which predict
nothing in the data). L_B(w*) = 0 and its Hessian at w* is the Fisher matrix, the Gauss–Newton matrix
of L_n (Bushnaq et al. 2024, arXiv 2405.10927, §2.2).

Weight refinement (Wang et al. 2024, arXiv 2410.02984): :func:`layer_params` and :func:`head_params`
select one block's or one attention head's weights (query, key and value rows of the head in the fused
``qkv`` projection, its columns of the output projection); the rest stays at w*.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import CausalLM

__all__ = ["NextTokenLM", "next_token_loss", "num_tokens", "token_nbeta", "layer_params", "head_params"]


class NextTokenLM(nn.Module):
    """The logits of positions 0 … T−2 of a :class:`CausalLM` (those that predict a token of the data).

    Args:
        lm: the language model; its parameters appear as ``lm.<name>``.
    """

    def __init__(self, lm: CausalLM):
        super().__init__()
        if not isinstance(lm, CausalLM):
            raise TypeError(f"NextTokenLM wraps a CausalLM, got {type(lm).__name__}")
        self.lm = lm

    def forward(self, tokens: Tensor) -> Tensor:
        return self.lm(tokens)[:, :-1]                                      # (B, T−1, V)


def next_token_loss(logits: Tensor, tokens: Tensor) -> Tensor:
    """Mean over predicted tokens of −log softmax(logits[:, k−1])[tokens[:, k]] (``logits`` of NextTokenLM).

    Args:
        logits: (B, T−1, V).
        tokens: (B, T), the same sequences.

    Returns:
        The scalar mean cross-entropy (nats per token).

    Raises:
        ValueError: if the shapes do not match.
    """
    if logits.dim() != 3 or tokens.dim() != 2 or logits.shape[:2] != (tokens.shape[0], tokens.shape[1] - 1):
        raise ValueError(f"need logits (B, T−1, V) for tokens (B, T); got logits {tuple(logits.shape)}, "
                         f"tokens {tuple(tokens.shape)} — pass NextTokenLM's output")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def num_tokens(tokens: Tensor) -> int:
    """n = B·(T − 1), the predicted tokens of (B, T) sequences."""
    return int(tokens.shape[0] * (tokens.shape[1] - 1))


def token_nbeta(tokens: Tensor) -> float:
    """nβ = n/log n with n = :func:`num_tokens` (module docstring)."""
    n = num_tokens(tokens)
    return n / math.log(n)


def layer_params(model: NextTokenLM, layer: int) -> list[str]:
    """Names of the parameters of block ``layer`` (attention, MLP and its two LayerNorms)."""
    prefix = f"lm.blocks.{layer}."
    names = [name for name, _ in model.named_parameters() if name.startswith(prefix)]
    if not names:
        raise ValueError(f"the model has {model.lm.config.num_layers} blocks; no layer {layer}")
    return names


def head_params(model: NextTokenLM, layer: int, head: int) -> dict[str, Tensor]:
    """Boolean masks selecting attention head ``head`` of block ``layer``.

    The fused projection ``qkv`` has rows [q; k; v], each ``d_model`` rows of ``num_heads`` heads of
    ``d_head`` rows; the head's rows of the three (and of the bias) and its ``d_head`` input columns of
    the output projection ``proj`` are selected.
    """
    cfg = model.lm.config
    if not (0 <= layer < cfg.num_layers and 0 <= head < cfg.num_heads):
        raise ValueError(f"the model has {cfg.num_layers} layers × {cfg.num_heads} heads; no head {layer}.{head}")
    attn = model.lm.blocks[layer].attn
    d, dh = cfg.d_model, cfg.d_head
    rows = torch.zeros(3 * d, dtype=torch.bool)
    for part in range(3):
        rows[part * d + head * dh: part * d + (head + 1) * dh] = True
    prefix = f"lm.blocks.{layer}.attn."
    masks = {prefix + "qkv.weight": rows[:, None].expand_as(attn.qkv.weight).clone()}
    if attn.qkv.bias is not None:
        masks[prefix + "qkv.bias"] = rows.clone()
    cols = torch.zeros(d, dtype=torch.bool)
    cols[head * dh:(head + 1) * dh] = True
    masks[prefix + "proj.weight"] = cols[None, :].expand_as(attn.proj.weight).clone()
    return {k: v.to(attn.qkv.weight.device) for k, v in masks.items()}
