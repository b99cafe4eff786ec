"""Small sampling problems shared by the estimator tests."""
import os
import signal
import sys

import torch
from torch import nn

from slt_interp.estimators import estimate_llc


def mse(prediction, target):
    return ((prediction - target) ** 2).sum(-1).mean()


def linear_problem(device, n=200, d=3, seed=0):
    """A realisable linear regression y = w·x (float64) with the model placed at the truth."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.5, 2.0][:d], dtype=torch.float64)
    w_true = torch.randn(1, d, generator=g, dtype=torch.float64)
    y = x @ w_true.T
    model = nn.Linear(d, 1, bias=False).double().to(device)
    with torch.no_grad():
        model.weight.copy_(w_true)
    return model, x.to(device), y.to(device)


def resume_runs(path, model, x, y, **kw):
    """(first 30 draws checkpointed, resumed to 70, straight 70): for resume-equals-uninterrupted checks."""
    first = estimate_llc(model, mse, (x, y), num_draws=30, checkpoint_path=path, checkpoint_every=10, **kw)
    resumed = estimate_llc(model, mse, (x, y), num_draws=70, checkpoint_path=path, resume=True, **kw)
    straight = estimate_llc(model, mse, (x, y), num_draws=70, **kw)
    assert torch.equal(first.loss_traces, straight.loss_traces[:, :30])
    assert torch.equal(resumed.loss_traces, straight.loss_traces)
    return resumed, straight


_calls = [0]


def killable_mse(prediction, target):
    """mse that SIGKILLs its own process at its ``SLT_KILL_AT``-th call (fault injection); else plain mse."""
    _calls[0] += 1
    if _calls[0] == int(os.environ.get("SLT_KILL_AT", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
    return mse(prediction, target)


KILLABLE_RUN = dict(num_chains=2, num_draws=40, num_burnin=30, step_size=1e-3, batch_size=16, seed=7, mala_every=4,
                    checkpoint_every=5)


def killable_run(path, **kw):
    """The checkpointed run the fault-injection test kills and resumes (same problem in every process)."""
    model, x, y = linear_problem("cpu", n=64)
    return estimate_llc(model, killable_mse, (x, y), checkpoint_path=path, **{**KILLABLE_RUN, **kw})


if __name__ == "__main__":  # python -m tests.estimators._sgld_problems PATH (killed by SLT_KILL_AT)
    torch.set_num_threads(1)
    killable_run(sys.argv[1])
