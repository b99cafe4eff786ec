"""Measurements of one language-model checkpoint: curvature, rank bounds, LLC and behavioral LLC (issue 13).

Every measurement returns plain numbers (JSON-serialisable dicts) with its wall time and peak memory,
so that a study can store them, resume, and say what the next size up would cost.

* :func:`curvature` — the Hessian of L_n and the Gauss–Newton (Fisher) matrix, the Hessian of L_B, by
  stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017) with Hessian-vector products; their numerical
  rank as a curve in τ, the rank at τ(n) = γ/(nβ) (docs/theory.md §3, finite-data note) and the bounds
  rank(τ(n))/2 ≤ (finite-n target) ≤ d/2, the quadratic prediction ½·Σ h⁺/(h⁺ + τ(n)), the spectral
  mass below −τ(n) (w* is not a minimum of L_n where it is large) and ‖∇L_n(w*)‖.
* :func:`order4` — the quartic analysis on the null space at τ(n) where the null space is small enough
  (:func:`slt_interp.estimators.sharpen_bounds`), else the reason it cannot be done at this size.
* :func:`calibrate` — the package's step-size rule (:func:`slt_interp.estimators.calibrate_step_size`) once
  per checkpoint and loss: its pilots (17 chains, two gradients a step) cost far more than a short
  estimate of a transformer, so a study calibrates once and hands the step to every estimate of that loss
  (the weight-refined ones sample a subset of the same coordinates: the step is at least as stable there).
* :func:`llc` — SGLD estimates with the package's adaptive run length (:func:`slt_interp.estimators.estimate_llc`),
  nβ counted in tokens (:mod:`.problem`): the LLC, the behavioral LLC (KL) and weight-refined LLCs.
"""
from __future__ import annotations

import math
import os
import threading
import time
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor
from torch.func import grad

from slt_interp.estimators import (GaussNewtonOperator, HessianOperator, SGLDDivergenceError, behavioral_kl,
                                   behavioral_loss, calibrate_step_size, estimate_behavioral_llc, estimate_llc,
                                   reference_outputs, rank_curve, stochastic_lanczos_quadrature, threshold_for_sample_size,
                                   llc_bounds, training_loss)
from slt_interp.estimators.threads import choose_num_threads, intra_op_threads

from .problem import NextTokenLM, head_params, layer_params, next_token_loss, num_tokens, token_nbeta

__all__ = ["peak_memory", "curvature", "order4", "calibrate", "llc", "refined_selection", "ORDER4_MAX_NULLITY"]

#: the largest null space the quartic analysis takes: a quartic form in k variables has C(k+3, 4)
#: monomials, and :func:`slt_interp.estimators.analyze_quartic` fits at most 500 (k = 9: 495)
ORDER4_MAX_NULLITY = 9


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextmanager
def peak_memory(device: torch.device):
    """Wall time and peak memory above the start of the block: ``with peak_memory(dev) as m: ...; m["seconds"]``.

    On CUDA the peak of ``torch.cuda.max_memory_allocated``; on the CPU the peak resident set size,
    sampled every 10 ms by a thread (a lower bound on the true peak; short spikes can be missed).
    """
    out: dict = {}
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield out
        torch.cuda.synchronize(device)
        out["peak_memory_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        out["memory_kind"] = "CUDA allocated"
    else:
        base = _rss_bytes()
        peak = [base]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.01):
                peak[0] = max(peak[0], _rss_bytes())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield out
        finally:
            stop.set()
            thread.join()
            peak[0] = max(peak[0], _rss_bytes())
            out["peak_memory_mb"] = (peak[0] - base) / 2**20
            out["memory_kind"] = "CPU resident set"
    out["seconds"] = time.perf_counter() - start


def _problems(model: NextTokenLM, tokens: Tensor, batch_size: int):
    train, params = training_loss(model, next_token_loss, tokens, tokens, batch_size=batch_size)
    behav, _ = behavioral_loss(model, tokens, kind="kl", batch_size=batch_size)
    return train, behav, params


def _density(sq, bins: np.ndarray) -> dict:
    """SLQ spectral density as eigenvalue counts per bin of log10|λ|, split by sign (sums to ≈ d)."""
    nodes = sq.nodes.reshape(-1).numpy()
    weights = sq.weights.reshape(-1).numpy() * sq.dim / sq.nodes.shape[0]
    mag = np.log10(np.maximum(np.abs(nodes), 1e-300))
    pos, _ = np.histogram(mag[nodes > 0], bins=bins, weights=weights[nodes > 0])
    neg, _ = np.histogram(mag[nodes < 0], bins=bins, weights=weights[nodes < 0])
    return {"log10_edges": bins.tolist(), "positive": pos.tolist(), "negative": neg.tolist()}


def curvature(model: NextTokenLM, tokens: Tensor, *, num_probes: int, num_steps: int, batch_size: int,
              seed: int = 0, localization: float = 1.0) -> dict:
    """Hessian and Gauss–Newton spectra by SLQ, rank curves and the rank bounds at n (module docstring).

    Args:
        model: the checkpoint, wrapped.
        tokens: the sequences L_n is taken over, (B, T); n = B·(T − 1) tokens.
        num_probes: Rademacher probes per operator.
        num_steps: Lanczos steps per probe.
        batch_size: sequences per batch in each product (the products are full-data).
        seed: seeds the probes.
        localization: γ of τ(n) = γ/(nβ) (the SGLD runs' γ).

    Returns:
        A dict: ``dim``, ``n``, ``nbeta``, ``tau_n``, ``grad_norm``, and for ``"hessian"`` and
        ``"gauss_newton"``: ``rank_at_tau_n`` (mean, SE over probes), ``lower`` = rank/2 (SE),
        ``quadratic_llc`` = ½·soft-rank at τ(n), ``negative_below_tau_n`` (count, SE), ``max_eig``, the rank
        curve (``taus``, ``ranks``, ``rank_se``), the density, ``matvecs``, ``seconds``, ``peak_memory_mb``;
        ``rank_bracket`` / ``negative_bracket``: where the probes' counts at ±τ(n) can lie
        given only ``num_steps`` Lanczos steps (:meth:`SpectralQuadrature.count_bracket`; the SE is the probe
        spread only), and ``quadrature``: the per-probe nodes and weights (brackets at other thresholds are
        computed from it: ``SpectralQuadrature(nodes, weights, dim, num_steps, 0).count_bracket(τ)``).
    """
    device = next(model.parameters()).device
    work = batch_size * tokens.shape[1] * sum(p.numel() for p in model.parameters())
    with intra_op_threads(choose_num_threads(device, work)):
        return _curvature(model, tokens, device, num_probes, num_steps, batch_size, seed, localization)


def _curvature(model, tokens, device, num_probes, num_steps, batch_size, seed, localization):
    train, behav, params = _problems(model, tokens, batch_size)
    n, nb = num_tokens(tokens), token_nbeta(tokens)
    tau_n = float(threshold_for_sample_size(n, localization=localization, nbeta=nb))
    with torch.enable_grad():
        g = grad(lambda p: train(p))(params)
    grad_norm = float(torch.sqrt(sum((v.double() ** 2).sum() for v in g.values())))
    out = {"dim": sum(p.numel() for p in params.values()), "n": n, "nbeta": nb, "tau_n": tau_n, "grad_norm": grad_norm}
    for key, op_cls, loss in (("hessian", HessianOperator, train), ("gauss_newton", GaussNewtonOperator, behav)):
        with peak_memory(device) as cost:
            op = op_cls(loss, params)
            sq = stochastic_lanczos_quadrature(op, num_probes=num_probes, num_steps=num_steps,
                                               block_size=min(8, num_probes),
                                               generator=torch.Generator().manual_seed(seed))
        max_eig = float(sq.nodes.abs().max())
        taus = np.logspace(math.log10(max_eig) - 12, math.log10(max_eig), 49)
        curve = rank_curve(sq, thresholds=torch.tensor(taus))
        at_n = rank_curve(sq, thresholds=torch.tensor([tau_n]))
        neg = sq.count(-tau_n, above=False)
        out[key] = {
            "rank_at_tau_n": float(at_n.ranks[0]), "rank_se": float(at_n.std_err[0]),
            "rank_bracket": list(sq.count_bracket(tau_n)), "negative_bracket": list(neg.bracket),
            "quadrature": {"nodes": sq.nodes.tolist(), "weights": sq.weights.tolist()},
            "lower": float(at_n.ranks[0]) / 2, "lower_se": float(at_n.std_err[0]) / 2,
            "quadratic_llc": float(at_n.quadratic_llc[0]),
            "negative_below_tau_n": neg.count, "negative_se": neg.std_err, "max_eig": max_eig,
            "taus": taus.tolist(), "ranks": curve.ranks.tolist(), "rank_se_curve": curve.std_err.tolist(),
            "density": _density(sq, np.linspace(math.log10(max_eig) - 12, math.log10(max_eig) + 0.5, 50)),
            "num_probes": num_probes, "num_steps": int(sq.num_steps), "matvecs": int(sq.num_matvecs),
            "seconds": cost["seconds"], "peak_memory_mb": cost["peak_memory_mb"], "memory_kind": cost["memory_kind"],
        }
    return out


def order4(model: NextTokenLM, tokens: Tensor, curv: dict, *, batch_size: int,
           max_nullity: int = ORDER4_MAX_NULLITY) -> dict:
    """The quartic correction on the numerical null space at τ(n), or why it cannot be computed.

    With r the rank at τ(n) and k = d − r, the quartic analysis needs the null space as k explicit
    vectors and a quartic form in k variables; it runs only when the SLQ rank's 95% interval puts k at
    most ``max_nullity``. Otherwise the result says ``computed: False`` and gives k with its SE.
    """
    d, h = curv["dim"], curv["hessian"]
    k, k_se = d - h["rank_at_tau_n"], h["rank_se"]
    k_high = d - h.get("rank_bracket", (h["rank_at_tau_n"], 0.0))[0]  # the quadrature bracket's largest null space
    out = {"nullity": k, "nullity_se": k_se, "max_nullity": max_nullity, "computed": False}
    if max(k, k_high) + 2 * k_se > max_nullity:
        out["reason"] = (f"the numerical null space at τ(n) has dimension {k:.0f} ± {k_se:.0f} (SLQ), far above the "
                         f"{max_nullity} variables a quartic form of ≤ 500 monomials allows")
        return out
    device = next(model.parameters()).device
    train, _, params = _problems(model, tokens, batch_size)
    with peak_memory(device) as cost, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = llc_bounds(train, order=4, threshold=curv["tau_n"])
    out.update(computed=True, lower=float(b.lower), upper=float(b.upper), quartic=b.quartic,
               order2_lower=float(b.rank) / 2, warnings=[str(w.message) for w in caught], seconds=cost["seconds"],
               peak_memory_mb=cost["peak_memory_mb"])
    return out


def refined_selection(model: NextTokenLM, key: str):
    """The ``params=`` selection for ``key``: "all", "layer<l>" or "head<l>.<h>"."""
    if key == "all":
        return None
    if key.startswith("layer"):
        return layer_params(model, int(key[5:]))
    if key.startswith("head"):
        layer, head = key[4:].split(".")
        return head_params(model, int(layer), int(head))
    raise ValueError(f"unknown selection {key!r}; use 'all', 'layer<l>' or 'head<l>.<h>'")


def calibrate(model: NextTokenLM, tokens: Tensor, *, kind: str = "training", batch_size: int = 64,
              localization: float = 1.0, pilot_steps: int = 200, seed: int = 0) -> dict:
    """The SGLD step size of the package's rule for the LLC (``kind="training"``) or the behavioral LLC
    (``"behavioral"``, the KL from the checkpoint's own predictions) at this checkpoint.

    Returns:
        A dict: ``step_size``, ``acceptance_step``, ``bias_step``, ``max_curvature``, ``pilot_steps``,
        ``num_candidates`` (pilot chains), ``warnings``, ``seconds``, ``peak_memory_mb``.
    """
    if kind == "training":
        loss_fn, data = next_token_loss, (tokens, tokens)
    elif kind == "behavioral":
        loss_fn, data = behavioral_kl, (tokens, reference_outputs(model, tokens))
    else:
        raise ValueError(f"kind must be 'training' or 'behavioral', got {kind!r}")
    device = next(model.parameters()).device
    with peak_memory(device) as cost:
        cal = calibrate_step_size(model, loss_fn, data, nbeta=token_nbeta(tokens), localization=localization,
                                  batch_size=batch_size, seed=seed, pilot_steps=pilot_steps)
    return {"step_size": float(cal.step_size), "acceptance_step": float(cal.acceptance_step_size),
            "bias_step": float(cal.bias_bound_step_size), "max_curvature": float(cal.max_curvature),
            "pilot_steps": int(cal.pilot_steps), "num_candidates": len(cal.candidates), "warnings": list(cal.warnings),
            "seconds": cost["seconds"], "peak_memory_mb": cost["peak_memory_mb"]}


def llc(model: NextTokenLM, tokens: Tensor, *, kind: str = "training", selection: str = "all", batch_size: int = 64,
        localization: float = 1.0,
        num_chains: int = 4, max_seconds: float | None = None, max_steps: int | None = None, seed: int = 0,
        checkpoint_path=None, step_size: float | None = None) -> dict:
    """One SGLD estimate with the package's adaptive run length, nβ counted in tokens.

    Args:
        model: the checkpoint, wrapped.
        tokens: the sequences of L_n (or of L_B).
        kind: "training" (the LLC) or "behavioral" (the LLC of the behavioral KL, Bushnaq et al. 2024).
        selection: "all" or a weight refinement (:func:`refined_selection`).
        batch_size: sequences per SGLD gradient.
        localization: γ.
        num_chains: chains.
        max_seconds, max_steps: the adaptive run's budget (None: the package's defaults).
        seed: the estimate's seed.
        checkpoint_path: sampler checkpoint file (resumed when it exists).
        step_size: ε from :func:`calibrate` (None: calibrated inside the estimate). A chain that diverges
            at this ε is rerun with the estimator's own calibration and back-off (``recalibrated``).

    Returns:
        A dict: ``mean``, ``std_err``, ``converged``, ``num_draws``, ``num_burnin``, ``step_size``,
        ``steps_total`` (per chain, burn-in included), ``rhat``, ``ess``, ``warnings``, ``seconds``,
        ``peak_memory_mb``, ``num_params`` (sampled),
        ``recalibrated`` (the given ``step_size`` diverged and the estimator chose its own).
    """
    device = next(model.parameters()).device
    kw = dict(nbeta=token_nbeta(tokens), localization=localization, batch_size=batch_size, num_chains=num_chains, seed=seed,
              params=refined_selection(model, selection), max_seconds=max_seconds, max_steps=max_steps)
    if checkpoint_path is not None:
        kw.update(checkpoint_path=checkpoint_path, resume=os.path.exists(checkpoint_path))
    if kind not in ("training", "behavioral"):
        raise ValueError(f"kind must be 'training' or 'behavioral', got {kind!r}")

    def run(**extra):
        if kind == "training":
            return estimate_llc(model, next_token_loss, (tokens, tokens), **kw, **extra)
        return estimate_behavioral_llc(model, tokens, kind="kl", **kw, **extra)

    recalibrated = False
    with peak_memory(device) as cost, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            est = run(step_size=step_size)
        except SGLDDivergenceError:
            if step_size is None:
                raise
            if checkpoint_path is not None and os.path.exists(checkpoint_path):
                os.remove(checkpoint_path)  # its fingerprint holds the step that diverged
            kw["resume"] = False
            est, recalibrated = run(), True
    s, dgn = est.settings, est.diagnostics
    return {"mean": float(est.mean), "std_err": float(est.std_err), "converged": bool(est.converged),
            "num_draws": int(s.num_draws), "num_burnin": int(s.num_burnin), "step_size": float(s.step_size),
            "steps_total": int(s.steps_total), "rhat": float(dgn.rhat), "ess": float(dgn.ess),
            "num_params": int(s.num_sampled_params),
            "warnings": sorted({str(w.message).split("\n")[0][:300] for w in caught}),
            "recalibrated": recalibrated, "seconds": cost["seconds"], "peak_memory_mb": cost["peak_memory_mb"]}
