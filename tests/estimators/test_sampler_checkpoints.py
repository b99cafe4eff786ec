"""Checkpoints: the fingerprint refuses every kind of mismatch by name; unreadable files and bad paths
fail clearly and up front; a run SIGKILLed during burn-in or sampling resumes bit-identically."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slt_interp.estimators import estimate_llc
from tests.estimators._sgld_problems import KILLABLE_RUN, killable_run, linear_problem, mse

ROOT = Path(__file__).resolve().parents[2]
KW = dict(num_chains=2, num_draws=12, num_burnin=4, step_size=1e-3, batch_size=16, seed=5, mala_every=3)


def _other_mse(prediction, target):
    return ((prediction - target) ** 2).sum(-1).mean() * 1.0


@pytest.fixture
def saved(tmp_path):
    model, x, y = linear_problem("cpu", n=64)
    path = tmp_path / "run.pt"
    estimate_llc(model, mse, (x, y), checkpoint_path=path, **KW)
    return path, model, x, y


def _resume(path, model, loss, data, **kw):
    return estimate_llc(model, loss, data, checkpoint_path=path, resume=True, **{**KW, "num_draws": 20, **kw})


def test_every_kind_of_mismatch_is_refused_by_name(saved):
    path, model, x, y = saved
    y2 = y.clone()
    y2[0] += 1.0  # other data of the same size
    with pytest.raises(ValueError, match=r"different data \(content hash"):
        _resume(path, model, mse, (x, y2))
    with pytest.raises(ValueError, match="different loss function"):
        _resume(path, model, _other_mse, (x, y))
    with pytest.raises(ValueError, match=r"different parameter selection \(params=\)"):
        _resume(path, model, mse, (x, y), params={"weight": torch.tensor([[True, False, True]])})
    swapped = linear_problem("cpu", n=64)[0]
    with torch.no_grad():  # the same Σw*, another w*
        swapped.weight.copy_(model.weight.flip(-1))
    assert float(swapped.weight.detach().sum()) == pytest.approx(float(model.weight.detach().sum()))
    with pytest.raises(ValueError, match=r"different w\* \(content hash"):
        _resume(path, swapped, mse, (x, y))
    with pytest.raises(ValueError, match=r"sampler setting seed \(5 in the checkpoint, 6 now\)"):
        _resume(path, model, mse, (x, y), seed=6)
    with pytest.raises(ValueError, match="sampler setting localization"):
        _resume(path, model, mse, (x, y), localization=2.0)
    with pytest.raises(ValueError, match="sampler setting num_burnin"):
        _resume(path, model, mse, (x, y), num_burnin=5)
    resumed = _resume(path, model, mse, (x, y))  # the same run resumes
    assert resumed.loss_traces.shape == (2, 20)


def test_missing_checkpoint_warns_and_starts_afresh(tmp_path):
    model, x, y = linear_problem("cpu", n=64)
    path = tmp_path / "none.pt"
    with pytest.warns(UserWarning, match="does not exist: starting afresh"):
        est = estimate_llc(model, mse, (x, y), checkpoint_path=path, resume=True, **KW)
    assert path.exists()
    assert torch.equal(est.loss_traces, estimate_llc(model, mse, (x, y), **KW).loss_traces)


def test_unreadable_foreign_and_directory_checkpoints_fail_clearly(saved, tmp_path):
    path, model, x, y = saved
    raw = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(raw[: len(raw) // 2])
    corrupted = tmp_path / "corrupted.pt"
    corrupted.write_bytes(b"not a checkpoint at all" * 10)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, foreign)
    for bad in (truncated, corrupted):
        with pytest.raises(ValueError, match="cannot be read .*truncated, corrupted or not a torch file: delete it"):
            _resume(bad, model, mse, (x, y))
    with pytest.raises(ValueError, match="not an slt_interp sampler checkpoint"):
        _resume(foreign, model, mse, (x, y))
    calls = []

    def counting(prediction, target):
        calls.append(1)
        return mse(prediction, target)

    with pytest.raises(ValueError, match="is a directory; pass a file path inside it"):
        estimate_llc(model, counting, (x, y), checkpoint_path=tmp_path, **KW)
    assert not calls  # refused before any sampling (and before calibration)


def _kill_during(path, kill_at):
    env = {**os.environ, "SLT_KILL_AT": str(kill_at), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tests.estimators._sgld_problems", str(path)], cwd=ROOT, env=env,
                          capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]  # SIGKILLed
    return int(torch.load(path, weights_only=True)["steps_done"])


def test_sigkill_during_burnin_and_during_sampling_resumes_bit_identically(tmp_path):
    straight = killable_run(None)
    burnin, total = KILLABLE_RUN["num_burnin"], KILLABLE_RUN["num_burnin"] + KILLABLE_RUN["num_draws"]
    for kill_at, phase in ((22, "burn-in"), (58, "sampling")):
        path = tmp_path / f"killed_{kill_at}.pt"
        done = _kill_during(path, kill_at)
        in_burnin = 0 < done < burnin
        assert in_burnin if phase == "burn-in" else burnin <= done < total, (phase, done)
        resumed = killable_run(path, resume=True)
        assert torch.equal(resumed.loss_traces, straight.loss_traces)
        assert torch.equal(resumed.burnin_traces, straight.burnin_traces)
        assert resumed.mean == straight.mean and resumed.std_err == straight.std_err
        assert resumed.diagnostics.mala_acceptance == straight.diagnostics.mala_acceptance
