"""One measured sentence about the machine a benchmark ran on (no claims that were not measured)."""
from __future__ import annotations

import os


def load_note() -> str:
    """The 1-minute load average against the core count, read when the benchmark starts."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return "Load average unavailable."
    busy = "other jobs were running, so absolute timings are noisy" if load > 0.5 * cores else "the machine was otherwise idle"
    return f"1-minute load average {load:.2f} on {cores} cores at the start ({busy}); ratios within one run are the result."


def run_times(fn, device, repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls of fn() after one warm-up (synchronising CUDA around each)."""
    import time

    import torch

    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def median_time(fn, device, repeats: int) -> float:
    """Median wall time of fn() over ``repeats`` runs, after one warm-up."""
    import statistics

    return statistics.median(run_times(fn, device, repeats))
