"""Benchmark: Hessian-vector products — cost against one gradient, and against curvlinops.

On one MLP (64 → 512 → 256 → 10, tanh, 167k parameters, MSE on a batch of 256), side by side in one run:
one gradient (the yardstick, ``torch.func.grad`` of the same flat loss), our HVP
(:class:`slt_interp.estimators.HessianOperator`, jvp of grad; and the reverse-over-reverse fallback), our HVP on
a block of 16 vectors (vmapped, per vector), our Gauss–Newton product, and curvlinops'
``HessianLinearOperator`` (Dangel et al., curvlinops 3) on the same model, loss and data. The products
are checked to agree before timing. Targets (issue 3): HVP ≤ 3 gradients on CPU, no slower than curvlinops.

    python -m experiments.benchmarks.hvp [--device cpu] [--repeats 7] [--threads 1]

curvlinops is optional (``pip install --no-deps curvlinops-for-pytorch einconv linear_operator``;
never with dependencies, which would replace torch); without it its rows are skipped.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import grad

from slt_interp.estimators import GaussNewtonOperator, HessianOperator, behavioral_loss, training_loss
from experiments.benchmarks._machine import load_note, median_time

RESULTS = Path(__file__).parent / "results" / "hvp.md"


_timeit = median_time


def _setup(device, dtype):
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 512), nn.Tanh(), nn.Linear(512, 256), nn.Tanh(), nn.Linear(256, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(p.shape[-1], 1) ** 0.5)
    model = model.to(device=device, dtype=dtype)
    x = torch.randn(256, 64, generator=g).to(device=device, dtype=dtype)
    y = torch.randn(256, 10, generator=g).to(device=device, dtype=dtype)
    return model, x, y


def _bench(device, dtype, repeats: int) -> tuple[list[tuple[str, float]], dict]:
    model, x, y = _setup(device, dtype)
    loss_fn = nn.MSELoss()  # curvlinops needs the nn.Module; ours uses the same formula written out because
    # F.mse_loss against a constant target breaks forward-over-reverse AD in torch 2.x ("ZeroTensors are immutable")
    loss, params = training_loss(model, lambda p, t: ((p - t) ** 2).mean(), x, y)
    ours = HessianOperator(loss, params, mode="forward")
    ours_rev = HessianOperator(loss, params, mode="reverse")
    ours_auto = HessianOperator(loss, params)  # the default: times both modes once, keeps the faster
    gn = GaussNewtonOperator(*behavioral_loss(model, x))
    fn, w0 = ours.problem.fn, ours.problem.w0
    d = ours.dim
    v = torch.randn(d, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device=device, dtype=dtype)
    V = torch.randn(d, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(device=device, dtype=dtype)
    rows = [
        ("gradient (torch.func.grad)", _timeit(lambda: grad(fn)(w0), device, repeats)),
        ("HVP, ours (jvp of grad)", _timeit(lambda: ours @ v, device, repeats)),
        ("HVP, ours, reverse-over-reverse fallback", _timeit(lambda: ours_rev @ v, device, repeats)),
        ("HVP, ours, block of 16 vmapped (per vector)", _timeit(lambda: ours @ V, device, max(2, repeats // 2)) / 16),
        ("HVP, ours, reverse, block of 16 vmapped (per vector)", _timeit(lambda: ours_rev @ V, device, max(2, repeats // 2)) / 16),
        ("HVP, ours, default mode=\"auto\"", _timeit(lambda: ours_auto @ v, device, repeats)),
        ("HVP, ours, default mode=\"auto\", block of 16 (per vector)", _timeit(lambda: ours_auto @ V, device, max(2, repeats // 2)) / 16),
        ("GN product, ours (behavioral loss)", _timeit(lambda: gn @ v, device, repeats)),
    ]
    info = {"dim": d, "check": {}}
    Hv = ours @ v
    info["check"]["reverse vs forward"] = float((ours_rev @ v - Hv).norm() / Hv.norm())
    try:
        from curvlinops import HessianLinearOperator
    except ImportError as err:  # optional peer
        info["curvlinops"] = f"not installed ({err})"
        return rows, info
    plist = [p for p in model.parameters()]
    theirs = HessianLinearOperator(model, loss_fn, plist, [(x, y)], check_deterministic=False)
    Hv_theirs = theirs @ v
    Hv_theirs = torch.cat([t.reshape(-1) for t in Hv_theirs]) if isinstance(Hv_theirs, (list, tuple)) else Hv_theirs.reshape(-1)
    info["check"]["curvlinops vs ours"] = float((Hv_theirs - Hv).norm() / Hv.norm())
    rows.append(("HVP, curvlinops HessianLinearOperator", _timeit(lambda: theirs @ v, device, repeats)))
    rows.append(("HVP, curvlinops, block of 16 (per vector)", _timeit(lambda: theirs @ V, device, max(2, repeats // 2)) / 16))
    import curvlinops

    info["curvlinops"] = getattr(curvlinops, "__version__", "installed")
    return rows, info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark: Hessian-vector products (ours vs one gradient vs curvlinops)",
        "",
        f"Device: {device.type} ({platform.machine()}, {torch.get_num_threads()} torch thread(s)); torch {torch.__version__}; "
        f"{stamp}. Median of {args.repeats} runs after a warm-up. " + load_note(),
        "",
        "Model: MLP 64 → 512 → 256 → 10 (tanh), `nn.MSELoss()` on a batch of 256. Targets: HVP ≤ 3 gradients (CPU); "
        "no slower than curvlinops' `HessianLinearOperator` on the same model and data.",
    ]
    for dtype in (torch.float32, torch.float64):
        rows, info = _bench(device, dtype, args.repeats)
        t = dict(rows)
        g = t["gradient (torch.func.grad)"]
        lines += ["", f"## {str(dtype).replace('torch.', '')}, d = {info['dim']:,} parameters", "",
                  "| computation | time (ms) | ÷ one gradient |", "|---|---|---|"]
        lines += [f"| {name} | {1e3 * s:.2f} | {s / g:.2f} |" for name, s in rows]
        lines.append("")
        lines.append("Agreement of the products (relative difference): "
                     + ", ".join(f"{k}: {v:.1e}" for k, v in info["check"].items()) + f"; curvlinops: {info['curvlinops']}.")
        if "HVP, curvlinops HessianLinearOperator" in t:
            auto1, auto16 = 'HVP, ours, default mode="auto"', 'HVP, ours, default mode="auto", block of 16 (per vector)'
            r1 = t["HVP, curvlinops HessianLinearOperator"] / t[auto1]
            r16 = t["HVP, curvlinops, block of 16 (per vector)"] / t[auto16]
            lines.append(f"\nSpeed-up of the default operator over curvlinops: **{r1:.2f}×** for one vector, **{r16:.2f}×** "
                         f"per vector in blocks of 16 (ratio > 1: ours faster). HVP ÷ gradient (default operator): "
                         f"**{t[auto1] / g:.2f}** (target ≤ 3).")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
