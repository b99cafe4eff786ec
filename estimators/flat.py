"""Flatten a loss of a Tensor or of a dict of Tensors into a function of one flat vector.

Every curvature and derivative routine in :mod:`slt_interp.estimators` works on
``f(w_flat) -> scalar``; this module is the single place where a parameter dict is flattened and
validated (:func:`flatten`, :func:`check_params`), and where the value of a loss is checked once
(:func:`check_loss_value`: a finite real scalar that depends on the parameters through autograd).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Union

import torch
from torch import Tensor

__all__ = ["FlatProblem", "Params", "check_loss_value", "check_params", "flatten", "unflatten"]

Params = Union[Tensor, Mapping[str, Tensor]]


@dataclass(frozen=True)
class FlatProblem:
    """``fn(w) = loss(unflatten(w))`` for a flat vector ``w`` of length ``dim``.

    Built by :func:`flatten`; the parameters are concatenated in the order of the params dict.

    Attributes:
        fn: the loss as a function of the flat vector.
        w0: the reference point w*, flattened (detached).
        names: parameter names (``("w",)`` for a single tensor).
        shapes: their shapes.
        is_dict: whether the user passed a dict.
    """

    fn: Callable[[Tensor], Tensor]
    w0: Tensor
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    is_dict: bool

    @property
    def dim(self) -> int:
        """d, the number of scalar parameters."""
        return self.w0.numel()

    def unflatten(self, w: Tensor) -> Params:
        """The params (a Tensor or a dict of Tensors, as passed to :func:`flatten`) of a flat vector.

        Args:
            w: a flat vector of length ``dim``.

        Returns:
            The Tensor or dict of Tensors with the original names and shapes (views of ``w``).
        """
        return unflatten(w, self.names, self.shapes, self.is_dict)


def unflatten(w: Tensor, names: tuple[str, ...], shapes: tuple[torch.Size, ...], is_dict: bool) -> Params:
    """Split a flat vector into tensors of the given shapes.

    Args:
        w: the flat vector (length Σ numel(shape)).
        names: the parameter names (dict keys).
        shapes: their shapes, in order.
        is_dict: return a dict ``{name: tensor}`` (True) or the single tensor (False).

    Returns:
        The dict of views, or the single view when ``is_dict`` is False.
    """
    sizes = [int(torch.Size(s).numel()) for s in shapes]
    parts = torch.split(w, sizes)
    if not is_dict:
        return parts[0].reshape(shapes[0])
    return {n: p.reshape(s) for n, p, s in zip(names, parts, shapes)}


def check_params(params: Params, what: str = "params") -> None:
    """Check that parameters are finite floating-point tensors.

    Args:
        params: a Tensor or a dict of Tensors.
        what: how to name them in error messages.

    Raises:
        TypeError: a value is not a Tensor or not floating point.
        ValueError: a value contains NaN or inf.
    """
    items = params.items() if isinstance(params, Mapping) else [("", params)]
    for name, p in items:
        label = f"{what}[{name!r}]" if name else what
        if not isinstance(p, Tensor):
            raise TypeError(f"{label} must be a torch.Tensor, got {type(p).__name__}")
        if not p.is_floating_point():
            raise TypeError(f"{label} has dtype {p.dtype}; parameters must be floating point (use float64 for exact checks)")
        if not torch.isfinite(p).all():
            raise ValueError(
                f"{label} contains NaN or inf: the reference point w* must be finite "
                "(check the training run that produced it)"
            )


def flatten(loss: Callable[[Params], Tensor], params: Params) -> FlatProblem:
    """Wrap ``loss(params)`` as ``fn(w_flat)``; ``params`` is a Tensor or a dict of Tensors.

    Args:
        loss: ``loss(params) -> scalar``.
        params: w*, a Tensor or a dict of Tensors on one device with one dtype.

    Returns:
        The :class:`FlatProblem` with ``w0`` = w* flattened (detached).

    Raises:
        TypeError: non-tensor or non-floating parameters.
        ValueError: non-finite or empty parameters, mixed devices or dtypes.
    """
    check_params(params)
    if isinstance(params, Mapping):
        names = tuple(params.keys())
        tensors = [params[n] for n in names]
        is_dict = True
    else:
        names, tensors, is_dict = ("w",), [params], False
    if not tensors:
        raise ValueError("params is empty: pass the parameters to differentiate (a Tensor or a non-empty dict)")
    devices = {t.device for t in tensors}
    dtypes = {t.dtype for t in tensors}
    if len(devices) > 1 or len(dtypes) > 1:
        raise ValueError(
            f"all parameters must share one device and dtype, got {devices} and {dtypes}: convert the model "
            "(e.g. model.double() or model.to(device)) before building the loss"
        )
    shapes = tuple(t.shape for t in tensors)
    w0 = torch.cat([t.detach().reshape(-1) for t in tensors])

    def fn(w: Tensor) -> Tensor:
        return loss(unflatten(w, names, shapes, is_dict))

    return FlatProblem(fn, w0, names, shapes, is_dict)


def check_loss_value(problem: FlatProblem, what: str = "loss") -> Tensor:
    """Evaluate the loss once at w* and check that curvature can be taken of it.

    Args:
        problem: the flat loss.
        what: how to name the loss in error messages.

    Returns:
        L(w*), detached.

    Raises:
        TypeError: the loss does not return a Tensor, returns a non-floating tensor, or a tensor that
            does not depend on the parameters through autograd (detached, ``.item()``, numpy, or
            computed under ``torch.no_grad()``).
        ValueError: the loss returns more than one number (e.g. ``reduction="none"``) or NaN/inf.
    """
    w = problem.w0.clone().requires_grad_(True)
    with torch.enable_grad():
        value = problem.fn(w)
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{what} must return a torch.Tensor, got {type(value).__name__}: return the tensor itself, not "
            "a Python number (no .item())"
        )
    if value.numel() != 1:
        raise ValueError(
            f"{what} must return a scalar, got a tensor of shape {tuple(value.shape)}: reduce it to one number "
            "(e.g. reduction='mean', or .mean() over the batch)"
        )
    if not value.is_floating_point():
        raise TypeError(f"{what} returned dtype {value.dtype}: it must be a floating-point scalar")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(
            f"{what} is {float(value)} at w*: it must be finite there (check the data and the parameters for "
            "NaN/inf, and the loss for log(0) or division by zero)"
        )
    if not value.requires_grad:
        raise TypeError(
            f"{what} does not depend on the parameters through autograd (its value has no gradient): it was "
            "detached, computed through .item()/.numpy(), or under torch.no_grad(); compute it from the params "
            "it is given with torch operations"
        )
    return value.detach().reshape(())
