"""The components of a bilinear transformer and how terms and readouts address them.

A component is one writer into the residual stream: the embedding ("emb"), head h of layer l
("L{l}.H{h}") or the MLP of layer l ("L{l}.mlp"). Each reads the sum of the outputs of the components
before it (docs/theory.md §5). Shared by :mod:`~slt_interp.bilinear.expand` (which writes the terms) and
:mod:`~slt_interp.bilinear.prune` (which bounds them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .config import BilinearConfig

__all__ = ["Component", "component_graph", "readout_matrix", "term_index"]


@dataclass(frozen=True)
class Component:
    """One writer into the residual stream.

    Attributes:
        index: position in the forward order (0 is the embedding).
        name: "emb", "L{l}.H{h}" or "L{l}.mlp".
        kind: "embed", "head" or "mlp".
        layer: the block it sits in (None for the embedding).
        head: the head index (None unless ``kind == "head"``).
        sources: indices of the components whose outputs it reads (all earlier ones).
        terms: indices of the terms it writes in a
            :class:`~slt_interp.bilinear.expand.ComponentExpansion` (empty before the expansion is built).
    """

    index: int
    name: str
    kind: str
    layer: int | None
    head: int | None
    sources: tuple[int, ...]
    terms: range = range(0)


def component_graph(config: BilinearConfig) -> tuple[Component, ...]:
    """The components of a model with this config, in forward order.

    Args:
        config: the model's :class:`~slt_interp.bilinear.config.BilinearConfig`.

    Returns:
        The embedding, then per layer its heads (reading every earlier component) and its MLP (reading
        every earlier component, the layer's heads included). ``terms`` is left empty.

    Raises:
        TypeError: ``config`` is not a BilinearConfig.
    """
    if not isinstance(config, BilinearConfig):
        raise TypeError(f"component_graph needs a BilinearConfig, got {type(config).__name__}")
    comps = [Component(0, "emb", "embed", None, None, ())]
    for l in range(config.n_layers):
        before = tuple(range(len(comps)))
        for h in range(config.n_heads):
            comps.append(Component(len(comps), f"L{l}.H{h}", "head", l, h, before))
        if config.d_mlp > 0:
            comps.append(Component(len(comps), f"L{l}.mlp", "mlp", l, None, tuple(range(len(comps)))))
    return tuple(comps)


def readout_matrix(model, readout, dtype: torch.dtype, device) -> Tensor | None:
    """The readout M that maps the residual stream to the quantity expanded.

    Args:
        model: the :class:`~slt_interp.bilinear.model.BilinearTransformer`.
        readout: "logits" (M = W_U, out = vocab), "residual" (identity, out = d_model) or a
            (k, d_model) tensor such as SAE encoder directions.
        dtype: dtype of the returned matrix.
        device: device of the returned matrix.

    Returns:
        M of shape (out, d_model), or None for the identity ("residual").

    Raises:
        ValueError: an unknown readout string or a tensor of the wrong shape.
    """
    if isinstance(readout, str):
        if readout == "logits":
            return model.W_U.detach().to(dtype=dtype, device=device)
        if readout == "residual":
            return None
        raise ValueError(f"readout must be 'logits', 'residual' or a (k, d_model) tensor, got {readout!r}")
    if not isinstance(readout, Tensor) or readout.dim() != 2 or readout.shape[1] != model.config.d_model:
        raise ValueError(f"a readout tensor must have shape (k, {model.config.d_model}), got "
                         f"{getattr(readout, 'shape', type(readout).__name__)}")
    return readout.detach().to(dtype=dtype, device=device)


def term_index(selection, num_terms: int) -> Tensor:
    """Term indices from a selection.

    Args:
        selection: a sequence or tensor of term indices, or a boolean mask of shape (num_terms,).
        num_terms: the number of terms in the expansion.

    Returns:
        A 1-d int64 tensor of indices.

    Raises:
        ValueError: a boolean mask of the wrong shape, or an index outside [0, num_terms).
    """
    sel = torch.as_tensor(selection)
    if sel.dtype == torch.bool:
        if sel.shape != (num_terms,):
            raise ValueError(f"a boolean term mask must have shape ({num_terms},), got {tuple(sel.shape)}")
        return sel.nonzero().flatten()
    idx = sel.long().flatten()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_terms):
        raise ValueError(f"term indices must lie in [0, {num_terms}), got range [{int(idx.min())}, "
                         f"{int(idx.max())}]; use the indices of ComponentExpansion.terms")
    return idx
