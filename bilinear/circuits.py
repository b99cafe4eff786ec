"""QK / OV circuits of every head and the composition scores between heads (Elhage et al. 2021).

Conventions (column vectors, as in :mod:`~slt_interp.bilinear.layers`): head (l, h) scores a query x_t
against a key x_s by x_tᵀ W_QK x_s with W_QK = W_Qᵀ W_K (d_model × d_model) and writes W_OV x_s with
W_OV = W_O W_V. In token space ("full circuits", Elhage et al. 2021, "A Mathematical Framework for
Transformer Circuits"): QK = W_E W_QK W_Eᵀ (vocab × vocab; row: query token, column: key token) and
OV = W_U W_OV W_Eᵀ (vocab × vocab; row: output logit, column: source token). All are
:class:`~slt_interp.bilinear.factored.FactoredMatrix` stacks with batch dimensions (n_layers, n_heads).

Composition scores of a head (l₂, h₂) reading a head (l₁, h₁) of an earlier layer (Elhage et al. 2021,
§"Composition"): with ‖·‖ the Frobenius norm,
Q: ‖W_QK²ᵀ W_OV¹‖ / (‖W_QK²‖‖W_OV¹‖) (the query reads the earlier head's output),
K: ‖W_QK² W_OV¹‖ / (‖W_QK²‖‖W_OV¹‖) (the key reads it),
V: ‖W_OV² W_OV¹‖ / (‖W_OV²‖‖W_OV¹‖) (the value reads it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .factored import FactoredMatrix
from .model import BilinearTransformer

__all__ = ["Circuits", "CompositionScores", "circuits", "composition_scores"]


@dataclass(frozen=True)
class Circuits:
    """QK and OV circuits of every head, each a (n_layers, n_heads, ·, ·) FactoredMatrix stack.

    Attributes:
        qk: W_QK = W_Qᵀ W_K per head, (L, H, d_model, d_model), or W_E W_QK W_Eᵀ (L, H, vocab, vocab).
        ov: W_OV = W_O W_V per head, (L, H, d_model, d_model), or W_U W_OV W_Eᵀ (L, H, vocab, vocab).
        token_space: whether the circuits are composed with the embedding / unembedding.
    """

    qk: FactoredMatrix
    ov: FactoredMatrix
    token_space: bool


def _check(model) -> None:
    if not isinstance(model, BilinearTransformer):
        raise TypeError(f"needs a slt_interp.bilinear.BilinearTransformer, got {type(model).__name__}")


def circuits(model: BilinearTransformer, *, token_space: bool = False) -> Circuits:
    """QK and OV circuits of every head at once (module docstring for the formulas).

    Args:
        model: the :class:`~slt_interp.bilinear.model.BilinearTransformer`.
        token_space: compose with W_E (and W_U for OV) to get the vocab × vocab full circuits of Elhage
            et al. 2021 (the positional embedding left out); False gives residual-stream circuits.

    Returns:
        A :class:`Circuits`; ``circuits(model).qk[l, h]`` is head (l, h)'s circuit.

    Raises:
        TypeError: not a BilinearTransformer.
    """
    _check(model)
    with torch.no_grad():
        WQ = torch.stack([b.attn.W_Q.detach() for b in model.blocks])  # (L, H, d_head, d_model)
        WK = torch.stack([b.attn.W_K.detach() for b in model.blocks])
        WV = torch.stack([b.attn.W_V.detach() for b in model.blocks])
        WO = torch.stack([b.attn.W_O.detach() for b in model.blocks])  # (L, H, d_model, d_head)
        if not token_space:
            return Circuits(FactoredMatrix(WQ.mT, WK), FactoredMatrix(WO, WV), False)
        WE, WU = model.W_E.detach(), model.W_U.detach()  # (vocab, d_model) each
        return Circuits(FactoredMatrix(WE @ WQ.mT, WK @ WE.T), FactoredMatrix(WU @ WO, WV @ WE.T), True)


@dataclass(frozen=True)
class CompositionScores:
    """Q-, K- and V-composition scores, indexed [l₂, h₂, l₁, h₁]; NaN where l₁ ≥ l₂ (no composition).

    Attributes:
        q: Q-composition, (L, H, L, H), in [0, 1].
        k: K-composition, (L, H, L, H), in [0, 1].
        v: V-composition, (L, H, L, H), in [0, 1].
    """

    q: Tensor
    k: Tensor
    v: Tensor


def composition_scores(model: BilinearTransformer) -> CompositionScores:
    """Composition scores between every pair of heads in different layers (Elhage et al. 2021).

    Products are formed from the factors (d_head-sized cores), never as d_model × d_model matrices
    multiplied out twice.

    Args:
        model: the :class:`~slt_interp.bilinear.model.BilinearTransformer`.

    Returns:
        A :class:`CompositionScores`.

    Raises:
        TypeError: not a BilinearTransformer.
    """
    c = circuits(model)
    L, H = model.config.n_layers, model.config.n_heads
    nan = torch.full((L, H, L, H), float("nan"), dtype=c.qk.A.dtype, device=c.qk.A.device)
    q, k, v = nan.clone(), nan.clone(), nan.clone()
    with torch.no_grad():
        norm_qk, norm_ov = c.qk.frobenius_norm(), c.ov.frobenius_norm()  # (L, H)
        for l2 in range(L):
            for l1 in range(l2):
                qk2 = c.qk[l2][:, None]  # (H, 1, d, d) stack: broadcast against the H heads of l1
                ov1 = c.ov[l1][None]  # (1, H, d, d)
                ov2 = c.ov[l2][:, None]
                den_qk = norm_qk[l2][:, None] * norm_ov[l1][None]
                q[l2, :, l1] = (qk2.T @ ov1).frobenius_norm() / den_qk
                k[l2, :, l1] = (qk2 @ ov1).frobenius_norm() / den_qk
                v[l2, :, l1] = (ov2 @ ov1).frobenius_norm() / (norm_ov[l2][:, None] * norm_ov[l1][None])
    return CompositionScores(q, k, v)
