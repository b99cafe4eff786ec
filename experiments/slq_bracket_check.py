"""Is the SLQ rank at τ(n) resolved? The count and its quadrature bracket at several Lanczos step counts.

On a checkpoint of the transformer study, :func:`experiments.lm.measure.curvature` is repeated with the
same probes and m₁ < m₂ < … Lanczos steps. A longer Gauss rule matches every moment a shorter one fixes,
so the count at m₂ must lie in the bracket at m₁ and the brackets must nest
(:meth:`slt_interp.estimators.slq.SpectralQuadrature.count_bracket`). Where the point counts move by more
than their SE while staying inside the brackets, the SE understates the error, and the bracket is the
honest statement.

    python -m experiments.slq_bracket_check --run-dir RUN/0.1M --step 750 --steps 30 40 60
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from experiments import transformer_study
from experiments.lm import load_checkpoint, measure
from experiments.lm.problem import NextTokenLM


def check(run_dir, size: str, step: int, steps, log=print) -> dict:
    """Counts and brackets at each number of Lanczos steps, and whether they nest.

    Returns:
        ``{"rows": {m: {...}}, "nested": bool, "contained": bool}``; "contained": each longer rule's
        count lies in every shorter rule's bracket (Hessian and Gauss–Newton).
    """
    s = transformer_study.full_settings(size) if size != "quick" else transformer_study.quick_settings()
    tokens = transformer_study.measure_tokens(transformer_study.data_splits(s)[0], s)
    lm, _ = load_checkpoint(Path(run_dir) / "checkpoints", step, device="cpu", dtype=getattr(torch, s.dtype))
    model = NextTokenLM(lm).eval()
    rows = {}
    for m in sorted(int(x) for x in steps):
        t = time.perf_counter()
        c = measure.curvature(model, tokens, num_probes=s.slq_probes, num_steps=m, batch_size=s.curvature_batch,
                              seed=s.seed, localization=s.localization)
        rows[m] = {key: {"count": c[key]["rank_at_tau_n"], "se": c[key]["rank_se"], "bracket": c[key]["rank_bracket"]}
                   for key in ("hessian", "gauss_newton")}
        rows[m]["seconds"] = time.perf_counter() - t
        log(f"m = {m}: " + "; ".join(f"{k}: {v['count']:.0f} ± {v['se']:.0f} in [{v['bracket'][0]:.0f}, {v['bracket'][1]:.0f}]"
                                     for k, v in rows[m].items() if k != "seconds"))
    ms = sorted(rows)
    tol = 1e-6 * c["dim"]
    nested = all(rows[a][k]["bracket"][0] - tol <= rows[b][k]["bracket"][0] and rows[b][k]["bracket"][1] <= rows[a][k]["bracket"][1] + tol
                 for i, a in enumerate(ms) for b in ms[i + 1:] for k in ("hessian", "gauss_newton"))
    contained = all(rows[a][k]["bracket"][0] - tol <= rows[b][k]["count"] <= rows[a][k]["bracket"][1] + tol
                    for i, a in enumerate(ms) for b in ms[i + 1:] for k in ("hessian", "gauss_newton"))
    return {"size": size, "step": step, "dim": c["dim"], "tau_n": c["tau_n"], "rows": rows, "nested": nested,
            "contained": contained}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, required=True, help="the study's folder for one size (holds checkpoints/)")
    ap.add_argument("--size", default="0.1M", help='"quick", "0.1M", "1M" or "10M" (the settings to use)')
    ap.add_argument("--step", type=int, required=True, help="the checkpoint")
    ap.add_argument("--steps", type=int, nargs="+", default=[30, 40, 60], help="Lanczos step counts")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the result")
    args = ap.parse_args(argv)
    res = check(args.run_dir, args.size, args.step, args.steps)
    print(f"brackets nest: {res['nested']}; longer counts inside shorter brackets: {res['contained']}")
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    return 0 if res["nested"] and res["contained"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
