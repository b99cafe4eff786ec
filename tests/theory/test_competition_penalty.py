"""Product and exclusive-group penalties: against the symbolic derived penalties and dense double sums."""
import itertools

import pytest
import sympy as sp
import torch

from slt_interp.theory import (PRIOR_CATALOGUE, contiguous_groups, exclusive_group_penalty, prior_from_penalty,
                               product_code_penalty)

DT = torch.float64


def test_product_penalty_equals_the_catalogue_derived_penalty():
    ref = PRIOR_CATALOGUE["product_penalty"](3).to_torch()  # applies per group of 3 latents
    a = torch.randn(5, 6, dtype=DT, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(product_code_penalty(a, group_size=3), ref(a), atol=1e-12)
    assert torch.allclose(product_code_penalty(a), torch.prod(1 + a.abs(), -1), atol=1e-12)


def test_hard_exclusive_groups_equal_the_derived_penalty_of_the_exclusive_prior():
    coords = sp.symbols("a1:4", nonnegative=True)
    c = 10
    derived = prior_from_penalty(sum(coords) + c * sum(coords[i] * coords[j] for i, j in itertools.combinations(range(3), 2)),
                                 coords)
    assert derived.coupling == "competition"
    a = torch.rand(7, 9, dtype=DT, generator=torch.Generator().manual_seed(1))
    P = contiguous_groups(9, 3, dtype=DT)
    assert torch.allclose(exclusive_group_penalty(a, P, coupling=c), derived.to_torch()(a), atol=1e-12)


def test_soft_assignment_equals_the_dense_pair_sum_and_the_coupling_is_c_times_shared_probability():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(3, 6, dtype=DT, generator=g)
    P = torch.softmax(torch.randn(6, 4, dtype=DT, generator=g), -1)
    S = P @ P.T
    dense = a.abs().sum(-1) + 2.5 * sum(S[i, j] * a[:, i].abs() * a[:, j].abs() for i, j in itertools.combinations(range(6), 2))
    assert torch.allclose(exclusive_group_penalty(a, P, coupling=2.5), dense, atol=1e-12)
    point = a[0].abs() + 0.1
    H = torch.func.hessian(lambda v: exclusive_group_penalty(v, P, coupling=2.5))(point)
    off = ~torch.eye(6, dtype=torch.bool)
    assert torch.allclose(H[off], 2.5 * S[off], atol=1e-12) and bool((H[off] > 0).all())


def test_gradients_reach_the_group_logits():
    logits = torch.zeros(4, 2, dtype=DT, requires_grad=True)
    a = torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=DT)
    exclusive_group_penalty(a, torch.softmax(logits, -1)).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_bad_input_is_refused():
    a = torch.rand(2, 4)
    with pytest.raises(ValueError, match="positive divisor"):
        product_code_penalty(a, group_size=3)
    with pytest.raises(ValueError, match="positive divisor"):
        contiguous_groups(4, 3)
    with pytest.raises(ValueError, match="shape \\(n_latents = 4, n_groups\\)"):
        exclusive_group_penalty(a, torch.ones(3, 1))
    with pytest.raises(ValueError, match="sum to 1.*softmax"):
        exclusive_group_penalty(a, torch.ones(4, 2))
    with pytest.raises(ValueError, match="coupling must be"):
        exclusive_group_penalty(a, torch.ones(4, 1), coupling=-1.0)
    with pytest.raises(ValueError, match="floating tensor"):
        product_code_penalty(torch.ones(2, 4, dtype=torch.int64))
