"""What the LLC estimator converges to on a deep linear network, as the localization γ and n vary.

The accuracy benchmark (:mod:`experiments.benchmarks.llc_accuracy`) compares every estimate with
Aoyagi's λ, the n → ∞ coefficient. What a correct sampler estimates at finite n is the finite-n
target λ_n(γ) = nβ·(E_p[L] − L(w*)) of the localized tempered posterior
p(w) ∝ exp(−nβ·L(w) − (γ/2)·‖w − w*‖²) (docs/theory.md §3), which tends to λ as nβ → ∞ at fixed γ —
slowly for a singular model: the set of true parameters of a deep linear network is not compact, and
within radius ~1/√γ of the most singular point it holds less singular points whose local coefficients
are larger, so at small γ and moderate n the posterior's volume there pulls λ_n(γ) above λ; at large
γ the Gaussian confines directions the loss would let spread and pulls it below. This scan measures
λ_n(γ) with our estimator (all other settings default) on networks of the accuracy benchmark, for a
grid of γ and n, and reports λ̂ ± SE, whether the run converged, and the relative error to λ.

Run: ``python -m experiments.benchmarks.llc_target_scan [--networks 5 1] [--localizations 1 10 100]
[--num-samples 20000 200000] [--resume]``; rows in ``results/llc_target_scan.jsonl``, report
``results/llc_target_scan.md``.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import subprocess
import time
import warnings
from pathlib import Path

import torch

from experiments.benchmarks._machine import load_note
from experiments.benchmarks._rows import append_row, stored_rows
from experiments.benchmarks.llc_accuracy import network
from slt_interp.estimators import estimate_llc

RESULTS = Path(__file__).resolve().parent / "results"


def _commit() -> str:
    """The checked-out commit (what code produced a row), or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_one(index: int, localization: float, num_samples: int, args) -> dict:
    """Our default estimate on network ``index`` (of ``llc_accuracy``'s draw) at localization γ and n samples."""
    ns = argparse.Namespace(min_params=args.min_params, max_params=args.max_params, seed=args.seed,
                            num_samples=num_samples)
    head, model, loss_fn, x, y = network(index, ns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        est = estimate_llc(model, loss_fn, (x, y), seed=index, localization=localization)
        seconds = time.perf_counter() - t0
    diag = est.diagnostics
    return {**head, "localization": localization, "num_samples": num_samples, "nbeta": est.settings.nbeta,
            "mean": est.mean, "std_err": est.std_err, "converged": est.converged,
            "steps": est.settings.steps_total, "step_size": est.settings.step_size,
            "rhat": diag.rhat, "ess": diag.ess, "mala_acceptance": diag.mala_acceptance,
            "stationarity_z": diag.stationarity_z,
            "seconds": seconds, "commit": _commit()}


def _fmt_row(r: dict) -> str:
    err = (r["mean"] - r["llc"]) / r["llc"]
    return (f"| {r['index']} | {r['params']} | {r['rank']} | {r['llc']:.1f} | {r['num_samples']} | {r['nbeta']:.0f} | "
            f"{r['localization']:g} | {r['mean']:.1f} ± {r['std_err']:.1f} | {err:+.0%} | "
            f"{'yes' if r['converged'] else 'no'} | {r['stationarity_z']:+.1f} | {r['mala_acceptance']:.2f} | {r['steps']} | {r['step_size']:.2g} | {r['seconds']:.0f} |")


def conclusions(rows: list[dict]) -> list[str]:
    """Sentences computed from the rows: per network and n, the range of λ̂ over γ and where λ falls; per
    network and γ, how λ̂ moves with n."""
    out = []
    for i in sorted({r["index"] for r in rows}):
        for n in sorted({r["num_samples"] for r in rows if r["index"] == i}):
            rs = sorted((r for r in rows if r["index"] == i and r["num_samples"] == n), key=lambda r: r["localization"])
            if len(rs) < 2:
                continue
            lam = rs[0]["llc"]
            lo, hi = min(rs, key=lambda r: r["mean"]), max(rs, key=lambda r: r["mean"])
            spread = (hi["mean"] - lo["mean"]) / lam
            within = [r["localization"] for r in rs if abs(r["mean"] - lam) <= 0.1 * lam]
            z = (hi["mean"] - lo["mean"]) / math.hypot(hi["std_err"], lo["std_err"])
            # the drift z is (first 10% − last 50%) of the draws: negative while the traces still rise
            unconv = [f"{_g(r)} (λ̂ drift z {r['stationarity_z']:+.1f})" for r in rs if not r["converged"]]
            coarse = [_g(r) for r in rs if r["mala_acceptance"] < 0.85]
            notes = ([f"not converged within the budget at γ = {', '.join(unconv)}"] if unconv else []) + (
                [f"MALA acceptance < 0.85 (SGLD's step bias inflates λ̂) at γ ∈ {{{', '.join(coarse)}}}"] if coarse else [])
            out.append(
                f"- network {i}, n = {n}: λ̂ ranges from {lo['mean']:.1f} ± {lo['std_err']:.1f} (γ = {lo['localization']:g}) "
                f"to {hi['mean']:.1f} ± {hi['std_err']:.1f} (γ = {hi['localization']:g}), a spread of {spread:.0%} of λ = "
                f"{lam:.1f} ({z:.0f} SE); within 10% of λ at γ ∈ {{{', '.join(_g(r) for r in rs if r['localization'] in within)}}}"
                + (" (none)" if not within else "") + "".join(f"; {s}" for s in notes) + ".")
        for g in sorted({r["localization"] for r in rows if r["index"] == i}):
            rs = sorted((r for r in rows if r["index"] == i and r["localization"] == g), key=lambda r: r["num_samples"])
            if len(rs) < 2:
                continue
            path = " → ".join(f"{r['mean']:.1f} ± {r['std_err']:.1f} (nβ = {r['nbeta']:.0f}"
                              + ("" if r["converged"] else ", not converged") + ")" for r in rs)
            out.append(f"- network {i}, γ = {g:g}: λ̂ {path}, against λ = {rs[0]['llc']:.1f}.")
    return out


def _g(r: dict) -> str:
    return f"{r['localization']:g}"


def write_report(rows: list[dict], out: Path, note: str) -> str:
    lines = [
        "# What the LLC estimate converges to on deep linear networks: λ̂ against γ and n", "",
        f"{datetime.date.today()}, {platform.machine()} CPU ({os.cpu_count()} cores), torch {torch.__version__}. {note}", "",
        "Our estimator with every setting default except the localization γ (and n, the number of noise-free "
        "samples); networks of `llc_accuracy` (same seeds). Protocol and reading: module docstring. "
        "λ is Aoyagi's n → ∞ coefficient. Code of the rows: commit "
        + ", ".join(sorted({r.get("commit", "unknown") for r in rows})) + ".", "",
        "| net | d | r | λ | n | nβ | γ | λ̂ ± SE | λ̂/λ − 1 | converged | drift z | MALA acc. | steps | ε | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[_fmt_row(r) for r in sorted(rows, key=lambda r: (r["index"], r["num_samples"], r["localization"]))], "",
        "Computed from the rows:", "", *conclusions(rows), "",
    ]
    text = "\n".join(lines)
    (out / "llc_target_scan.md").write_text(text)
    return text


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, nargs="*", default=[5, 1])
    ap.add_argument("--localizations", type=float, nargs="*", default=[1.0, 10.0, 100.0])
    ap.add_argument("--num-samples", type=int, nargs="*", default=[20_000, 200_000])
    ap.add_argument("--seed", type=int, default=0, help="the llc_accuracy network seed")
    ap.add_argument("--min-params", type=int, default=1_000, help="llc_accuracy's size range (same networks)")
    ap.add_argument("--max-params", type=int, default=100_000)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "llc_target_scan.jsonl"
    rows = stored_rows(jsonl, args.resume or args.report_only)
    done = {(r["index"], r["num_samples"], r["localization"]) for r in rows}
    note = load_note()
    todo = [] if args.report_only else [(i, n, g) for i in args.networks for n in args.num_samples
                                         for g in args.localizations if (i, n, g) not in done]
    for k, (i, n, g) in enumerate(todo):
        row = run_one(i, g, n, args)
        rows.append(row)
        append_row(jsonl, row)
        print(f"[{k + 1}/{len(todo)}] " + _fmt_row(row), flush=True)
    text = write_report(rows, args.out, note)
    print(text)
    return text


if __name__ == "__main__":
    main()
