import pytest
import torch

from slt_interp.bilinear import exhaustive_worst_case, expand, prune, term_bounds
from tests.bilinear._bilinear_helpers import all_sequences, random_model

TINY = [  # exhaustive: every sequence over a 3-token vocabulary and context 3 (27 sequences)
    dict(n_layers=1, n_heads=2, positional=True, normaliser="position"),
    dict(n_layers=1, n_heads=2, positional=False, normaliser="none"),
    dict(n_layers=2, n_heads=2, positional=True, normaliser="none"),
    dict(n_layers=2, n_heads=1, positional=False, normaliser="position"),
]


def _tiny(device, case, seed=0):
    return random_model(device, seed=seed, vocab_size=3, n_ctx=3, d_model=5, d_head=3, d_mlp=4, **case)


@pytest.mark.parametrize("case", TINY, ids=lambda c: f"L{c['n_layers']}H{c['n_heads']}{c['normaliser']}")
def test_term_bounds_never_below_the_true_worst_case(device, case):
    for seed in range(3):
        model = _tiny(device, case, seed)
        exp = expand(model)
        seqs = all_sequences(3, 3, device)
        worst = exp.evaluate(seqs).norm(dim=-1).amax(dim=(1, 2)).cpu()  # true sup over all inputs
        b = term_bounds(exp)
        assert torch.all(b.values >= worst * (1 - 1e-12))
        assert torch.allclose(b.values[b.exact], worst[b.exact], rtol=1e-10)  # exact bounds are attained
        assert int(b.exact.sum()) == 1 + model.config.n_layers * (model.config.d_mlp > 0)
        for name, out in model.component_outputs(seqs).items():
            assert b.component_bounds[name] >= float(out.detach().norm(dim=-1).max()) * (1 - 1e-12)
        # layer-0 heads with embedding slots use exact per-position tables: tight within 2x here
        i = exp.index("L0.H0(q=emb, k=emb, v=emb)")
        assert b.values[i] <= 2 * worst[i]


@pytest.mark.parametrize("case", TINY[:3], ids=lambda c: f"L{c['n_layers']}H{c['n_heads']}{c['normaliser']}")
def test_pruning_bound_covers_the_exhaustive_worst_case(device, case):
    model = _tiny(device, case)
    exp = expand(model)
    seqs = all_sequences(3, 3, device)
    full = model(seqs).detach()
    b = term_bounds(exp)
    total = float(b.values.sum())
    for eps in (0.0, 0.01, 0.1, 1.0, 10.0, total):
        r = prune(exp, eps, tokens=seqs, bounds=b)
        assert r.error_bound <= eps + 1e-12
        assert r.measured_error <= r.error_bound * (1 + 1e-12) + 1e-12
        pruned = exp.evaluate_sum(seqs, keep=r.keep_mask)
        assert abs(float((full - pruned).norm(dim=-1).max()) - r.measured_error) < 1e-9
    r = prune(exp, num_keep=len(exp) // 3, tokens=seqs, exhaustive=True)
    assert abs(r.exhaustive_error - r.measured_error) < 1e-12 * max(1.0, r.measured_error)  # seqs = all of them
    assert r.exhaustive_error <= r.error_bound * (1 + 1e-12)
    assert len(prune(exp, total * (1 + 1e-12), bounds=b).kept) == 0  # the sum of the bounds, up to its rounding
    assert prune(exp, 0.0, bounds=b).dropped == ()
    assert prune(exp, 1.0, bounds=b).kept == prune(exp, 1.0).kept
    with pytest.raises(ValueError, match="bounds must be term_bounds"):
        prune(exp, 1.0, bounds=term_bounds(exp, readout="residual"))
    for k in (1, len(exp) // 2):
        for rank_by in ("bound", "measured"):
            r = prune(exp, num_keep=k, tokens=seqs, rank_by=rank_by, bounds=b)
            assert len(r.kept) == k and r.measured_error <= r.error_bound * (1 + 1e-12) + 1e-12


def test_prune_rejects_bad_arguments():
    exp = expand(_tiny("cpu", TINY[0]))
    with pytest.raises(ValueError, match="exactly one of eps"):
        prune(exp)
    with pytest.raises(ValueError, match="exactly one of eps"):
        prune(exp, 1.0, num_keep=2)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        prune(exp, -1.0)
    with pytest.raises(ValueError, match="num_keep must lie"):
        prune(exp, num_keep=10 ** 6)
    with pytest.raises(ValueError, match="rank_by='measured' needs tokens"):
        prune(exp, num_keep=2, rank_by="measured")
    with pytest.raises(ValueError, match="max_sequences"):
        exhaustive_worst_case(exp, [torch.arange(3)], max_sequences=10)
    with pytest.raises(TypeError, match="ComponentExpansion"):
        term_bounds(expand(_tiny("cpu", TINY[0]), "path"))
