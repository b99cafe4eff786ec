"""The study SAE: TopK sparsity, the penalty controls L0, recovery metric, and input errors."""
import math

import pytest
import torch

from experiments.sae import mean_max_cosine, train_sae, tune_to_l0


def data(n=512, d=8, F=12, p=0.15, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(d, F, generator=g)
    D = D / D.norm(dim=0)
    codes = torch.empty(n, F).exponential_(generator=g) * (torch.rand(n, F, generator=g) < p)
    return codes @ D.T, D


def test_topk_keeps_at_most_k_latents():
    x, _ = data()
    r = train_sae(x, 16, topk=2, steps=30, seed=0)
    assert (r.encode(x) > 0).sum(-1).max() <= 2 and r.l0 <= 2


def test_stronger_l1_gives_lower_l0_and_bisection_reaches_it():
    x, D = data()
    weak = train_sae(x, 16, penalty=lambda f: f.sum(-1), penalty_coeff=0.01, steps=150, seed=0)
    strong = train_sae(x, 16, penalty=lambda f: f.sum(-1), penalty_coeff=3.0, steps=150, seed=0)
    assert strong.l0 < weak.l0
    assert weak.fvu < 0.5
    best, runs = tune_to_l0(lambda c: train_sae(x, 16, penalty=lambda f: f.sum(-1), penalty_coeff=c, steps=150, seed=0),
                            target_l0=3.0, lo=0.01, hi=3.0, iterations=4)
    assert min(r.l0 for r in runs) < 3.0 < max(r.l0 for r in runs)  # the bisection brackets the target
    assert len(runs) == 4 and any(best is r for r in runs)
    assert abs(math.log(best.l0 / 3.0)) == min(abs(math.log(max(r.l0, 1e-3) / 3.0)) for r in runs)
    assert runs[0].penalty_coeff == pytest.approx(math.sqrt(0.01 * 3.0))  # first probe: geometric midpoint


def test_mean_max_cosine_is_one_for_the_true_dictionary_up_to_permutation():
    _, D = data()
    perm = D[:, torch.randperm(D.shape[1], generator=torch.Generator().manual_seed(1))]
    assert mean_max_cosine(D, torch.cat([3 * perm, torch.randn(D.shape[0], 4)], dim=1)) == pytest.approx(1.0, abs=1e-6)
    assert mean_max_cosine(D, torch.randn(D.shape[0], 3)) < 0.99


def test_train_sae_input_errors():
    x, _ = data()
    with pytest.raises(ValueError, match="exactly one of penalty"):
        train_sae(x, 16)
    with pytest.raises(ValueError, match="exactly one of penalty"):
        train_sae(x, 16, penalty=lambda f: f.sum(-1), topk=2)
    with pytest.raises(ValueError, match="topk must be in"):
        train_sae(x, 16, topk=17)
    with pytest.raises(ValueError, match="shape"):
        train_sae(x[0], 16, topk=2)
