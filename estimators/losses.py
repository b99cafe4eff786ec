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
    """(1/n)·Σ_x ‖f(x; w) − f(x; w*)‖², the behavioral MSE (Bushnaq et al. 2024, arXiv 2405.10927, §2.2).

    The mean runs over the batch (first dimension) of the squared distance summed over all output
    dimensions.

    Args:
        output: f(x; w), the outputs at the current parameters.
        reference: f(x; w*), detached by the caller (see :func:`slt_interp.estimators.reference_outputs`).

    Returns:
        The scalar loss.

    Raises:
        ValueError: the shapes differ.
    """
    if output.shape != reference.shape:
        raise ValueError(f"output shape {tuple(output.shape)} ≠ reference shape {tuple(reference.shape)}")
    diff = (output - reference).reshape(output.shape[0], -1) if output.dim() > 0 else output - reference
    return (diff ** 2).sum(-1).mean()


def behavioral_kl(logits: Tensor, reference_logits: Tensor) -> Tensor:
    """(1/n)·Σ_x KL(p(·|x, w*) ‖ p(·|x, w)), the behavioral KL, p = softmax over the last dimension.

    The mean runs over every leading dimension (batch, and positions for sequence models); its
    Hessian at w* is the Fisher matrix (Bushnaq et al. 2024, arXiv 2405.10927, §2.2).

    Args:
        logits: the logits at the current parameters.
        reference_logits: the logits at w*, detached by the caller.

    Returns:
        The scalar loss.

    Raises:
        ValueError: the shapes differ.
    """
    if logits.shape != reference_logits.shape:
        raise ValueError(f"logits shape {tuple(logits.shape)} ≠ reference shape {tuple(reference_logits.shape)}")
    log_q = torch.log_softmax(logits, dim=-1)
    log_p = torch.log_softmax(reference_logits, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()
