"""estimate_llc takes the problem as llc_bounds does: a DataLoss from training_loss / behavioral_loss."""
import pytest
import torch

from slt_interp.estimators import behavioral_loss, estimate_llc, llc_bounds, training_loss
from slt_interp.theory import zoo

KW = dict(num_chains=2, num_draws=40, num_burnin=20, step_size=1e-3, seed=0, on_nonminimum="ignore")


def test_data_loss_gives_the_same_chains_as_model_loss_fn_data():
    m = zoo.reduced_rank_model(3, 2, 3, 1)
    x, y = m.sample(200, seed=0)
    direct = estimate_llc(m.model, m.loss_fn, (x, y), **KW)
    loss, params = training_loss(m.model, m.loss_fn, x, y)
    via = estimate_llc(loss, params, **KW)
    assert torch.equal(via.loss_traces, direct.loss_traces)
    assert estimate_llc(loss, **KW).mean == direct.mean
    llc_bounds(loss, params)  # the same object gives the bounds


def test_behavioral_data_loss_samples_the_behavioral_loss():
    m = zoo.reduced_rank_model(3, 2, 3, 1)
    x, _ = m.sample(200, seed=0)
    est = estimate_llc(behavioral_loss(m.model, x)[0], **KW)
    with torch.no_grad():
        ref = m.model(x)
    assert est.mean == pytest.approx(estimate_llc(m.model, lambda p, t: ((p - t) ** 2).sum(-1).mean(), (x, ref), **KW).mean, rel=1e-9)


def test_data_loss_misuse_is_refused():
    m = zoo.reduced_rank_model(3, 2, 3, 1)
    x, y = m.sample(50, seed=0)
    loss, params = training_loss(m.model, m.loss_fn, x, y)
    with pytest.raises(TypeError, match="give neither loss_fn nor data"):
        estimate_llc(loss, m.loss_fn, (x, y), **KW)
    with pytest.raises(ValueError, match="not the model's current parameter"):
        estimate_llc(loss, {k: v + 1 for k, v in params.items()}, **KW)
    with pytest.raises(TypeError, match="estimate_llc needs data"):
        estimate_llc(m.model, m.loss_fn, **KW)
