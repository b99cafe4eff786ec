"""Behavioral losses: distance of a network's outputs from the reference network's outputs.

Bushnaq et al. 2024 (arXiv 2405.10927, §2.2): L_B(w) = (1/n)·Σ_x ‖f(x; w) − f(x; w*)‖². It is zero at
w*, so w* is a global minimum of L_B at every point of training. Its Hessian at w* is the
Gauss–Newton matrix (2/n)·Σ_x J_xᵀJ_x. For classifiers, the KL version
(1/n)·Σ_x KL(p(·|x, w*) ‖ p(·|x, w)) has the Fisher matrix as its Hessian.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["behavioral_mse", "behavioral_kl"]


def behavioral_mse(output: Tensor, reference: Tensor) -> Tensor:
    """(1/n)·Σ_x ‖f(x; w) − f(x; w*)‖²: mean over the batch (first dim) of the squared distance summed
    over all output dimensions. ``reference`` is f(x; w*), detached by the caller."""
    if output.shape != reference.shape:
        raise ValueError(f"output shape {tuple(output.shape)} ≠ reference shape {tuple(reference.shape)}")
    diff = (output - reference).reshape(output.shape[0], -1) if output.dim() > 0 else output - reference
    return (diff ** 2).sum(-1).mean()


def behavioral_kl(logits: Tensor, reference_logits: Tensor) -> Tensor:
    """(1/n)·Σ_x KL(p(·|x, w*) ‖ p(·|x, w)) with p = softmax over the last dimension; the mean runs
    over every leading dimension (batch, and positions for sequence models)."""
    if logits.shape != reference_logits.shape:
        raise ValueError(f"logits shape {tuple(logits.shape)} ≠ reference shape {tuple(reference_logits.shape)}")
    log_q = torch.log_softmax(logits, dim=-1)
    log_p = torch.log_softmax(reference_logits, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()
