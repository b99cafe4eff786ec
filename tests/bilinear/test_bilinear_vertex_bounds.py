"""Vertex bounds (issue 14 item 3): sound on every term against every possible input, and tight."""
import pytest
import torch

from slt_interp.bilinear import expand, term_bounds
from slt_interp.bilinear.vertex_bounds import vertex_bounds
from tests.bilinear._bilinear_helpers import all_sequences, random_model

CASES = [  # (vocab, context, config): every one of the V^T sequences is enumerated
    (3, 4, dict(n_layers=2, n_heads=2, positional=True, normaliser="position")),
    (3, 4, dict(n_layers=2, n_heads=1, positional=False, normaliser="none")),
    (2, 6, dict(n_layers=2, n_heads=2, positional=True, normaliser="none")),
    (4, 3, dict(n_layers=1, n_heads=3, positional=True, normaliser="position")),
    (3, 3, dict(n_layers=3, n_heads=1, positional=True, normaliser="position")),
]


def _worst(exp, V, T, device, readout="logits"):
    seqs = all_sequences(V, T, device)
    return exp.evaluate(seqs, readout=readout).norm(dim=-1).amax(dim=(1, 2)).cpu()  # exact sup per term


@pytest.mark.parametrize("V,T,case", CASES, ids=lambda x: str(x) if not isinstance(x, dict) else
                         f"L{x['n_layers']}H{x['n_heads']}{x['normaliser']}")
def test_vertex_bounds_are_sound_on_every_term(device, V, T, case):
    for seed in range(2):
        model = random_model(device, seed=seed, vocab_size=V, n_ctx=T, d_model=5, d_head=3, d_mlp=4, **case)
        exp = expand(model)
        for readout in ("logits", "residual"):
            worst = _worst(exp, V, T, device, readout)
            R = None if readout == "residual" else model.W_U.detach()
            raw = vertex_bounds(exp, R).cpu()
            assert torch.all(raw >= worst * (1 - 1e-12)), [exp[i].name for i in (raw < worst * (1 - 1e-12)).nonzero()]
            b = term_bounds(exp, readout=readout)
            assert torch.all(b.values >= worst * (1 - 1e-12))
            assert torch.all(b.values <= term_bounds(exp, readout=readout, vertex=False).values)


def test_vertex_bounds_are_tight_where_layer0_structure_is_used():
    """Layer-1 head terms whose slots are the embedding or layer-0 heads: median bound/true ≤ 3, and the
    norm-product bounds they replace are over twice as loose (so the test fails without the vertex step)."""
    ratios, old_ratios = [], []
    for seed in range(3):
        model = random_model("cpu", seed=seed, vocab_size=3, n_ctx=4, d_model=5, d_head=3, d_mlp=4, n_layers=2,
                             n_heads=2)
        exp = expand(model)
        worst = _worst(exp, 3, 4, "cpu")
        new, old = term_bounds(exp).values, term_bounds(exp, vertex=False).values
        idx = [t.index for t in exp if t.layer == 1 and t.kind == "head" and "L0.mlp" not in t.sources]
        ratios += (new[idx] / worst[idx]).tolist()
        old_ratios += (old[idx] / worst[idx]).tolist()
    median = torch.tensor(ratios).median()
    assert 1 <= median <= 3
    assert torch.tensor(old_ratios).median() > 2 * median


def test_vertex_bounds_are_skipped_when_too_large_and_refused_when_forced():
    from slt_interp.bilinear.vertex_bounds import vertex_bounds_fit
    big = random_model("cpu", vocab_size=64, n_ctx=8, d_model=4, d_head=2, d_mlp=4, n_layers=1, n_heads=1)
    assert not vertex_bounds_fit(big.config)
    exp = expand(big)
    assert torch.equal(term_bounds(exp).values, term_bounds(exp, vertex=False).values)
    with pytest.raises(ValueError, match="vertex=None"):
        term_bounds(exp, vertex=True)
    assert vertex_bounds_fit(random_model("cpu", vocab_size=8, n_ctx=16, d_model=32).config)
