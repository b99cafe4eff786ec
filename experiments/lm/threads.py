"""One intra-op thread for small language-model work on the CPU, the caller's setting restored.

The same rule as the package's samplers (a step's work chains × batch × parameters below 2²⁸ runs on
one thread: torch's per-op fork/join costs dominate small tensors; measured here, a 27k-parameter LM
trained at 0.46 s/step with 2 threads on a loaded 2-core machine against 0.02 s/step with one).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

SMALL_WORK = 2 ** 28


@contextmanager
def small_work_threads(device, work: int):
    """Run the block on one intra-op thread when ``device`` is the CPU and ``work`` < 2²⁸."""
    before = torch.get_num_threads()
    one = torch.device(device).type == "cpu" and work < SMALL_WORK and before != 1
    if one:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if one:
            torch.set_num_threads(before)
