"""Training a bilinear transformer on a :class:`~bilinear.tasks.Task` (cross-entropy, AdamW)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .model import BilinearTransformer
from .tasks import Task

__all__ = ["TrainResult", "train", "accuracy"]


@dataclass(frozen=True)
class TrainResult:
    """What training did.

    Attributes:
        losses: (steps,) training loss per step (float64).
        train_accuracy, test_accuracy: final accuracies on the masked positions (test: None if no test set).
        steps, lr, weight_decay, batch_size, seed: the settings used.
    """

    losses: Tensor
    train_accuracy: float
    test_accuracy: float | None
    steps: int
    lr: float
    weight_decay: float
    batch_size: int
    seed: int


def _loss(model: BilinearTransformer, task: Task, idx: Tensor | None = None) -> Tensor:
    tokens, targets, mask = (task.tokens, task.targets, task.mask) if idx is None else \
        (task.tokens[idx], task.targets[idx], task.mask[idx])
    logits = model(tokens)  # (B, T, V)
    return F.cross_entropy(logits[mask], targets[mask])


def accuracy(model: BilinearTransformer, task: Task, logits: Tensor | None = None) -> float:
    """Fraction of masked positions where the arg-max logit is the target (logits may be given)."""
    with torch.no_grad():
        logits = model(task.tokens) if logits is None else logits
        return float((logits.argmax(-1)[task.mask] == task.targets[task.mask]).double().mean())


def train(model: BilinearTransformer, task: Task, *, steps: int = 1000, lr: float = 3e-3,
          weight_decay: float = 1e-2, batch_size: int | None = None, seed: int = 0,
          test: Task | None = None, grad_clip: float = 1.0, progress: bool = True) -> TrainResult:
    """Minimise the cross-entropy of ``model`` on ``task`` with AdamW (in place).

    Args:
        batch_size: sequences per step; None = full batch.
        seed: seeds the batch order (explicit generator; the global RNG is not touched).
        grad_clip: gradient-norm clip (polynomial models can have steep walls).
        progress: show a tqdm bar.
    """
    if task.vocab_size != model.config.vocab_size:
        raise ValueError(f"task vocabulary {task.vocab_size} != model vocabulary {model.config.vocab_size}")
    if task.n_ctx > model.config.n_ctx:
        raise ValueError(f"task context {task.n_ctx} > model n_ctx {model.config.n_ctx}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
    n = task.tokens.shape[0]
    losses = torch.empty(steps, dtype=torch.float64)
    bar = tqdm(range(steps), desc="train", leave=False, disable=not progress)
    for step in bar:
        idx = None if batch_size is None or batch_size >= n else torch.randperm(n, generator=g)[:batch_size]
        loss = _loss(model, task, idx)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged at step {step} (loss {float(loss)}); lower lr or init_std")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        losses[step] = loss.item()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return TrainResult(losses, accuracy(model, task), None if test is None else accuracy(model, test),
                       steps, lr, weight_decay, n if batch_size is None else batch_size, seed)
