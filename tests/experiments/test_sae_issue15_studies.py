"""Helpers of the issue-15 SAE studies: the signed-code prox, pair counts, the toy model's metrics, the grouping."""
import math

import pytest
import torch

from experiments.sae_exclusive import grouping_agreement, make_data
from experiments.sae_geometry import opposing_pairs, prox_abs_pow, random_pairs_expected
from experiments.sae_variants import bisect_coeff, mean_std_err, train_variant
from slt_interp.theory import PRIOR_CATALOGUE

DT = torch.float64


@pytest.mark.parametrize("p", [0.25, 0.5, 1.0])
def test_signed_prox_is_the_library_derived_prox_of_abs_pow(p):
    """Closed form / Newton against the derived prox (grid minimisation of ½(a − v)² + t|a|^p)."""
    v = torch.linspace(-2.5, 2.5, 41, dtype=DT)
    ref = PRIOR_CATALOGUE["generalized_gaussian"]().prox(v[:, None], step=0.4, s=1.0, p=p)[:, 0]
    assert torch.allclose(prox_abs_pow(v, 0.4, p), ref, atol=1e-6)


def test_signed_prox_derivative_is_the_implicit_derivative():
    v = torch.tensor([0.9, -1.3, 2.0], dtype=DT, requires_grad=True)
    t, p = 0.3, 0.5
    a = prox_abs_pow(v, t, p)
    (grad,) = torch.autograd.grad(a.sum(), v)
    x = a.detach().abs()
    want = 1 / (1 + t * p * (p - 1) * x ** (p - 2))  # d/dv of the root of x + t p x^{p−1} = |v|
    assert bool((x > 0).all()) and torch.allclose(grad, want, atol=1e-10)


def test_opposing_pair_count_and_random_expectation():
    dec = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.1, 1.0, -0.6]])
    live = torch.ones(4, dtype=torch.bool)
    # (d = 2, m = 4): cos(0, 1) ≈ −0.995, cos(2, 3) = −1, the other pairs > −0.9
    assert opposing_pairs(dec, live, 0.9) == 2
    assert opposing_pairs(dec, torch.tensor([True, True, False, False]), 0.9) == 1
    g = torch.Generator().manual_seed(0)
    counts = []
    for _ in range(300):
        u = torch.randn(5, 12, generator=g, dtype=DT)
        counts.append(opposing_pairs(u, torch.ones(12, dtype=torch.bool), 0.7))
    mean, std_err = mean_std_err(counts)
    assert abs(mean - random_pairs_expected(12, 5, 0.7)) < 4 * std_err


def test_exclusive_data_has_at_most_one_active_feature_per_group_and_agreement_is_exact_on_a_perfect_fit():
    x, D, group, codes = make_data(500, 8, 12, 3, 0.5, 0.5, seed=0)
    assert torch.allclose(x, codes @ D.T) and torch.allclose(D.norm(dim=0), torch.ones(12), atol=1e-6)
    per_group = (codes > 0).reshape(500, 4, 3).sum(-1)
    assert int(per_group.max()) == 1 and 0.4 < float((per_group > 0).float().mean()) < 0.6
    P = torch.nn.functional.one_hot(group, 4).float()
    assert grouping_agreement(P, D.clone(), D, group) == 1.0
    P_bad = torch.nn.functional.one_hot(torch.arange(12) % 4, 4).float()
    assert grouping_agreement(P_bad, D.clone(), D, group) < 1.0


def test_bisection_moves_the_metric_towards_the_target():
    x = torch.randn(128, 4, generator=torch.Generator().manual_seed(0))
    best, runs = bisect_coeff(lambda c: train_variant(x, 8, penalty=lambda f, _p: f.sum(-1), coeff=c, steps=20,
                                                      batch_size=64),
                              lambda r: r.l0, 2.0, lo=0.01, hi=10.0, iterations=3, increasing=False)
    assert len(runs) == 3 and abs(math.log(best.l0 / 2.0)) <= min(abs(math.log(max(r.l0, 1e-3) / 2.0)) for r in runs)
