"""HessianOperator and GaussNewtonOperator (mode="auto") choose forward or reverse mode per block width, exactly in both."""
import time

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

from slt_interp.estimators import GaussNewtonOperator, HessianOperator, behavioral_loss, training_loss
from slt_interp.estimators import curvature
from slt_interp.estimators.flat import flatten


def _problem():
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = torch.randn(12, 2, generator=g, dtype=torch.float64)
    loss, params = training_loss(net, lambda out, t: ((out - t) ** 2).mean(), x, y, batch_size=5)
    p = flatten(loss, params)
    return loss, params, hessian(p.fn)(p.w0)


def _gn_problem():
    """The behavioral MSE loss of a small tanh MLP and its dense Gauss–Newton matrix (2/n)·Σ_x J_xᵀJ_x."""
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    loss, params = behavioral_loss(net, x, batch_size=5)
    p = flatten(loss, params)
    J = jacrev(lambda w: functional_call(net, p.unflatten(w), (x,)))(p.w0).reshape(-1, p.dim)  # (n·out, d)
    return loss, params, 2 / x.shape[0] * J.T @ J


@pytest.mark.parametrize("kind", ["hessian", "gauss-newton"])
def test_auto_mode_is_chosen_and_recorded_per_block_width(monkeypatch, kind):
    if kind == "hessian":
        loss, params, H = _problem()
        op = HessianOperator(loss, params)
    else:
        loss, params, H = _gn_problem()
        op = GaussNewtonOperator(loss, params)
    # a fake clock: forward mode is cheap for one column and dear for wide blocks, reverse is flat
    clock = [0.0]
    cost = {"forward": lambda k: 1.0 * k ** 2, "reverse": lambda k: 5.0}
    calls = []
    real_sum = op._sum

    def timed_sum(V, mode):
        calls.append((V.shape[1], mode))
        clock[0] += cost[mode](V.shape[1])
        return real_sum(V, mode)

    monkeypatch.setattr(op, "_sum", timed_sum)
    monkeypatch.setattr(curvature, "_now", lambda device: clock[0])
    g = torch.Generator().manual_seed(1)
    V1, V4 = (torch.randn(op.dim, k, generator=g, dtype=torch.float64) for k in (1, 4))
    torch.testing.assert_close(op @ V1, H @ V1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op @ V4, H @ V4, rtol=1e-12, atol=1e-12)
    assert op.mode_by_width == {1: "forward", 4: "reverse"}
    assert op.mode == "auto"
    # a width seen before is not timed again: one product, in the recorded mode
    calls.clear()
    torch.testing.assert_close(op @ V4, H @ V4, rtol=1e-12, atol=1e-12)
    assert calls == [(4, "reverse")]
    assert op.num_matvecs == 1 + 4 + 4  # timing products are not counted


def test_both_modes_exact_at_every_width():
    loss, params, H = _problem()
    op = HessianOperator(loss, params)
    op.mode_by_width.update({2: "forward", 3: "reverse"})  # as if timing had chosen these
    g = torch.Generator().manual_seed(2)
    for k in (2, 3):
        V = torch.randn(op.dim, k, generator=g, dtype=torch.float64)
        torch.testing.assert_close(op @ V, H @ V, rtol=1e-12, atol=1e-12)
    for mode in ("forward", "reverse"):
        torch.testing.assert_close(HessianOperator(loss, params, mode=mode).to_dense(chunk_size=7), H,
                                   rtol=1e-12, atol=1e-12)
    dense = HessianOperator(loss, params).to_dense(chunk_size=7)  # d = 26: widths 7, 7, 7, then 5
    torch.testing.assert_close(dense, H, rtol=1e-12, atol=1e-12)


def test_mode_clock_on_cpu_counts_work_not_waiting():
    # the auto-mode clock on CPU is the process's CPU time: time spent not running (as when other
    # processes hold the cores) does not count, work does
    cpu = torch.device("cpu")
    start = curvature._now(cpu)
    time.sleep(0.3)
    slept = curvature._now(cpu) - start
    a = torch.randn(400, 400, dtype=torch.float64)
    start = curvature._now(cpu)
    for _ in range(40):  # 40 products of 400×400 matrices: 5 GFLOP, > 0.01 s below 500 GFLOP/s
        a = torch.tanh(a @ a / 400)
    worked = curvature._now(cpu) - start
    assert slept < 0.05
    assert worked > 0.01


def test_gauss_newton_both_modes_exact_at_every_width():
    loss, params, G = _gn_problem()
    op = GaussNewtonOperator(loss, params)
    op.mode_by_width.update({2: "forward", 3: "reverse"})  # as if timing had chosen these
    g = torch.Generator().manual_seed(4)
    for k in (2, 3):
        V = torch.randn(op.dim, k, generator=g, dtype=torch.float64)
        torch.testing.assert_close(op @ V, G @ V, rtol=1e-12, atol=1e-12)
    dense = GaussNewtonOperator(loss, params).to_dense(chunk_size=7)  # d = 26: widths 7, 7, 7, then 5
    torch.testing.assert_close(dense, G, rtol=1e-12, atol=1e-12)
    assert op.mode == "auto" and set(op.mode_by_width) == {2, 3}
