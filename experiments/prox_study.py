"""Study: does an SAE whose encoder is the prior's MAP encoder (the prox of its derived penalty) close the
gap to TopK at matched L0? (issue 15, item 1)

Synthetic activations x = D·a (unit-norm dictionary D, d × F) with codes a ≥ 0 from a spike-and-slab
prior: P(a_i ≠ 0) = p and a slab (exponential, Lomax, or a bump N(μ, σ²)), as in
:mod:`experiments.sections.sparsity`. Four SAEs per data set, all with the model of
:mod:`experiments.sae` (f = σ(W_enc·(x − b_dec) + b_enc), x̂ = W_dec·f + b_dec, unit decoder columns, Adam):

* **L1-ReLU**: σ = ReLU, loss ‖x − x̂‖² + c·Σ f;
* **TopK**: keep the k largest pre-activations (Gao et al. 2024, arXiv 2406.04093);
* **JumpReLU**: σ = v·H(v − θ), loss ‖x − x̂‖² + c·Σ H(v − θ) (Rajamanoharan et al. 2024, arXiv 2407.14435);
* **prox, learned θ**: σ = :class:`~slt_interp.theory.ProxEncoder` of the generating prior's derived
  penalty ρ with step t, loss ‖x − x̂‖² + 2t·ρ(f) (the MAP energy with likelihood variance t), the gate's
  threshold learned through the pseudo-derivative as in JumpReLU;
* **prox, exact θ***: the same with the gate held at the exact jump θ*(t), so the activation is the exact
  prox of t·ρ at every step (t alone sets the sparsity).

L0 is matched to k = round(p·F) by a controller on the sparsity knob (c, or t for the prox): after every
step log c ← log c + η·log((L0_batch + ½)/(goal + ½)), where the goal moves geometrically from the
initial L0 to k over the first half of training and is k after that (no integral windup); the same
rule for every arm, one training run each, no bisection. Scores on the training activations: MMCS
(mean over true atoms of the best decoder cosine), FVU, dead fraction, and the L0 reached; mean ±
standard error over seeds (each seed a new dictionary, new codes and a new initialisation).
"""
from __future__ import annotations

import copy
import math
import time

import sympy as sp
import torch
from torch import Tensor

from experiments.sae import _threads, mean_max_cosine
from slt_interp.theory import JumpReLU, ProxEncoder, heaviside_ste, penalty_from_prior

PROX_LEARNED, PROX_EXACT = "prox, learned θ", "prox, exact θ*"
METHODS = ("L1-ReLU", "TopK", "JumpReLU", PROX_LEARNED, PROX_EXACT)
START = {"L1-ReLU": 0.5, "TopK": 1.0, "JumpReLU": 0.1, PROX_LEARNED: 0.01, PROX_EXACT: 0.01}  # the knob's start
PRIORS = ("exponential slab", "Lomax slab", "bump slab")
_A = sp.Symbol("a", nonnegative=True)
LOMAX_ALPHA, LOMAX_S, BUMP_MU, BUMP_SIGMA = 2.5, 1.0, 1.0, 0.2


def settings(quick: bool) -> dict:
    """The study's sizes: quick (≲ 15 s) or default (≲ 3 min on 2 cores)."""
    if quick:
        return dict(d=8, F=12, m=16, n=512, p=0.25, steps=40, batch=64, lr=3e-3, eta=0.1, bandwidth=0.1,
                    seeds=5)
    return dict(d=32, F=48, m=64, n=8192, p=1 / 16, steps=500, batch=256, lr=3e-3, eta=0.05, bandwidth=0.1,
                seeds=5)


def describe(kind: str, p: float) -> str:
    """One line: the prior's spike weight and slab."""
    slab = {"exponential slab": "Exponential(1)", "Lomax slab": f"Lomax(α = {LOMAX_ALPHA}, s = {LOMAX_S})",
            "bump slab": f"N({BUMP_MU}, {BUMP_SIGMA}²) (cut at 0)"}[kind]
    return f"P(a ≠ 0) = {p:.4g}, slab {slab}"


def true_prior(kind: str, p: float):
    """The generating prior π₀·δ₀ + (1 − π₀)·slab, with its derived penalty and prox."""
    pi0 = sp.nsimplify(1 - p)  # exact rationals: the symbolic analysis is ~10× faster than with Floats
    alpha, scale, sig = sp.nsimplify(LOMAX_ALPHA), sp.nsimplify(LOMAX_S), sp.nsimplify(BUMP_SIGMA)
    if kind == "exponential slab":
        slab = sp.exp(-_A)
    elif kind == "Lomax slab":
        slab = alpha / scale * (1 + _A / scale) ** (-alpha - 1)
    else:
        slab = sp.exp(-(_A - sp.nsimplify(BUMP_MU)) ** 2 / (2 * sig**2)) / sp.sqrt(2 * sp.pi * sig**2)
    return penalty_from_prior(pi0 * sp.DiracDelta(_A) + (1 - pi0) * slab, [_A], source=kind)


def sample_codes(kind: str, n: int, F: int, p: float, gen: torch.Generator) -> Tensor:
    """Codes (n, F): Bernoulli(p) masks times slab magnitudes."""
    mask = (torch.rand(n, F, generator=gen) < p).double()
    if kind == "exponential slab":
        mag = torch.empty(n, F, dtype=torch.float64).exponential_(generator=gen)
    elif kind == "Lomax slab":  # by inversion: s·(U^(−1/α) − 1)
        mag = LOMAX_S * (torch.rand(n, F, generator=gen, dtype=torch.float64).clamp_min(1e-12) ** (-1 / LOMAX_ALPHA) - 1)
    else:
        mag = (BUMP_MU + BUMP_SIGMA * torch.randn(n, F, generator=gen, dtype=torch.float64)).clamp_min(1e-6)
    return (mask * mag).float()


def train(x: Tensor, m: int, method: str, target_l0: int, s: dict, seed: int, encoder: ProxEncoder | None = None):
    """Train one SAE with L0 controlled towards ``target_l0``; returns the metrics dict."""
    n, d = x.shape
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d, m, generator=gen, dtype=x.dtype)
    w = w / w.norm(dim=0, keepdim=True)
    params = {"W_enc": w.T.clone().requires_grad_(True), "b_enc": torch.zeros(m, dtype=x.dtype, requires_grad=True),
              "W_dec": w.clone().requires_grad_(True), "b_dec": x.mean(0).clone().requires_grad_(True)}
    act = None
    if method == "JumpReLU":
        act = JumpReLU(m, threshold=0.1, bandwidth=s["bandwidth"])
    elif method.startswith("prox"):
        act = copy.deepcopy(encoder)
        act.learn_threshold = method == PROX_LEARNED
        act.threshold.requires_grad_(act.learn_threshold)
        act.step = START[method]
        act.reset_threshold()
    extra = [q for q in act.parameters() if q.requires_grad] if act is not None else []
    opt = torch.optim.Adam(list(params.values()) + extra, lr=s["lr"])
    log_c = math.log(START[method])

    def encode(xb, c):
        pre = (xb - params["b_dec"]) @ params["W_enc"].T + params["b_enc"]
        if method == "TopK":
            vals, idx = pre.topk(target_l0, dim=-1)
            return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals)), None
        if method == "L1-ReLU":
            f = torch.relu(pre)
            return f, c * f.sum(-1)
        if method == "JumpReLU":
            return act(pre), c * heaviside_ste(pre, act.threshold, act.bandwidth).sum(-1)
        act.step = c
        f, rho = act.encode(pre)
        return f, 2 * c * rho

    batch = min(s["batch"], n)
    warm = max(1, s["steps"] // 2)
    with torch.no_grad():
        f0, _ = encode(x[:batch], math.exp(log_c))
        start_l0 = max(float((f0 != 0).sum(-1).float().mean()), 0.5)
    for step in range(s["steps"]):
        # the L0 goal moves geometrically from the initial L0 to k over the first half (no windup), then stays at k
        goal = target_l0 * (start_l0 / target_l0) ** max(0.0, 1 - step / warm)
        xb = x[torch.randint(n, (batch,), generator=gen)]
        f, pen = encode(xb, math.exp(log_c))
        loss = (xb - f @ params["W_dec"].T - params["b_dec"]).pow(2).sum(-1).mean()
        if pen is not None:
            loss = loss + pen.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            params["W_dec"] /= params["W_dec"].norm(dim=0, keepdim=True).clamp_min(1e-12)
        if pen is not None:
            l0 = float((f != 0).sum(-1).float().mean())
            log_c = min(max(log_c + s["eta"] * math.log((l0 + 0.5) / (goal + 0.5)), -20.0), 10.0)

    with torch.no_grad():
        f, _ = encode(x, math.exp(log_c))
        xhat = f @ params["W_dec"].T + params["b_dec"]
        mse = float((x - xhat).pow(2).sum(-1).mean())
        var = float((x - x.mean(0)).pow(2).sum(-1).mean())
        return dict(l0=float((f != 0).sum(-1).float().mean()), fvu=mse / var,
                    dead=float(((f != 0).sum(0) == 0).float().mean()), decoder=params["W_dec"].detach(),
                    knob=math.exp(log_c) if method != "TopK" else float("nan"))


def run_study(s: dict, seed: int = 0, progress=lambda it, **kw: it) -> dict:
    """All priors × methods × seeds.

    Returns {"rows": [...], "seconds": wall time, "cpu_seconds": process CPU time, "target_l0": k,
    "encoders": {prior: its ProxEncoder template (step 0.1)}}.
    """
    start, cpu = time.perf_counter(), time.process_time()
    target = max(1, round(s["p"] * s["F"]))
    rows, encoders = [], {}
    with _threads(1):
        for kind in progress(PRIORS, total=len(PRIORS)):
            prior = true_prior(kind, s["p"])
            template = encoders[kind] = ProxEncoder(prior, s["m"], step=0.1, bandwidth=s["bandwidth"])
            for k in range(s["seeds"]):
                gen = torch.Generator().manual_seed(1000 * seed + k)
                D = torch.randn(s["d"], s["F"], generator=gen)
                D = D / D.norm(dim=0, keepdim=True)
                x = sample_codes(kind, s["n"], s["F"], s["p"], gen) @ D.T
                for method in METHODS:
                    r = train(x, s["m"], method, target, s, seed=1000 * seed + k, encoder=template)
                    r["mmcs"] = mean_max_cosine(D, r.pop("decoder"))
                    rows.append(dict(prior=kind, method=method, seed=k, **r))
    return dict(rows=rows, seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu,
                target_l0=target, encoders=encoders)


def mean_std_err(values) -> tuple[float, float]:
    """Mean and its standard error (sample std / √n) over seeds."""
    t = torch.tensor(list(values), dtype=torch.float64)
    return float(t.mean()), float(t.std() / math.sqrt(t.numel())) if t.numel() > 1 else float("nan")


def paired_difference(rows, kind: str, a: str, b: str, key: str = "mmcs") -> tuple[float, float]:
    """Mean over seeds of (a − b) in ``key`` on the same data set, and its standard error."""
    by = {(r["method"], r["seed"]): r[key] for r in rows if r["prior"] == kind}
    seeds = sorted({sd for (_, sd) in by})
    return mean_std_err(by[(a, sd)] - by[(b, sd)] for sd in seeds)
