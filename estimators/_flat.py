"""Flatten a loss of a Tensor or of a dict of Tensors into a function of one flat vector.

Every curvature and derivative routine in :mod:`estimators` works on ``f(w_flat) -> scalar``; this
module is the single place where a parameter dict is flattened and validated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Union

import torch
from torch import Tensor

Params = Union[Tensor, Mapping[str, Tensor]]


@dataclass(frozen=True)
class FlatProblem:
    """``fn(w) = loss(unflatten(w))`` for a flat vector ``w`` of length ``dim``.

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
        return self.w0.numel()

    def unflatten(self, w: Tensor) -> Params:
        return _unflatten(w, self.names, self.shapes, self.is_dict)


def _unflatten(w: Tensor, names, shapes, is_dict: bool) -> Params:
    sizes = [int(torch.Size(s).numel()) for s in shapes]
    parts = torch.split(w, sizes)
    if not is_dict:
        return parts[0].reshape(shapes[0])
    return {n: p.reshape(s) for n, p, s in zip(names, parts, shapes)}


def check_params(params: Params, what: str = "params") -> None:
    """Raise a ValueError naming the cause when parameters are not floating point or not finite."""
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

    Raises:
        TypeError / ValueError: non-tensor, non-floating or non-finite parameters, mixed devices or
            dtypes.
    """
    check_params(params)
    if isinstance(params, Mapping):
        names = tuple(params.keys())
        tensors = [params[n] for n in names]
        is_dict = True
    else:
        names, tensors, is_dict = ("w",), [params], False
    if not tensors:
        raise ValueError("params is empty")
    devices = {t.device for t in tensors}
    dtypes = {t.dtype for t in tensors}
    if len(devices) > 1 or len(dtypes) > 1:
        raise ValueError(f"all parameters must share one device and dtype, got {devices} and {dtypes}")
    shapes = tuple(t.shape for t in tensors)
    w0 = torch.cat([t.detach().reshape(-1) for t in tensors])

    def fn(w: Tensor) -> Tensor:
        return loss(_unflatten(w, names, shapes, is_dict))

    return FlatProblem(fn, w0, names, shapes, is_dict)
