"""Mutually exclusive features: L1 vs exclusive-group penalties (fixed, learned, oracle grouping) vs Π(1 + a_i).

Issue 15, item 4. Data x = D·a with F features in groups of g; in each group at most one feature is
active (the group fires with probability ``group_prob``, then one member uniformly), magnitude
Exponential(1). Members of a group share part of their direction (``within`` mixes a common group
direction into each atom), as competing features often do. SAEs (ReLU codes, m latents) at a
matched L0 with penalties

* L1: Σ f_i;
* exclusive (for each coupling c), contiguous blocks: Σ f_i + c·Σ_{i<j in a block of g latents} f_i f_j — the derived
  penalty of the exclusive-group prior (``slt_interp.theory.exclusive_group_penalty`` with a hard
  assignment); useful only if the SAE puts competing features in one block;
* exclusive, learned grouping: the same with a soft assignment P = softmax(Z) over G = F/g groups,
  Z trained with the SAE (co-firing latents are pushed into different groups);
* exclusive, oracle grouping (upper reference): latent i is put in the true group of its best-matching
  atom, recomputed every 25 steps;
* product: Π_i (1 + f_i) over all latents (``product_code_penalty``), the seed comment's proposal, and
  Σ_blocks Π_{i in block}(1 + f_i) over the contiguous blocks (the catalogue's ``product_penalty(g)``
  applied per group of latents);
* TopK with k = the target L0 (reference).

Score: MMCS (mean over true atoms of the best decoder cosine), FVU, dead latents.
"""
from __future__ import annotations

import itertools

import torch

from experiments.sae import mean_max_cosine
from experiments.sae_variants import bisect_coeff, train_variant
from slt_interp.theory import contiguous_groups, exclusive_group_penalty, product_code_penalty

GROUPINGS = ("contiguous blocks", "learned grouping", "oracle grouping")


def arm_names(couplings) -> list[str]:
    """The arms in table order: L1, the exclusive penalties for every coupling c and grouping, products, TopK."""
    return (["L1"] + [f"exclusive (c = {c:g}), {kind}" for c in couplings for kind in GROUPINGS]
            + ["product Π(1 + f_i), all latents", "product Π(1 + f_i) per block", "TopK"])


def make_data(n: int, d: int, F: int, g: int, group_prob: float, within: float, seed: int):
    """(x (n, d), D (d, F), true group of each feature (F,), codes a (n, F))."""
    gen = torch.Generator().manual_seed(seed)
    G = F // g
    centres = torch.randn(d, G, generator=gen)
    centres = centres / centres.norm(dim=0, keepdim=True)
    noise = torch.randn(d, F, generator=gen)
    noise = noise / noise.norm(dim=0, keepdim=True)
    D = within * centres.repeat_interleave(g, dim=1) + (1 - within) * noise
    D = D / D.norm(dim=0, keepdim=True)
    active = torch.rand(n, G, generator=gen) < group_prob
    which = torch.randint(g, (n, G), generator=gen)
    mask = torch.zeros(n, G, g).scatter(-1, which.unsqueeze(-1), 1.0) * active.unsqueeze(-1)
    codes = mask.reshape(n, F) * torch.empty(n, F).exponential_(generator=gen)
    return codes @ D.T, D, torch.arange(F) // g, codes


def _topk_encoder(k: int):
    def encode(pre, _coeff):
        vals, idx = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    return encode


def grouping_agreement(P: torch.Tensor, decoder: torch.Tensor, D: torch.Tensor, feature_group: torch.Tensor) -> float:
    """Among latent pairs whose best-matching atoms share a true group, the share put in one learned group."""
    best = (decoder / decoder.norm(dim=0)).T @ D  # (m, F)
    true_group = feature_group[best.argmax(1)]
    learned = P.argmax(1)
    same = [(i, j) for i, j in itertools.combinations(range(P.shape[0]), 2) if true_group[i] == true_group[j]]
    if not same:
        return float("nan")
    return sum(bool(learned[i] == learned[j]) for i, j in same) / len(same)


def run_study(*, n: int, d: int, F: int, g: int, m: int, group_prob: float, within: float, couplings, steps: int,
              seeds: list[int], iterations: int, lo: float, hi: float, lr: float = 1e-2, data_seed: int = 0,
              progress=lambda it, **k: it) -> list[dict]:
    """One row per (arm, seed) with L0, MMCS, FVU, dead share, (learned grouping) the grouping agreement, and
    the bisection's (coefficient, L0) pairs on the first seed."""
    x, D, feature_group, _ = make_data(n, d, F, g, group_prob, within, data_seed)
    G = F // g
    target = group_prob * G
    blocks = contiguous_groups(m, m // G)
    rows = []
    arms = arm_names(couplings)
    for arm in progress(arms, total=len(arms)):
        def train(c, seed, arm=arm):
            kw = {}
            coupling = float(arm.split("c = ")[1].split(")")[0]) if arm.startswith("exclusive") else 0.0
            if arm == "L1":
                pen = lambda f, _p: f.sum(-1)  # noqa: E731
            elif arm.endswith("contiguous blocks"):
                pen = lambda f, _p: exclusive_group_penalty(f, blocks, coupling=coupling)  # noqa: E731
            elif arm.endswith("learned grouping"):
                gen = torch.Generator().manual_seed(20_000 + seed)
                kw = dict(extra={"Z": 0.01 * torch.randn(m, G, generator=gen)}, extra_lr=0.05)
                pen = lambda f, p: exclusive_group_penalty(f, torch.softmax(p["Z"], -1), coupling=coupling)  # noqa: E731
            elif arm.endswith("oracle grouping"):
                P = torch.full((m, G), 1.0 / G)

                def hook(params, P=P):
                    best = (params["W_dec"] / params["W_dec"].norm(dim=0)).T @ D  # (m, F)
                    P.copy_(torch.nn.functional.one_hot(feature_group[best.argmax(1)], G).float())

                kw = dict(hook=hook, hook_every=25)
                pen = lambda f, _p, P=P: exclusive_group_penalty(f, P, coupling=coupling)  # noqa: E731
            elif arm == "product Π(1 + f_i), all latents":
                pen = lambda f, _p: product_code_penalty(f)  # noqa: E731
            elif arm == "product Π(1 + f_i) per block":
                pen = lambda f, _p: product_code_penalty(f, group_size=m // G)  # noqa: E731
            else:
                return train_variant(x, m, penalty=lambda f, _p: f.sum(-1) * 0, coeff=0.0,
                                     encode=_topk_encoder(max(1, round(target))), steps=steps, lr=lr, seed=seed)
            return train_variant(x, m, penalty=pen, coeff=c, steps=steps, lr=lr, seed=seed, **kw)

        if arm == "TopK":
            first, runs = train(0.0, seeds[0]), []
        else:
            first, runs = bisect_coeff(lambda c: train(c, seeds[0]), lambda r: r.l0, target, lo=lo, hi=hi,
                                    iterations=iterations, increasing=False)
        for seed in seeds:
            r = first if seed == seeds[0] else train(first.coeff, seed)
            agree = (grouping_agreement(torch.softmax(r.params["Z"], -1), r.decoder, D, feature_group)
                     if "Z" in r.params else float("nan"))
            rows.append(dict(arm=arm, seed=seed, l0=r.l0, mmcs=mean_max_cosine(D, r.decoder), fvu=r.fvu,
                             dead=r.dead_fraction, coeff=r.coeff, agreement=agree,
                             sweep=[(run.coeff, run.l0) for run in runs], n_groups=G))
    return rows, target
