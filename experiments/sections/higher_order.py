"""Study: how much do the LLC bounds move when the Taylor expansion goes to order 4?

For each model: the dense Hessian at w* (float64), its numerical rank r at a relative threshold, the
order-2 bounds r/2 ≤ λ ≤ d/2, the order-4 bounds from the Schur-corrected quartic g₄ on the null
space (:func:`slt_interp.estimators.sharpen_bounds`), the exact λ where a theorem gives it, and an SGLD estimate
(:func:`slt_interp.estimators.estimate_llc`) when that estimator is importable.
"""
from __future__ import annotations

import time
from fractions import Fraction

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.func import functional_call

TITLE = "Higher-order LLC bounds: the quartic on the Hessian null space"
ORDER = 30


def _problem(model, loss_fn, x, y):
    from slt_interp.estimators.flat import flatten

    params = {k: v.detach() for k, v in model.named_parameters()}
    return flatten(lambda ps: loss_fn(functional_call(model, ps, (x,)), y), params)


def _bounds(problem, rel_threshold: float, seed: int, quick: bool = False):
    from slt_interp.estimators import LLCBounds, analyze_quartic, bounds_from_quartic

    H = torch.func.hessian(problem.fn)(problem.w0)
    ev, U = torch.linalg.eigh(H)
    threshold = rel_threshold * float(ev.abs().max())
    r = int((ev > threshold).sum())
    d = problem.dim
    base = LLCBounds(lower=Fraction(r, 2), upper=Fraction(d, 2), rank=r, nullity=d - r, dim=d, exact=r == d,
                     threshold=threshold, method="dense", eigenvalues=ev)
    start = time.perf_counter()
    search = dict(restarts=4, steps=25) if quick else {}
    qa = analyze_quartic(problem, rank=r, eigenvalues=ev, eigenvectors=U, generator=torch.Generator().manual_seed(seed),
                         **search)
    seconds = time.perf_counter() - start
    return base, qa, bounds_from_quartic(base, qa), seconds


def _sgld(model, loss_fn, x, y, quick: bool, seed: int):
    from slt_interp.estimators import estimate_llc

    if quick:
        return None, "skipped (--quick)"
    try:
        est = estimate_llc(model, loss_fn, (x, y), num_chains=4, num_draws=300, seed=seed)
    except Exception as err:  # an estimator failure must not hide the bounds
        return None, f"failed: {type(err).__name__}"
    return est, f"{float(est.mean):.2f} ± {float(est.std_err):.2f}"


def _fmt(lo: Fraction, hi: Fraction, exact: bool) -> str:
    return f"**{lo}** (exact)" if exact else f"[{lo}, {hi}]"


def run(ctx) -> str:
    from experiments.trained import mlp_regression, toy_superposition
    from slt_interp.theory import zoo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread start-up costs more than it saves (and the machine is shared)
    try:
        return _run(ctx, zoo, toy_superposition, mlp_regression)
    finally:
        torch.set_num_threads(threads)


def _run(ctx, zoo, toy_superposition, mlp_regression) -> str:
    names = ["rrr(4,3,4,1)", "rrr(3,2,3,2)", "rrr(6,2,3,1)"] if ctx.quick else list(zoo.MODELS)
    n = 200 if ctx.quick else 1000
    rows, plot = [], []
    entries = []
    for key in names:
        km = zoo.MODELS[key]()
        x, y = km.sample(n, seed=ctx.seed)
        entries.append((km.name, km.model, km.loss_fn, x, y, km.llc.value, 1e-8))
    steps = 300 if ctx.quick else 3000
    tms = toy_superposition(steps=steps, seed=ctx.seed)
    entries.append((tms.name, tms.model, tms.loss_fn, tms.inputs, tms.targets, None, 1e-6))
    mlp = mlp_regression(hidden=4 if ctx.quick else 8, steps=steps, seed=ctx.seed)
    entries.append((mlp.name, mlp.model, mlp.loss_fn, mlp.inputs, mlp.targets, None, 1e-6))
    # behavioral loss L_B(w) = mean ‖f(x; w) − f(x; w*)‖²: w* is a minimum by construction (docs/theory.md §1)
    from slt_interp.estimators import behavioral_mse, reference_outputs

    for tm in ([mlp] if ctx.quick else [tms, mlp]):
        reference = reference_outputs(tm.model, tm.inputs)  # f(x; w*), once, in eval mode
        entries.append((f"{tm.name}, behavioral loss", tm.model, behavioral_mse, tm.inputs, reference, None, 1e-8))

    for name, model, loss_fn, x, y, truth, rel in ctx.progress(entries, desc="higher_order"):
        p = _problem(model, loss_fn, x, y)
        base, qa, b4, seconds = _bounds(p, rel, ctx.seed, ctx.quick)
        est, sgld = _sgld(model, loss_fn, x, y, ctx.quick, ctx.seed)
        status = "certified" if qa.proven else "observed"
        quartic = "—" if b4.quartic is None else f"{b4.quartic} ({status}, {qa.method})"
        w2, w4 = base.upper - base.lower, b4.upper - b4.lower
        shrink = f"{float(w4 / w2):.2f}" if w2 else "—"
        rows.append(
            f"| {name} | {p.dim} | {base.rank} | {_fmt(base.lower, base.upper, base.exact)} | "
            f"{_fmt(b4.lower, b4.upper, b4.exact)} | {shrink} | {quartic} | {truth if truth is not None else '—'} | "
            f"{sgld} | {seconds:.2f} |"
        )
        plot.append((name, p.dim, base, b4, truth, est))

    lines = [
        "For every model the Hessian at w* is computed densely in float64; eigenvalues above "
        "τ = 1e-8·λ_max (zoo models with exact zeros, and behavioral losses) or 1e-6·λ_max (training losses of "
        "trained models) count towards the rank r. "
        "Order 2: r/2 ≤ λ ≤ d/2. Order 4 (docs/theory.md §3): the Schur-corrected quartic "
        "g₄(v) = T₄[v⁴]/24 − b(v)ᵀH⁺b(v)/8 on the null space is classified; positive definite gives "
        "λ = r/2 + k/4 exactly, g₄ ≢ 0 gives [r/2 + 1/4, r/2 + k/4]; g₄ ≡ 0 is never certified (floating-point evaluations "
        "cannot prove a quartic zero, and the tests must not depend on the units of w), so it keeps "
        "[r/2, r/2 + k/4] and the order-6 bound r/2 + k/6 it would imply is listed as observed. The "
        "bounds shown are the certified ones; what rests only on sampling is marked *observed* (the "
        "returned bounds never rely on it). \"indefinite\" means g₄ or the cubic T₃[v, v, v] takes negative "
        "values along the numerical null space: w* is not a minimum along it, or the threshold counts "
        "non-negligible eigenvalues as zero; the order-2 bounds are kept.",
        "",
        "| model | d | r | order-2 bounds | order-4 bounds | width 4 / width 2 | g₄ on null(H) | exact λ | SGLD λ̂ ± SE | order-4 time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    contained = [t is None or (b.lower <= t <= b.upper) for _, _, _, b, t, _ in plot]
    known = [(b, t) for _, _, _, b, t, _ in plot if t is not None]
    ctx.answer("Do the order-4 bounds contain the exact λ?",
               f"{sum(b.lower <= t <= b.upper for b, t in known)}/{len(known)} models with a known λ")
    ratios = [float((b4.upper - b4.lower) / (base.upper - base.lower)) for _, _, base, b4, _, _ in plot
              if base.upper > base.lower]
    ctx.answer("How much does order 4 narrow the order-2 interval [r/2, d/2]?",
               f"width ratio (order 4 / order 2) median {float(np.median(ratios)):.2f}, range "
               f"{min(ratios):.2f}–{max(ratios):.2f} over {len(ratios)} models; exact at order 4: "
               f"{sum(b4.exact for _, _, _, b4, _, _ in plot)}/{len(plot)}" if ratios else
               f"no model has an order-2 interval of positive width; exact at order 4: "
               f"{sum(b4.exact for _, _, _, b4, _, _ in plot)}/{len(plot)}")
    lines.append(
        f"Every exact λ lies inside its order-4 bounds: **{all(contained)}** "
        f"({sum(t is not None for *_, t, _ in plot)} models with a known λ). "
        "The SGLD column estimates the finite-n target E[nβK], not λ itself (docs/theory.md §1). For the trained "
        "models the bounds describe the n → ∞ limit at the chosen threshold: Hessian directions with "
        "nβ·h ≲ γ behave as degenerate at the sampled n (docs/theory.md §3, finite data), so SGLD can sit below r/2; "
        "and the toy model of superposition uses ReLU, whose loss is not analytic, so the Taylor bounds are only "
        "a guide there. With the behavioral loss, w* is a minimum by construction (its Hessian is the "
        "Gauss–Newton matrix and the cubic vanishes on its null space), so the order-4 analysis applies to the "
        "trained networks too; it bounds the behavioral LLC, an upper bound of the training-loss LLC for an "
        "interpolating model (docs/theory.md §1)."
    )

    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(plot) + 1.2))
    for i, (name, d, base, b4, truth, est) in enumerate(plot):
        half = d / 2
        ax.plot([float(base.lower) / half, float(base.upper) / half], [i + 0.15] * 2, color="0.7", lw=5,
                label="order 2" if i == 0 else None)
        ax.plot([float(b4.lower) / half, float(b4.upper) / half], [i - 0.15] * 2, color="C0", lw=5,
                label="order 4" if i == 0 else None)
        if b4.exact:
            ax.plot(float(b4.lower) / half, i - 0.15, "s", color="C0")
        if truth is not None:
            ax.plot(float(truth) / half, i, "k*", ms=11, label="exact λ" if i == 0 else None)
        if est is not None:
            ax.errorbar(float(est.mean) / half, i, xerr=2 * float(est.std_err) / half, fmt="x", color="C3",
                        label="SGLD ± 2 SE" if not any(e is not None for *_, e in plot[:i]) else None)
    ax.set_yticks(range(len(plot)), [name for name, *_ in plot], fontsize=8)
    ax.set_ylabel("model")
    ax.set_xlabel("λ / (d/2)  (dimensionless)")
    right = max([1.0] + [float(e.mean) / (d / 2) for _, d, _, _, _, e in plot if e is not None])
    ax.set_xlim(-0.02, right + 0.05)
    ax.axvline(1.0, color="0.5", lw=0.8, ls=":")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))  # outside: the bars fill the axes
    ax.set_title("LLC bounds at order 2 and order 4")
    lines += ["", f"![Order-2 and order-4 bounds (λ divided by d/2) with the exact λ]({ctx.savefig(fig, 'bounds')})", ""]

    # threshold sweep on the trained MLP: the numerical null space depends on τ
    if ctx.quick:
        lines.append("(Threshold sweep on the trained MLP: default mode only.)")
        return "\n".join(lines)
    taus = [1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2]
    with torch.no_grad():
        reference = mlp.model(mlp.inputs).detach()
    losses = [("training", _problem(mlp.model, mlp.loss_fn, mlp.inputs, mlp.targets)),
              ("behavioral", _problem(mlp.model, behavioral_mse, mlp.inputs, reference))]
    sweep = ["| loss | τ / λ_max | r | k | g₄ | order-4 bounds | max abs T₃[v³] on null(H) | atol |",
             "|---|---|---|---|---|---|---|---|"]
    for label, p in losses:
        for tau in taus:
            base, qa, b4, _ = _bounds(p, tau, ctx.seed, ctx.quick)
            sweep.append(
                f"| {label} | {tau:g} | {base.rank} | {base.nullity} | {b4.quartic} "
                f"({'certified' if qa.proven else 'observed'}) | {_fmt(b4.lower, b4.upper, b4.exact)} | "
                f"{qa.cubic_max:.2g} | {qa.atol:.2g} |"
            )
    lines += [
        f"Threshold sweep on the trained MLP ({mlp.name}, d = {p.dim}), training loss and behavioral loss: a "
        "trained network is not at an exact minimum of its training loss, so small-eigenvalue directions carry "
        "non-zero cubic terms. The behavioral loss has w* as a minimum, and at small τ its null space is a true "
        "one (exact symmetries and redundant units); at larger τ the \"null\" space contains small but non-zero "
        "curvature and the quartic no longer describes the loss there.",
        "",
        *sweep,
    ]
    return "\n".join(lines)
