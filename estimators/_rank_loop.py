"""The chain loop of one process of a distributed estimate (:mod:`slt_interp.estimators.distributed`)."""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from . import _checkpoint
from ._chains import _ChainLoop, _Run
from .distributed import ProcessGroup, broadcast_object, gather_objects


class RankLoop:
    """The chain loop of one process, seen by the run driver as the loop of all chains.

    Advancing and checkpointing are local (this process's chains); the traces the driver decides from
    (``losses``, ``dist2``) and the final record are gathered from every process in chain order; a
    divergence anywhere stops every process at the first step any chain diverged.
    """

    def __init__(self, loop: _ChainLoop, group: ProcessGroup, chains: range, num_chains: int):
        self.local, self.group, self.chains, self.num_chains = loop, group, chains, num_chains
        self._cache: dict[str, tuple[int, Tensor]] = {}

    @property
    def t(self) -> int:
        return self.local.t

    @property
    def baseline(self) -> float:
        return self.local.baseline

    def _gathered(self, name: str) -> Tensor:
        hit = self._cache.get(name)
        if hit is not None and hit[0] == self.local.t:
            return hit[1]
        value = torch.cat(gather_objects(getattr(self.local, name)), 0)
        self._cache[name] = (self.local.t, value)
        return value

    @property
    def losses(self) -> Tensor:
        return self._gathered("losses")

    @property
    def dist2(self) -> Tensor:
        return self._gathered("dist2")

    @property
    def acceptance(self) -> Tensor:
        return self._gathered("acceptance")

    @property
    def acceptance_steps(self) -> list[int]:
        return self.local.acceptance_steps

    def state_dict(self) -> dict:
        return self.local.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.local.load_state_dict(state)
        self._cache.clear()

    def advance(self, steps: int):
        """Advance every process's chains; on a divergence anywhere, all stop at the first diverged step."""
        div = self.local.advance(steps)
        self._cache.clear()
        mine = None if div is None else (div[0], tuple(self.chains[c] for c in div[1]), div[2])
        found = [d for d in gather_objects(mine) if d is not None]
        if not found:
            return None
        first = min(d[0] for d in found)
        chains = tuple(sorted(c for d in found if d[0] == first for c in d[1]))
        reason = next(d[2] for d in found if d[0] == first)
        self._truncate(first)
        return first, chains, reason

    def _truncate(self, steps: int) -> None:
        """Keep the traces of the first ``steps`` steps.

        The driver restarts or reports from there; the chains' positions are not rewound, so a record
        built after a divergence holds the traces up to it and each process's last position.
        """
        loop = self.local
        if loop.t <= steps:
            return
        loop._losses, loop._dist2 = loop._losses[:steps], loop._dist2[:steps]
        keep = [i for i, t in enumerate(loop._acc_steps) if t < steps]
        loop._acc = [loop._acc[i] for i in keep]
        loop._acc_steps = [loop._acc_steps[i] for i in keep]
        loop.t = steps
        self._cache.clear()

    def run_record(self, diverged: tuple[int, ...] = ()) -> _Run:
        mine = tuple(c - self.chains.start for c in diverged if c in self.chains)
        parts = gather_objects(self.local.run_record(mine))
        return _Run(torch.cat([p.losses for p in parts]), torch.cat([p.dist2 for p in parts]),
                    torch.cat([p.acceptance for p in parts]), parts[0].acceptance_steps, parts[0].baseline,
                    torch.cat([p.final_w for p in parts]), parts[0].steps_done, tuple(x for p in parts for x in p.diverged))


def checkpoint_path(path, group: ProcessGroup):
    """This process's checkpoint file: ``<path>.rank<r>-of-<k>``."""
    return path.with_name(f"{path.name}.rank{group.rank}-of-{group.size}")


def _position(state: dict) -> tuple[int, int]:
    drv = state["driver"]
    return int(drv["steps_total"]), int(state["steps_done"])


def common_state(path, fingerprint: dict, keys: tuple[str, ...]) -> dict | None:
    """The newest checkpoint generation that every process holds (each keeps two), or None.

    A process killed while saving still holds the generation before; the others resume from that one
    too, so all processes continue from the same step. A fingerprint mismatch on any process is
    raised on every process (naming it).
    """
    found, error = {}, None
    for p in (path, _checkpoint.previous(path)):
        if p.exists():
            try:
                state = _checkpoint.load(p, fingerprint, keys)
            except ValueError as e:
                error = str(e)
                break
            found[_position(state)] = state
    everyone = gather_objects((sorted(found), error))
    errors = [f"process {r}: {e}" for r, (_, e) in enumerate(everyone) if e]
    if errors:
        raise ValueError("cannot resume the distributed run: " + "; ".join(errors))
    common = set(everyone[0][0]).intersection(*(set(p) for p, _ in everyone[1:]))
    if not common:
        if any(p for p, _ in everyone) and torch.distributed.get_rank() == 0:
            warnings.warn(f"resume=True but the processes' checkpoints ({str(path)!r} and its .previous, per process) "
                          "share no step: starting afresh", stacklevel=5)
        return None
    return found[max(common)]


def agree(value: bool) -> bool:
    """Rank 0's decision on every process (for decisions made from the wall clock)."""
    return bool(broadcast_object(bool(value)))
