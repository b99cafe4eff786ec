import pytest
import torch

from slt_interp.estimators import behavioral_kl, behavioral_mse
from slt_interp.estimators.flat import flatten


def test_flatten_dict_roundtrip_and_value():
    params = {"a": torch.randn(2, 3, dtype=torch.float64), "b": torch.randn(4, dtype=torch.float64)}
    loss = lambda p: (p["a"] ** 2).sum() + (p["b"] ** 3).sum()  # noqa: E731
    problem = flatten(loss, params)
    assert problem.dim == 10
    back = problem.unflatten(problem.w0)
    assert torch.equal(back["a"], params["a"]) and torch.equal(back["b"], params["b"])
    assert torch.allclose(problem.fn(problem.w0), loss(params))


def test_flatten_tensor():
    w = torch.tensor([1.0, 2.0], dtype=torch.float64)
    problem = flatten(lambda v: (v ** 2).sum(), w)
    assert not problem.is_dict and problem.fn(problem.w0).item() == 5.0


@pytest.mark.parametrize(
    "params, exc, match",
    [
        (torch.tensor([1.0, float("nan")]), ValueError, "NaN or inf"),
        (torch.tensor([1, 2]), TypeError, "floating point"),
        ({"a": [1.0]}, TypeError, "torch.Tensor"),
        ({"a": torch.zeros(1), "b": torch.zeros(1, dtype=torch.float64)}, ValueError, "one device and dtype"),
        ({}, ValueError, "empty"),
    ],
)
def test_flatten_rejects_bad_params(params, exc, match):
    with pytest.raises(exc, match=match):
        flatten(lambda p: torch.zeros(()), params)


def test_behavioral_mse_matches_definition(device):
    g = torch.Generator().manual_seed(0)
    out = torch.randn(7, 3, generator=g, dtype=torch.float64).to(device)
    ref = torch.randn(7, 3, generator=g, dtype=torch.float64).to(device)
    expected = sum(((out[i] - ref[i]) ** 2).sum() for i in range(7)) / 7
    assert torch.allclose(behavioral_mse(out, ref), expected)
    assert behavioral_mse(ref, ref).item() == 0.0


def test_behavioral_kl_matches_definition(device):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 4, generator=g, dtype=torch.float64).to(device)
    ref = torch.randn(5, 4, generator=g, dtype=torch.float64).to(device)
    p, q = ref.softmax(-1), logits.softmax(-1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    assert torch.allclose(behavioral_kl(logits, ref), expected)
    assert behavioral_kl(ref, ref).abs().item() < 1e-15
    with pytest.raises(ValueError, match="shape"):
        behavioral_kl(logits, ref[:, :3])
