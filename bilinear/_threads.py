"""One intra-op thread for the small tensors of the bilinear tools, the caller's setting restored.

torch's default of one thread per core makes every small operation pay OpenMP fork/join costs; on a
loaded 2-core machine the README's bilinear example ran 6× slower with 2 threads than with one
(measured: 63 s against 10 s, training and vertex bounds dominating). Same policy as the estimators.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def small_work_threads(device) -> Iterator[None]:
    """Run the block on one intra-op thread when ``device`` is the CPU; restore the setting afterwards."""
    before = torch.get_num_threads()
    if torch.device(device).type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
