import pytest
import torch
from torch import nn

from slt_interp.bilinear import BilinearConfig, BilinearMLP, BilinearTransformer, LinearAttention, load_model, save_model
from tests.bilinear._bilinear_helpers import random_model, random_tokens, rel_err


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown BilinearConfig key"):
        BilinearConfig.from_dict({"vocab_size": 4, "n_layer": 2})
    with pytest.raises(ValueError, match="softmax"):
        BilinearConfig(normaliser="softmax")
    with pytest.raises(ValueError, match="d_mlp"):
        BilinearConfig(d_mlp=-1)
    with pytest.raises(ValueError, match="n_heads"):
        BilinearConfig(n_heads=0)


@pytest.mark.parametrize("normaliser", ["none", "position"])
def test_linear_attention_matches_explicit_sum(device, normaliser):
    attn = LinearAttention(5, 2, 3, 6, normaliser=normaliser, seed=0).double().to(device)
    x = torch.randn(2, 6, 5, dtype=torch.float64, device=device)
    out = attn(x)
    ref = torch.zeros_like(out)
    for h in range(2):
        QK = attn.W_Q[h].T @ attn.W_K[h]
        OV = attn.W_O[h] @ attn.W_V[h]
        for t in range(6):
            n = 1.0 if normaliser == "none" else 1.0 / (t + 1)
            for s in range(t + 1):
                ref[:, t] += n * (x[:, t] @ QK * x[:, s]).sum(-1, keepdim=True) * (x[:, s] @ OV.T)
    assert rel_err(out, ref) < 1e-13


def test_bilinear_mlp_equals_its_tensor(device):
    mlp = BilinearMLP(4, 7, seed=1).double().to(device)
    x = torch.randn(3, 4, dtype=torch.float64, device=device)
    B = torch.einsum("ah,hi,hj->aij", mlp.P, mlp.W, mlp.V)
    assert rel_err(mlp(x), torch.einsum("aij,ni,nj->na", B, x, x)) < 1e-13


def test_components_sum_to_residual_and_model_is_causal(device):
    model = random_model(device, n_layers=2)
    tokens = random_tokens(model, 3, 0, device)
    outs = model.component_outputs(tokens)
    assert list(outs) == ["emb", "L0.H0", "L0.H1", "L0.mlp", "L1.H0", "L1.H1", "L1.mlp"]
    assert rel_err(sum(outs.values()), model.residual(tokens)) < 1e-13
    changed = tokens.clone()
    changed[:, 2:] = (changed[:, 2:] + 1) % model.config.vocab_size
    assert torch.equal(model(tokens)[:, :2], model(changed)[:, :2])
    assert not torch.allclose(model(tokens)[:, 2:], model(changed)[:, 2:])


def test_token_validation():
    model = random_model("cpu")
    with pytest.raises(ValueError, match="exceeds n_ctx"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="must lie in"):
        model(torch.full((1, 2), 7))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.zeros(1, 2))


def test_save_load_roundtrip(tmp_path):
    model = random_model("cpu", positional=False, normaliser="none")
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    tokens = torch.tensor([[0, 1, 2, 3]])
    assert loaded.config == model.config
    assert torch.equal(loaded(tokens), model(tokens))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a file written by slt_interp.bilinear.save_model"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(TypeError, match="BilinearTransformer"):
        save_model(nn.Linear(2, 2), tmp_path / "x.pt")


def test_initial_weights_come_from_the_seed_not_the_global_rng():
    cfg = BilinearConfig(vocab_size=5, n_ctx=4, d_model=6, n_layers=2, n_heads=2, d_head=3, d_mlp=5)
    state = torch.get_rng_state()
    a, b = BilinearTransformer(cfg, seed=3), BilinearTransformer(cfg, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not touched
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = BilinearTransformer(cfg, seed=4)
    assert all(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    torch.manual_seed(123)  # the default (seed 0) does not depend on the global RNG either
    d = BilinearTransformer(cfg)
    torch.manual_seed(456)
    assert torch.equal(d.W_E, BilinearTransformer(cfg).W_E)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(BilinearTransformer(cfg, generator=g1).W_U, BilinearTransformer(cfg, generator=g2).W_U)
    assert torch.equal(BilinearMLP(4, 3, seed=2).W, BilinearMLP(4, 3, seed=2).W)
    assert not torch.equal(LinearAttention(4, 2, 3, 5, seed=1).W_Q, LinearAttention(4, 2, 3, 5, seed=2).W_Q)
    with pytest.raises(TypeError, match="seed must be an int"):
        BilinearTransformer(cfg, seed=1.5)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        BilinearTransformer(cfg, generator=0)
