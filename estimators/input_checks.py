"""The one validator of a model, its parameters, its data and its loss, shared by every entry point.

The curvature path (:mod:`slt_interp.estimators.model_losses`: ``training_loss``, ``behavioral_loss``,
``DataLoss``) and the sampler path (``estimate_llc``'s tensor and streamed problems) check their input
here, with the same rules and the same messages:

* :func:`check_model` — an ``nn.Module`` with parameters, floating point, one dtype, finite (w* must
  be a point of parameter space), and, where the model is evaluated in its own mode, no random layer
  in train mode;
* :func:`check_data` — tensors with a leading sample dimension, matching rows, no NaN/inf (the message
  names the tensor), floating inputs in the parameters' dtype;
* :func:`probe_loss` — one evaluation on a few rows: the model takes the inputs, its outputs are
  deterministic, the loss is a scalar tensor, a mean over the batch (not a sum) and, where gradients
  are needed, attached to the parameters;
* :func:`flat_model` — the parameters as one flat vector w* (with :func:`slt_interp.estimators.flat.unflatten`)
  and the mask of sampled coordinates;
* :func:`materialize` — a Dataset / DataLoader / tuple of tensors as stacked sample tensors.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import DataLoader, Dataset

from .flat import check_params, unflatten

ParamSelection = Union[None, Sequence[str], Mapping[str, Tensor]]

# layers whose train-mode output is random (dropout) or depends on the whole batch (batch norm)
_MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


def check_model(model: nn.Module, *, check_mode: bool = True, need_trainable: bool = True) -> dict[str, Tensor]:
    """Check a model once and return w* = ``{name: parameter}`` (detached).

    ``check_mode=False`` where the caller evaluates the model in eval mode itself (the samplers and
    :func:`~slt_interp.estimators.model_losses.reference_outputs`); ``need_trainable=False`` where the
    parameters to use are selected otherwise (the samplers' ``params=``).

    Args:
        model: the network; its current parameters are w*.
        check_mode: refuse a random layer (dropout, batch norm) in train mode.
        need_trainable: refuse a model whose parameters all have ``requires_grad=False``.

    Returns:
        ``{name: parameter}``, detached.

    Raises:
        TypeError: not a module; a parameter that is not floating point.
        ValueError: no parameters, none with ``requires_grad``, mixed dtypes or devices, NaN/inf in a
            parameter, or a random layer in train mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = dict(model.named_parameters())
    if not named:
        raise ValueError("the model has no parameters: there is nothing to differentiate or sample")
    if need_trainable and not any(p.requires_grad for p in named.values()):
        raise ValueError(
            "all parameters of the model have requires_grad=False: nothing can be differentiated; call "
            "model.requires_grad_(True) (the parameters are not modified)"
        )
    params = {name: p.detach() for name, p in named.items()}
    for name, p in params.items():
        if not p.is_floating_point():
            raise TypeError(f"parameter {name!r} has dtype {p.dtype}; the parameters must be floating point")
    check_params(params, what="parameter")
    dtypes = {p.dtype for p in params.values()}
    devices = {p.device for p in params.values()}
    if len(dtypes) > 1 or len(devices) > 1:
        raise ValueError(
            f"all parameters must share one dtype and device, got {sorted(map(str, dtypes))} on "
            f"{sorted(map(str, devices))}: convert the model (model.double() or model.to(device)) first"
        )
    if check_mode and model.training:
        random = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _MODE_DEPENDENT)})
        if random:
            raise ValueError(
                f"the model is in train mode and has {', '.join(random)} layers: its outputs are random (dropout) "
                "or depend on the batch (batch norm), so losses, curvature and bounds at w* are not well defined; "
                "call model.eval() first"
            )
    return params


def check_data(tensors: Mapping[str, Tensor], dtype: torch.dtype | None = None) -> int:
    """Check data tensors (the first holds the inputs) and return n, their number of rows.

    Args:
        tensors: ``{label: tensor}``; labels name the tensors in messages.
        dtype: the parameters' dtype that floating inputs must have (``None``: not checked, for callers
            that convert the inputs themselves).

    Returns:
        n.

    Raises:
        TypeError: a non-tensor; floating inputs of another dtype than ``dtype``.
        ValueError: a scalar, mismatched rows, NaN/inf (naming the tensor and the count), no rows.
    """
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
                "impute those rows first"
            )
    if not n:
        raise ValueError("the data set is empty")
    inputs = next(iter(tensors.values()))
    if dtype is not None and inputs.is_floating_point() and inputs.dtype != dtype:
        raise TypeError(
            f"the inputs are {inputs.dtype} but the model's parameters are {dtype}: convert one to the other "
            f"(inputs.to({dtype}) or model.to({inputs.dtype}); float64 for exact checks)"
        )
    return int(n)


def check_batch_size(batch_size) -> None:
    """Refuse a batch size that is not a positive int (``None`` = one batch).

    Args:
        batch_size: the value to check.

    Raises:
        ValueError: a bool, a non-int or a value < 1.
    """
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None (one batch), got {batch_size!r}")


@contextmanager
def eval_mode(model: nn.Module, enabled: bool = True):
    """Evaluate ``model`` in eval mode for the duration (its training flag is restored after)."""
    was = model.training
    if enabled and was:
        model.eval()
    try:
        yield
    finally:
        if enabled and was:
            model.train(True)


def forward(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], inputs: Tensor):
    """f(inputs; params) through :func:`torch.func.functional_call`, with a clear error when it fails.

    Args:
        model: the network.
        params: ``{name: tensor}`` in place of its parameters.
        buffers: its buffers, held fixed.
        inputs: the model inputs.

    Returns:
        The model outputs.

    Raises:
        TypeError: the model cannot be evaluated on the inputs (the message suggests the dtype
            conversion for integer inputs to a floating model).
    """
    try:
        return functional_call(model, {**params, **buffers}, (inputs,))
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        dtype = next(iter(params.values())).dtype
        hint = (
            f" The inputs have integer dtype {inputs.dtype}: convert them with x.to({dtype}) unless the model "
            "embeds integer tokens."
            if isinstance(inputs, Tensor) and not (inputs.is_floating_point() or inputs.is_complex()) else ""
        )
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise TypeError(
            f"the model cannot take the inputs (shape {shape}, dtype {getattr(inputs, 'dtype', None)}): "
            f"{type(error).__name__}: {str(error).splitlines()[0][:200]}.{hint}"
        ) from error


def probe_loss(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
               batch_loss: Callable[..., Tensor], data: Sequence[Tensor], *, in_eval_mode: bool = False,
               need_grad: bool = False) -> None:
    """Evaluate the model and ``batch_loss(outputs, *rest)`` on a few rows once and refuse the usual mistakes.

    Checks: the model takes the inputs; two evaluations at the same parameters agree (no random layer);
    the loss is a scalar tensor; it is a mean over the batch — its value on the batch repeated twice
    equals its value on the batch, where a sum doubles (probed at perturbed outputs, so that an
    interpolating w* with zero loss is probed too); with ``need_grad``, the value is attached to the
    parameters through autograd (the samplers follow its gradient).

    Raises:
        TypeError: the model cannot be evaluated, or the loss is not a tensor.
        ValueError: random outputs, a non-scalar loss, a summed loss, or a detached loss.
    """
    rows = min(int(data[0].shape[0]), 32)
    inputs, *rest = (t[:rows] for t in data)
    with eval_mode(model, in_eval_mode):
        with torch.no_grad():
            out = forward(model, params, buffers, inputs)
            again = forward(model, params, buffers, inputs)
        if isinstance(out, Tensor) and not torch.equal(out, again):
            raise ValueError(
                "the model's outputs differ between two evaluations at the same parameters (a random layer, e.g. "
                "dropout, in train mode): the loss is not a function of the parameters; call model.eval() first"
            )
        if need_grad:
            attached = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
            with torch.enable_grad():
                value = batch_loss(forward(model, attached, buffers, inputs), *rest)
            _check_scalar(value)
            if not value.requires_grad:
                raise ValueError(
                    "loss_fn's value does not depend on the parameters through autograd (it is detached: .detach(), "
                    ".item(), torch.no_grad() or numpy inside loss_fn or the model), so there is no gradient to "
                    "follow; compute the loss with differentiable torch operations on the model's output")
    if not isinstance(out, Tensor) or not out.is_floating_point():
        return  # outputs of another kind (e.g. a model-output object): the loss is checked when evaluated
    with torch.no_grad():
        pattern = torch.cos(torch.arange(1, out.numel() + 1, dtype=out.dtype, device=out.device)).reshape(out.shape)
        z = out + 0.1 * (1 + out.abs()) * pattern
        value = batch_loss(z, *rest)
        _check_scalar(value)
        doubled = batch_loss(torch.cat([z, z]), *(torch.cat([t, t]) for t in rest))
    v1, v2 = float(value), float(doubled)
    if math.isfinite(v1) and math.isfinite(v2) and v1 != 0 and abs(v2 - 2 * v1) < abs(v2 - v1):
        raise ValueError(
            "loss_fn sums over the batch (its value doubles when the batch is repeated twice, e.g. "
            "reduction='sum'): the package's losses are means L_n = (1/n)·Σ ℓ_i over the data — n_b/n batch "
            "weights, nβ·L_n in the sampler — and a summed loss is n times the mean, so the chains would diverge "
            "and λ̂ be off by that factor; pass the mean (reduction='mean', or .mean() over the batch)"
        )


def _check_scalar(value) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"loss_fn must return a torch scalar tensor (the mean loss over the batch), got "
                        f"{type(value).__name__}; return a tensor built from the prediction (no .item() or float())")
    if value.numel() != 1:
        raise ValueError(f"loss_fn returned a tensor of shape {tuple(value.shape)}, not a scalar: it must return a scalar, "
                         "the MEAN loss over the batch; reduce it with .mean() (or reduction='mean' for torch losses)")


def materialize(data, what: str = "data") -> tuple[tuple[Tensor, ...], int | None]:
    """All samples of ``data`` as a tuple of stacked tensors, and the DataLoader's batch size if any.

    ``data``: a tuple/list of tensors with a common first dimension, a ``torch.utils.data.Dataset``
    whose items are tensors or tuples of tensors, or a ``DataLoader`` over such a data set. The
    vectorised chains need random access to every sample, so the data set is held in memory.

    Args:
        data: the data set.
        what: how to name it in messages.

    Returns:
        ``(tensors, batch_size)``: the stacked sample tensors and the DataLoader's batch size (or None).

    Raises:
        TypeError: another kind of data, a Dataset without a length, items that are not tensors.
        ValueError: mismatched first dimensions, an empty Dataset.
    """
    loader_batch = None
    if isinstance(data, DataLoader):
        loader_batch = data.batch_size
        data = data.dataset
    if isinstance(data, Tensor):
        return (data,), loader_batch
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
        sizes = {t.shape[0] if t.dim() else None for t in data}
        if len(sizes) != 1 or None in sizes:
            raise ValueError(
                f"{what}: the tensors must share their first (sample) dimension, got shapes "
                f"{[tuple(t.shape) for t in data]}"
            )
        return tuple(data), loader_batch
    if isinstance(data, Dataset):
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError as e:
            raise TypeError(f"{what}: the Dataset must have a length (an iterable data set cannot be sampled at random)") from e
        if n == 0:
            raise ValueError(f"{what}: the Dataset is empty")
        items = [data[i] for i in range(n)]
        first = items[0]
        if isinstance(first, Tensor):
            return (torch.stack(items),), loader_batch
        if isinstance(first, (tuple, list)) and all(isinstance(t, Tensor) for t in first):
            return tuple(torch.stack([it[k] for it in items]) for k in range(len(first))), loader_batch
        raise TypeError(f"{what}: Dataset items must be tensors or tuples of tensors, got {type(first).__name__}")
    raise TypeError(
        f"{what} must be a pair (inputs, targets) of tensors, a torch Dataset or a DataLoader; got {type(data).__name__}"
    )


def _selection_mask(model: nn.Module, params: ParamSelection, flat_names, shapes) -> Tensor | None:
    named = dict(model.named_parameters())
    if params is None:
        if all(p.requires_grad for p in named.values()):
            return None
        chosen = {n: torch.ones(named[n].shape, dtype=torch.bool) for n in flat_names if named[n].requires_grad}
    elif isinstance(params, Mapping):
        chosen = {}
        for n, m in params.items():
            if n not in named:
                raise ValueError(f"params: unknown parameter {n!r}; the model has {sorted(named)}")
            m = torch.as_tensor(m)
            if m.dtype != torch.bool or m.shape != named[n].shape:
                raise ValueError(
                    f"params[{n!r}] must be a boolean mask of shape {tuple(named[n].shape)}, "
                    f"got dtype {m.dtype} and shape {tuple(m.shape)}"
                )
            chosen[n] = m.cpu()
    else:
        if isinstance(params, str):
            raise TypeError("params must be a list of parameter names (or a dict name → boolean mask), not one string")
        chosen = {}
        for n in params:
            if n not in named:
                raise ValueError(f"params: unknown parameter {n!r}; the model has {sorted(named)}")
            chosen[n] = torch.ones(named[n].shape, dtype=torch.bool)
    if params is None and not chosen:
        raise ValueError("every parameter of the model has requires_grad=False, so there is nothing to sample; call "
                         "requires_grad_(True) on the parameters to sample, or name them with params=[...]")
    parts = [chosen.get(n, torch.zeros(s, dtype=torch.bool)).reshape(-1) for n, s in zip(flat_names, shapes)]
    mask = torch.cat(parts)
    if not mask.any():
        raise ValueError("params selects no coordinate to sample; name at least one parameter (or a non-empty mask)")
    return mask


@dataclass(frozen=True)
class FlatModel:
    """A model's parameters as one flat w* (in ``named_parameters`` order), checked by :func:`check_model`.

    Attributes:
        names: parameter names.
        shapes: their shapes.
        w0: w* flattened, on ``device``.
        buffers: the model's buffers on ``device`` (held fixed).
        mask: the sampled coordinates (1.0 / 0.0 in w0's dtype), or ``None`` for all.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    w0: Tensor
    buffers: dict[str, Tensor]
    mask: Tensor | None

    @property
    def device(self) -> torch.device:
        """The device of w*."""
        return self.w0.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of w*."""
        return self.w0.dtype

    def unflatten(self, w: Tensor) -> dict[str, Tensor]:
        """``{name: view}`` of a flat vector (see :func:`slt_interp.estimators.flat.unflatten`)."""
        return unflatten(w, self.names, self.shapes, True)


def flat_model(model: nn.Module, params: ParamSelection, device=None) -> FlatModel:
    """w* of ``model`` as a :class:`FlatModel` on ``device`` (default: the parameters' device).

    Args:
        model: the network.
        params: the sampled parameters: None (those with ``requires_grad``), a list of names, or a dict
            name → boolean mask.
        device: where w* and the buffers go.

    Returns:
        The :class:`FlatModel`.

    Raises:
        TypeError, ValueError: see :func:`check_model` and the ``params`` selection rules.
    """
    named = check_model(model, check_mode=False, need_trainable=False)
    first = next(iter(named.values()))
    dev = torch.device(device) if device is not None else first.device
    names = tuple(named)
    shapes = tuple(named[n].shape for n in names)
    w0 = torch.cat([named[n].reshape(-1) for n in names]).to(dev)
    buffers = {n: b.to(dev) for n, b in model.named_buffers()}
    mask = _selection_mask(model, params, names, shapes)
    if mask is not None:
        mask = mask.to(device=dev, dtype=w0.dtype)
    return FlatModel(names, shapes, w0, buffers, mask)


def loss_of_batch(model: nn.Module, values: Mapping[str, Tensor], batch, loss_fn: Callable | None) -> Tensor:
    """The loss of one batch at parameters-and-buffers ``values``, in eval mode.

    Tuple batches: ``loss_fn(model(x), *rest)``. Dict batches: ``loss_fn(model(**batch), batch)``, or with
    ``loss_fn=None`` the model output's ``.loss`` (Hugging Face models compute it when the batch holds
    ``labels``). Shared by the streamed samplers and :class:`slt_interp.estimators.BatchLoss`.

    Args:
        model: the network.
        values: ``{name: tensor}`` for its parameters and buffers.
        batch: a tuple of tensors (inputs first) or a dict.
        loss_fn: the loss, or None for a dict batch whose model output carries ``.loss``.

    Returns:
        The scalar loss.

    Raises:
        ValueError: ``loss_fn=None`` and the output has no ``.loss``.
    """
    with eval_mode(model):
        if isinstance(batch, Mapping):
            out = functional_call(model, dict(values), args=(), kwargs=dict(batch))
            if loss_fn is not None:
                return loss_fn(out, batch)
            value = getattr(out, "loss", None)
            if value is None and isinstance(out, Mapping):
                value = out.get("loss")
            if value is None:
                raise ValueError("loss_fn=None but the model output has no `.loss`: put `labels` in the batches "
                                 "(Hugging Face models then return the loss) or pass loss_fn(output, batch)")
            return value
        x, *rest = batch
        return loss_fn(functional_call(model, dict(values), (x,)), *rest)

