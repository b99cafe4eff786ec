"""Benchmark: torch penalties generated from sympy (``PriorPenalty.to_torch``) vs hand-written torch.

Value + gradient (one forward and one backward) of each penalty on SAE-sized activations, median of
several repeats after a warm-up, ours and the hand-written version interleaved in one run. Target: the
generated function within 1.5× of the hand-written one. Writes ``results/penalties.md``.

    python -m experiments.benchmarks.penalties [--rows 4096 --cols 16384 --repeats 5]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import sympy as sp
import torch

from slt_interp.theory import prior_from_penalty
from slt_interp.theory.prior_catalogue import exclusive_lasso, group_lasso, log_penalty, product_penalty, spike_and_slab
from experiments.benchmarks._machine import load_note

RESULTS = Path(__file__).parent / "results" / "penalties.md"


def _cases():
    a = sp.Symbol("a", nonnegative=True)
    r = sp.Symbol("a", real=True)
    s = sp.Symbol("s", positive=True)
    cauchy = prior_from_penalty(sp.log(1 + r**2 / s**2), [r], parameters=[s])
    spike = spike_and_slab()
    lam0 = float(spike.l0_weight.subs({p: {"pi_0": 0.9, "lambda": 1.0}[str(p)] for p in spike.parameters}))
    return [
        ("L1 on a ≥ 0", prior_from_penalty(a, [a]).to_torch(), lambda x: x.sum(-1)),
        ("log(1 + |a|), s = 2", log_penalty().to_torch(s=2.0), lambda x: 2.0 * torch.log1p(x.abs()).sum(-1)),
        ("Cauchy log(1 + a²/s²)", cauchy.to_torch(s=0.5), lambda x: torch.log1p((x / 0.5) ** 2).sum(-1)),
        ("spike-and-slab L1 + L0", spike.to_torch(pi_0=0.9, **{"lambda": 1.0}),
         lambda x: torch.where(x == 0, 0.0, lam0 + x).sum(-1)),
        ("group lasso, groups of 4", group_lasso(4).to_torch(),
         lambda x: x.reshape(*x.shape[:-1], -1, 4).norm(dim=-1).sum(-1)),
        ("exclusive lasso, groups of 4", exclusive_lasso(4).to_torch(),
         lambda x: x.reshape(*x.shape[:-1], -1, 4).abs().sum(-1).square().sum(-1)),
        ("product Π(1 + |a_i|), groups of 4", product_penalty(4).to_torch(),
         lambda x: (1 + x.reshape(*x.shape[:-1], -1, 4).abs()).prod(-1).sum(-1)),
    ]


def _time(fn, x, repeats):
    times = []
    for k in range(repeats + 1):
        xi = x.detach().requires_grad_(True)
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn(xi).sum()
        (g,) = torch.autograd.grad(out, xi)
        if x.is_cuda:
            torch.cuda.synchronize()
        if k:  # the first call is a warm-up
            times.append(time.perf_counter() - start)
        del g, out
    return statistics.median(times)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(args.rows, args.cols, generator=gen).relu_()  # SAE codes: ≥ 0, about half zero
    lines = [
        "# Generated torch penalties vs hand-written torch (value + gradient)",
        "",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; torch {torch.__version__}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"
        + (f"; GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "; no GPU")
        + ". " + load_note(),
        "",
        f"Activations {args.rows} × {args.cols} float32 (ReLU of a Gaussian), one forward + backward, "
        f"median of {args.repeats} after a warm-up; ratio = generated / hand-written (target ≤ 1.5).",
        "",
        "| device | penalty | generated (ms) | hand-written (ms) | ratio | max rel. diff of value |",
        "|---|---|---|---|---|---|",
    ]
    cases = _cases()
    for device in devices:
        x = base.to(device)
        for name, ours, hand in cases:
            with torch.no_grad():
                v1, v2 = ours(x[:64]).double(), hand(x[:64]).double()
                diff = float(((v1 - v2).abs() / v2.abs().clamp_min(1e-30)).max())
            t_hand = _time(hand, x, args.repeats)
            t_ours = _time(ours, x, args.repeats)
            lines.append(f"| {device} | {name} | {1e3 * t_ours:.1f} | {1e3 * t_hand:.1f} | {t_ours / t_hand:.2f} | {diff:.1e} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    return text


if __name__ == "__main__":
    main()
