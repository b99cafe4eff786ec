"""Training a bilinear transformer on a :class:`~slt_interp.bilinear.tasks.Task` (cross-entropy, AdamW).

AdamW (Loshchilov & Hutter 2019, arXiv 1711.05101) is written out as a pure update of (params, moments)
so that training needs no optimizer object (and does not import torch's compiler stack, ~5 s here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call
from tqdm.auto import tqdm

from ._threads import small_work_threads
from .model import BilinearTransformer
from .tasks import Task

__all__ = ["TrainResult", "train", "accuracy"]


@dataclass(frozen=True)
class TrainResult:
    """What training did.

    Attributes:
        losses: (steps,) training loss per step (float64).
        train_accuracy: final accuracy on the masked positions of the training task.
        test_accuracy: the same on the test task (None if no test set).
        steps: optimisation steps taken.
        lr: peak learning rate.
        weight_decay: decoupled weight decay.
        batch_size: sequences per step.
        seed: the seed of the batch order.
    """

    losses: Tensor
    train_accuracy: float
    test_accuracy: float | None
    steps: int
    lr: float
    weight_decay: float
    batch_size: int
    seed: int


def _loss(model: BilinearTransformer, params: dict, tokens: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Mean cross-entropy over the masked positions, as a function of the parameters."""
    logits = functional_call(model, params, (tokens,))  # (B, T, V)
    return F.cross_entropy(logits[mask], targets[mask])


def accuracy(model: BilinearTransformer, task: Task, logits: Tensor | None = None) -> float:
    """Fraction of masked positions where the arg-max logit is the target.

    Args:
        model: the model.
        task: the sequences, targets and mask.
        logits: precomputed logits (B, T, vocab) to score instead of ``model(task.tokens)`` (e.g. those of
            a pruned expansion).

    Returns:
        The accuracy in [0, 1].
    """
    with torch.no_grad():
        logits = model(task.tokens) if logits is None else logits
        return float((logits.argmax(-1)[task.mask] == task.targets[task.mask]).double().mean())


def _adamw_init(params: list[Tensor]) -> dict:
    return {"t": 0, "m": [torch.zeros_like(p) for p in params], "v": [torch.zeros_like(p) for p in params]}


def _adamw_step(params, grads, state, *, lr: float, weight_decay: float, betas=(0.9, 0.98), eps=1e-8) -> None:
    """One AdamW update: m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; p ← p − lr·(m̂/(√v̂ + ε) + wd·p) (decoupled decay)."""
    b1, b2 = betas
    state["t"] += 1
    c1, c2 = 1 - b1 ** state["t"], 1 - b2 ** state["t"]
    with torch.no_grad():
        for p, g, m, v in zip(params, grads, state["m"], state["v"]):
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.sub_(lr * ((m / c1) / ((v / c2).sqrt() + eps) + weight_decay * p))


def train(model: BilinearTransformer, task: Task, *, steps: int = 1000, lr: float = 3e-3,
          weight_decay: float = 1e-2, batch_size: int | None = None, seed: int = 0,
          test: Task | None = None, grad_clip: float = 1.0, progress: bool = True) -> TrainResult:
    """Minimise the cross-entropy of ``model`` on ``task`` with AdamW (in place).

    AdamW: Loshchilov & Hutter 2019 (arXiv 1711.05101), betas (0.9, 0.98), a linear warm-up of the
    learning rate over the first 50 steps, and gradient-norm clipping. On the CPU it runs on one
    intra-op thread (small tensors; the caller's setting is restored afterwards).

    Args:
        model: the model to train (its parameters are updated in place).
        task: training sequences, targets and loss mask.
        steps: number of optimisation steps (≥ 1).
        lr: peak learning rate (finite, > 0).
        weight_decay: decoupled weight decay (finite, ≥ 0).
        batch_size: sequences per step (≥ 1); None = full batch.
        seed: seeds the batch order (explicit generator; the global RNG is not touched).
        test: optional held-out task for the final test accuracy.
        grad_clip: gradient-norm clip (finite, > 0; polynomial models can have steep walls).
        progress: show a tqdm bar.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: a task that does not fit the model, or an invalid setting (the message names it).
        FloatingPointError: the loss became non-finite.
    """
    if task.vocab_size != model.config.vocab_size:
        raise ValueError(f"task vocabulary {task.vocab_size} != model vocabulary {model.config.vocab_size}")
    if task.n_ctx > model.config.n_ctx:
        raise ValueError(f"task context {task.n_ctx} > model n_ctx {model.config.n_ctx}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite learning rate > 0, got {lr!r}; a negative or zero rate would "
                         "ascend or not move (try lr=3e-3)")
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be finite and >= 0, got {weight_decay!r} (0 turns it off)")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be an int >= 1 (sequences per step) or None for the full batch, "
                         f"got {batch_size!r}")
    if not (isinstance(grad_clip, (int, float)) and math.isfinite(grad_clip) and grad_clip > 0):
        raise ValueError(f"grad_clip must be a finite gradient-norm bound > 0, got {grad_clip!r}")
    with small_work_threads(model.W_E.device):
        return _train(model, task, steps, lr, weight_decay, batch_size, seed, test, grad_clip, progress)


def _train(model, task, steps, lr, weight_decay, batch_size, seed, test, grad_clip, progress) -> TrainResult:
    g = torch.Generator().manual_seed(seed)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    state = _adamw_init(params)
    n = task.tokens.shape[0]
    losses = torch.empty(steps, dtype=torch.float64)
    bar = tqdm(range(steps), desc="train", leave=False, disable=not progress)
    for step in bar:
        idx = None if batch_size is None or batch_size >= n else torch.randperm(n, generator=g)[:batch_size]
        batch = (task.tokens, task.targets, task.mask) if idx is None else \
            (task.tokens[idx], task.targets[idx], task.mask[idx])
        # reverse mode through torch.autograd: torch.func.grad_and_value was measured 2.5-4x slower per
        # step on these tiny models (functorch dispatch overhead dominates)
        loss = _loss(model, dict(zip(names, params)), *batch)
        grads = torch.autograd.grad(loss, params)
        loss = loss.detach()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged at step {step} (loss {float(loss)}); lower lr or init_std")
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(gr) for gr in grads]))
        scale = min(1.0, grad_clip / (float(norm) + 1e-12))
        warm = min(1.0, (step + 1) / 50)  # linear warm-up over 50 steps
        _adamw_step(params, [gr * scale for gr in grads], state, lr=lr * warm, weight_decay=weight_decay)
        losses[step] = loss.item()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return TrainResult(losses, accuracy(model, task), None if test is None else accuracy(model, test),
                       steps, lr, weight_decay, n if batch_size is None else batch_size, seed)
