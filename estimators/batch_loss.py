"""The loss of a model over a list of batches — dict batches included — as a function of its parameters.

A :class:`~slt_interp.estimators.model_losses.DataLoss` holds the data as tensors with n rows. Language
models are usually fed dict batches instead (``input_ids`` / ``attention_mask`` / ``labels`` for a
Hugging Face causal LM), from a ``DataLoader`` or a list. :func:`batch_loss` turns such batches into
the same kind of loss, L(params) = Σ_b (n_b/n)·ℓ(params; batch_b), with the conventions of the
samplers (:func:`slt_interp.estimators.estimate_llc` with batch data):

* a dict batch is passed as keyword arguments, ``model(**batch)``, and its loss is
  ``loss_fn(output, batch)``, or with ``loss_fn=None`` the output's ``.loss`` (Hugging Face models
  compute it when the batch holds ``labels``);
* a tuple batch ``(x, *rest)`` gives ``loss_fn(model(x), *rest)``.

The model is evaluated in eval mode (dropout off, so that the loss is a function of the parameters)
through :func:`torch.func.functional_call` with its buffers held fixed. The curvature operators
(:class:`slt_interp.estimators.HessianOperator`) sum their products over the batches with weights
n_b/n, exactly as for a DataLoss.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from torch import Tensor, nn

from ._streaming import _batch_size_of, read_batches
from .input_checks import check_model, loss_of_batch

__all__ = ["BatchLoss", "batch_loss"]


@dataclass(frozen=True)
class BatchLoss:
    """L(params) = Σ_b (n_b / n)·ℓ(params; batch_b) over a fixed list of batches (tuples or dicts).

    n_b is the batch's number of rows (the first dimension of its first tensor); the weighting makes
    the sum the mean over the data set when ℓ is a mean over the rows of a batch. Build it with
    :func:`batch_loss`.

    Attributes:
        model: the ``nn.Module`` (its parameters are replaced by ``params`` at every call).
        loss_fn: ``loss_fn(output, batch)`` for dict batches, ``loss_fn(output, *rest)`` for tuple
            batches, or ``None`` (dict batches only: the output's ``.loss``).
        data: the batches, read once.
        buffers: the model's buffers, held fixed.
    """

    model: nn.Module = field(repr=False)
    loss_fn: Callable[..., Tensor] | None = field(repr=False)
    data: tuple[Any, ...] = field(repr=False)
    buffers: Mapping[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def num_samples(self) -> int:
        """n, the number of rows over all batches."""
        return sum(_batch_size_of(b) for b in self.data)

    def parameters(self) -> dict[str, Tensor]:
        """w*: the model's current parameters ``{name: tensor}``, detached.

        Returns:
            The dict that :func:`batch_loss` returns with the loss.
        """
        return {name: p.detach() for name, p in self.model.named_parameters()}

    def batches(self) -> Iterator[tuple[float, Any]]:
        """The batches with their weights.

        Yields:
            ``(n_b / n, batch)``.
        """
        n = self.num_samples
        for b in self.data:
            yield _batch_size_of(b) / n, b

    def on_batch(self, batch) -> Callable[[Mapping[str, Tensor]], Tensor]:
        """The loss of one batch as a function of the params dict.

        Args:
            batch: a dict of model keyword arguments, or a tuple ``(inputs, *rest)``.

        Returns:
            ``loss(params) -> scalar``.
        """

        def loss(params: Mapping[str, Tensor]) -> Tensor:
            return loss_of_batch(self.model, {**params, **self.buffers}, batch, self.loss_fn)

        return loss

    def __call__(self, params: Mapping[str, Tensor]) -> Tensor:
        """L(params) = Σ_b (n_b / n)·ℓ(params; batch_b).

        Args:
            params: ``{name: tensor}``.

        Returns:
            The mean loss over all batches (a scalar tensor).
        """
        total = None
        for weight, batch in self.batches():
            term = weight * self.on_batch(batch)(params)
            total = term if total is None else total + term
        return total


def batch_loss(model: nn.Module, data, loss_fn: Callable[..., Tensor] | None = None) -> tuple[BatchLoss, dict[str, Tensor]]:
    """The loss of ``model`` over batches of ``data`` (dicts or tuples), and its parameters w*.

    L(w) = Σ_b (n_b/n)·ℓ(w; batch_b), ℓ the mean loss of a batch (module docstring).

    Args:
        model: the network; its current parameters are w*.
        data: a ``DataLoader`` or a re-iterable of batches (dicts of model keyword arguments, or
            ``(inputs, *rest)`` tuples); read once.
        loss_fn: ``loss_fn(output, batch)`` for dict batches, ``loss_fn(output, *rest)`` for tuple
            batches; ``None`` takes the output's ``.loss`` (dict batches only).

    Returns:
        ``(loss, params)``: a :class:`BatchLoss` and ``{name: parameter}`` (detached).

    Raises:
        TypeError: ``model`` is not a module, or ``data`` is a one-shot iterator.
        ValueError: no batches; ``loss_fn=None`` with tuple batches.

    Example:
        >>> net = torch.nn.Linear(3, 1).double()
        >>> x = torch.randn(8, 3, dtype=torch.float64)
        >>> batches = [{"input": x[:5]}, {"input": x[5:]}]
        >>> loss, params = batch_loss(net, batches, lambda out, b: (out ** 2).mean())
        >>> bool(torch.isclose(loss(params), (net(x) ** 2).mean()))
        True
    """
    params = check_model(model, check_mode=False)
    batches = read_batches(data)
    if loss_fn is None and not all(isinstance(b, Mapping) for b in batches):
        raise ValueError("loss_fn=None takes the loss from the model output (`.loss`), which needs dict batches; pass "
                         "loss_fn(output, *rest) for (inputs, *rest) batches")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    return BatchLoss(model, loss_fn, tuple(batches), dict(model.named_buffers())), params
