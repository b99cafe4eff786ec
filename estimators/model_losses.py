"""Losses of a torch model as functions of its parameter dict, evaluated over a data set in batches.

Every estimator in :mod:`estimators` takes ``loss(params) -> scalar`` and the reference point
``params`` = w*. The two builders here produce that pair from a model and data:

* :func:`training_loss` — L_n(w) = (1/n)·Σ_i ℓ(f(x_i; w), y_i), the empirical loss;
* :func:`behavioral_loss` — L_B(w) = (1/n)·Σ_i ‖f(x_i; w) − f(x_i; w*)‖² (or the KL version), the
  behavioral loss of Bushnaq et al. 2024 (arXiv 2405.10927, §2.2). w* is a global minimum of L_B at
  every point of training, so Hessian-rank bounds always apply to it.

Both return ``(loss, params)`` so that ``llc_bounds(*training_loss(model, loss_fn, x, y))`` reads
naturally. The loss is a :class:`DataLoss`: callable on a params dict, and iterable by batch, so that
curvature operators sum per-batch products for data sets that do not fit one batch.

Models are evaluated through :func:`torch.func.functional_call`; buffers (e.g. batch-norm statistics)
are held fixed at their current values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .losses import behavioral_kl, behavioral_mse

__all__ = ["DataLoss", "training_loss", "behavioral_loss"]

_BEHAVIORAL = {"mse": behavioral_mse, "kl": behavioral_kl}


@dataclass(frozen=True)
class DataLoss:
    """L(params) = Σ_b (n_b / n)·ℓ(params; batch_b): a mean loss over n data points, in batches.

    The weighting n_b/n makes the batched sum equal the full-batch mean for any loss ℓ that is a mean
    over the batch (the first dimension of every data tensor).

    Attributes:
        name: what the loss is ("training", "behavioral mse", "behavioral kl").
        model: the ``nn.Module`` (its parameters are replaced by ``params`` at every call).
        batch_loss: ``batch_loss(outputs, *batch_rest)`` → scalar, the mean loss of one batch given
            the model outputs on its inputs and the remaining data tensors of the batch.
        data: the data tensors, first the inputs, all with n rows.
        batch_size: rows per batch; ``None`` = one batch.
        buffers: the model's buffers, held fixed.
    """

    name: str
    model: nn.Module = field(repr=False)
    batch_loss: Callable[..., Tensor] = field(repr=False)
    data: tuple[Tensor, ...] = field(repr=False)
    batch_size: int | None = None
    buffers: Mapping[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def num_data(self) -> int:
        return int(self.data[0].shape[0])

    def outputs(self, params: Mapping[str, Tensor], inputs: Tensor) -> Tensor:
        """f(inputs; params) through :func:`torch.func.functional_call`."""
        return functional_call(self.model, {**params, **self.buffers}, (inputs,))

    def batches(self) -> Iterator[tuple[float, tuple[Tensor, ...]]]:
        """Yield ``(n_b / n, batch)`` with ``batch`` the data tensors restricted to one batch."""
        n = self.num_data
        size = n if self.batch_size is None else self.batch_size
        for start in range(0, n, size):
            batch = tuple(t[start:start + size] for t in self.data)
            yield batch[0].shape[0] / n, batch

    def on_batch(self, batch: tuple[Tensor, ...]) -> Callable[[Mapping[str, Tensor]], Tensor]:
        """The loss of one batch as a function of the params dict."""
        inputs, *rest = batch

        def loss(params: Mapping[str, Tensor]) -> Tensor:
            return self.batch_loss(self.outputs(params, inputs), *rest)

        return loss

    def __call__(self, params: Mapping[str, Tensor]) -> Tensor:
        total = None
        for weight, batch in self.batches():
            term = weight * self.on_batch(batch)(params)
            total = term if total is None else total + term
        return total


def _check_model_data(model: nn.Module, tensors: dict[str, Tensor], batch_size: int | None) -> dict[str, Tensor]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = {name: p.detach() for name, p in model.named_parameters()}
    if not params:
        raise ValueError("the model has no parameters: there is nothing to take the curvature of")
    n = None
    for label, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{label} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() == 0:
            raise ValueError(f"{label} must have a leading data dimension, got a scalar")
        if n is None:
            n = t.shape[0]
        elif t.shape[0] != n:
            raise ValueError(f"{label} has {t.shape[0]} rows but the inputs have {n}: pass matching data")
    if n == 0:
        raise ValueError("the data set is empty")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None (one batch), got {batch_size!r}")
    return params


def training_loss(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    batch_size: int | None = None,
) -> tuple[DataLoss, dict[str, Tensor]]:
    """The empirical loss L_n(w) = (1/n)·Σ_i ℓ(f(x_i; w), y_i) and the model's parameters w*.

    Args:
        model: the network; its current parameters are the reference point w*.
        loss_fn: ``loss_fn(prediction, target)`` returning the mean loss over the batch.
        inputs, targets: the data set, n rows each.
        batch_size: evaluate in batches of this many rows (``None``: one batch). The value and all
            derivatives equal the full-batch ones.

    Returns:
        ``(loss, params)``: a :class:`DataLoss` and the dict ``{name: parameter}`` (detached).

    Raises:
        TypeError / ValueError: not a module, no parameters, mismatched or empty data, bad batch size.

    Example:
        >>> net = torch.nn.Linear(3, 1).double()
        >>> x = torch.randn(10, 3, dtype=torch.float64)
        >>> loss, params = training_loss(net, torch.nn.functional.mse_loss, x, net(x).detach())
        >>> float(loss(params))
        0.0
    """
    params = _check_model_data(model, {"inputs": inputs, "targets": targets}, batch_size)
    return DataLoss("training", model, loss_fn, (inputs, targets), batch_size, dict(model.named_buffers())), params


def behavioral_loss(
    model: nn.Module, inputs: Tensor, *, kind: str = "mse", batch_size: int | None = None
) -> tuple[DataLoss, dict[str, Tensor]]:
    """The behavioral loss at w* = the model's current parameters, and w*.

    kind="mse": L_B(w) = (1/n)·Σ_x ‖f(x; w) − f(x; w*)‖²; its Hessian at w* is the Gauss–Newton
    matrix (2/n)·Σ_x J_xᵀJ_x. kind="kl": L_B(w) = (1/n)·Σ_x KL(p(·|x, w*) ‖ p(·|x, w)) with
    p = softmax of the outputs; its Hessian at w* is the Fisher matrix. Bushnaq et al. 2024,
    arXiv 2405.10927, §2.2. L_B ≥ 0 = L_B(w*), so w* is always a minimum.

    Args:
        model: the network at w*.
        inputs: the inputs x (n rows); the reference outputs f(x; w*) are computed here, once.
        kind: "mse" or "kl".
        batch_size: rows per batch (``None``: one batch).

    Returns:
        ``(loss, params)`` as for :func:`training_loss`.

    Raises:
        ValueError: unknown ``kind`` and the errors of :func:`training_loss`.

    Example:
        >>> net = torch.nn.Linear(3, 2).double()
        >>> loss, params = behavioral_loss(net, torch.randn(5, 3, dtype=torch.float64))
        >>> float(loss(params))
        0.0
    """
    if kind not in _BEHAVIORAL:
        raise ValueError(f"kind must be one of {sorted(_BEHAVIORAL)}, got {kind!r}")
    params = _check_model_data(model, {"inputs": inputs}, batch_size)
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        size = inputs.shape[0] if batch_size is None else batch_size
        reference = torch.cat(
            [functional_call(model, {**params, **buffers}, (inputs[s:s + size],)) for s in range(0, inputs.shape[0], size)]
        ).detach()
    return DataLoss(f"behavioral {kind}", model, _BEHAVIORAL[kind], (inputs, reference), batch_size, buffers), params
