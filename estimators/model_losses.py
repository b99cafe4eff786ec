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

A :class:`DataLoss` checks itself when it is built, with the package's one validator (shared with the
samplers, :mod:`slt_interp.estimators.input_checks`): data tensors must have matching rows and be finite, floating inputs must have the model's
dtype, the model must be deterministic (no dropout or batch norm in train mode: call ``model.eval()``)
and the loss must be a mean over the batch (the batched sum Σ_b (n_b/n)·ℓ_b is the full-batch value
only then). The behavioral reference outputs are computed once, in eval mode
(:func:`reference_outputs`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .input_checks import check_batch_size, check_data, check_model, forward, probe_loss
from .losses import behavioral_kl, behavioral_mse

__all__ = ["DataLoss", "training_loss", "behavioral_loss", "reference_outputs"]

_BEHAVIORAL = {"mse": behavioral_mse, "kl": behavioral_kl}


@dataclass(frozen=True)
class DataLoss:
    """L(params) = Σ_b (n_b / n)·ℓ(params; batch_b): a mean loss over n data points, in batches.

    The weighting n_b/n makes the batched sum equal the full-batch mean for any loss ℓ that is a mean
    over the batch (the first dimension of every data tensor). Building one validates the model and the
    data once (module docstring) and probes ``batch_loss`` on a few rows: a loss that sums over the batch
    (``reduction="sum"``), a loss that does not return a scalar, and a model whose outputs change between
    two evaluations at the same parameters are refused.

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

    def __post_init__(self) -> None:
        _check_model_data(self.model, {f"data[{i}]": t for i, t in enumerate(self.data)}, self.batch_size)
        probe_loss(self.model, self.parameters(), self.buffers, self.batch_loss, self.data)

    @property
    def num_samples(self) -> int:
        """n, the number of data points (rows of the data tensors)."""
        return int(self.data[0].shape[0])

    def parameters(self) -> dict[str, Tensor]:
        """w*: the model's current parameters ``{name: tensor}``, detached.

        Returns:
            The dict that :func:`training_loss` and :func:`behavioral_loss` return with the loss.
        """
        return {name: p.detach() for name, p in self.model.named_parameters()}

    def outputs(self, params: Mapping[str, Tensor], inputs: Tensor) -> Tensor:
        """f(inputs; params) through :func:`torch.func.functional_call`, with the buffers held fixed.

        Args:
            params: ``{name: tensor}`` (a subset of the model's parameters; the others keep their values).
            inputs: the model inputs.

        Returns:
            The model outputs.
        """
        return functional_call(self.model, {**params, **self.buffers}, (inputs,))

    def batches(self) -> Iterator[tuple[float, tuple[Tensor, ...]]]:
        """The data in batches of ``batch_size`` rows.

        Yields:
            ``(n_b / n, batch)``, ``batch`` the data tensors restricted to one batch.
        """
        n = self.num_samples
        size = n if self.batch_size is None else self.batch_size
        for start in range(0, n, size):
            batch = tuple(t[start:start + size] for t in self.data)
            yield batch[0].shape[0] / n, batch

    def on_batch(self, batch: tuple[Tensor, ...]) -> Callable[[Mapping[str, Tensor]], Tensor]:
        """The loss of one batch as a function of the params dict.

        Args:
            batch: the data tensors of one batch, inputs first.

        Returns:
            ``loss(params) -> scalar``, the mean loss ℓ(params; batch).
        """
        inputs, *rest = batch

        def loss(params: Mapping[str, Tensor]) -> Tensor:
            return self.batch_loss(self.outputs(params, inputs), *rest)

        return loss

    def __call__(self, params: Mapping[str, Tensor]) -> Tensor:
        """L(params) = Σ_b (n_b / n)·ℓ(params; batch_b).

        Args:
            params: ``{name: tensor}``.

        Returns:
            The mean loss over all n data points (a scalar tensor).
        """
        total = None
        for weight, batch in self.batches():
            term = weight * self.on_batch(batch)(params)
            total = term if total is None else total + term
        return total


def _check_model_data(
    model: nn.Module, tensors: dict[str, Tensor], batch_size: int | None, *, check_mode: bool = True
) -> dict[str, Tensor]:
    """:func:`check_model` + :func:`check_data` + :func:`check_batch_size`; returns w* (detached)."""
    params = check_model(model, check_mode=check_mode)
    check_data(tensors, next(iter(params.values())).dtype)
    check_batch_size(batch_size)
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
        inputs: the inputs x, n rows (floating inputs must have the parameters' dtype).
        targets: the targets y, n rows.
        batch_size: evaluate in batches of this many rows (``None``: one batch). The value and all
            derivatives equal the full-batch ones.

    Returns:
        ``(loss, params)``: a :class:`DataLoss` and the dict ``{name: parameter}`` (detached).

    Raises:
        TypeError: not a module; a non-tensor; floating inputs of another dtype than the parameters; a
            model that cannot be evaluated on the inputs (e.g. integer inputs to a linear layer); a loss
            that does not return a tensor.
        ValueError: no parameters or none with ``requires_grad``; mismatched or empty data; NaN/inf in
            the data (the message names the tensor); a bad batch size; a model in train mode with
            dropout or batch norm, or with random outputs (call ``model.eval()``); a loss that is not a
            scalar or sums over the batch (``reduction="sum"``).

    Example:
        >>> net = torch.nn.Linear(3, 1).double()
        >>> x = torch.randn(10, 3, dtype=torch.float64)
        >>> loss, params = training_loss(net, torch.nn.functional.mse_loss, x, net(x).detach())
        >>> float(loss(params))
        0.0
    """
    params = _check_model_data(model, {"inputs": inputs, "targets": targets}, batch_size)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(prediction, target), got {type(loss_fn).__name__}")
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
        ValueError: unknown ``kind``.
        TypeError: see :func:`training_loss` (the same validation).

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
    reference = reference_outputs(model, inputs, batch_size=batch_size)
    return DataLoss(f"behavioral {kind}", model, _BEHAVIORAL[kind], (inputs, reference), batch_size, buffers), params


def reference_outputs(model: nn.Module, inputs: Tensor, *, batch_size: int | None = None) -> Tensor:
    """The reference outputs f(x; w*) of the model at its current parameters, computed once.

    The model is evaluated in eval mode (``model.eval()`` for the duration of the call; its previous
    training flag is restored afterwards), with its current buffers, through
    :func:`torch.func.functional_call`, without gradient. These are the targets of the behavioral
    loss L_B(w) = (1/n)·Σ_x ‖f(x; w) − f(x; w*)‖² (Bushnaq et al. 2024, arXiv 2405.10927, §2.2;
    docs/theory.md §1): computing them in eval mode makes w* an exact minimum of L_B even for
    models with dropout or batch normalisation.

    Args:
        model: the network at w*.
        inputs: the inputs x, n rows.
        batch_size: evaluate in batches of this many rows (``None``: one batch).

    Returns:
        The detached outputs f(x; w*), concatenated over batches (first dimension n).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``inputs`` is not a Tensor or has another floating
            dtype than the parameters, or the model cannot be evaluated on it.
        ValueError: empty inputs or NaN/inf in them, a bad ``batch_size``, or a model without
            (trainable) parameters.
    """
    params = _check_model_data(model, {"inputs": inputs}, batch_size, check_mode=False)
    buffers = dict(model.named_buffers())
    size = inputs.shape[0] if batch_size is None else batch_size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outs = [forward(model, params, buffers, inputs[s:s + size]) for s in range(0, inputs.shape[0], size)]
    finally:
        model.train(was_training)
    return torch.cat(outs).detach()
