import pytest
import torch
from torch import nn

from slt_interp.bilinear import (
    BilinearConfig,
    BilinearTransformer,
    ComponentExpansion,
    NotExpandableError,
    PathExpansion,
    expand,
    modular_addition,
    train,
)
from tests.bilinear._bilinear_helpers import modified, random_model, random_tokens, rel_err

CASES = [
    dict(n_layers=1, n_heads=2, positional=True, normaliser="position"),
    dict(n_layers=1, n_heads=3, positional=False, normaliser="none"),
    dict(n_layers=2, n_heads=2, positional=True, normaliser="none"),
    dict(n_layers=2, n_heads=3, positional=False, normaliser="position", d_mlp=0),
    dict(n_layers=3, n_heads=2, positional=True, normaliser="position"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"L{c['n_layers']}H{c['n_heads']}pos{int(c['positional'])}")
def test_component_sum_equals_forward(device, case):
    model = random_model(device, **case)
    tokens = random_tokens(model, 3, 1, device)
    exp = expand(model)
    assert isinstance(exp, ComponentExpansion)
    assert rel_err(exp.evaluate_sum(tokens), model(tokens)) < 1e-10
    assert rel_err(exp.evaluate_sum(tokens, readout="residual"), model.residual(tokens)) < 1e-10


def test_component_sum_equals_forward_on_trained_model(device):
    task = modular_addition(5)
    model = BilinearTransformer(BilinearConfig(vocab_size=6, n_ctx=3, d_model=8, n_heads=2, d_head=4, d_mlp=8), seed=0)
    result = train(model, task, steps=60, lr=2e-2, progress=False)
    assert result.losses[-1] < 0.7 * result.losses[0]  # it did train
    model = model.double().to(device)
    tokens = task.tokens.to(device)
    assert rel_err(expand(model).evaluate_sum(tokens), model(tokens)) < 1e-10
    assert rel_err(expand(model, "path").materialise(tokens).sum(0), model(tokens)) < 1e-10


def test_term_names_count_and_structure():
    exp = expand(random_model("cpu", n_layers=2, n_heads=2))
    # emb + layer 0: 2 heads × 1³ + MLP pairs of 3 comps (6) + layer 1: 2 heads × 4³ + MLP pairs of 6 comps (21)
    assert len(exp) == 1 + 2 + 6 + 2 * 64 + 21
    t = exp[exp.index("L1.H0(q=emb, k=L0.H1, v=L0.mlp)")]
    assert (t.kind, t.component, t.sources, t.layer, t.head) == ("head", "L1.H0", ("emb", "L0.H1", "L0.mlp"), 1, 0)
    assert t.degrees == (1 + 3 + 2, 1 + 3 + 4, 1 + 3 + 6) and t.degree is None
    assert exp[exp.index("L0.H1(q=emb, k=emb, v=emb)")].degree == 3
    with pytest.raises(KeyError, match="no term named"):
        exp.index("L7.H0")


def test_components_are_public_and_partition_the_terms():
    exp = expand(random_model("cpu", n_layers=2, n_heads=2))
    assert exp.component_names == ("emb", "L0.H0", "L0.H1", "L0.mlp", "L1.H0", "L1.H1", "L1.mlp")
    covered = [i for c in exp.components for i in c.terms]
    assert covered == list(range(len(exp)))
    for c in exp.components:
        assert exp.component_index(c.name) == c.index
        assert all(exp[i].component == c.name and exp[i].kind == c.kind for i in c.terms)
        if c.kind != "embed":  # heads read everything before their layer; an MLP everything before it
            first = c.index if c.kind == "mlp" else exp.component_index(f"L{c.layer}.H0")
            assert c.sources == tuple(range(first))
    with pytest.raises(KeyError, match="unknown component"):
        exp.component_index("L9.mlp")


def test_path_counts_match_theory():
    counts = [expand(random_model("cpu", n_layers=L, n_heads=1), "path").num_paths for L in (1, 2, 3)]
    assert counts[:2] == [5, 8645]
    n = 8645  # third layer: attention N -> N + N³, MLP N -> N + N(N+1)/2
    n = n + n ** 3
    assert counts[2] == n + n * (n + 1) // 2
    big = expand(random_model("cpu", n_layers=3, n_heads=1), "path")
    assert sum(big.count_by_degree().values()) == big.num_paths
    with pytest.raises(OverflowError, match="num_paths"):
        len(big)
    with pytest.raises(ValueError, match="max_paths"):
        big.materialise(torch.zeros(1, 2, dtype=torch.long))
    top = big.num_paths - 1  # the last path is decoded without enumerating the ~10²³ others
    assert big.path(top).degree == 216 and big.components(top) == {"emb", "L0.H0", "L0.mlp", "L1.H0", "L1.mlp",
                                                                    "L2.H0", "L2.mlp"}


PATH_CASES = [  # small enough to materialise every path (9, 13, 8,645 and 196 paths)
    dict(n_layers=1, n_heads=2, positional=True, normaliser="position"),
    dict(n_layers=1, n_heads=3, positional=False, normaliser="none"),
    dict(n_layers=2, n_heads=1, positional=True, normaliser="none", d_model=4, d_mlp=3),
    dict(n_layers=2, n_heads=3, positional=False, normaliser="position", d_mlp=0),
]


@pytest.mark.parametrize("case", PATH_CASES, ids=lambda c: f"L{c['n_layers']}H{c['n_heads']}mlp{c.get('d_mlp', 5)}")
def test_paths_sum_to_forward_and_degrees_are_counted(device, case):
    model = random_model(device, **case)
    paths = expand(model, "path")
    assert isinstance(paths, PathExpansion)
    tokens = random_tokens(model, 2, 2, device)
    values = paths.materialise(tokens)
    assert rel_err(values.sum(0), model(tokens)) < 1e-10
    degrees = [paths.degree(i) for i in range(paths.num_paths)]
    assert {d: degrees.count(d) for d in set(degrees)} == paths.count_by_degree()
    picks = sorted({0, 1, paths.num_paths // 3, paths.num_paths - 1})
    lazy = paths.evaluate(picks, tokens)
    for row, i in enumerate(picks):
        assert rel_err(lazy[row], values[i]) < 1e-10


def _scaled(model, c):
    def fn(m):
        m.W_E.mul_(c)
        if m.W_pos is not None:
            m.W_pos.mul_(c)

    return modified(model, fn)


@pytest.mark.parametrize("positional", [True, False])
def test_degree_scaling(device, positional):
    model = random_model(device, n_layers=2, n_heads=1, d_mlp=3, positional=positional)
    tokens = random_tokens(model, 2, 3, device)
    c = 1.7
    paths, paths_c = expand(model, "path"), expand(_scaled(model, c), "path")
    idx = list(range(0, paths.num_paths, 97)) + [paths.num_paths - 1]
    v, vc = paths.evaluate(idx, tokens), paths_c.evaluate(idx, tokens)
    for row, i in enumerate(idx):
        assert rel_err(vc[row], c ** paths.degree(i) * v[row]) < 1e-10
    comp, comp_c = expand(model), expand(_scaled(model, c))
    homogeneous = [t.index for t in comp if t.degree is not None]
    assert len(homogeneous) >= 4
    v, vc = comp.evaluate(tokens, homogeneous), comp_c.evaluate(tokens, homogeneous)
    for row, i in enumerate(homogeneous):
        assert rel_err(vc[row], c ** comp[i].degree * v[row]) < 1e-10


ABLATIONS = [
    (dict(n_layers=2, n_heads=2, d_mlp=0), "L0.H0"),
    (dict(n_layers=2, n_heads=2, d_mlp=0), "L1.H1"),
    (dict(n_layers=1, n_heads=2), "L0.H1"),
    (dict(n_layers=1, n_heads=2), "L0.mlp"),
    (dict(n_layers=2, n_heads=1, d_model=4, d_mlp=3), "L0.mlp"),
    (dict(n_layers=2, n_heads=1, d_model=4, d_mlp=3), "L1.H0"),
]


@pytest.mark.parametrize("case,component", ABLATIONS, ids=lambda x: x if isinstance(x, str) else f"L{x['n_layers']}")
def test_ablation_drops_exactly_the_paths_containing_it(device, case, component):
    model = random_model(device, **case)
    layer = int(component[1])

    def zero(m):
        if component.endswith("mlp"):
            m.blocks[layer].mlp.P.zero_()
        else:
            m.blocks[layer].attn.W_O[int(component[-1])].zero_()

    ablated = modified(model, zero)
    tokens = random_tokens(model, 2, 4, device)
    paths = expand(model, "path")
    values = paths.materialise(tokens)
    keep = torch.tensor([component not in paths.components(i) for i in range(paths.num_paths)])
    assert 0 < int(keep.sum()) < paths.num_paths
    assert rel_err(values[keep.to(device)].sum(0), ablated(tokens)) < 1e-10
    assert rel_err(values.sum(0), ablated(tokens)) > 1e-6  # the ablation does change the output


def test_ablating_last_mlp_drops_exactly_its_component_terms(device):
    model = random_model(device, n_layers=2)
    ablated = modified(model, lambda m: m.blocks[1].mlp.P.zero_())
    tokens = random_tokens(model, 3, 5, device)
    exp = expand(model)
    keep = ~exp.containing("L1.mlp")
    assert rel_err(exp.evaluate_sum(tokens, keep=keep), ablated(tokens)) < 1e-10


def test_terms_are_causal(device):
    model = random_model(device, n_layers=2)
    tokens = random_tokens(model, 2, 6, device)
    changed = tokens.clone()
    changed[:, 2:] = (changed[:, 2:] + 2) % model.config.vocab_size
    exp = expand(model)
    a, b = exp.evaluate(tokens), exp.evaluate(changed)
    assert torch.equal(a[:, :, :2], b[:, :, :2])
    assert (a[:, :, 2:] - b[:, :, 2:]).abs().amax(dim=(1, 2, 3)).gt(0).sum() > len(exp) // 2
    paths = expand(model, "path")
    idx = list(range(0, 200, 7))
    pa, pb = paths.evaluate(idx, tokens), paths.evaluate(idx, changed)
    assert torch.equal(pa[:, :, :2], pb[:, :, :2])


class _WithLayerNorm(BilinearTransformer):
    def __init__(self, config):
        super().__init__(config)
        self.ln = nn.LayerNorm(config.d_model)


class _SoftmaxForward(BilinearTransformer):
    def forward(self, tokens):
        return torch.softmax(super().forward(tokens), -1)


def test_refuses_non_polynomial_models():
    cfg = BilinearConfig(vocab_size=4, n_ctx=3, d_model=4)
    with pytest.raises(NotExpandableError, match="LayerNorm.*not a polynomial"):
        expand(_WithLayerNorm(cfg))
    with pytest.raises(NotExpandableError, match="overrides forward"):
        expand(_SoftmaxForward(cfg), "path")
    with pytest.raises(NotExpandableError, match="needs a slt_interp.bilinear.BilinearTransformer"):
        expand(nn.TransformerEncoderLayer(8, 2))
    model = BilinearTransformer(cfg)
    model.blocks[0].add_module("act", nn.Softmax(-1))
    with pytest.raises(NotExpandableError, match="Softmax"):
        expand(model)
    swapped = BilinearTransformer(cfg)
    swapped.blocks[0].mlp = nn.Linear(4, 4)
    with pytest.raises(NotExpandableError, match=r"model.blocks\[0\].mlp is a Linear"):
        expand(swapped)
    with pytest.raises(ValueError, match="level must be"):
        expand(BilinearTransformer(cfg), "neurons")
    with pytest.raises(ValueError, match="readout"):
        expand(BilinearTransformer(cfg)).evaluate(torch.zeros(1, 2, dtype=torch.long), readout="probs")
