"""The nanoGPT-style LM of issue 13: causality, parameter counts, functional_call, device and dtype."""
import pytest
import torch
from torch.func import functional_call

from experiments.lm.model import SIZES, CausalLM, LMConfig, config_for_size, count_parameters

TINY = LMConfig(vocab_size=11, seq_len=9, num_layers=2, num_heads=2, d_model=8)


def test_changing_a_future_token_leaves_earlier_logits_unchanged():
    model = CausalLM(TINY, seed=1).double()
    tokens = torch.randint(0, 11, (3, 9), generator=torch.Generator().manual_seed(0))
    base = model(tokens)
    for k in range(9):
        changed = tokens.clone()
        changed[:, k] = (changed[:, k] + 1) % 11
        out = model(changed)
        assert torch.equal(out[:, :k], base[:, :k])            # causal: exactly unchanged before k
        assert (out[:, k:] - base[:, k:]).abs().max() > 1e-6     # and the change is seen from k on


def test_shorter_inputs_and_attention_patterns():
    model = CausalLM(TINY).double()
    tokens = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(1))
    logits, patterns = model(tokens, return_attention=True)
    assert patterns.shape == (2, 2, 2, 9, 9)
    assert torch.allclose(patterns.sum(-1), torch.ones(2, 2, 2, 9, dtype=torch.float64))
    assert (patterns.triu(1) == 0).all()
    assert torch.allclose(model(tokens[:, :5]), logits[:, :5], atol=1e-12)  # a prefix gives the same logits


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_count_parameters_matches_the_module(tie, bias):
    cfg = LMConfig(vocab_size=13, seq_len=7, num_layers=3, num_heads=2, d_model=6, tie_embeddings=tie, bias=bias)
    assert count_parameters(cfg) == sum(p.numel() for p in CausalLM(cfg).parameters())


@pytest.mark.parametrize("name", list(SIZES))
def test_size_configs_are_within_20_percent(name):
    target = SIZES[name]
    cfg = config_for_size(target, vocab_size=64, seq_len=64)
    assert abs(count_parameters(cfg) - target) <= 0.2 * target
    assert cfg.d_model % cfg.num_heads == 0
    if target <= SIZES["1M"]:  # the 10M is counted only (count_parameters is checked against modules above)
        assert sum(p.numel() for p in CausalLM(cfg).parameters()) == count_parameters(cfg)


def test_functional_call_and_its_gradient_match_the_module():
    """(torch.autograd on the functional call: torch.func.grad's first call costs seconds of set-up.)"""
    model = CausalLM(TINY, seed=2).double()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    tokens = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(2))
    assert torch.equal(functional_call(model, params, (tokens,)), model(tokens))

    def loss(p):
        logits = functional_call(model, p, (tokens,))
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), tokens[:, 1:].reshape(-1))

    leaves = {k: v.requires_grad_() for k, v in params.items()}
    g = dict(zip(leaves, torch.autograd.grad(loss(leaves), list(leaves.values()))))
    loss(dict(model.named_parameters())).backward()
    for k, p in model.named_parameters():
        assert torch.allclose(g[k], p.grad, atol=1e-12), k
        assert g[k].abs().max() > 0, k  # every parameter is used through the params dict
    params = {k: v.detach() for k, v in params.items()}
    shifted = {k: v + 0.1 for k, v in params.items()}  # the params dict, not the module's, is used
    assert not torch.allclose(functional_call(model, shifted, (tokens,)), model(tokens))


def test_dtype_and_device_follow_the_module(device):
    model = CausalLM(TINY).to(device=device, dtype=torch.float64)
    out = model(torch.zeros(1, 9, dtype=torch.long, device=device))
    assert out.dtype == torch.float64 and out.device.type == device.type


def test_initialisation_is_seeded():
    a, b, c = CausalLM(TINY, seed=5), CausalLM(TINY, seed=5), CausalLM(TINY, seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.wte.weight, c.wte.weight)


def test_bad_input_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="not a multiple of num_heads"):
        LMConfig(d_model=10, num_heads=4)
    with pytest.raises(ValueError, match="T <= seq_len=9"):
        CausalLM(TINY)(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown or fixed field"):
        config_for_size(1000, vocab_size=8, seq_len=8, width=3)
