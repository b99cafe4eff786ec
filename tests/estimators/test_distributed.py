"""Chains and curvature products over torch.distributed (issue 16), with 2 and 3 CPU processes (Gloo).

The chains of a C-chain estimate spread over k processes are the single-process chains, step for step;
curvature products of a sharded data set equal the full-data ones in float64.
"""
import pytest
import torch
import torch.multiprocessing as mp

from tests.estimators import _distributed_worker as worker

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with Gloo is not available")


def _launch(size: int, tmp_path) -> list[dict]:
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    out.mkdir()
    ckpt.mkdir()
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.start_processes(_entry, args=(size, str(out), init, str(ckpt)), nprocs=size, join=True, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(size)]


def _entry(rank, size, out, init, ckpt):
    worker.main(rank, size, out, init, ckpt)


@pytest.fixture(scope="module", params=[2, 3], ids=["2 processes", "3 processes"])
def ranks(request, tmp_path_factory):
    return request.param, _launch(request.param, tmp_path_factory.mktemp(f"dist{request.param}"))


def _same_chains(a: torch.Tensor, b: torch.Tensor) -> None:
    """Bit-identical, or (where batched kernels round differently) equal per chain to 1e-6 relative."""
    assert a.shape == b.shape
    if not torch.equal(a, b):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0)


def test_chains_spread_over_processes_are_the_single_process_chains(ranks):
    size, results = ranks
    for c in (size, 5):
        alone = worker.fixed_run(c, distributed=False)
        for r in results:
            got = r[f"fixed{c}"]
            _same_chains(got["traces"], alone.loss_traces)
            _same_chains(got["burnin"], alone.burnin_traces)
            assert got["mean"] == pytest.approx(alone.mean, rel=1e-6) and got["num_processes"] == size
            assert got["std_err"] == pytest.approx(alone.std_err, rel=1e-6)


def test_behavioral_chains_spread_over_processes(ranks):
    _, results = ranks
    net, x, _ = worker.problem()
    alone = worker.estimate_behavioral_llc(net, (x,), num_chains=3, **worker.FIXED)
    for r in results:
        _same_chains(r["behavioral"], alone.loss_traces)


def test_adaptive_defaults_agree_with_one_process(ranks):
    """Calibrated step size and adaptive lengths: the same decisions on every process, as alone."""
    _, results = ranks
    alone = worker.adaptive_run()
    for r in results:
        got = r["adaptive"]
        assert got["step_size"] == alone.settings.step_size and got["num_draws"] == alone.settings.num_draws
        _same_chains(got["traces"], alone.loss_traces)
        assert got["mean"] == pytest.approx(alone.mean, rel=1e-6)


def test_resume_per_process_and_after_a_lost_checkpoint(ranks):
    _, results = ranks
    net, x, y = worker.problem()
    kw = dict(worker.FIXED)
    for draws, key in ((70, "resumed"), (90, "resumed_after_loss")):
        kw["num_draws"] = draws
        alone = worker.estimate_llc(net, worker.mse, (x, y), num_chains=4, distributed=False, **kw)
        for r in results:
            _same_chains(r[key], alone.loss_traces)


def test_sharded_curvature_equals_the_full_data_products(ranks):
    size, results = ranks
    full = worker.curvature(None, size)
    for r in results:
        got = r["curvature"]
        for key in ("hv", "gv", "bv", "grad"):
            torch.testing.assert_close(got[key], full[key], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got["value"], full["value"], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(got["full_value"].reshape(()), full["full_value"].reshape(()), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(got["count"], full["count"], rtol=1e-9, atol=1e-9)
        assert got["bounds"][:3] == full["bounds"][:3]
        assert got["bounds"][3] == pytest.approx(full["bounds"][3], rel=1e-10)
        assert "not data parallel" in got["order4"]


def test_the_default_runs_alone_inside_a_process_group(ranks):
    """distributed=False (the default): rank 0 alone can estimate (no collective waits for the others)."""
    _, results = ranks
    assert torch.equal(results[0]["rank0_alone"], worker.fixed_run(3).loss_traces)


def test_refusals_name_the_fix(ranks):
    size, results = ranks
    for r in results:
        assert "every process needs at least one chain" in r["few_chains"]
        assert "max_seconds cannot be used in a distributed run" in r["max_seconds"]


def test_without_a_process_group_nothing_changes():
    from slt_interp.estimators.distributed import process_group

    assert process_group(None) is None and process_group(False) is None  # alone, whatever is asked
    with pytest.raises(RuntimeError, match="init_process_group"):
        process_group(True)
    with pytest.raises(TypeError, match="distributed must be"):
        process_group("yes")


def test_a_killed_process_resumes_bit_identically(tmp_path):
    """Process 1 of 2 dies mid-run (after 3 checkpointed chunks); the relaunched job resumes from the
    per-process checkpoints and ends with the chains of an uninterrupted single-process run."""
    path = str(tmp_path / "llc.pt")
    out = str(tmp_path / "traces.pt")
    with pytest.raises(mp.ProcessExitedException):
        mp.start_processes(worker.killed_main, args=(2, f"file://{tmp_path / 'rv1'}", path, 3, False, out), nprocs=2,
                           join=True, start_method="spawn")
    saved = [torch.load(f"{path}.rank{r}-of-2", weights_only=False)["steps_done"] for r in range(2)]
    assert 0 < min(saved) < worker.FIXED["num_burnin"] + worker.FIXED["num_draws"]  # it did stop part-way
    mp.start_processes(worker.killed_main, args=(2, f"file://{tmp_path / 'rv2'}", path, 0, True, out), nprocs=2,
                       join=True, start_method="spawn")
    resumed = {torch.load(f"{out}.resumed{r}", weights_only=False) for r in range(2)}
    assert len(resumed) == 1 and 0 < resumed.pop() <= min(saved)  # one common step, not a fresh start
    net, x, y = worker.problem()
    alone = worker.estimate_llc(net, worker.mse, (x, y), num_chains=4, distributed=False, **worker.FIXED)
    _same_chains(torch.load(out, weights_only=False), alone.loss_traces)
