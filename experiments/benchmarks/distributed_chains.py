"""Wall time of 8 SGLD chains of a ~100k-parameter model vs the number of torch.distributed processes.

The same estimate (8 chains, fixed burn-in and draws, fixed step size) run by 1, 2, … CPU processes
launched with ``torch.multiprocessing`` (Gloo backend); k processes run 8/k chains each. Each process
uses ``total_threads / k`` intra-op threads (so the machine's cores are shared the same way in every
row), and the single-process row is measured the same way. The chains of every run are checked to be
the single-process chains (bit-identical, or equal to 1e-6 relative per chain), so the rows compute
the same numbers. GPUs: with several CUDA devices, ``--cuda`` gives each process its own device (NCCL).

Run: ``python -m experiments.benchmarks.distributed_chains [--processes 1 2 4] [--cuda]``
(writes results/distributed_chains.md).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import nn

from experiments.benchmarks._machine import load_note

NUM_CHAINS = 8
REPEATS = 5
SETTINGS = dict(num_burnin=20, num_draws=200, step_size=1e-4, batch_size=64, mala_every=0)


def _setup(width: int = 300, n: int = 4096, seed: int = 0):
    """MLP 8 → w → w → 2 (tanh): w = 300 gives 93 302 parameters."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(8, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 2))
    with torch.no_grad():
        y = model(x) + 0.1 * torch.randn(n, 2, generator=g)
    return model, x, y


def _mse(p, t):
    return ((p - t) ** 2).sum(-1).mean()


def _worker(rank: int, size: int, init: str, out: str, threads: int, cuda: bool) -> None:
    import warnings

    from slt_interp.estimators import LLCConvergenceWarning, estimate_llc

    warnings.simplefilter("ignore", LLCConvergenceWarning)  # fixed short runs for timing, not converged estimates

    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(rank)
    if size > 1:
        torch.distributed.init_process_group(backend, init_method=init, rank=rank, world_size=size)
    torch.set_num_threads(threads)
    model, x, y = _setup()
    if cuda:
        model, x, y = model.cuda(), x.cuda(), y.cuda()
    run = dict(SETTINGS, num_draws=4, num_burnin=2)  # warm-up: imports, first vmap trace, allocator
    estimate_llc(model, _mse, (x, y), num_chains=NUM_CHAINS, num_threads=threads, distributed=size > 1, **run)
    seconds = float("inf")
    for _ in range(REPEATS):  # best of REPEATS
        if size > 1:
            torch.distributed.barrier()
        t0 = time.perf_counter()
        est = estimate_llc(model, _mse, (x, y), num_chains=NUM_CHAINS, num_threads=threads, distributed=size > 1,
                           **SETTINGS)
        if cuda:
            torch.cuda.synchronize()
        seconds = min(seconds, time.perf_counter() - t0)
    if rank == 0:
        torch.save(dict(seconds=seconds, traces=est.loss_traces.cpu(), mean=est.mean, std_err=est.std_err,
                        params=sum(p.numel() for p in model.parameters())), out)
    if size > 1:
        torch.distributed.destroy_process_group()


def measure(size: int, threads_total: int, cuda: bool) -> dict:
    """Launch ``size`` processes and return rank 0's timing and traces."""
    threads = max(1, threads_total // size)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.pt")
        init = f"file://{os.path.join(tmp, 'rendezvous')}"
        mp.start_processes(_worker, args=(size, init, out, threads, cuda), nprocs=size, join=True, start_method="spawn")
        result = torch.load(out, weights_only=False)
    result["threads"] = threads
    return result


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=None)
    parser.add_argument("--cuda", action="store_true", help="one CUDA device per process (NCCL)")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    devices = torch.cuda.device_count() if args.cuda else 0
    top = devices if args.cuda else cores
    sizes = args.processes or sorted({1, 2, top} & set(range(1, top + 1)))
    note = load_note()
    rows = {k: measure(k, cores, args.cuda) for k in sizes}
    base = rows[sizes[0]]
    lines = []
    for k, r in rows.items():
        same = torch.equal(r["traces"], base["traces"])
        close = same or torch.allclose(r["traces"], base["traces"], rtol=1e-6, atol=0)
        speed = base["seconds"] / r["seconds"]
        lines.append(f"| {k} | {NUM_CHAINS // k if NUM_CHAINS % k == 0 else f'{NUM_CHAINS / k:.1f}'} | {r['threads']} | "
                     f"{r['seconds']:.2f} | **{speed:.2f}×** | {speed / k:.0%} | "
                     f"{'bit-identical' if same else ('≤ 1e-6 rel.' if close else 'DIFFERENT')} | {r['mean']:.3f} ± {r['std_err']:.3f} |")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    where = (f"{devices} × {torch.cuda.get_device_name(0)}" if args.cuda else
             f"{platform.machine()} ({cores} CPU cores, `{platform.platform()}`)")
    best = max(rows, key=lambda k: base["seconds"] / rows[k]["seconds"])
    text = "\n".join([
        f"# {NUM_CHAINS} SGLD chains over torch.distributed processes ({'CUDA, NCCL' if args.cuda else 'CPU, Gloo'})",
        "",
        f"Measured {stamp} on {where}, torch {torch.__version__}. {note}",
        "",
        f"Setting: MLP 8 → 300 → 300 → 2 (tanh), {base['params']} parameters, n = 4096, {NUM_CHAINS} chains, "
        f"{SETTINGS['num_burnin']} burn-in + {SETTINGS['num_draws']} draws, batch {SETTINGS['batch_size']}, "
        f"ε = {SETTINGS['step_size']:g}, MALA monitoring off. Each of k processes runs {NUM_CHAINS}/k chains with "
        f"{cores}/k intra-op threads; wall time of the estimate on rank 0 (after a warm-up run), best of {REPEATS} runs per row. "
        "The runs are short fixed-length timing runs (not converged; λ̂ only shows that every row computes the same "
        "chains).",
        "",
        "| processes | chains each | threads each | seconds | speed-up vs 1 | efficiency | chains vs 1 process | λ̂ |",
        "|---|---|---|---|---|---|---|---|",
        *lines,
        "",
        f"Fastest: {best} process(es), {base['seconds'] / rows[best]['seconds']:.2f}× the single process. "
        "Speed-up and efficiency are computed from the row timings above; with as many processes as cores, each "
        "process has one thread, so the comparison is processes-with-fewer-threads against one process with all "
        "threads.",
        "",
    ])
    out = Path(__file__).parent / "results" / ("distributed_chains_cuda.md" if args.cuda else "distributed_chains.md")
    out.write_text(text, encoding="utf-8")
    print(text)
    return out


if __name__ == "__main__":
    main()
