"""What one process of the distributed tests computes (run under torch.multiprocessing with Gloo).

Everything is written to ``<out>/rank<r>.pt``; the tests compare it with the single-process results.
"""
import os

import torch
from torch import nn

from slt_interp.estimators import (
    GaussNewtonOperator,
    HessianOperator,
    behavioral_loss,
    count_eigenvalues,
    estimate_behavioral_llc,
    estimate_llc,
    llc_bounds,
    training_loss,
)
from slt_interp.estimators.distributed import ShardedLoss

FIXED = dict(num_draws=40, num_burnin=20, step_size=1e-3, batch_size=16)


def problem(seed: int = 0, n: int = 96):
    """A small tanh network at a trained-ish point, with data (float64)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = net(x).detach() + 0.05 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return net, x, y


def mse(p, t):
    return ((p - t) ** 2).mean()


def shard_rows(n: int, rank: int, size: int) -> slice:
    return slice(rank * n // size, (rank + 1) * n // size)


def fixed_run(num_chains: int, **kw):
    net, x, y = problem()
    return estimate_llc(net, mse, (x, y), num_chains=num_chains, **FIXED, **kw)


def adaptive_run(distributed: bool = False):
    net, x, y = problem()
    return estimate_llc(net, mse, (x, y), num_chains=4, max_steps=200, distributed=distributed)


def curvature(rank: int | None, size: int):
    """H·V, G·V (training and behavioral) and an SLQ count, on the full data or on this rank's shard."""
    net, x, y = problem()
    rows = slice(None) if rank is None else shard_rows(x.shape[0], rank, size)
    loss, params = training_loss(net, mse, x[rows], y[rows], batch_size=7)
    behav, _ = behavioral_loss(net, x[rows])
    if rank is not None:
        loss, behav = ShardedLoss(loss), ShardedLoss(behav)
    V = torch.randn(sum(p.numel() for p in params.values()), 3, generator=torch.Generator().manual_seed(5),
                    dtype=torch.float64)
    H = HessianOperator(loss, params, mode="reverse")
    out = dict(hv=H @ V, gv=GaussNewtonOperator(loss, params) @ V, bv=GaussNewtonOperator(behav, params) @ V,
               grad=H.gradient(), value=H.value, full_value=loss(params))
    whole, _ = training_loss(net, mse, x[rows], y[rows])
    count = count_eigenvalues(HessianOperator(ShardedLoss(whole) if rank is not None else whole, params), 1e-3,
                              num_probes=4)
    out["count"] = torch.tensor([count.count, count.std_err], dtype=torch.float64)
    bounds = llc_bounds(loss, on_nonminimum="ignore")
    out["bounds"] = (bounds.rank, bounds.lower, bounds.upper, bounds.grad_norm)
    if rank is not None:
        try:
            llc_bounds(loss, order=4, on_nonminimum="ignore")
            out["order4"] = "no error"
        except NotImplementedError as e:
            out["order4"] = str(e)
    return out


def main(rank: int, size: int, out: str, init: str, checkpoint_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    try:
        torch.set_num_threads(1)
        result = {}
        for c in (size, 5):
            est = fixed_run(c, distributed=True)
            result[f"fixed{c}"] = dict(traces=est.loss_traces, burnin=est.burnin_traces, mean=est.mean,
                                       std_err=est.std_err, num_processes=est.settings.num_processes)
        net, x, _ = problem()
        result["behavioral"] = estimate_behavioral_llc(net, (x,), num_chains=3, distributed=True, **FIXED).loss_traces
        est = adaptive_run(distributed=True)
        result["adaptive"] = dict(traces=est.loss_traces, mean=est.mean, std_err=est.std_err,
                                  step_size=est.settings.step_size, num_draws=est.settings.num_draws)
        # checkpoints: a short run, then a resumed longer one; and a resume where this process's newest
        # generation was lost (as if it was killed while saving)
        path = os.path.join(checkpoint_dir, "llc.pt")
        fixed_run(4, checkpoint_path=path, checkpoint_every=10, distributed=True)
        net, x, y = problem()
        kw = dict(FIXED, num_draws=70, distributed=True)
        est = estimate_llc(net, mse, (x, y), num_chains=4, checkpoint_path=path, resume=True, **kw)
        result["resumed"] = est.loss_traces
        mine = f"{path}.rank{rank}-of-{size}"
        torch.distributed.barrier()
        if rank == size - 1:  # lose the newest generation: keep only the one before it
            os.replace(mine, mine + ".previous")
        torch.distributed.barrier()
        kw = dict(FIXED, num_draws=90, distributed=True)
        est = estimate_llc(net, mse, (x, y), num_chains=4, checkpoint_path=path, resume=True, **kw)
        result["resumed_after_loss"] = est.loss_traces
        result["curvature"] = curvature(rank, size)
        if rank == 0:  # the default runs alone, e.g. an estimate on rank 0 only of a DDP job
            result["rank0_alone"] = fixed_run(3).loss_traces
        torch.distributed.barrier()
        for name, call in (("few_chains", lambda: fixed_run(size - 1, distributed=True)),
                           ("max_seconds", lambda: estimate_llc(net, mse, (x, y), max_seconds=5.0, distributed=True))):
            try:
                call()
                result[name] = "no error"
            except ValueError as e:
                result[name] = str(e)
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def killed_main(rank: int, size: int, init: str, path: str, kill_after: int, resume: bool, out: str) -> None:
    """A fixed-length checkpointed run; with ``kill_after`` the last process dies (os._exit) after that
    many chunks, as a process killed by the scheduler would; with ``resume`` the job continues."""
    from slt_interp.estimators import _rank_loop

    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    torch.set_num_threads(1)
    if kill_after and rank == size - 1:
        advance, calls = _rank_loop.RankLoop.advance, [0]

        def dying(self, steps):
            calls[0] += 1
            if calls[0] > kill_after:
                os._exit(1)
            return advance(self, steps)

        _rank_loop.RankLoop.advance = dying
    if resume:  # record the step every process resumed from
        common = _rank_loop.common_state

        def recorded(*args):
            state = common(*args)
            torch.save(-1 if state is None else int(state["steps_done"]), f"{out}.resumed{rank}")
            return state

        _rank_loop.common_state = recorded
    net, x, y = problem()
    est = estimate_llc(net, mse, (x, y), num_chains=4, checkpoint_path=path, checkpoint_every=10, resume=resume,
                       distributed=True, **FIXED)
    if rank == 0:
        torch.save(est.loss_traces, out)
    torch.distributed.destroy_process_group()
