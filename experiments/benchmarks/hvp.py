"""Benchmark: Hessian-vector products — cost against one gradient, and against curvlinops.

Two models, side by side in one run, each in float32 and float64:

* an MLP (64 → 512 → 256 → 10, tanh, 167k parameters, MSE on a batch of 256);
* a causal transformer language model (``experiments.lm.model.CausalLM`` with
  ``config_for_size(100_000, vocab_size=64, seq_len=64)``: 2 pre-LayerNorm blocks × 4 softmax heads,
  tied embeddings, 95,760 parameters), the next-token cross-entropy on a batch of 8 token sequences of
  64 + 1 tokens: L(w) = −(1/(B·T))·Σ_{b,k} log softmax(f(x_b; w)_k)[x_{b,k+1}].

Rows: one gradient (the yardstick, ``torch.func.grad`` of the same flat loss), our HVP
(:class:`slt_interp.estimators.HessianOperator`; forward-over-reverse ``jvp(grad)`` and the
reverse-over-reverse fallback), both on a block of 16 vectors (vmapped, per vector), the default
``mode="auto"`` (the mode chosen per block width), our Gauss–Newton product, and curvlinops'
``HessianLinearOperator`` (Dangel et al., curvlinops 3) on the same model, loss and data. The products
are checked to agree before timing. Targets (issues 3 and 13): HVP ≤ 3 gradients on CPU (MLP), and the
default operator at least as fast as curvlinops (ratio ≥ 1) in every row.

For the LM, curvlinops needs an ``nn.Module`` loss on (N, C) logits, so the model call is
``_NextTokenLogits``: logits reshaped to (B·T, V), with ``nn.CrossEntropyLoss()`` against the targets
flattened to (B·T,); ours sees the same module, with ``F.cross_entropy(logits, targets.reshape(-1))`` and
the targets kept as (B, T) rows (so that the data have B rows). In torch 2.13 the products of curvlinops
on the LayerNorm gains are wrong (forward-over-``jacrev`` through ``native_layer_norm``; ours, forward-
over-``grad``, agrees with central finite differences of the gradient), so agreement is reported on all
coordinates, on those outside the LayerNorm gains, and against finite differences (float64).

    python -m experiments.benchmarks.hvp [--device cpu] [--repeats 7] [--threads 1 0]

``--threads``: one or more torch intra-op thread counts to run with in turn (0: torch's default, all
cores); the results file gets one part per count.

curvlinops is optional (``pip install --no-deps curvlinops-for-pytorch einconv linear_operator einops opt-einsum``;
never with dependencies, which would replace torch); without it its rows are skipped.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad

from slt_interp.estimators import GaussNewtonOperator, HessianOperator, behavioral_loss, training_loss
from experiments.benchmarks._machine import load_note
from experiments.lm.model import CausalLM, config_for_size

RESULTS = Path(__file__).parent / "results" / "hvp.md"
_DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice, read before any set_num_threads


def _time_round_robin(calls: dict, device, repeats: int) -> dict[str, tuple[float, float]]:
    """Median wall time and median CPU time of the process (all threads) per call, in seconds.

    Every call is made once as a warm-up, then the calls are timed in turn, ``repeats`` rounds of all
    of them, so that each sees the same spread of load from other processes on a shared machine (timing
    one row after another let the load of the moment decide ratios). CUDA is synchronised around each
    call. The CPU time does not count the time the process waits for a core, so it is the steadier
    measure of the work; the wall time is what a user waits.

    Args:
        calls: ``{name: (fn, per)}``; each time is divided by ``per`` (vectors per call).
        device: where the calls run.
        repeats: timed rounds.

    Returns:
        ``{name: (median wall, median CPU)}`` in seconds per vector.
    """
    import statistics
    import time

    for fn, _ in calls.values():
        fn()
    wall = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (fn, _) in calls.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            w, c = time.perf_counter(), time.process_time()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    return {name: (statistics.median(wall[name]) / per, statistics.median(cpu[name]) / per)
            for name, (_, per) in calls.items()}


@dataclass
class _Problem:
    """One benchmark problem: our loss and what curvlinops needs for the same function.

    Attributes:
        name: the section title.
        description: one sentence on the model and loss.
        model: the ``nn.Module`` both operators differentiate.
        loss, params: our :class:`DataLoss` and w*.
        gn_loss, gn_params, gn_name: the loss of the Gauss–Newton row and what it is.
        curvlinops_loss: the ``nn.Module`` loss curvlinops applies to ``model(X)`` and ``y``.
        curvlinops_data: ``[(X, y)]`` for curvlinops.
        gain_mask: True on the coordinates of LayerNorm gains (``None``: the model has none).
    """

    name: str
    description: str
    model: nn.Module
    loss: object
    params: dict
    gn_loss: object
    gn_params: dict
    gn_name: str
    curvlinops_loss: nn.Module
    curvlinops_data: list
    gain_mask: torch.Tensor | None = None


def _mlp(device, dtype) -> _Problem:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 512), nn.Tanh(), nn.Linear(512, 256), nn.Tanh(), nn.Linear(256, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(p.shape[-1], 1) ** 0.5)
    model = model.to(device=device, dtype=dtype)
    x = torch.randn(256, 64, generator=g).to(device=device, dtype=dtype)
    y = torch.randn(256, 10, generator=g).to(device=device, dtype=dtype)
    # curvlinops needs the nn.Module; ours uses the same formula written out because F.mse_loss against a
    # constant target breaks forward-over-reverse AD in torch 2.x ("ZeroTensors are immutable")
    loss, params = training_loss(model, lambda p, t: ((p - t) ** 2).mean(), x, y)
    gn_loss, gn_params = behavioral_loss(model, x)
    return _Problem("MLP", "MLP 64 → 512 → 256 → 10 (tanh), `nn.MSELoss()` on a batch of 256", model, loss, params,
                    gn_loss, gn_params, "behavioral loss", nn.MSELoss(), [(x, y)])


class _NextTokenLogits(nn.Module):
    """``CausalLM`` logits flattened over positions: tokens (B, T) → logits (B·T, V) (rows b·T + k)."""

    def __init__(self, lm: CausalLM):
        super().__init__()
        self.lm = lm

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.lm(tokens)                                             # (B, T, V)
        return logits.reshape(-1, logits.shape[-1])                          # (B·T, V)


def _next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: logits (B·T, V) against targets (B, T)."""
    return F.cross_entropy(logits, targets.reshape(-1))


LM_BATCH = 8  # token sequences per batch


def _lm(device, dtype) -> _Problem:
    config = config_for_size(100_000, vocab_size=64, seq_len=64)
    model = _NextTokenLogits(CausalLM(config, seed=0)).to(device=device, dtype=dtype).eval()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (LM_BATCH, config.seq_len + 1), generator=g).to(device)
    x, y = tokens[:, :-1], tokens[:, 1:]                                    # (B, T) each: y[:, k] follows x[:, k]
    loss, params = training_loss(model, _next_token_loss, x, y)
    ln_gains = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    mask = torch.cat([torch.full((p.numel(),), name in ln_gains, dtype=torch.bool) for name, p in params.items()])
    return _Problem(
        "causal transformer LM",
        f"`CausalLM(config_for_size(100_000, vocab_size=64, seq_len=64))` ({config.num_layers} blocks × "
        f"{config.num_heads} heads, d_model {config.d_model}, tied embeddings), next-token cross-entropy "
        f"(`nn.CrossEntropyLoss()` on logits reshaped to (B·T, V)) on {LM_BATCH} random token sequences of "
        f"{config.seq_len} + 1 tokens",
        model, loss, params, loss, params, "GGN of the training loss", nn.CrossEntropyLoss(),
        [(x, y.reshape(-1))], mask.to(device))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


_AUTO1, _AUTO16 = 'HVP, ours, default mode="auto"', 'HVP, ours, default mode="auto", block of 16 (per vector)'
_THEIRS1, _THEIRS16 = "HVP, curvlinops HessianLinearOperator", "HVP, curvlinops, block of 16 (per vector)"


def _bench(problem: _Problem, device, dtype, repeats: int) -> tuple[list[tuple[str, tuple[float, float]]], dict]:
    loss, params = problem.loss, problem.params
    ours = HessianOperator(loss, params, mode="forward")
    ours_rev = HessianOperator(loss, params, mode="reverse")
    ours_auto = HessianOperator(loss, params)  # the default: times both modes per block width, keeps the faster
    gn = GaussNewtonOperator(problem.gn_loss, problem.gn_params)
    fn, w0 = ours.problem.fn, ours.problem.w0
    d = ours.dim
    v = torch.randn(d, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device=device, dtype=dtype)
    V = torch.randn(d, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(device=device, dtype=dtype)
    info = {"dim": d, "check": {}}
    Hv = ours @ v
    info["check"]["reverse vs forward"] = _rel(ours_rev @ v, Hv)
    if dtype == torch.float64 and problem.gain_mask is not None:
        eps = 1e-5  # central differences of the gradient: error O(eps²) + rounding O(1e-16/eps)
        g = grad(fn)
        info["fd"] = (g(w0 + eps * v) - g(w0 - eps * v)) / (2 * eps)
        info["check"]["ours vs finite differences"] = _rel(Hv, info["fd"])
    theirs = None
    try:
        from curvlinops import HessianLinearOperator
    except ImportError as err:  # optional peer
        info["curvlinops"] = f"not installed ({err})"
    else:
        import curvlinops

        info["curvlinops"] = getattr(curvlinops, "__version__", "installed")
        theirs = HessianLinearOperator(problem.model, problem.curvlinops_loss, list(problem.model.parameters()),
                                       problem.curvlinops_data, check_deterministic=False)
        Hv_theirs = theirs @ v
        Hv_theirs = torch.cat([t.reshape(-1) for t in Hv_theirs]) if isinstance(Hv_theirs, (list, tuple)) else Hv_theirs.reshape(-1)
        info["check"]["curvlinops vs ours"] = _rel(Hv_theirs, Hv)
        if problem.gain_mask is not None:
            keep = ~problem.gain_mask
            info["check"]["curvlinops vs ours outside the LayerNorm gains"] = _rel(Hv_theirs[keep], Hv[keep])
            if "fd" in info:
                info["check"]["curvlinops vs finite differences"] = _rel(Hv_theirs, info["fd"])
                info["check"]["curvlinops vs finite differences on the LayerNorm gains"] = _rel(
                    Hv_theirs[problem.gain_mask], info["fd"][problem.gain_mask])
        info.pop("fd", None)
    one = {  # single vectors, timed round-robin
        "gradient (torch.func.grad)": (lambda: grad(fn)(w0), 1),
        "HVP, ours (jvp of grad)": (lambda: ours @ v, 1),
        "HVP, ours, reverse-over-reverse fallback": (lambda: ours_rev @ v, 1),
        _AUTO1: (lambda: ours_auto @ v, 1),
        f"GN product, ours ({problem.gn_name})": (lambda: gn @ v, 1),
    }
    block = {  # blocks of 16, timed round-robin among themselves (fewer rounds: each call is 16 products)
        "HVP, ours, block of 16 vmapped (per vector)": (lambda: ours @ V, 16),
        "HVP, ours, reverse, block of 16 vmapped (per vector)": (lambda: ours_rev @ V, 16),
        _AUTO16: (lambda: ours_auto @ V, 16),
    }
    if theirs is not None:
        one[_THEIRS1] = (lambda: theirs @ v, 1)
        block[_THEIRS16] = (lambda: theirs @ V, 16)
    times = {**_time_round_robin(one, device, repeats), **_time_round_robin(block, device, max(2, repeats // 2))}
    order = ["gradient (torch.func.grad)", "HVP, ours (jvp of grad)", "HVP, ours, reverse-over-reverse fallback",
             "HVP, ours, block of 16 vmapped (per vector)", "HVP, ours, reverse, block of 16 vmapped (per vector)",
             _AUTO1, _AUTO16, f"GN product, ours ({problem.gn_name})", _THEIRS1, _THEIRS16]
    rows = [(name, times[name]) for name in order if name in times]
    info["auto modes"] = dict(ours_auto.mode_by_width)
    return rows, info




def _run(device, repeats: int, threads: int) -> tuple[list[str], list[tuple]]:
    """One pass over both models and both dtypes with ``threads`` torch threads (0: torch's default).

    Returns:
        The markdown lines of this pass and its ratio rows ``(threads, model, dtype, one vector, block)``.
    """
    torch.set_num_threads(threads if threads > 0 else _DEFAULT_THREADS)
    n = torch.get_num_threads()
    lines = ["", f"# {n} torch thread(s){' (torch default)' if threads == 0 else ''}", "",
             "At the start of this part: " + load_note()]
    ratios = []
    for setup in (_mlp, _lm):
        for dtype in (torch.float32, torch.float64):
            problem = setup(device, dtype)
            rows, info = _bench(problem, device, dtype, repeats)
            t = dict(rows)  # name -> (wall, CPU) seconds
            g = t["gradient (torch.func.grad)"][0]
            dname = str(dtype).replace("torch.", "")
            lines += ["", f"## {n} thread(s) · {problem.name} · {dname}, d = {info['dim']:,} parameters", "",
                      f"{problem.description}.", "",
                      "| computation | wall (ms) | CPU (ms) | wall ÷ one gradient |", "|---|---|---|---|"]
            lines += [f"| {name} | {1e3 * w:.2f} | {1e3 * c:.2f} | {w / g:.2f} |" for name, (w, c) in rows]
            lines.append("")
            lines.append("Agreement of the products (relative difference): "
                         + ", ".join(f"{k}: {v:.1e}" for k, v in info["check"].items())
                         + f"; curvlinops: {info['curvlinops']}. Modes chosen by mode=\"auto\" per block width: "
                         + ", ".join(f"{k} → {m}" for k, m in sorted(info["auto modes"].items())) + ".")
            if _THEIRS1 in t:
                r1, r16 = t[_THEIRS1][0] / t[_AUTO1][0], t[_THEIRS16][0] / t[_AUTO16][0]
                c1, c16 = t[_THEIRS1][1] / t[_AUTO1][1], t[_THEIRS16][1] / t[_AUTO16][1]
                ratios.append((n, problem.name, dname, r1, r16, c1, c16))
                lines.append(f"\nSpeed-up of the default operator over curvlinops (wall time): **{r1:.2f}×** for one "
                             f"vector, **{r16:.2f}×** per vector in blocks of 16 (CPU time: {c1:.2f}×, {c16:.2f}×; "
                             f"ratio > 1: ours faster). HVP ÷ gradient (default operator, wall): **{t[_AUTO1][0] / g:.2f}**.")
            print("\n".join(lines[-len(rows) - 10:]), flush=True)
    lines += ["", "At the end of this part: " + load_note()]
    return lines, ratios


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 0],
                    help="torch CPU thread counts to run with in turn (0: torch's default); 1 is stable on a shared machine")
    args = ap.parse_args(argv)
    if any(k < 0 for k in args.threads):
        raise SystemExit(f"--threads takes counts >= 0 (0: torch's default), got {args.threads}")
    device = torch.device(args.device)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts, ratios = [], []
    for threads in args.threads:
        lines, r = _run(device, args.repeats, threads)
        parts += lines
        ratios += r
    head = [
        "# Benchmark: Hessian-vector products (ours vs one gradient vs curvlinops)",
        "",
        f"Device: {device.type} ({platform.machine()}, {os.cpu_count()} cores; torch's default "
        f"{_DEFAULT_THREADS} thread(s)); torch {torch.__version__}; {stamp}. Median of {args.repeats} runs after a "
        f"warm-up ({max(2, args.repeats // 2)} for blocks of 16). Thread counts run: "
        + ", ".join(str(k if k else f"{_DEFAULT_THREADS} (default)") for k in args.threads) + ".",
        "",
        "Targets: HVP ≤ 3 gradients (CPU, MLP); the default operator (`mode=\"auto\"`) no slower than curvlinops' "
        "`HessianLinearOperator` on the same model, loss and data in every row (ratio ≥ 1).",
    ]
    if ratios:
        head += ["", "## Summary: curvlinops time ÷ our default operator's time (> 1: ours faster)", "",
                 "| threads | model | dtype | one vector (wall) | block of 16 (wall) | one vector (CPU) | block of 16 (CPU) |",
                 "|---|---|---|---|---|---|---|"]
        head += [f"| {n} | {m} | {d} | {r1:.2f}× | {r16:.2f}× | {c1:.2f}× | {c16:.2f}× |" for n, m, d, r1, r16, c1, c16 in ratios]
        worst = min(min(r[3:5]) for r in ratios)
        worst_cpu = min(min(r[5:7]) for r in ratios)
        head += ["", f"Smallest ratio: **{worst:.2f}×** by wall time, **{worst_cpu:.2f}×** by CPU time "
                 f"({'every row ≥ 1 by wall time' if worst >= 1 else 'a row is below 1 by wall time'})."]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(head + parts) + "\n")
    print("\n".join(head))


if __name__ == "__main__":
    main()
