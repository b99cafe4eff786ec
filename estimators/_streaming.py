"""Sampling problems over the batches users have: DataLoaders, iterables of tuple or dict batches.

When the data is not a set of tensors with random access — a ``DataLoader`` whose items are dicts
(e.g. ``input_ids`` / ``attention_mask`` / ``labels`` for a Hugging Face causal LM), an iterable
data set, or any re-iterable of batches (a list of ``(x, y)`` tuples or of dicts) — the batches are
read once into a list on the host (they stay where they are) and each chain walks its own
permutation of the batch list, reshuffled every epoch from its own seed. Only the batch of the
current step is moved to the sampling device. The baseline L_n(w*) is computed once over every
batch, weighted by the batch sizes: L_n = Σ_b (n_b/n)·L_b.

The loss of a batch is ``loss_fn(model(x), y)`` for tuple batches and ``loss_fn(model(**batch),
batch)`` for dict batches; with ``loss_fn=None`` a dict batch uses the model output's ``.loss``
(Hugging Face models compute it when the batch holds ``labels``). The model runs in eval mode while
sampling (dropout off, so the loss is a function of the weights), and its mode is restored after.
Each chain's gradient is one reverse pass (chains are not vectorised here: batches may differ in
shape between chains).
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from . import _checkpoint
from ._chains import _Problem
from .input_checks import ParamSelection, check_data, flat_model, loss_of_batch, probe_loss

Batch = Any  # a tuple/list of tensors or a dict of tensors (and other values)


def _is_tensor_batch(item) -> bool:
    if isinstance(item, Mapping):
        return any(isinstance(v, Tensor) for v in item.values())
    return isinstance(item, (tuple, list)) and bool(item) and all(isinstance(t, Tensor) for t in item)


def is_batch_stream(data) -> bool:
    """Whether ``data`` is given as batches (see module docstring) rather than as sample tensors."""
    if isinstance(data, DataLoader):
        ds = data.dataset
        if isinstance(ds, IterableDataset):
            return True
        try:
            return isinstance(ds[0], Mapping)
        except Exception:  # noqa: BLE001 - a data set without random access is streamed
            return True
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        try:
            return isinstance(data[0], Mapping)
        except Exception:  # noqa: BLE001
            return False
    if isinstance(data, IterableDataset):
        return True
    if isinstance(data, (tuple, list)):
        return bool(data) and all(_is_tensor_batch(b) and not isinstance(b, Tensor) for b in data)
    return hasattr(data, "__iter__") and not isinstance(data, (Tensor, str, bytes, Mapping))


def _batch_size_of(batch: Batch) -> int:
    values = batch.values() if isinstance(batch, Mapping) else batch
    for v in values:
        if isinstance(v, Tensor) and v.dim() > 0:
            return int(v.shape[0])
    raise ValueError("a batch holds no tensor with a batch dimension")


def read_batches(data, batch_size: int | None = None) -> list[Batch]:
    """The batches of ``data`` as a list (read once; tensors stay on their device)."""
    if isinstance(data, Dataset) and not isinstance(data, (IterableDataset,)) and not isinstance(data, DataLoader):
        data = DataLoader(data, batch_size=batch_size or 32, shuffle=False)
    if iter(data) is data:
        raise TypeError("data is a one-shot iterator (e.g. a generator): pass a re-iterable (a DataLoader, a list of "
                        "batches) — the chains and the baseline each need a pass over the data")
    batches = list(data)
    if not batches:
        raise ValueError("data holds no batches")
    for b in batches:
        if not _is_tensor_batch(b):
            raise TypeError(f"each batch must be a tuple of tensors (inputs, targets) or a dict of tensors, got "
                            f"{type(b).__name__}")
    return batches


def _to(batch: Batch, device, dtype) -> Batch:
    def move(v):
        if not isinstance(v, Tensor):
            return v
        return v.to(device=device, dtype=dtype, non_blocking=True) if v.is_floating_point() else v.to(device, non_blocking=True)

    if isinstance(batch, Mapping):
        return {k: move(v) for k, v in batch.items()}
    return tuple(move(v) for v in batch)


def streaming_problem(model: nn.Module, loss_fn: Callable | None, data, *, params: ParamSelection = None,
                      device=None, batch_size: int | None = None, description: str = "") -> tuple[_Problem, int]:
    """The sampling problem over a stream of batches, and the typical batch size."""
    flat = flat_model(model, params, device)
    w0, buffers, mask, dev, dtype, names = flat.w0, flat.buffers, flat.mask, flat.device, flat.dtype, flat.names
    batches = read_batches(data, batch_size)
    if loss_fn is None and not all(isinstance(b, Mapping) for b in batches):
        raise ValueError("loss_fn=None takes the loss from the model output (`.loss`), which needs dict batches; pass "
                         "loss_fn(prediction, target) for (inputs, targets) batches")
    counts = [_batch_size_of(b) for b in batches]
    n = sum(counts)
    if n < 2:
        raise ValueError(f"need at least 2 samples (nβ = n/log n), got {n}")

    unflatten = flat.unflatten

    def loss_on(w: Tensor, batch: Batch) -> Tensor:
        return loss_of_batch(model, {**unflatten(w), **buffers}, _to(batch, dev, dtype), loss_fn)

    def full_loss(w: Tensor) -> Tensor:
        return sum((c / n) * loss_on(w, b) for c, b in zip(counts, batches))

    def chain_value_and_grad(W: Tensor, per_chain: list[Batch]) -> tuple[Tensor, Tensor]:
        losses, grads = [], []
        for w, b in zip(W, per_chain):
            w = w.detach().requires_grad_(True)
            with torch.enable_grad():
                L = loss_on(w, b)
                (g,) = torch.autograd.grad(L, w)
            losses.append(L.detach())
            grads.append(g)
        return torch.stack(losses), torch.stack(grads)

    def identity() -> dict:
        h = hashlib.sha256()
        for b in batches:
            vals = [b[k] for k in sorted(b)] if isinstance(b, Mapping) else list(b)
            h.update(_checkpoint.tensor_digest(*[v for v in vals if isinstance(v, Tensor)]).encode())
        return dict(data=h.hexdigest()[:16], w_star=_checkpoint.tensor_digest(w0),
                    params=[list(names), _checkpoint.tensor_digest(mask)],
                    loss=_checkpoint.callable_identity(loss_fn) if loss_fn is not None else "model output .loss",
                    model=f"{type(model).__module__}.{type(model).__qualname__}:"
                    + hashlib.sha256(repr(model).encode()).hexdigest()[:16], num_samples=n, dim=int(w0.numel()))

    def check() -> None:
        # the one validator (``_model_data``): every tuple batch's tensors (rows, NaN/inf named), and the
        # loss probed on the first batch (takes the inputs, deterministic, a scalar MEAN, attached)
        for i, b in enumerate(batches):
            if not isinstance(b, Mapping):
                check_data({f"batch {i}[{k}]": t for k, t in enumerate(b)})
        if not isinstance(batches[0], Mapping):
            first = _to(batches[0], dev, dtype)
            probe_loss(model, unflatten(w0), buffers, loss_fn, first, in_eval_mode=True, need_grad=True)
            return
        w = w0.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            value = loss_on(w, batches[0])
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise ValueError(f"the loss of a batch must be a scalar tensor (the MEAN over the batch), got "
                             f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}; reduce it with .mean()")
        if not value.requires_grad:
            raise ValueError("the loss does not depend on the parameters through autograd (detached); compute it "
                             "with differentiable torch operations on the model's output")

    problem = _Problem(loss_on, full_loss, w0, mask, n, True, (), names, description, identity=identity, check=check,
                       batches=tuple(batches), chain_value_and_grad=chain_value_and_grad)
    return problem, int(np.median(counts))
