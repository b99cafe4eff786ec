"""Sampler checkpoints: a fingerprint of everything that changes the result, atomic writes, checked reads.

A checkpoint holds the chains' state (points, generators, traces so far) and a *fingerprint*: content
hashes of the data and of w*, the parameter selection, the identity of the loss (qualified name and
source) and of the model (class and architecture), and every sampler setting. Resuming refuses a
checkpoint whose fingerprint differs in any item and names the items, so draws made with other data
of the same size, another loss, another ``params`` selection or another w* are never mixed in.

Files are written to ``<path>.tmp`` and renamed (:func:`os.replace`), so a process killed while
writing leaves the previous checkpoint intact. Reads use ``torch.load(weights_only=True)`` (no
arbitrary pickles) and turn truncated, corrupted or foreign files into a ``ValueError`` that says
what is wrong and what to do.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

FORMAT = "slt_interp.sampler_checkpoint"
VERSION = 2

#: fingerprint item -> how a mismatch is described to the user
LABELS = {
    "data": "data (content hash of the data tensors)",
    "w_star": "w* (content hash of the parameters at the centre)",
    "params": "parameter selection (params=)",
    "loss": "loss function (loss_fn: qualified name and source)",
    "model": "model (class and architecture)",
    "num_samples": "number of samples n",
    "dim": "number of parameters",
}


def tensor_digest(*tensors: Tensor | None) -> str:
    """SHA-256 (first 16 hex digits) of the shapes, dtypes and bytes of the tensors (None allowed)."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none;")
            continue
        t = t.detach()
        h.update(f"{tuple(t.shape)}|{t.dtype};".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _simple(value: Any) -> str | None:
    if isinstance(value, (bool, int, float, str, type(None))):
        return repr(value)
    if isinstance(value, Tensor):
        return tensor_digest(value)
    return None


def callable_identity(fn: Callable) -> str:
    """A digest of what a callable computes: qualified name, source (or bytecode), the simple values it
    closes over, and for an ``nn.Module`` loss its ``repr`` (e.g. ``reduction='sum'``). The module name
    is left out, so the same function run as a script (``__main__``) and imported is the same loss."""
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn)
    parts = [getattr(target, "__qualname__", type(fn).__qualname__)]
    try:
        parts.append(inspect.getsource(target))
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if code is not None:
            parts += [code.co_code.hex(), repr(code.co_consts)]
    closure = getattr(fn, "__closure__", None) or ()
    for cell in closure:
        try:
            parts.append(str(_simple(cell.cell_contents)))
        except ValueError:  # an empty cell
            parts.append("<empty>")
    if isinstance(fn, torch.nn.Module):
        parts.append(repr(fn))
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _normalise(value: Any) -> Any:
    if isinstance(value, Tensor):
        return [float(v) for v in value.detach().double().reshape(-1).cpu()]
    if isinstance(value, tuple):
        return list(value)
    return value


def fingerprint(identity: Mapping[str, Any], settings: Mapping[str, Any]) -> dict:
    """The fingerprint dict: the problem's identity items and the sampler settings (prefixed ``setting.``)."""
    fp = {k: _normalise(v) for k, v in identity.items()}
    fp.update({f"setting.{k}": _normalise(v) for k, v in settings.items()})
    return fp


def describe_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable names of the fingerprint items that differ."""
    out = []
    for k in sorted(set(saved) | set(current)):
        a, b = saved.get(k, "<absent>"), current.get(k, "<absent>")
        if a == b:
            continue
        if k.startswith("setting."):
            out.append(f"sampler setting {k[len('setting.'):]} ({a!r} in the checkpoint, {b!r} now)")
        else:
            out.append(LABELS.get(k, k))
    return out


def check_path(path: str | os.PathLike) -> Path:
    """Validate ``checkpoint_path`` before any sampling: not a directory, and its folder writable."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"checkpoint_path {str(p)!r} is a directory; pass a file path inside it, e.g. "
                         f"{str(p / 'llc_checkpoint.pt')!r}")
    parent = p.parent if str(p.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the folder {str(parent)!r} for checkpoint_path ({e}); pass a path in a "
                         "writable folder") from e
    if not os.access(parent, os.W_OK):
        raise ValueError(f"the folder {str(parent)!r} of checkpoint_path is not writable; pass a path in a writable folder")
    return p


def previous(path: Path) -> Path:
    """Where :func:`save` with ``keep_previous`` keeps the generation before the current one."""
    return path.with_name(path.name + ".previous")


def save(path: Path, fp: Mapping[str, Any], state: Mapping[str, Any], *, keep_previous: bool = False) -> None:
    """Write ``state`` with the fingerprint atomically (temporary file, then rename).

    ``keep_previous``: the file it replaces is kept as :func:`previous` (renamed, also atomic), so a
    process killed while saving still has its last two generations.
    """
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "version": VERSION, "fingerprint": dict(fp), **state}, tmp)
    if keep_previous and path.exists():
        os.replace(path, previous(path))
    os.replace(tmp, path)


def load(path: Path, fp: Mapping[str, Any], required: tuple[str, ...]) -> dict | None:
    """The saved state when ``path`` holds a matching checkpoint; None (with a warning) when it is missing.

    Raises:
        ValueError: the file is truncated, corrupted, not a sampler checkpoint, or was written by a
            run that differs in a fingerprint item (named in the message).
    """
    if not path.exists():
        warnings.warn(f"resume=True but the checkpoint {str(path)!r} does not exist: starting afresh "
                      "(it will be written there)", stacklevel=4)
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ValueError(f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}: {str(e)[:200]}); it is "
                         "truncated, corrupted or not a torch file: delete it (or pass resume=False) to start afresh") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {str(path)!r} is not an slt_interp sampler checkpoint (a foreign file); "
                         "pass another checkpoint_path, or delete it to start afresh")
    if state.get("version") != VERSION or any(k not in state for k in required):
        raise ValueError(f"checkpoint {str(path)!r} was written by another version of slt_interp (format version "
                         f"{state.get('version')!r}, expected {VERSION}) or is incomplete; delete it to start afresh")
    saved = dict(state["fingerprint"])
    if isinstance(saved.get("setting.targets"), list):  # written before max_seconds left the fingerprint
        saved["setting.targets"] = [t for t in saved["setting.targets"] if not str(t).startswith("max_seconds=")]
    diff = describe_mismatch(saved, fp)
    if diff:
        raise ValueError(f"checkpoint {str(path)!r} was written by a different run: different " + "; different ".join(diff)
                         + ". Resume with the same data, model, loss and settings (only num_draws and max_seconds may "
                         "change), or delete "
                         "the file to start afresh")
    return state
