"""SGLD sampling throughput: ours (chains vectorised with torch.func.vmap) vs devinterp's chain loop.

Same model, data, number of chains (8), draws, burn-in, batch size, step size, γ and nβ, in one run.
devinterp 2.x runs chains one after another in one process (``devinterp.slt.sampling.sample`` loops
``for chain_idx in range(num_chains)`` around ``sample_single_chain``; there is no multiprocessing in
2.x); we call that same ``sample_single_chain`` through :mod:`experiments.devinterp_side`, without
its zarr writer, which only makes devinterp faster than in real use. Throughput = chains × steps /
wall-clock seconds of the sampling call. Our timing includes the full-data baseline and diagnostics;
we run it with MALA monitoring off (``mala_every=0``, as devinterp has none) and on (every 5 steps).

Run: ``python -m experiments.benchmarks.sgld_throughput [THREADS ...]`` (default 1 and 2 threads; writes
results/sgld_throughput.md).
"""
from __future__ import annotations

import datetime
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from slt_interp.estimators import estimate_llc
from experiments.devinterp_side import devinterp_llc, require_devinterp
from experiments.benchmarks._machine import load_note

NUM_CHAINS = 8
NUM_DRAWS = 100
NUM_BURNIN = 20
BATCH_SIZE = 64
STEP_SIZE = 1e-4


def _setup(width: int, n: int = 2048, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(8, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 2))
    with torch.no_grad():  # realisable targets: w* is a global minimum of the training loss
        y = model(x) + 0.1 * torch.randn(n, 2, generator=g)
    return model, x, y


def _mse(p, t):
    return ((p - t) ** 2).sum(-1).mean()


def _time(fn, repeats: int = 2) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


WIDTHS = (16, 64, 256, 512, 1000)  # ≈ 450, 4.9k, 69k, 270k and 1M parameters


def step_size(width: int) -> float:
    """ε = 1e-4 up to width 256, then 1e-4·256/w: the curvature grows with the width, and at w = 1000 the
    chains at 1e-4 blew up (λ̂ in the thousands on both sides), which slows float arithmetic and says nothing."""
    return STEP_SIZE * min(1.0, 256 / width)


def floor_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int = 20) -> float:
    """Chain-steps per second if a step cost only its unavoidable work: one reverse pass of the loss on a
    batch (plain ``loss.backward()``) and the step's d standard normals (``normal_``, torch's fastest CPU
    generator: numpy's ziggurat was 2× slower here). Every SGLD implementation pays at least this; the
    largest possible speed-up over devinterp at equal steps and batch is this rate ÷ devinterp's."""
    d = sum(p.numel() for p in model.parameters())
    noise = torch.empty(d)
    g = torch.Generator().manual_seed(0)
    xb, yb = x[:BATCH_SIZE], y[:BATCH_SIZE]

    def work():
        model.zero_grad(set_to_none=False)
        _mse(model(xb), yb).backward()
        noise.normal_(generator=g)

    work()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            work()
        best = min(best, (time.perf_counter() - t0) / repeats)
    model.zero_grad(set_to_none=True)
    return 1.0 / best


def _part(threads: int, widths) -> list[str]:
    """One thread count: the table of 8-chain and one-chain throughputs."""
    torch.set_num_threads(threads)  # both sides alike; ours also gets num_threads=threads (no automatic choice)
    rows = []
    steps = NUM_DRAWS + NUM_BURNIN
    note = load_note()
    warm_model, wx, wy = _setup(16, n=256)  # warm-up: imports and first-call costs paid by neither side's timing
    devinterp_llc(warm_model, _mse, wx, wy, num_chains=1, num_draws=5, num_burnin=0, step_size=STEP_SIZE,
                  localization=1.0, batch_size=BATCH_SIZE)
    estimate_llc(warm_model, _mse, (wx, wy), num_chains=1, num_draws=5, num_burnin=0, step_size=STEP_SIZE,
                 num_threads=threads)
    for width in widths:
        model, x, y = _setup(width)
        d = sum(p.numel() for p in model.parameters())
        kw = dict(num_chains=NUM_CHAINS, num_draws=NUM_DRAWS, num_burnin=NUM_BURNIN, step_size=step_size(width),
                  localization=1.0, batch_size=BATCH_SIZE, seed=0)
        t_dev, dev = _time(lambda: devinterp_llc(model, _mse, x, y, **kw), repeats=1)
        ours_kw = dict(num_threads=threads, on_nonminimum="ignore")
        t_ours, ours = _time(lambda: estimate_llc(model, _mse, (x, y), mala_every=0, **kw, **ours_kw))
        t_mala, _ = _time(lambda: estimate_llc(model, _mse, (x, y), mala_every=5, **kw, **ours_kw), repeats=1)
        one = dict(kw, num_chains=1)
        t_dev1, _ = _time(lambda: devinterp_llc(model, _mse, x, y, **one), repeats=2)
        t_ours1, _ = _time(lambda: estimate_llc(model, _mse, (x, y), mala_every=0, **one, **ours_kw))
        tp = lambda t, c=NUM_CHAINS: c * steps / t  # noqa: E731
        floor = floor_rate(model, x, y)
        rows.append((width, d, tp(t_dev), tp(t_ours), tp(t_mala), t_dev / t_ours, t_dev / t_mala,
                     tp(t_dev1, 1), tp(t_ours1, 1), t_dev1 / t_ours1, dev.mean, dev.std_err, ours.mean, ours.std_err,
                     floor, floor / tp(t_dev)))
        print(threads, rows[-1], flush=True)
    lines = [
        f"## {threads} intra-op thread(s)", "",
        f"At the start of this part: {note}", "",
        "| width w | params | devinterp (chain-steps/s) | ours (chain-steps/s) | ours + MALA every 5 | speed-up | "
        "speed-up with MALA | 1 chain: devinterp (steps/s) | 1 chain: ours | 1 chain: speed-up | floor: gradient + "
        "noise only (chain-steps/s) | largest possible speed-up (floor ÷ devinterp) | λ̂ devinterp | λ̂ ours |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w, d, a, b, c, r1, r2, a1, b1, r3, m1, s1, m2, s2, fl, fr in rows:
        lines.append(f"| {w} | {d} | {a:.0f} | {b:.0f} | {c:.0f} | **{r1:.1f}×** | {r2:.1f}× | {a1:.0f} | {b1:.0f} | "
                     f"**{r3:.2f}×** | {fl:.0f} | {fr:.1f}× | {m1:.2f} ± {s1:.2f} | {m2:.2f} ± {s2:.2f} |")
    ceiling = [(w, fr) for w, d, *_, fr in rows]
    lines += ["", "Floor column: one plain reverse pass on a batch plus d normals per chain-step (`floor_rate`), the "
              "work any SGLD step does; a speed-up over devinterp above floor ÷ devinterp would need a step cheaper "
              "than that work. In this part: " + ", ".join(f"w = {w}: at most {fr:.1f}×" for w, fr in ceiling) + "."]
    return lines + [""]


def main(out: Path | None = None, threads=(1, 2), widths=WIDTHS) -> str:
    """Not run in the test suite (minutes per width); each thread count is given to both sides explicitly."""
    require_devinterp()
    lines = [
        "# SGLD throughput: ours vs devinterp (CPU)",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} on {platform.machine()} "
        f"({os.cpu_count()} CPU cores, `{platform.processor() or platform.platform()}`), torch {torch.__version__}, "
        "float32 models; both sides ran back to back in the same process, at each thread count.",
        "",
        f"Setting: MLP 8 → w → w → 2 (tanh), n = 2048 samples, {NUM_CHAINS} chains (and one chain), {NUM_BURNIN} "
        f"burn-in + {NUM_DRAWS} draws, batch size {BATCH_SIZE}, ε = {STEP_SIZE}·min(1, 256/w), γ = 1, nβ = n/log n. devinterp: "
        "`sample_single_chain` with `SGMCMC.sgld`, chains sequential (as in its `sample`). Ours: "
        "`estimate_llc`, chains vectorised with vmap (looped reverse passes for one chain and from 500k parameters, "
        "where they are faster); both warmed up first; best of 2 runs for ours without MALA and for "
        "both one-chain runs, 1 run otherwise. Speed-up = devinterp's time ÷ ours (> 1: ours faster).",
        "",
    ]
    for t in threads:
        lines += _part(t, widths)
    lines += ["λ̂ columns: the same short runs (no calibration, not converged) — shown only to check that both "
              "samplers see the same problem; devinterp's ± is the spread of chain means / √C."]
    text = "\n".join(lines) + "\n"
    out = out or Path(__file__).parent / "results" / "sgld_throughput.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


if __name__ == "__main__":
    import sys

    print(main(threads=tuple(int(a) for a in sys.argv[1:]) or (1, 2)))
