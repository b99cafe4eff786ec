"""Study: `estimate_llc` / `estimate_potential_llc` with every setting at its default (adaptive run length,
calibrated step) against the exact λ of zoo models and the exact finite-n target of zoo potentials, at two
sample sizes and 5 seeds: relative error, z = (estimate − target)/SE, converged flag, back-offs, seconds.

Too slow for the test suite (≈ 10–60 s per estimate on one CPU thread); the suite checks two cheap
potentials (tests/estimators/test_llc_convergence.py).

Run: ``python -m experiments.benchmarks.llc_defaults [--sampler rmsprop] [--out FILE]`` (writes
results/llc_defaults.md, or results/llc_defaults_<sampler>.md for another sampler than the default).
"""
from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

from slt_interp.estimators import estimate_llc, estimate_potential_llc
from slt_interp.theory import finite_n_target, zoo

SIZES = (100, 10_000)
SEEDS = range(5)


def main(out: Path | None = None, sampler: str | None = None) -> str:
    """Run every case with defaults (``sampler``: that sampler, else the default one) and write the table."""
    rows, errors = [], []
    kw = {} if sampler is None else {"sampler": sampler}
    for name, make in zoo.POTENTIALS.items():
        pot = make()
        if pot.dim > 2:
            continue  # the quadrature oracle covers 1 and 2 variables
        for n in SIZES:
            target = finite_n_target(pot, n, localization=1.0).value
            for seed in SEEDS:
                t0 = time.perf_counter()
                try:
                    est = estimate_potential_llc(pot, n, seed=seed, **kw)
                except Exception as e:  # noqa: BLE001 - a divergence with defaults is a finding, recorded
                    errors.append(f"{name}, n = {n}, seed {seed}: {type(e).__name__}: {str(e)[:200]}")
                    continue
                rows.append((name, n, seed, target, est, time.perf_counter() - t0))
                print(rows[-1][:4], est.mean, est.std_err, est.converged, flush=True)
    for name, make in zoo.MODELS.items():
        m = make()
        for n in (500, 20_000):
            for seed in SEEDS:
                t0 = time.perf_counter()
                try:
                    est = estimate_llc(m.model, m.loss_fn, m.sample(n, seed=seed), seed=seed, **kw)
                except Exception as e:  # noqa: BLE001 - a divergence with defaults is a finding, recorded
                    errors.append(f"{name}, n = {n}, seed {seed}: {type(e).__name__}: {str(e)[:200]}")
                    continue
                rows.append((name, n, seed, float(m.llc.value), est, time.perf_counter() - t0))
                print(rows[-1][:4], est.mean, est.std_err, est.converged, flush=True)
    lines = [
        "# LLC estimates with default settings against exact targets"
        + ("" if sampler is None else f" (sampler = {sampler!r}, everything else at its default)"),
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} on {platform.machine()} "
        f"({platform.processor() or platform.platform()}). Potentials: target = exact finite-n E[nβK] (γ = 1); "
        "models: target = λ (multiplicity-1 models approach it at large n).",
        "",
        "| case | n | seed | target | estimate | rel. error | z | converged | back-offs | steps | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, n, seed, target, est, secs in rows:
        lines.append(f"| {name} | {n} | {seed} | {target:.4g} | {est.mean:.4g} ± {est.std_err:.2g} | "
                     f"{(est.mean - target) / target:+.1%} | {(est.mean - target) / est.std_err:+.1f} | {est.converged} | "
                     f"{len(est.step_size_backoffs)} | {est.settings.steps_total} | {secs:.1f} |")
    failures = len(errors)
    ok = [abs(est.mean - target) <= 3 * est.std_err + 0.05 * abs(target) for _, _, _, target, est, _ in rows]
    conv = [est.converged for *_, est, _ in rows]
    cut = [bool(est.step_size_backoffs) for *_, est, _ in rows]
    lines += [
        "",
        f"**Summary (computed from the rows):** {sum(ok)} of {len(rows)} estimates within 3 SE + 5% of their target; "
        f"{sum(conv)} of {len(rows)} converged within the default budget; {sum(cut)} with a step-size back-off or "
        f"acceptance cut; {failures} raised an error (listed below). Median seconds per estimate "
        f"{sorted(secs for *_, secs in rows)[len(rows) // 2]:.1f}." if rows else "No rows.",
        "",
        *[f"- error: {e}" for e in errors],
    ]
    text = "\n".join(lines) + "\n"
    out = out or Path(__file__).parent / "results" / ("llc_defaults.md" if sampler is None else f"llc_defaults_{sampler}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sampler", choices=["sgld", "rmsprop", "mala"], help="the sampler (default: the default one)")
    parser.add_argument("--out", type=Path, help="the markdown file to write")
    args = parser.parse_args()
    print(main(args.out, args.sampler))
