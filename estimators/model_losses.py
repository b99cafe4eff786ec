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

This module is the single validator of a model and its data (:class:`DataLoss` checks itself when it
is built): data tensors must have matching rows and be finite, floating inputs must have the model's
dtype, the model must be deterministic (no dropout or batch norm in train mode: call ``model.eval()``)
and the loss must be a mean over the batch (the batched sum Σ_b (n_b/n)·ℓ_b is the full-batch value
only then). The behavioral reference outputs are computed once, in eval mode
(:func:`reference_outputs`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

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
        _probe_batch_loss(self)

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


# layers whose train-mode output is random (dropout) or depends on the whole batch (batch norm)
_MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


def _check_model_data(
    model: nn.Module, tensors: dict[str, Tensor], batch_size: int | None, *, check_mode: bool = True
) -> dict[str, Tensor]:
    """The one validator of a model and its data.

    ``check_mode=False`` skips the train-mode check (for :func:`reference_outputs`, which evaluates in
    eval mode itself).

    Returns:
        w* = ``{name: parameter}`` (detached).

    Raises:
        TypeError: not a module, a non-tensor, or floating inputs of another dtype than the model.
        ValueError: no (trainable) parameters, a random model in train mode, bad rows, NaN/inf, bad
            batch size.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = dict(model.named_parameters())
    if not named:
        raise ValueError("the model has no parameters: there is nothing to take the curvature of")
    if not any(p.requires_grad for p in named.values()):
        raise ValueError(
            "all parameters of the model have requires_grad=False: nothing can be differentiated; call "
            "model.requires_grad_(True) (the parameters are not modified)"
        )
    params = {name: p.detach() for name, p in named.items()}
    dtype = next(iter(params.values())).dtype
    if check_mode and model.training:
        random = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _MODE_DEPENDENT)})
        if random:
            raise ValueError(
                f"the model is in train mode and has {', '.join(random)} layers: its outputs are random (dropout) "
                "or depend on the batch (batch norm), so losses, curvature and bounds at w* are not well defined; "
                "call model.eval() first"
            )
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
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(
                f"{label} contains {bad} NaN or inf entries: the loss and its curvature would be NaN; remove or "
                "impute those rows before building the loss"
            )
    if n == 0:
        raise ValueError("the data set is empty")
    inputs = next(iter(tensors.values()))
    if inputs.is_floating_point() and inputs.dtype != dtype:
        raise TypeError(
            f"the inputs are {inputs.dtype} but the model's parameters are {dtype}: convert one to the other "
            f"(inputs.to({dtype}) or model.to({inputs.dtype}); float64 for exact checks)"
        )
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None (one batch), got {batch_size!r}")
    return params


def _forward(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], inputs: Tensor) -> Tensor:
    """f(inputs; params), with a clear error when the model cannot be evaluated on these inputs."""
    try:
        return functional_call(model, {**params, **buffers}, (inputs,))
    except RuntimeError as error:
        hint = (
            f" The inputs have integer dtype {inputs.dtype}: convert them to the parameters' dtype "
            f"(inputs.to({next(iter(params.values())).dtype})) unless the model embeds integer tokens."
            if not (inputs.is_floating_point() or inputs.is_complex()) else ""
        )
        raise TypeError(
            f"the model cannot be evaluated on the inputs (shape {tuple(inputs.shape)}, dtype {inputs.dtype}): "
            f"{str(error).splitlines()[0]}.{hint}"
        ) from error


def _probe_batch_loss(loss: "DataLoss") -> None:
    """Evaluate the model and the batch loss on a few rows once: determinism, a scalar, mean reduction."""
    params = loss.parameters()
    rows = min(loss.num_samples, 4)
    inputs, *rest = (t[:rows] for t in loss.data)
    with torch.no_grad():
        out = _forward(loss.model, params, loss.buffers, inputs)
        again = _forward(loss.model, params, loss.buffers, inputs)
        if isinstance(out, Tensor) and not torch.equal(out, again):
            raise ValueError(
                "the model's outputs differ between two evaluations at the same parameters (a random layer, e.g. "
                "dropout, in train mode): curvature products would not be reproducible; call model.eval() first"
            )
        if not isinstance(out, Tensor) or not out.is_floating_point():
            return  # outputs of another kind (e.g. a model-output object): the loss is checked when evaluated
        # a deterministic perturbation makes the value non-zero even at an interpolating w*
        pattern = torch.cos(torch.arange(1, out.numel() + 1, dtype=out.dtype, device=out.device)).reshape(out.shape)
        z = out + 0.1 * (1 + out.abs()) * pattern
        value = loss.batch_loss(z, *rest)
        if not isinstance(value, Tensor):
            raise TypeError(f"the loss must return a torch.Tensor, got {type(value).__name__} (do not call .item())")
        if value.numel() != 1:
            raise ValueError(
                f"the loss must return a scalar (the mean over the batch), got shape {tuple(value.shape)}: use "
                "reduction='mean' or take .mean() over the batch"
            )
        doubled = loss.batch_loss(torch.cat([z, z]), *(torch.cat([t, t]) for t in rest))
        v1, v2 = float(value), float(doubled)
        if math.isfinite(v1) and math.isfinite(v2) and v1 != 0 and abs(v2 - 2 * v1) < abs(v2 - v1):
            raise ValueError(
                "the loss sums over the batch (its value doubles when the batch is repeated twice, e.g. "
                "reduction='sum'): the package's losses are means over the data — n_b/n batch weights, nβ·L_n in "
                "the sampler — so a sum is off by the batch size; pass the mean (reduction='mean', or divide by "
                "the number of rows)"
            )


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
            outs = [_forward(model, params, buffers, inputs[s:s + size]) for s in range(0, inputs.shape[0], size)]
    finally:
        model.train(was_training)
    return torch.cat(outs).detach()
