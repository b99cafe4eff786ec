"""Benchmark: closed-form expansion of a 2-layer, 4-head, d_model 128 bilinear transformer.

Measures, side by side in one run: one forward pass (the reference), building the component expansion,
evaluating every term, certifying every term (worst-case bounds), and evaluating single paths of the lazy
full-path expansion; reports the costs relative to one forward pass. There is no packaged peer that
expands linear-attention + bilinear transformers (docs/theory.md §5), so the forward pass is the yardstick.

    python -m experiments.benchmarks.expansion [--device cuda] [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
from pathlib import Path

import torch

from slt_interp.bilinear import BilinearConfig, BilinearTransformer, expand, term_bounds
from experiments.benchmarks._machine import load_note, run_times

RESULTS = Path(__file__).parent / "results" / "expansion.md"


def _timeit(fn, device, repeats: int) -> tuple[float, float]:
    """Median and min wall time of fn() over ``repeats`` runs, after one warm-up."""
    times = run_times(fn, device, repeats)
    return statistics.median(times), min(times)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: stable timings on a shared machine; same for both sides)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = BilinearConfig(vocab_size=64, n_ctx=32, d_model=128, n_layers=2, n_heads=4, d_head=32, d_mlp=512)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (args.batch, cfg.n_ctx), generator=g).to(device)
    rows = []
    for dtype in (torch.float32, torch.float64):
        model = BilinearTransformer(cfg, seed=0).to(device=device, dtype=dtype)
        with torch.no_grad():
            fwd, fwd_min = _timeit(lambda: model(tokens), device, args.repeats)
            build, _ = _timeit(lambda: expand(model), device, args.repeats)
            exp = expand(model)
            ev, _ = _timeit(lambda: exp.evaluate(tokens), device, args.repeats)
            one_term = exp.index("L1.H0(q=L0.mlp, k=L0.H1, v=emb)")
            ev_one, _ = _timeit(lambda: exp.evaluate(tokens, [one_term]), device, args.repeats)
            bounds, _ = _timeit(lambda: term_bounds(exp), device, max(1, args.repeats // 2))
            paths = expand(model, "path")
            picks = [paths.num_paths - 1 - 7919 * k for k in range(10)]
            lazy, _ = _timeit(lambda: paths.evaluate(picks, tokens), device, args.repeats)
            logits = model(tokens)
            rel = float((exp.evaluate_sum(tokens) - logits).abs().max() / logits.abs().max())
        rows.append((str(dtype).replace("torch.", ""), len(exp), paths.num_paths, fwd, build, ev, ev_one, bounds, lazy,
                     rel))
    lines = [
        "# Benchmark: closed-form expansion (bilinear transformer)",
        "",
        f"Model: 2 layers, 4 heads, d_model 128, d_head 32, d_mlp 512, vocab 64, context 32; batch {args.batch} "
        f"sequences of length 32. Device: {device} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads); torch {torch.__version__}; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Median of {args.repeats} runs after a "
        "warm-up. " + load_note(),
        "",
        "The reference (the 'peer') is one forward pass of the same model on the same batch.",
        "",
        "| dtype | terms | full paths | forward (ms) | build + check expansion (ms) | evaluate all terms (ms) | "
        "ratio to forward | evaluate one term (ms) | certify all terms (ms) | 10 lazy paths (ms) | "
        "rel. error Σterms vs forward |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dt, n, npaths, fwd, build, ev, ev_one, bounds, lazy, rel in rows:
        lines.append(f"| {dt} | {n} | {npaths:.3e} | {fwd * 1e3:.2f} | {build * 1e3:.2f} | {ev * 1e3:.1f} | "
                     f"{ev / fwd:.0f}× | {ev_one * 1e3:.2f} | {bounds * 1e3:.0f} | {lazy * 1e3:.1f} | {rel:.1e} |")
    lines += ["", "Building the expansion includes its check: the sum of the terms is compared with one forward "
                  "pass on 3 sequences (expandable.verify_sum), so it costs about 3/batch of evaluating all terms.",
              "", "Evaluating all terms costs one forward pass (cached component outputs) plus, per head, the "
                  "score tensors of all source pairs and, per MLP, the products of all source pairs; per term it "
                  f"is {rows[0][5] / rows[0][3] / rows[0][1]:.2f} forward passes (float32).",
              "", "Evaluating one selected term (`evaluate(tokens, terms=[i])`, here "
                  "`L1.H0(q=L0.mlp, k=L0.H1, v=emb)`) costs the forward pass plus that term's own work: "
                  f"{rows[0][6] / rows[0][3]:.1f} forward passes vs {rows[0][5] / rows[0][3]:.0f} for all "
                  f"{rows[0][1]} terms (float32)."]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
