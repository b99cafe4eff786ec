"""LLC chains and curvature products over the processes of a ``torch.distributed`` job.

Launch the script with ``torchrun --nproc-per-node=k script.py`` (NCCL on GPUs, Gloo on CPUs), call
``torch.distributed.init_process_group()`` and pass ``distributed=True`` to the estimators (the default,
``False``, keeps every process on its own, so that an estimate on rank 0 only of a DDP job never waits for
the other processes). See ``docs/distributed.md`` for launch commands.

**Chains** (:func:`slt_interp.estimators.estimate_llc` / ``estimate_behavioral_llc`` with
``distributed=True``): the C chains are split into k contiguous blocks, one per
process. Every chain's noise and batch order are spawned from the one seed by its global index
(``numpy.random.SeedSequence(seed).spawn(C)[c]``), so chain c draws the same numbers whichever process
runs it. The run's control — burn-in and draw lengths, the convergence targets, step-size back-off —
is decided identically on every process from the traces of all chains, gathered at every decision
point; the estimate, its standard error and the diagnostics are computed from the gathered traces on
every process. The step-size calibration runs on every process from the same seed (rank 0's value is
broadcast so that all agree). Checkpoints are written per process (``<path>.rank<r>-of-<k>``) and a
killed job resumes with the same number of processes. ``max_seconds`` is refused: a wall-clock budget
would stop the processes at different steps.

**Data-parallel curvature** (:class:`ShardedLoss`): each process holds a shard of the data as a
:class:`~slt_interp.estimators.DataLoss`; the loss, its gradient and every Hessian / Gauss–Newton
product are the sample-weighted sums L = Σ_r (n_r/n)·L_r over processes, all-reduced. Curvature
operators built on a :class:`ShardedLoss` work unchanged, and so do the Lanczos / SLQ routines on top
of them (their random probes come from the same generator seed on every process).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

from .model_losses import DataLoss

__all__ = ["ShardedLoss", "all_reduce_sum", "broadcast_object", "chain_block", "gather_objects", "process_group"]


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the job: ``rank`` of ``size`` processes (``size`` ≥ 2)."""

    rank: int
    size: int


def process_group(distributed: bool | None = None) -> ProcessGroup | None:
    """The distributed job this process belongs to, or ``None`` to run alone.

    Args:
        distributed: ``None`` — distribute when ``torch.distributed`` is initialised with more than one
            process; ``True`` — require that; ``False`` — run alone (every process its own estimate).

    Returns:
        The :class:`ProcessGroup`, or ``None``.

    Raises:
        RuntimeError: ``distributed=True`` without an initialised process group.
        TypeError: ``distributed`` is not a bool or None.
    """
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be None (automatic), True or False, got {distributed!r}")
    ready = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and not ready:
        raise RuntimeError("distributed=True but torch.distributed is not initialised: launch with torchrun and call "
                           "torch.distributed.init_process_group() first (backend 'gloo' on CPUs, 'nccl' on GPUs)")
    if distributed is False or not ready:
        return None
    size = torch.distributed.get_world_size()
    return ProcessGroup(torch.distributed.get_rank(), size) if size > 1 else None


def chain_block(num_chains: int, rank: int, size: int) -> range:
    """The global indices of the chains process ``rank`` of ``size`` runs: a contiguous block.

    Args:
        num_chains: C, all chains of the estimate.
        rank: this process.
        size: k, the number of processes.

    Returns:
        ``range(⌊r·C/k⌋, ⌊(r+1)·C/k⌋)``.

    Raises:
        ValueError: fewer chains than processes.
    """
    if num_chains < size:
        raise ValueError(f"num_chains = {num_chains} < {size} processes: every process needs at least one chain; "
                         f"raise num_chains to a multiple of {size} (or launch fewer processes)")
    return range(rank * num_chains // size, (rank + 1) * num_chains // size)


def _device_for_collectives() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(value):
    """Rank 0's ``value`` (any picklable object) on every process.

    Args:
        value: this process's value (only rank 0's is kept).

    Returns:
        Rank 0's value.
    """
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value) -> list:
    """Every process's ``value``, in rank order, on every process.

    Args:
        value: this process's (picklable) value.

    Returns:
        The list of all processes' values.
    """
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, value)
    return out


class ShardedLoss:
    """L(params) = Σ_r (n_r / n)·L_r(params) over the processes, L_r this process's :class:`DataLoss`.

    Each process passes its own shard. :class:`~slt_interp.estimators.HessianOperator` and
    :class:`~slt_interp.estimators.GaussNewtonOperator` built on a ``ShardedLoss`` compute their
    product on the local shard and all-reduce it with the weight n_r/n, so every process holds the
    full-data Hessian (or GGN) product; :func:`~slt_interp.estimators.count_eigenvalues`,
    :func:`~slt_interp.estimators.llc_bounds` and the Lanczos routines on top of them need nothing else
    (their probes come from the same default generator seed on every process). Every process must
    make the same calls in the same order, as in any collective code.

    Args:
        shard: this process's part of the data, as a :class:`DataLoss`.

    Raises:
        TypeError: ``shard`` is not a DataLoss.
        RuntimeError: no initialised process group of more than one process.

    Attributes:
        shard: the local :class:`DataLoss`.
        num_samples: n, all processes' samples together.
        weight: n_r / n of this process.
        name: what the loss is, in words.
    """

    def __init__(self, shard: DataLoss):
        if not isinstance(shard, DataLoss):
            raise TypeError(f"ShardedLoss takes this process's DataLoss (training_loss / behavioral_loss of its shard), "
                            f"got {type(shard).__name__}")
        group = process_group(None)
        if group is None:
            raise RuntimeError("ShardedLoss needs an initialised torch.distributed process group of more than one "
                               "process (torchrun --nproc-per-node=k ...; torch.distributed.init_process_group())")
        counts = gather_objects(shard.num_samples)
        self.shard, self.group = shard, group
        self.num_samples = int(sum(counts))
        self.weight = shard.num_samples / self.num_samples
        self.name = f"{shard.name} (sharded over {group.size} processes)"

    def parameters(self) -> dict[str, Tensor]:
        """w*: the model's current parameters (the same on every process).

        Returns:
            ``{name: tensor}``, detached.
        """
        return self.shard.parameters()

    def reduce(self, local: Tensor) -> Tensor:
        """Σ_r (n_r/n)·local_r: the full-data value of a quantity computed on this process's shard.

        Args:
            local: this process's value (a mean over its shard).

        Returns:
            The weighted sum over processes, the same on every process.
        """
        return all_reduce_sum(self.weight * local.detach())

    def __call__(self, params: Mapping[str, Tensor]) -> Tensor:
        """L(params) = Σ_r (n_r/n)·L_r(params), all-reduced.

        A value only: derivatives are taken by the curvature operators, which reduce their products.

        Args:
            params: ``{name: tensor}``.

        Returns:
            The full-data mean loss (a detached scalar tensor), the same on every process.
        """
        with torch.no_grad():
            return self.reduce(self.shard(params))


def all_reduce_sum(x: Tensor) -> Tensor:
    """Σ_r x_r over the processes (a new tensor on ``x``'s device; ``x`` is not modified).

    Args:
        x: this process's tensor (the same shape on every process).

    Returns:
        The sum.
    """
    y = x.detach().clone().to(_device_for_collectives())
    torch.distributed.all_reduce(y)
    return y.to(x.device)
