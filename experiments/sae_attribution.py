"""Attribution sparsity vs activation sparsity for end-to-end SAEs on a toy model of superposition (issue 15, item 3).

Toy model (Elhage et al. 2022, "Toy Models of Superposition"): F sparse features x_j ∈ [0, 1] (each
non-zero with probability ``density``), hidden h = W x ∈ ℝ^{d_h}, output x' = ReLU(Wᵀh + b), trained on
Σ_j I_j (x_j − x'_j)² with importance I_j = decay^j. The downstream output of a hidden vector is
y(h) = √I ⊙ ReLU(Wᵀh + b), so ‖y(h) − y(ĥ)‖² is the importance-weighted downstream error.

End-to-end SAE (Braun et al. 2024, arXiv 2405.12241) on h: loss ‖y(h) − y(ĥ)‖² + coeff·penalty, where
the penalty is Σ|f_i|^p (activation sparsity) or the attribution penalty Σ_i |f_i ⟨u, ∂y(ĥ)/∂f_i⟩|^p with
one Rademacher direction u per batch (``slt_interp.theory.attribution_penalty``). The coefficient is
bisected to a matched downstream FVU. Scores: L0, live latents, true feature directions (columns
W_j of the features the toy model represents, ‖W_j‖ > 0.5) recovered by a live decoder column with
cosine > 0.9, recovered features per live latent, and the importance-weighted share recovered.
"""
from __future__ import annotations

import torch

from experiments.sae import _threads
from experiments.sae_geometry import derived_penalty
from experiments.sae_variants import bisect_coeff, train_variant
from slt_interp.theory import attribution_penalty


def train_toy_model(F: int, d_h: int, density: float, decay: float, steps: int, seed: int):
    """(W (d_h, F), b (F,), importance (F,)) of a toy model of superposition trained with Adam."""
    gen = torch.Generator().manual_seed(seed)
    importance = decay ** torch.arange(F, dtype=torch.float32)
    W = (torch.randn(d_h, F, generator=gen) * 0.3).requires_grad_(True)
    b = torch.zeros(F, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=1e-2)
    with _threads(1):
        for _ in range(steps):
            x = sample_features(512, F, density, gen)
            out = torch.relu(x @ W.T @ W + b)
            loss = (importance * (x - out).pow(2)).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return W.detach(), b.detach(), importance


def sample_features(n: int, F: int, density: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, F, generator=gen) * (torch.rand(n, F, generator=gen) < density)


def downstream(W, b, importance):
    scale = importance.sqrt()
    return lambda h: scale * torch.relu(h @ W + b)


def recovery(decoder, live, W, importance, threshold: float = 0.9) -> dict:
    """Features the toy model represents (‖W_j‖ > 0.5) that some live decoder column matches (cos > threshold)."""
    rep = W.norm(dim=0) > 0.5
    t = W[:, rep] / W[:, rep].norm(dim=0, keepdim=True)
    dec = decoder[:, live] / decoder[:, live].norm(dim=0, keepdim=True)
    if dec.shape[1] == 0:
        hit = torch.zeros(int(rep.sum()), dtype=torch.bool)
    else:
        hit = (t.T @ dec).max(dim=1).values > threshold
    imp = importance[rep]
    return dict(represented=int(rep.sum()), recovered=int(hit.sum()),
                weighted=float((imp * hit).sum() / imp.sum()))


def run_study(*, F: int, d_h: int, density: float, decay: float, toy_steps: int, n: int, m: int, steps: int,
              seeds: list[int], arms: list[tuple[str, float]], target_fvu: float, iterations: int, lo: float, hi: float,
              lr: float = 1e-2, data_seed: int = 0, progress=lambda it, **k: it) -> tuple[list[dict], dict]:
    """One row per (arm, seed); arms are ("activation" | "attribution", p). Returns rows and the toy model's facts."""
    W, b, importance = train_toy_model(F, d_h, density, decay, toy_steps, data_seed)
    gen = torch.Generator().manual_seed(data_seed + 1)
    x = sample_features(n, F, density, gen)
    h = x @ W.T
    y = downstream(W, b, importance)

    def recon(hb, hhat):
        return (y(hb) - y(hhat)).pow(2).sum(-1)

    rows = []
    for kind, p in progress(arms, total=len(arms)):
        act = derived_penalty(p)

        def train(c, seed, kind=kind, p=p, act=act):
            dirs = torch.Generator().manual_seed(10_000 + seed)
            if kind == "activation":
                pen = lambda f, _params: act(f)  # noqa: E731
            else:
                def pen(f, params):
                    return attribution_penalty(f, lambda c_: y(c_ @ params["W_dec"].T + params["b_dec"]), p=p,
                                               generator=dirs)
            return train_variant(h, m, penalty=pen, coeff=c, reconstruction=recon, steps=steps, lr=lr, seed=seed)

        first, _ = bisect_coeff(lambda c: train(c, seeds[0]), lambda r: r.fvu, target_fvu, lo=lo, hi=hi,
                                iterations=iterations, increasing=True)
        for seed in seeds:
            r = first if seed == seeds[0] else train(first.coeff, seed)
            f = r.codes(h)
            live = (f != 0).float().mean(0) > 1e-3
            rec = recovery(r.decoder, live, W, importance)
            rows.append(dict(arm=f"{kind}, p = {p}", kind=kind, p=p, seed=seed, l0=r.l0, fvu=r.fvu, coeff=r.coeff,
                             live=int(live.sum()), per_live=rec["recovered"] / max(int(live.sum()), 1), **rec))
    facts = dict(represented=int((W.norm(dim=0) > 0.5).sum()), norms=W.norm(dim=0).tolist())
    return rows, facts
