"""One validator for every entry point (issue 12 part 4): the curvature path (``training_loss`` /
``DataLoss``), the sampler's tensor path and its streamed path refuse the same bad input with the same
message, because they all call :mod:`slt_interp.estimators.input_checks`."""
import copy

import pytest
import torch
from torch import nn

from slt_interp.estimators import estimate_llc, training_loss
from slt_interp.estimators.input_checks import check_model, flat_model

KW = dict(num_chains=1, num_draws=8, step_size=1e-4)


def _mse(p, t):
    return ((p - t) ** 2).mean()


def _problem(n=40, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    return net, x, net(x).detach()


def _entry_points(net, x, y):
    """The three ways in: a DataLoss, the sampler on tensors, the sampler on a list of (x, y) batches."""
    return {
        "DataLoss": lambda: training_loss(net, _mse, x, y),
        "sampler tensors": lambda: estimate_llc(net, _mse, (x, y), **KW),
        "sampler batches": lambda: estimate_llc(net, _mse, [(x[:20], y[:20]), (x[20:], y[20:])], **KW),
    }


def test_nan_in_the_targets_is_named_by_every_entry_point():
    net, x, y = _problem()
    y = y.clone()
    y[5, 0] = float("nan")
    for name, call in _entry_points(net, x, y).items():
        with pytest.raises(ValueError, match=r"contains 1 NaN or inf entries"):
            call()


def test_non_finite_parameter_is_named_by_every_entry_point():
    net, x, y = _problem()
    with torch.no_grad():
        net[0].weight[1, 2] = float("inf")
    for name, call in _entry_points(net, x, y).items():
        with pytest.raises(ValueError, match=r"parameter\['0.weight'\] contains NaN or inf"):
            call()


def test_mixed_dtype_model_is_refused_by_every_entry_point():
    net, x, y = _problem()
    net[2].float()
    for name, call in _entry_points(net, x, y).items():
        with pytest.raises(ValueError, match=r"share one dtype and device.*model.double\(\)"):
            call()


def test_summed_loss_gets_one_message_on_every_entry_point():
    net, x, y = _problem()

    def summed(p, t):
        return ((p - t) ** 2).sum()

    calls = {
        "DataLoss": lambda: training_loss(net, summed, x, y),
        "sampler tensors": lambda: estimate_llc(net, summed, (x, y), **KW),
        "sampler batches": lambda: estimate_llc(net, summed, [(x[:20], y[:20]), (x[20:], y[20:])], **KW),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"sums over the batch.*n times the mean.*reduction='mean'"):
            call()


def test_train_mode_dropout_refused_for_curvature_and_sampled_in_eval_mode():
    """The curvature path evaluates the model as it is (so it refuses a random model); the samplers
    evaluate in eval mode and restore the caller's mode."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).double().train()
    x = torch.randn(40, 3, dtype=torch.float64)
    y = net.eval()(x).detach()
    net.train()
    with pytest.raises(ValueError, match=r"train mode.*Dropout.*model\.eval\(\)"):
        training_loss(net, _mse, x, y)
    est = estimate_llc(net, _mse, (x, y), **KW)
    assert torch.isfinite(est.loss_traces).all() and net.training
    assert est.baseline_loss == 0.0  # the eval-mode loss at w* (dropout off), not a random train-mode one


def test_flat_model_round_trips_the_parameters_in_order():
    net, _, _ = _problem()
    flat = flat_model(net, None)
    params = flat.unflatten(flat.w0)
    assert list(params) == [n for n, _ in net.named_parameters()]
    for name, p in net.named_parameters():
        assert torch.equal(params[name], p.detach())
    assert flat.mask is None and flat.dtype == torch.float64
    selected = flat_model(net, ["2.bias"])
    assert int(selected.mask.sum()) == 2 and selected.mask[-2:].tolist() == [1.0, 1.0]
    frozen = copy.deepcopy(net).requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad=False"):
        check_model(frozen)
    assert check_model(frozen, need_trainable=False).keys() == dict(net.named_parameters()).keys()


class _Pairs(torch.utils.data.Dataset):
    """A map-style data set of (x, y) pairs that is not a TensorDataset."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_llc_bounds_reads_data_as_the_samplers_do():
    from slt_interp.estimators import llc_bounds

    net, x, y = _problem()
    y = y + 0.01 * torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    reference = llc_bounds(net, _mse, (x, y), on_nonminimum="ignore")
    for data in (_Pairs(x, y), torch.utils.data.DataLoader(_Pairs(x, y), batch_size=16)):
        bounds = llc_bounds(net, _mse, data, on_nonminimum="ignore")
        assert (bounds.lower, bounds.upper) == (reference.lower, reference.upper)
