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
    torch.manual_seed(0)
    attn = LinearAttention(5, 2, 3, 6, normaliser=normaliser).double().to(device)
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
    torch.manual_seed(1)
    mlp = BilinearMLP(4, 7).double().to(device)
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
