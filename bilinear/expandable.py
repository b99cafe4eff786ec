"""Whether a model is exactly the polynomial that :func:`~slt_interp.bilinear.expand.expand` writes out.

The expansion is derived from the weights, the config and the reference computation of
:class:`~slt_interp.bilinear.model.BilinearTransformer` (docs/theory.md §5). Anything else that changes
the forward pass makes the terms sum to something else, so it is refused with :class:`NotExpandableError`:

* a softmax or normalisation layer (the model is not a polynomial);
* a forward hook or pre-hook, on the model, on any submodule, or registered globally
  (``torch.nn.modules.module.register_module_forward_hook``);
* a method of the reference computation overridden in a subclass, patched on the class, or replaced
  on an instance (``model.forward = ...``);
* a layer attribute or weight shape that differs from the config (``attn.normaliser``, ``n_ctx``, the
  number of heads or layers, the MLP, the positional embedding).

What slips through these checks is caught by :func:`verify_sum`: the sum of the terms is compared with
one forward pass on a few fixed token sequences before an expansion is returned.
"""
from __future__ import annotations

import os
import sys
import warnings

import torch
from torch import nn
from torch.nn.modules import module as _torch_module

from .config import BilinearConfig
from .layers import BilinearMLP, LinearAttention
from .model import BilinearTransformer, Block

__all__ = ["NotExpandableError", "check_expandable", "verify_sum", "sum_tolerance", "warn_low_precision"]


class NotExpandableError(TypeError):
    """The model is not exactly the polynomial the expansion writes out, so no exact expansion is returned.

    The message names the cause (softmax or normalisation, a hook, a patched method, an attribute that
    differs from the config, or a failed check of the sum against the forward pass) and the fix.
    """


# module types that make a transformer non-polynomial: softmax and every normalisation layer
_FORBIDDEN = (
    nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.MultiheadAttention, nn.LayerNorm, nn.GroupNorm,
    nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm,
    nn.Transformer, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

# the reference computation, captured when this module is imported (right after the classes are defined),
# so that patching a class later (BilinearTransformer.forward = ...) is detected too
_METHODS = {
    BilinearTransformer: ("forward", "residual", "embed", "component_outputs", "as_tokens"),
    Block: ("forward",),
    LinearAttention: ("forward", "pattern", "head_outputs"),
    BilinearMLP: ("forward",),
}
_CALL = ("__call__", "_call_impl", "_wrapped_call_impl")
_REFERENCE = {(cls, name): getattr(cls, name) for cls, names in _METHODS.items() for name in names + _CALL
              if hasattr(cls, name)}

_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _refuse_non_polynomial(model) -> None:
    if not isinstance(model, BilinearTransformer):
        raise NotExpandableError(
            f"expand() needs a slt_interp.bilinear.BilinearTransformer, got {type(model).__name__}. Only a transformer "
            "with linear (softmax-free) attention, bilinear MLPs and no normalisation layer is a polynomial in "
            "its embeddings; build one with slt_interp.bilinear.BilinearTransformer(BilinearConfig(...)) and train it."
        )
    for name, module in model.named_modules():
        if isinstance(module, _FORBIDDEN):
            raise NotExpandableError(
                f"module {name!r} is a {type(module).__name__}: softmax and normalisation layers divide by a "
                "data-dependent quantity, so the model is not a polynomial and no finite sum of terms equals "
                "its forward pass. Remove it (use the fixed normaliser BilinearConfig.normaliser='position')."
            )


def _refuse_hooks(model: BilinearTransformer) -> None:
    for kind in _GLOBAL_HOOKS:
        if getattr(_torch_module, kind, None):
            raise NotExpandableError(
                f"a global module forward {'pre-' if 'pre' in kind else ''}hook is registered (torch.nn.modules."
                "module.register_module_forward_" + ("pre_" if "pre" in kind else "") + "hook): it may change "
                "every module's output, so the terms would not sum to the forward pass. Remove it "
                "(handle.remove()) before calling expand()."
            )
    for name, module in model.named_modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks"):
            if getattr(module, kind, None):
                where = f"model.{name}" if name else "the model"
                raise NotExpandableError(
                    f"{where} has a forward {'pre-' if 'pre' in kind else ''}hook: it changes what the module "
                    "computes, so the terms (derived from the weights) would not sum to the forward pass. Remove "
                    "it (handle.remove() on the handle register_forward_" + ("pre_" if "pre" in kind else "")
                    + "hook returned) before calling expand()."
                )


def _refuse_patched_methods(model: BilinearTransformer) -> None:
    parts = [("the model", model, BilinearTransformer)]
    for l, block in enumerate(model.blocks):
        parts.append((f"model.blocks[{l}]", block, Block))
        parts.append((f"model.blocks[{l}].attn", getattr(block, "attn", None), LinearAttention))
        if getattr(block, "mlp", None) is not None:
            parts.append((f"model.blocks[{l}].mlp", block.mlp, BilinearMLP))
    for where, module, base in parts:
        if not isinstance(module, base):
            raise NotExpandableError(
                f"{where} is a {type(module).__name__} where the expansion expects the reference "
                f"{base.__name__}; a replaced layer may not be polynomial. Use the bilinear layers as built by "
                "BilinearTransformer(config) (copy weights into them with load_state_dict)."
            )
        for name in _METHODS[base] + _CALL:
            if name in vars(module):
                raise NotExpandableError(
                    f"{where} has its {name}() replaced on the instance: the expansion is derived for the "
                    f"reference {base.__name__} computation only. Delete the attribute (del {where}.{name}) or "
                    "expand a freshly built BilinearTransformer with the same weights (load_state_dict)."
                )
            if (base, name) in _REFERENCE and getattr(type(module), name) is not _REFERENCE[(base, name)]:
                owner = type(module).__name__
                raise NotExpandableError(
                    f"{owner} overrides {name}() ({where}; a subclass or a patched class): the expansion is "
                    f"derived for the reference {base.__name__} computation only (a changed forward may add "
                    "softmax or normalisation). Expand a plain BilinearTransformer with the same weights instead "
                    "(load_state_dict), with the original class methods restored."
                )


def _refuse_config_mismatch(model: BilinearTransformer) -> None:
    c = model.config
    if not isinstance(c, BilinearConfig):
        raise NotExpandableError(f"model.config is a {type(c).__name__}, not a BilinearConfig; build the model "
                                 "with BilinearTransformer(BilinearConfig(...))")
    fix = ("The forward pass uses the layer's value and the expansion the config's. Set it back, or build "
           "BilinearTransformer(BilinearConfig(...)) with the values you want and copy the weights in with "
           "load_state_dict.")

    def need(where: str, actual, expected) -> None:
        if actual != expected:
            raise NotExpandableError(f"{where} is {actual!r} but the config says {expected!r}. {fix}")

    def shape(where: str, tensor, expected: tuple) -> None:
        need(f"{where}.shape", tuple(getattr(tensor, "shape", ())), expected)

    need("len(model.blocks)", len(model.blocks), c.n_layers)
    shape("model.W_E", model.W_E, (c.vocab_size, c.d_model))
    shape("model.W_U", model.W_U, (c.vocab_size, c.d_model))
    need("model.W_pos is not None", model.W_pos is not None, c.positional)
    if model.W_pos is not None:
        shape("model.W_pos", model.W_pos, (c.n_ctx, c.d_model))
    for l, block in enumerate(model.blocks):
        attn, where = block.attn, f"model.blocks[{l}].attn"
        need(f"{where}.normaliser", attn.normaliser, c.normaliser)
        need(f"{where}.n_ctx", attn.n_ctx, c.n_ctx)
        for name in ("W_Q", "W_K", "W_V"):
            shape(f"{where}.{name}", getattr(attn, name), (c.n_heads, c.d_head, c.d_model))
        shape(f"{where}.W_O", attn.W_O, (c.n_heads, c.d_model, c.d_head))
        need(f"model.blocks[{l}].mlp is not None", block.mlp is not None, c.d_mlp > 0)
        if block.mlp is not None:
            where = f"model.blocks[{l}].mlp"
            shape(f"{where}.W", block.mlp.W, (c.d_mlp, c.d_model))
            shape(f"{where}.V", block.mlp.V, (c.d_mlp, c.d_model))
            shape(f"{where}.P", block.mlp.P, (c.d_model, c.d_mlp))
    kinds = {(p.dtype, p.device) for p in model.parameters()}
    if len(kinds) > 1:
        raise NotExpandableError(f"the model's parameters mix dtypes/devices {sorted(map(str, kinds))}; cast the "
                                 "whole model once, e.g. model.double() or model.to(device)")
    if not model.W_E.dtype.is_floating_point:
        raise NotExpandableError(f"the model's weights are {model.W_E.dtype}; cast them with model.double()")


def check_expandable(model) -> None:
    """Refuse a model that is not exactly the polynomial the expansion writes out.

    Structural checks only (cheap; run again before every evaluation); see the module docstring for the
    list, and :func:`verify_sum` for the numerical check.

    Args:
        model: the model handed to :func:`~slt_interp.bilinear.expand.expand`.

    Raises:
        NotExpandableError: not a BilinearTransformer, a softmax or normalisation layer, a forward hook, a
            patched or overridden method, or an attribute that differs from the config (the message names
            which, and the fix).
    """
    _refuse_non_polynomial(model)
    _refuse_patched_methods(model)
    _refuse_config_mismatch(model)
    _refuse_hooks(model)


def _user_stacklevel() -> int:
    """Return the stacklevel for warnings.warn called from this package: the first frame outside it."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    return level


def warn_low_precision(model: BilinearTransformer) -> None:
    """Warn (``warnings.warn``) when the model is float16 or bfloat16.

    The terms are then evaluated in that precision and their sum agrees with the forward pass only to a
    few digits.

    Args:
        model: the model being expanded.
    """
    dtype = model.W_E.dtype
    if dtype in (torch.float16, torch.bfloat16):
        warnings.warn(
            f"the model is {str(dtype).replace('torch.', '')}: the expansion's terms are evaluated in that precision "
            f"and sum to the forward pass only to about {torch.finfo(dtype).eps:.0e} of their size, not exactly. "
            "Call model.double() first (float64: exact to ~1e-15).",
            UserWarning, stacklevel=_user_stacklevel(),
        )


def sum_tolerance(dtype: torch.dtype, width: int = 16) -> float:
    """Relative tolerance of the check of the sum of terms against the forward pass.

    tol = 64·ε(dtype)·√(max(1, width/16)), relative to max Σ_terms |W_U| |term|: the rounding error of
    reordering a sum scales with the sum of the magnitudes of its parts, and that of a length-n dot
    product like √n·ε (Higham 2002, §3.1; probabilistic bound). Measured disagreement of exact models
    is below 2ε in float64, float32, float16 and bfloat16 (widths 8 to 512), so the margin is ≥ 32×.
    At width 16: 1.4e-14 in float64, 7.6e-6 in float32, 0.06 in float16 and 0.5 in bfloat16 (nearly
    void, hence :func:`warn_low_precision`).

    Args:
        dtype: the model's floating dtype.
        width: the largest inner dimension of the model (d_model, d_mlp, d_head·n_heads, n_ctx).

    Returns:
        The relative tolerance.
    """
    return 64 * torch.finfo(dtype).eps * max(1.0, width / 16) ** 0.5


def verify_sum(model: BilinearTransformer, term_values, *, num_sequences: int = 3, seed: int = 0) -> float:
    """Check that the terms sum to the forward pass on a few fixed random token sequences.

    With r_i the residual-stream value of term i, the check is
    max |W_U Σ_i r_i − model(tokens)| ≤ :func:`sum_tolerance` · max (Σ_i |W_U| |r_i|), over every
    sequence, position and logit. A hook, a patched method or a changed attribute that the structural
    checks of :func:`check_expandable` miss shows up here.

    Args:
        model: the model (already through :func:`check_expandable`).
        term_values: callable mapping tokens (B, T) to the terms' residual-stream values (num_terms, B, T, d_model).
        num_sequences: number of random sequences of length n_ctx (drawn from ``seed``).
        seed: seeds the sequences (an explicit generator; the global RNG is not touched).

    Returns:
        The relative disagreement found (below the tolerance).

    Raises:
        NotExpandableError: the sum disagrees with the forward pass beyond the tolerance, or the forward
            pass is not finite on the check sequences.
    """
    c = model.config
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, c.vocab_size, (num_sequences, c.n_ctx), generator=g).to(model.W_E.device)
    with torch.no_grad():
        forward = model(tokens)  # (B, T, V)
        values = term_values(tokens)  # (num_terms, B, T, d_model)
        W_U = model.W_U.detach()
        summed = values.sum(0) @ W_U.T  # (B, T, V)
        scale = values.abs().sum(0) @ W_U.abs().T  # (B, T, V): Σ_i |W_U| |r_i| ≥ Σ_i |W_U r_i|
    if not (torch.isfinite(forward).all() and torch.isfinite(summed).all()):
        raise NotExpandableError(
            f"the forward pass (or the sum of terms) is not finite on {num_sequences} random sequences of length "
            f"{c.n_ctx} in {model.W_E.dtype}, so the expansion cannot be checked; cast with model.double() first"
        )
    if forward.shape != summed.shape:
        raise NotExpandableError(f"the forward pass returned shape {tuple(forward.shape)}, the expansion "
                                 f"{tuple(summed.shape)}: the model does not compute logits W_U·r. Expand a plain "
                                 "BilinearTransformer with the same weights (load_state_dict).")
    err = float((summed - forward).abs().max())
    ref = float(scale.max())
    rel = err / ref if ref > 0 else (0.0 if err == 0 else float("inf"))
    tol = sum_tolerance(model.W_E.dtype, max(c.d_model, c.d_mlp, c.d_head * c.n_heads, c.n_ctx))
    if not rel <= tol:
        raise NotExpandableError(
            f"the sum of the expansion's terms differs from the forward pass by {err:.3g} (relative {rel:.2g} > "
            f"tolerance {tol:.2g} for {str(model.W_E.dtype).replace('torch.', '')}) on {num_sequences} random "
            f"sequences of length {c.n_ctx}: the forward pass computes something other than the polynomial written "
            "by the weights and the config (a hook, patched method or attribute the structural checks do not "
            "know). Expand a freshly built BilinearTransformer(config) with these weights (load_state_dict)."
        )
    return rel
