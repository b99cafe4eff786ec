"""Benchmark: numerical rank of a large MLP's Hessian, matrix-free (time and HVP count).

An MLP input → h → h → 10 (tanh), h chosen so that the parameter count is ≈ ``--params``, in float32,
at random weights w*. The loss is the behavioral loss on n inputs (w* is its minimum at any point, and
its Hessian there is the Gauss–Newton matrix, rank ≤ n·10). Steps: the largest eigenvalue by Lanczos
(:func:`slt_interp.estimators.lanczos`), then the count of eigenvalues above τ = rtol·λ_max by stochastic Lanczos
quadrature with growing steps (:func:`slt_interp.estimators.count_eigenvalues`). Reported: wall time, HVPs, the
count with its standard error, and the lower bound rank/2 on the behavioral LLC.

    python -m experiments.benchmarks.rank_large [--params 1000000] [--device cpu] [--num-samples 128]

The GPU target of issue 3 (≥ 10M parameters in < 10 minutes) is ``--params 10000000 --device cuda``.
"""
from __future__ import annotations

import argparse
import datetime
import math
import platform
import time
from pathlib import Path

import torch
from torch import nn

from slt_interp.estimators import HessianOperator, behavioral_loss, count_eigenvalues, lanczos
from experiments.benchmarks._machine import load_note

RESULTS = Path(__file__).parent / "results" / "rank_large.md"


def _width(params: int, d_in: int, d_out: int) -> int:
    # params ≈ d_in·h + h + h² + h + h·d_out + d_out  →  solve h² + (d_in + d_out + 2)·h − params = 0
    b = d_in + d_out + 2
    return max(1, int((-b + math.sqrt(b * b + 4 * params)) / 2))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=int, default=1_000_000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--num-samples", type=int, default=128)
    ap.add_argument("--input-dim", type=int, default=256)
    ap.add_argument("--num-probes", type=int, default=8)
    ap.add_argument("--block-size", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=160)
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    h = _width(args.params, args.input_dim, 10)
    model = nn.Sequential(nn.Linear(args.input_dim, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(p.shape[-1], 1) ** 0.5)
    model = model.to(device)
    x = torch.randn(args.num_samples, args.input_dim, generator=g).to(device)
    loss, params = behavioral_loss(model, x)
    op = HessianOperator(loss, params)
    d = op.dim

    t0 = time.perf_counter()
    top = lanczos(op, 1, tol=1e-4, generator=torch.Generator().manual_seed(1))
    t_lanczos = time.perf_counter() - t0
    lam_max = float(top.eigenvalues[-1])
    tau = args.rtol * lam_max
    t1 = time.perf_counter()
    count = count_eigenvalues(
        op, tau, num_probes=args.num_probes, block_size=args.block_size, max_steps=args.max_steps,
        generator=torch.Generator().manual_seed(2),
    )
    t_count = time.perf_counter() - t1
    total = time.perf_counter() - t0
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s)"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark: numerical rank of a large MLP Hessian (matrix-free)",
        "",
        f"Device: {device.type} ({dev_name}); torch {torch.__version__}; {stamp}. " + load_note(),
        "",
        f"Model: MLP {args.input_dim} → {h} → {h} → 10 (tanh), float32, **d = {d:,} parameters**, random weights; "
        f"behavioral (MSE) loss on n = {args.num_samples} inputs (Hessian at w* = Gauss–Newton matrix, rank ≤ {10 * args.num_samples}).",
        "",
        "| step | result | HVPs | time (s) |",
        "|---|---|---|---|",
        f"| λ_max by Lanczos | {lam_max:.4g} (residual {float(top.residual_norms[-1]):.1e}, converged {top.converged}) | "
        f"{top.num_matvecs} | {t_lanczos:.1f} |",
        f"| #{{λ > τ = {args.rtol:g}·λ_max}} by SLQ | {count.count:.1f} ± {count.std_err:.1f} (95% CI [{count.ci[0]:.1f}, "
        f"{count.ci[1]:.1f}]), {count.num_probes} probes × {count.num_steps} steps, settled: {count.converged} | "
        f"{count.num_matvecs} | {t_count:.1f} |",
        f"| **total** | lower bound on the behavioral LLC ≈ rank/2 = {count.count / 2:.1f}, upper d/2 = {d / 2:,.0f} | "
        f"{top.num_matvecs + count.num_matvecs} | **{total:.1f}** |",
        "",
        f"Steps grown as (m, count on the first probe block): {', '.join(f'({m}, {c:.1f})' for m, c in count.steps_history)}.",
        "",
        "Not run in this session: the GPU target (≥ 10M parameters in under 10 minutes), because no GPU was available. "
        "Run it with `python -m experiments.benchmarks.rank_large --params 10000000 --device cuda`; this file is "
        "overwritten with the device named above.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
