"""Intra-op thread choice for the samplers: small problems run on one thread, the user's setting is restored.

torch's default of one intra-op thread per core makes every small tensor operation pay OpenMP
fork/join and spin-wait costs. A sampler step on a small model is thousands of such operations, so
on a 2-core machine the README's SGLD example ran 10× slower with the default 2 threads than with
one (measured here: 16.7 s against 1.6 s for 300 draws of a 31-parameter reduced-rank regression;
an MLP of 69k parameters, 8 chains, batch 64: 9.3 s against 0.47 s for 30 steps on a loaded
machine). The estimators therefore pick the thread count themselves (:func:`choose_num_threads`)
and restore the caller's setting afterwards, also when the run raises (:func:`intra_op_threads`).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

#: multiply-adds per sampler step (chains × batch × parameters) below which one thread is used
SMALL_WORK = 2 ** 28


def choose_num_threads(device: torch.device, work: int, requested: int | None = None) -> int | None:
    """The intra-op thread count for a sampler run, or None to leave torch's setting alone.

    Args:
        device: where the chains run; on an accelerator the host threads are left alone.
        work: chains × batch size × sampled parameters, the size of one step's batched gradient.
        requested: the user's explicit choice (``num_threads=``); wins when given.

    Returns:
        ``requested`` when given; 1 on CPU when ``work < SMALL_WORK`` (2²⁸); otherwise None.

    Raises:
        ValueError: ``requested`` is not a positive integer.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"num_threads must be a positive integer (or None to choose automatically), got {requested!r}")
        return requested
    if torch.device(device).type != "cpu":
        return None
    return 1 if work < SMALL_WORK else None


@contextmanager
def intra_op_threads(num_threads: int | None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(num_threads)`` and restore the previous setting.

    The previous setting is restored however the block exits (return, exception, KeyboardInterrupt).
    ``None`` leaves the setting unchanged.

    Args:
        num_threads: the intra-op thread count inside the block, or None.

    Yields:
        The thread count in force inside the block.
    """
    before = torch.get_num_threads()
    if num_threads is None or num_threads == before:
        yield before
        return
    torch.set_num_threads(num_threads)
    try:
        yield num_threads
    finally:
        torch.set_num_threads(before)
