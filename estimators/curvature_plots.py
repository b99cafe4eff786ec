"""Plots of Hessian spectra and of rank/bounds versus the threshold (matplotlib; nothing is shown or saved).

* :func:`plot_spectrum` — sorted |eigenvalues| on a log scale, negative ones marked, the threshold τ as a
  horizontal line: the eigenvalues above it are the rank.
* :func:`plot_rank_curve` — lower bound rank(τ)/2, upper bound d/2, the quadratic SGLD target ½·Σ h/(h + τ)
  and (optionally) the exact λ, against τ or n (docs/theory.md §3); for SLQ the probe band and the
  quadrature bracket of the lower bound.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .rank_curve import RankCurve

__all__ = ["plot_spectrum", "plot_rank_curve"]


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5.5, 3.6))
    return ax


def plot_spectrum(eigenvalues: Tensor, threshold: float | None = None, *, ax=None, label: str | None = None, floor: float | None = None):
    """Scatter |λ_i| (descending) on a log y-axis; negative eigenvalues as open red circles.

    Args:
        eigenvalues: 1-d tensor.
        threshold: τ to mark (a dashed line), optional.
        ax: matplotlib axes (a new figure if None).
        label: legend label of the positive eigenvalues.
        floor: |λ| below this are drawn at ``floor`` (exact zeros have no logarithm); default
            1e-20·max|λ|, far below float64 round-off.

    Returns:
        The axes.
    """
    ax = _axes(ax)
    ev = torch.as_tensor(eigenvalues).detach().double().cpu().reshape(-1)
    order = torch.argsort(ev.abs(), descending=True)
    if floor is None:
        top = float(ev.abs().max()) if len(ev) else 0.0
        floor = 1e-20 * top if top > 0 else 1e-300
    mag = ev.abs()[order].clamp_min(floor)
    idx = torch.arange(1, len(ev) + 1)
    neg = ev[order] < 0
    ax.scatter(idx[~neg], mag[~neg], s=6, label=label or "λ > 0")
    if bool(neg.any()):
        ax.scatter(idx[neg], mag[neg], s=14, facecolors="none", edgecolors="tab:red", label="|λ|, λ < 0")
    if threshold is not None and threshold > 0:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"τ = {threshold:.2g}")
    ax.set_yscale("log")
    ax.set_xlabel("index (sorted by |λ|)")
    ax.set_ylabel("|eigenvalue|")
    ax.legend(fontsize=8)
    return ax


def plot_rank_curve(curve: RankCurve, *, llc: float | None = None, ax=None, against: str = "threshold", title: str | None = None):
    """Bounds rank(τ)/2 ≤ λ ≤ d/2 and the quadratic SGLD target ½·soft_rank(τ) against τ (or n).

    Args:
        curve: a :class:`RankCurve`.
        llc: the exact λ, drawn as a horizontal line when known.
        ax: matplotlib axes.
        against: "threshold" (log τ) or "n" (needs a curve from :func:`rank_curve_vs_n`).
        title: axes title.

    Returns:
        The axes.

    Raises:
        ValueError: ``against="n"`` for a curve without sample sizes.
    """
    if against not in ("threshold", "n"):
        raise ValueError(f"against must be 'threshold' or 'n', got {against!r}")
    if against == "n" and curve.num_samples is None:
        raise ValueError("this curve has no sample sizes: build it with slt_interp.estimators.rank_curve_vs_n")
    ax = _axes(ax)
    x = (curve.thresholds if against == "threshold" else curve.num_samples).numpy()
    lower = curve.lower.numpy()
    ax.step(x, lower, where="mid", label="lower = rank(τ)/2")
    if bool((curve.std_err > 0).any()):
        se = curve.std_err.numpy() / 2
        ax.fill_between(x, lower - 2 * se, lower + 2 * se, alpha=0.25, step="mid", label="±2 SE (SLQ)")
    if curve.lower_bracket is not None:
        low, high = (b.numpy() for b in curve.lower_bracket)
        ax.fill_between(x, low, high, step="mid", facecolor="none", edgecolor="tab:blue", hatch="///", lw=0,
                        alpha=0.6, label="quadrature bracket (Lanczos resolution)")
    ax.axhline(curve.upper, color="tab:gray", ls=":", label="upper = d/2")
    ax.plot(x, curve.quadratic_llc.numpy(), color="tab:green", lw=1, label="½·Σ h/(h+τ) (quadratic target)")
    if llc is not None:
        ax.axhline(llc, color="tab:red", ls="--", lw=1, label=f"exact λ = {llc:g}")
    ax.set_xscale("log")
    ax.set_xlabel("threshold τ" if against == "threshold" else "n  (τ = γ/(nβ))")
    ax.set_ylabel("LLC bound")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return ax
