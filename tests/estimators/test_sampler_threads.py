"""The estimators choose the intra-op thread count themselves and restore the caller's setting."""
import pytest
import torch

from slt_interp.estimators import SGLDDivergenceError, calibrate_step_size, estimate_llc
from slt_interp.estimators.threads import SMALL_WORK, choose_num_threads, intra_op_threads
from tests.estimators._sgld_problems import linear_problem, mse


class _Recorder:
    """mse that records the thread count in force whenever it is called."""

    def __init__(self):
        self.seen = set()

    def __call__(self, prediction, target):
        self.seen.add(torch.get_num_threads())
        return mse(prediction, target)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_small_problem_runs_on_one_thread_and_restores_the_callers_setting(two_threads):
    model, x, y = linear_problem("cpu", n=64)
    loss = _Recorder()
    est = estimate_llc(model, loss, (x, y), num_chains=2, num_draws=8, step_size=1e-3)
    assert loss.seen == {1} and est.settings.num_threads == 1
    assert torch.get_num_threads() == 2
    loss = _Recorder()
    calibrate_step_size(model, loss, (x, y), pilot_steps=8)
    assert loss.seen == {1} and torch.get_num_threads() == 2
    # an explicit choice wins
    loss = _Recorder()
    est = estimate_llc(model, loss, (x, y), num_chains=2, num_draws=8, step_size=1e-3, num_threads=2)
    assert loss.seen == {2} and est.settings.num_threads == 2


def test_setting_restored_when_the_run_raises(two_threads):
    model, x, y = linear_problem("cpu", n=64)
    with pytest.raises(SGLDDivergenceError):
        estimate_llc(model, mse, (x, y), step_size=10.0, num_draws=10)
    assert torch.get_num_threads() == 2
    with pytest.raises(KeyboardInterrupt):
        with intra_op_threads(1):
            assert torch.get_num_threads() == 1
            raise KeyboardInterrupt
    assert torch.get_num_threads() == 2


def test_thread_choice_rule():
    cpu = torch.device("cpu")
    assert choose_num_threads(cpu, SMALL_WORK - 1) == 1
    assert choose_num_threads(cpu, SMALL_WORK) is None  # large problems keep torch's setting
    assert choose_num_threads(torch.device("cuda"), 10) is None  # host threads left alone on accelerators
    assert choose_num_threads(cpu, 10, requested=3) == 3
    with pytest.raises(ValueError, match="num_threads must be a positive integer"):
        choose_num_threads(cpu, 10, requested=0)
    model, x, y = linear_problem("cpu", n=64)
    with pytest.raises(ValueError, match="num_threads must be a positive integer"):
        estimate_llc(model, mse, (x, y), step_size=1e-3, num_threads=-1)
