"""HessianOperator(mode="auto") chooses forward or reverse mode per block width, exactly in both."""
import torch
from torch import nn
from torch.func import hessian

from slt_interp.estimators import HessianOperator, training_loss
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


def test_auto_mode_is_chosen_and_recorded_per_block_width(monkeypatch):
    loss, params, H = _problem()
    op = HessianOperator(loss, params)
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
    monkeypatch.setattr(curvature.time, "perf_counter", lambda: clock[0])
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
