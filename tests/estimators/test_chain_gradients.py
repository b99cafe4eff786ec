"""The chain loop's per-chain gradients: the vmapped path and the looped path (one chain, or d ≥
LOOP_CHAINS_FROM) agree with torch.func.grad of each chain's loss in float64."""
import pytest
import torch

from slt_interp.estimators import _chains
from slt_interp.estimators._chains import _ChainLoop, model_problem


@pytest.mark.parametrize("num_chains,loop_from", [(1, 500_000), (3, 500_000), (3, 1)])
def test_chain_gradients_match_func_grad(num_chains, loop_from, monkeypatch):
    monkeypatch.setattr(_chains, "LOOP_CHAINS_FROM", loop_from)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    x, y = torch.randn(40, 3, dtype=torch.float64), torch.randn(40, 2, dtype=torch.float64)
    mse = lambda p, t: ((p - t) ** 2).sum(-1).mean()  # noqa: E731
    problem = model_problem(model, mse, (x, y))
    loop = _ChainLoop(problem, num_chains=num_chains, step_size=1e-3, localization=1.0, nbeta=10.0, batch_size=8,
                      seed=0, mala_every=0, divergence_threshold=1e9)
    W = problem.w0 + 0.1 * torch.randn(num_chains, problem.w0.numel(), dtype=torch.float64)
    batch = loop._batch(0)
    L, G = loop.kernel.value_and_grad(W, batch)
    for c in range(num_chains):
        xb, yb = batch[0][c], batch[1][c]
        ref = torch.func.grad(problem.batch_loss)(W[c], xb, yb)
        assert torch.allclose(G[c], ref, atol=1e-12)
        assert float(L[c]) == pytest.approx(float(problem.batch_loss(W[c], xb, yb)), abs=1e-12)
