"""Bad input to the SGLD estimators fails up front with a message naming the cause and the fix."""
import pytest
import torch
from torch import nn

from slt_interp.estimators import calibrate_step_size, estimate_behavioral_llc, estimate_llc
from tests.estimators._sgld_problems import linear_problem, mse

KW = dict(num_chains=2, num_draws=8, step_size=1e-3)


def test_loss_returning_a_vector():
    model, x, y = linear_problem("cpu", n=64)
    with pytest.raises(ValueError, match=r"shape \(32,\), not a scalar: it must return a scalar, the MEAN.*\.mean\(\)"):
        estimate_llc(model, lambda p, t: ((p - t) ** 2).sum(-1), (x, y), **KW)
    with pytest.raises(TypeError, match="must return a torch scalar tensor"):
        estimate_llc(model, lambda p, t: float(mse(p, t)), (x, y), **KW)


def test_sum_reduced_loss_is_named_before_it_diverges():
    model, x, y = linear_problem("cpu", n=512)
    summed = lambda p, t: ((p - t) ** 2).sum()  # noqa: E731
    with pytest.raises(ValueError, match="sums over the batch.*n times the mean.*reduction='mean'"):
        estimate_llc(model, summed, (x, y), step_size=1e-3)  # (today: SGLDDivergenceError "lower step_size")
    with pytest.raises(ValueError, match="sums over the batch"):
        estimate_llc(model, nn.MSELoss(reduction="sum"), (x, y), **KW)
    estimate_llc(model, nn.MSELoss(), (x, y), **KW)  # the mean is accepted
    with pytest.raises(ValueError, match="sums over the batch"):
        calibrate_step_size(model, summed, (x, y), pilot_steps=8)


def test_no_parameter_requires_grad():
    model, x, y = linear_problem("cpu", n=64)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad=False.*requires_grad_\\(True\\).*params="):
        estimate_llc(model, mse, (x, y), **KW)
    estimate_llc(model, mse, (x, y), params=["weight"], **KW)  # naming them explicitly works


def test_integer_inputs_to_a_float_model():
    model, x, y = linear_problem("cpu", n=64)
    with pytest.raises(TypeError, match=r"integer dtype torch.int64.*x.to\(torch.float64\)"):
        estimate_llc(model, mse, (x.round().long(), y), **KW)


def test_float32_model_with_float64_data_runs_in_the_models_dtype():
    model, x, y = linear_problem("cpu", n=64)
    model = model.float()
    est = estimate_llc(model, mse, (x, y), **KW)  # data are converted to the model's dtype, not a traceback
    assert est.settings.dtype == "float32" and torch.isfinite(est.loss_traces).all()
    beh = estimate_behavioral_llc(model, x, **KW)
    assert beh.settings.dtype == "float32"


def test_loss_detached_from_the_parameters():
    model, x, y = linear_problem("cpu", n=64)
    with pytest.raises(ValueError, match="does not depend on the parameters through autograd.*detached"):
        estimate_llc(model, lambda p, t: mse(p.detach(), t), (x, y), **KW)


def test_dropout_model_in_train_mode_is_sampled_in_eval_mode():
    model, x, y = linear_problem("cpu", n=64)
    net = nn.Sequential(nn.Dropout(0.5), model).train()
    est = estimate_llc(net, mse, (x, y), **KW)  # (today: vmap refuses the random dropout mask)
    assert est.baseline_loss == pytest.approx(0.0, abs=1e-20) and net.training
    beh = estimate_behavioral_llc(net, x, **KW)
    assert beh.baseline_loss == 0.0  # the reference and the sampled loss agree at w*
