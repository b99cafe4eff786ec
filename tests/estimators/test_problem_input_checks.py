"""What the loss/problem objects, the curvature operators and llc_bounds refuse, and the inputs they take.

Issue 11 items 8–9 (no silent wrong number), issue 10 item 6 (bounds at a sample size) and issue 12
part 4 (one problem object, one validator, one reference computation in eval mode).
"""
import copy
import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slt_interp.estimators import (
    GaussNewtonOperator,
    HessianOperator,
    NotAMinimumWarning,
    behavioral_loss,
    llc_bounds,
    reference_outputs,
    training_loss,
)


def _mse(p, t):
    return ((p - t) ** 2).sum(-1).mean()


def _data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x, y


def _net(seed=0, dropout=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(3, 4), nn.Tanh()] + ([nn.Dropout(0.5)] if dropout else []) + [nn.Linear(4, 2)]
    return nn.Sequential(*layers).double()


# ------------------------------------------------------------------ issue 11 item 8
def test_sum_reduced_loss_is_refused_with_or_without_batches():
    net, (x, y) = _net(), _data()
    summed = lambda p, t: ((p - t) ** 2).sum()  # noqa: E731
    for batch_size in (None, 8):
        with pytest.raises(ValueError, match="sums over the batch.*reduction='mean'"):
            training_loss(net, summed, x, y, batch_size=batch_size)
    mean_loss, params = training_loss(net, torch.nn.functional.mse_loss, x, y, batch_size=8)  # mean: accepted
    full, _ = training_loss(net, torch.nn.functional.mse_loss, x, y)
    assert torch.allclose(HessianOperator(mean_loss, params, mode="reverse").to_dense(),
                          HessianOperator(full, params, mode="reverse").to_dense())


def test_train_mode_dropout_is_refused_naming_eval():
    net, (x, y) = _net(dropout=True), _data()
    for build in (lambda: training_loss(net, _mse, x, y, batch_size=8), lambda: behavioral_loss(net, x)):
        with pytest.raises(ValueError, match=r"train mode.*Dropout.*model\.eval\(\)"):
            build()
    net.eval()
    loss, params = training_loss(net, _mse, x, y, batch_size=8)
    H = HessianOperator(loss, params).to_dense()
    assert torch.equal(H, HessianOperator(loss, params).to_dense())
    GaussNewtonOperator(loss, params)


def test_train_mode_batch_norm_is_refused():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    x, y = _data()
    with pytest.raises(ValueError, match=r"BatchNorm1d.*model\.eval\(\)"):
        training_loss(net, _mse, x, y)
    training_loss(net.eval(), _mse, x, y)


class _Noisy(nn.Module):
    """A random layer that is not a torch Dropout (found by evaluating twice)."""

    def forward(self, x):
        return x + 0.1 * torch.randn_like(x) if self.training else x


def test_random_custom_layer_is_refused():
    net = nn.Sequential(nn.Linear(3, 2), _Noisy()).double()
    x, y = _data()
    with pytest.raises(ValueError, match=r"differ between two evaluations.*model\.eval\(\)"):
        training_loss(net, _mse, x, y)


# ------------------------------------------------------------------ issue 11 item 9 and unclear errors
@pytest.mark.parametrize("which", ["inputs", "targets"])
def test_nan_or_inf_in_the_data_is_named(which):
    net, (x, y) = _net(), _data()
    bad = (x if which == "inputs" else y).clone()
    bad[3, 1] = float("nan") if which == "inputs" else float("inf")
    x2, y2 = (bad, y) if which == "inputs" else (x, bad)
    with pytest.raises(ValueError, match=f"{which} contains 1 NaN or inf"):
        training_loss(net, _mse, x2, y2)
    with pytest.raises(ValueError, match=f"{which} contains 1 NaN or inf"):
        llc_bounds(net, _mse, (x2, y2))
    if which == "inputs":
        with pytest.raises(ValueError, match="inputs contains 1 NaN or inf"):
            behavioral_loss(net, x2)


def test_vector_loss_is_refused():
    w = torch.zeros(3, dtype=torch.float64)
    for call in (lambda: HessianOperator(lambda v: v ** 2, w), lambda: llc_bounds(lambda v: v ** 2, w)):
        with pytest.raises(ValueError, match="must return a scalar"):
            call()
    net, (x, y) = _net(), _data()
    with pytest.raises(ValueError, match="must return a scalar"):
        training_loss(net, lambda p, t: ((p - t) ** 2).sum(-1), x, y)


def test_detached_loss_is_refused():
    w = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(TypeError, match="does not depend on the parameters"):
        llc_bounds(lambda v: (v ** 2).sum().detach(), w)
    net, (x, y) = _net(), _data()
    loss, params = training_loss(net, lambda p, t: _mse(p.detach(), t), x, y)
    for op in (HessianOperator, GaussNewtonOperator):
        with pytest.raises(TypeError, match="does not depend on the parameters"):
            op(loss, params)


def test_frozen_model_integer_inputs_and_dtype_mismatch_are_explained():
    net, (x, y) = _net(), _data()
    frozen = copy.deepcopy(net).requires_grad_(False)
    with pytest.raises(ValueError, match=r"requires_grad=False.*requires_grad_\(True\)"):
        training_loss(frozen, _mse, x, y)
    with pytest.raises(TypeError, match="integer dtype torch.int64"):
        training_loss(net, _mse, x.round().long(), y)
    with pytest.raises(TypeError, match="inputs are torch.float64 but the model's parameters are torch.float32"):
        training_loss(copy.deepcopy(net).float(), _mse, x, y.float())
    with pytest.raises(TypeError, match="inputs are torch.float64 but the model's parameters are torch.float32"):
        llc_bounds(copy.deepcopy(net).float(), _mse, (x, y))


# ------------------------------------------------------------------ issue 12 part 4
def test_reference_outputs_in_eval_mode_and_flag_restored():
    net, (x, _) = _net(dropout=True), _data()
    assert net.training
    ref = reference_outputs(net, x, batch_size=5)
    assert net.training  # restored
    net.eval()
    # batches of 5 vs one batch: equal up to float64 rounding of the matmul blocking
    assert torch.allclose(ref, net(x).detach(), rtol=1e-12, atol=1e-14) and not ref.requires_grad
    loss, params = behavioral_loss(net, x, batch_size=7)
    assert torch.allclose(loss.data[1], ref, rtol=1e-12, atol=1e-14) and float(loss(params)) == 0.0


def test_llc_bounds_takes_the_inputs_estimate_llc_takes():
    net, (x, _) = _net(), _data()
    y = net(x).detach() + 0.0  # interpolating: w* is a minimum of the training loss
    loss, params = training_loss(net, _mse, x, y)
    reference = llc_bounds(loss, params)
    for b in (
        llc_bounds(loss),
        llc_bounds(net, _mse, (x, y)),
        llc_bounds(net, _mse, TensorDataset(x, y)),
        llc_bounds(net, _mse, DataLoader(TensorDataset(x, y), batch_size=10)),
        llc_bounds(net, _mse, (x, y), batch_size=10),
    ):
        assert (b.lower, b.upper, b.rank) == (reference.lower, reference.upper, reference.rank)
    with pytest.raises(TypeError, match="params .* is required"):
        llc_bounds(lambda w: (w ** 2).sum())
    with pytest.raises(TypeError, match="loss_fn"):
        llc_bounds(net, (x, y))


# ------------------------------------------------------------------ issue 10 item 6
def test_num_samples_sets_the_threshold_and_the_target():
    w = torch.zeros(3, dtype=torch.float64)
    f = lambda v: v[0] ** 2 + 1e-3 * v[1] ** 2 + 1e-9 * v[2] ** 2  # noqa: E731  eigenvalues 2, 2e-3, 2e-9
    assert llc_bounds(f, w).rank == 3 and llc_bounds(f, w).target == "λ (n → ∞)"
    n = 1000
    b = llc_bounds(f, w, num_samples=n)
    assert b.threshold == pytest.approx(math.log(n) / n) and b.rank == 1  # τ = γ/(nβ) = 6.9e-3
    assert b.target.startswith("finite-n target at n = 1000") and b.num_samples == n
    assert llc_bounds(f, w, num_samples=n, localization=1e-3).rank == 2  # γ/(nβ) = 6.9e-6
    assert llc_bounds(f, w, num_samples=n, nbeta=1e12).rank == 3  # never below the float threshold's rank
    with pytest.raises(ValueError, match="num_samples"):
        llc_bounds(f, w, num_samples=1)
    with pytest.raises(ValueError, match="num_samples=n as well"):
        llc_bounds(f, w, nbeta=10.0)


def _stopped_short_regression(offset):
    """A linear regression 'trained' to its least-squares minimum, then moved by ``offset``·u (as a run
    stopped short of convergence): the gradient at w* is H·offset·u ≈ 5e-4, far above float32 rounding (≈ 1e-7)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64)
    y = x @ torch.randn(4, 2, generator=g, dtype=torch.float64) + 0.1 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    net = nn.Linear(4, 2).double()
    design = torch.cat([x, torch.ones(64, 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, y).solution  # (5, 2)
    with torch.no_grad():
        net.weight.copy_(solution[:4].T + offset)
        net.bias.copy_(solution[4] + offset)
    return net, x, y


@pytest.mark.parametrize("offset, is_minimum", [(0.0, True), (1e-4, False)])
def test_float32_and_float64_reach_the_same_minimum_verdict(offset, is_minimum):
    net, x, y = _stopped_short_regression(offset)
    verdicts = []
    for dtype in (torch.float64, torch.float32):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            b = llc_bounds(copy.deepcopy(net).to(dtype), _mse, (x.to(dtype), y.to(dtype)))
        warned = any(issubclass(w.category, NotAMinimumWarning) for w in caught)
        verdicts.append((b.is_minimum, warned))
        assert ("not a local minimum" in repr(b)) == (not is_minimum)
    assert verdicts == [(is_minimum, not is_minimum)] * 2
