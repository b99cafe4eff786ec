"""Every sampler kernel honours one pure contract: ``init(w, batch) -> state``,
``step(state, batch, noise, uniform, monitor) -> (state, info)``; the estimator's settings are one frozen
object that drives the run, fills the result and makes the checkpoint fingerprint."""
import dataclasses
import math

import pytest
import torch
from torch.func import grad

from slt_interp.estimators import estimate_llc
from slt_interp.estimators.samplers import MALAKernel, RMSPropSGLDKernel, SGLDKernel, SamplerState
from tests.estimators._sgld_problems import linear_problem, mse

NBETA, GAMMA = 5.0, 1.0
W_STAR = torch.tensor([0.3, -0.2], dtype=torch.float64)


def _loss(w):
    return (w[0] * w[1]) ** 2 + 0.5 * w[0] ** 2


def _value_and_grad(W, batch):
    return torch.stack([_loss(w) for w in W]), torch.stack([grad(_loss)(w) for w in W])


@pytest.mark.parametrize("cls", [SGLDKernel, MALAKernel, RMSPropSGLDKernel])
def test_step_is_a_pure_function_of_its_inputs(cls):
    kernel = cls(_value_and_grad, W_STAR, 0.05, NBETA, GAMMA)
    g = torch.Generator().manual_seed(0)
    w = W_STAR + 0.1 * torch.randn(3, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(3, 2, generator=g, dtype=torch.float64)
    uniform = torch.rand(3, generator=g, dtype=torch.float64)
    rng = torch.random.get_rng_state()
    state = kernel.init(w, ())
    a, info_a = kernel.step(state, (), noise, uniform, True)
    b, info_b = kernel.step(state, (), noise, uniform, True)
    assert torch.equal(torch.random.get_rng_state(), rng)  # no global RNG touched
    assert isinstance(a, SamplerState) and torch.equal(a.w, b.w) and torch.equal(info_a.loss, info_b.loss)
    assert torch.equal(state.w, w)  # the input state is not mutated
    assert info_a.acceptance.shape == (3,) and bool(((info_a.acceptance >= 0) & (info_a.acceptance <= 1)).all())
    assert torch.equal(info_a.loss, _value_and_grad(w, ())[0])


def test_mala_kernel_accepts_exactly_when_uniform_is_below_alpha():
    kernel = MALAKernel(_value_and_grad, W_STAR, 0.5, NBETA, GAMMA)
    w = W_STAR + torch.tensor([[0.4, 0.4], [0.1, -0.3]], dtype=torch.float64)
    noise = torch.ones_like(w)
    state = kernel.init(w, ())
    _, info = kernel.step(state, (), noise, torch.zeros(2, dtype=torch.float64))
    proposal, _ = SGLDKernel(_value_and_grad, W_STAR, 0.5, NBETA, GAMMA).step(SamplerState(w), (), noise)
    moved, _ = kernel.step(state, (), noise, info.acceptance - 1e-12)
    stayed, _ = kernel.step(state, (), noise, info.acceptance + 1e-12)
    assert torch.equal(moved.w, torch.where((info.acceptance > 0)[:, None], proposal.w, w))
    assert torch.equal(stayed.w, w)


def test_settings_object_is_frozen_and_shared_by_run_result_and_fingerprint(tmp_path):
    model, x, y = linear_problem("cpu", n=64)
    est = estimate_llc(model, mse, (x, y), num_chains=2, num_draws=8, step_size=1e-3, checkpoint_path=tmp_path / "c.pt")
    cfg = est.settings.requested
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3
    assert (cfg.num_chains, cfg.num_draws, cfg.step_size, cfg.nbeta) == (2, 8, 1e-3, est.settings.nbeta)
    saved = torch.load(tmp_path / "c.pt", weights_only=True)["fingerprint"]
    for k, v in cfg.fingerprint_items(1e-3).items():
        assert saved[f"setting.{k}"] == (list(v) if isinstance(v, tuple) else v)
    assert math.isclose(est.settings.step_size, cfg.step_size)
