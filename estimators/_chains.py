"""Vectorised SGLD chains: the sampling problem (a loss of one flat vector and a batch) and the loop.

Private machinery shared by :mod:`slt_interp.estimators.llc_estimate` and :mod:`slt_interp.estimators.calibration`.

* A :class:`_Problem` is ``batch_loss(w, x_B, y_B)`` for ONE chain (``w`` flat (d,)), the full-data
  loss, w*, the mask of sampled coordinates and n. Models become problems through
  ``torch.func.functional_call``; potentials directly.
* :func:`run_chains` vmaps ``batch_loss`` over the chain dimension (each chain's batch gathered
  outside, shape (C, B, ...)) and takes all chains' gradients with one ``torch.func.vjp``, so all
  chains advance in one batched evaluation. Every chain has its own noise generator and its own batch order,
  both spawned from one seed (``numpy.random.SeedSequence``). Losses are stored in float64.
* ``sampler="mala"``: the same Langevin proposal on the FULL-batch potential, accepted per chain with
  the Metropolis–Hastings probability α of :func:`slt_interp.estimators.sgld.mala_acceptance` (a uniform draw
  from the chain's own generator), so the stationary law is exactly p ∝ exp(−U) for every ε. The
  gradient at the current point is carried from the previous step (one gradient per step).
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

from . import _checkpoint
from . import heap
from .heap import release_freed_memory
from .input_checks import ParamSelection, check_data, eval_mode, flat_model, probe_loss
from .samplers import MALAKernel, RMSPropSGLDKernel, SamplerState, SGLDKernel

SAMPLERS = {"sgld": SGLDKernel, "mala": MALAKernel, "rmsprop": RMSPropSGLDKernel}


class SGLDDivergenceError(RuntimeError):
    """A chain produced NaN/inf or a runaway loss. ``partial`` holds the estimate from the draws that
    finished before the divergence (None when there were too few), ``step`` the step, ``chains`` the
    divergent chain indices."""

    def __init__(self, message: str, *, partial: Any = None, step: int = -1, chains: tuple[int, ...] = ()):
        super().__init__(message)
        self.partial = partial
        self.step = step
        self.chains = chains


@dataclass
class _Problem:
    batch_loss: Callable[..., Tensor]  # (w (d,), *batch) -> scalar, for one chain; batch = (x_B, y_B)
    full_loss: Callable[[Tensor], Tensor]  # w (d,) -> scalar on the whole data set
    w0: Tensor  # (d,)
    mask: Tensor | None  # (d,) 0/1 or None (all coordinates sampled)
    num_samples: int  # n
    has_data: bool
    data: tuple[Tensor, ...] = ()  # the whole data set (x, y) on the device, () for potentials
    names: tuple[str, ...] = ()
    description: str = ""
    vectorised: bool = False  # batch_loss already maps (C, d) -> (C,) (potentials): no vmap needed
    identity: Callable[[], dict] = dict  # lazily: content hashes and identities for checkpoint fingerprints
    check: Callable[[], None] = lambda: None  # validates loss and data by a few evaluations (called before sampling)
    batches: tuple = ()  # streamed data (:mod:`._streaming`): the list of batches, read once, on the host
    chain_value_and_grad: Callable | None = None  # streamed data: (W (C, d), per-chain batches) -> (L (C,), ∇L (C, d))

    @property
    def num_sampled(self) -> int:
        return self.w0.numel() if self.mask is None else int(self.mask.sum())


@dataclass
class _Run:
    """Raw output of :func:`run_chains`: float64 traces over all steps (burn-in included)."""

    losses: Tensor  # (C, steps) batch loss at w_t, before step t
    dist2: Tensor  # (C, steps) ‖w_t − w*‖²
    acceptance: Tensor  # (C, k) MALA acceptance at the monitored steps
    acceptance_steps: Tensor  # (k,) the steps monitored
    baseline: float  # L_n(w*) on the full data
    final_w: Tensor  # (C, d)
    steps_done: int
    diverged: tuple[bool, ...] = field(default=())


# --------------------------------------------------------------------------------------------
# Data and problems
# --------------------------------------------------------------------------------------------
def model_problem(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    tensors: tuple[Tensor, ...],
    *,
    params: ParamSelection = None,
    device: torch.device | str | None = None,
    description: str = "",
) -> _Problem:
    """The sampling problem L(w) = loss_fn(model(x; w), y) over the samples ``tensors = (x, y)``.

    Checked by the package's one validator (:mod:`slt_interp.estimators.input_checks`); floating data are converted to the
    parameters' dtype (the chains compute in it) and the model runs in eval mode while sampling.
    """
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable as loss_fn(prediction, target) -> mean loss")
    if len(tensors) != 2:
        raise ValueError(f"data must hold (inputs, targets); got {len(tensors)} tensors per sample")
    flat = flat_model(model, params, device)
    w0, buffers, mask, dev, dtype, names = flat.w0, flat.buffers, flat.mask, flat.device, flat.dtype, flat.names
    check_data({"inputs": tensors[0], "targets": tensors[1]})
    x, y = (t.to(dev) if not t.is_floating_point() else t.to(device=dev, dtype=dtype) for t in tensors)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 samples (nβ = n/log n), got {n}")
    unflatten = flat.unflatten

    def loss_on(w: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        # eval mode (dropout off, batch-norm running statistics): the loss is a function of w, as the
        # behavioral reference f(x; w*) is; the caller's mode is restored
        with eval_mode(model):
            return loss_fn(functional_call(model, (unflatten(w), buffers), (xb,)), yb)

    def full_loss(w: Tensor) -> Tensor:
        return loss_on(w, x, y)

    def identity() -> dict:
        return dict(data=_checkpoint.tensor_digest(x, y), w_star=_checkpoint.tensor_digest(w0),
                    params=[list(names), _checkpoint.tensor_digest(mask)], loss=_checkpoint.callable_identity(loss_fn),
                    model=f"{type(model).__module__}.{type(model).__qualname__}:" + hashlib.sha256(
                        repr(model).encode()).hexdigest()[:16], num_samples=n, dim=int(w0.numel()))

    return _Problem(loss_on, full_loss, w0, mask, n, True, (x, y), names, description, identity=identity,
                    check=lambda: probe_loss(model, unflatten(w0), buffers, loss_fn, (x, y), in_eval_mode=True,
                                             need_grad=True))


def potential_problem(fn: Callable[[Tensor], Tensor], dim: int, num_samples: int, *, dtype=torch.float64, device=None) -> _Problem:
    """The sampling problem L(w) = K(w) for a potential with its minimum K(0) = 0 (population loss)."""
    w0 = torch.zeros(dim, dtype=dtype, device=device)

    def identity() -> dict:
        return dict(data=None, w_star=_checkpoint.tensor_digest(w0), params=None, loss=_checkpoint.callable_identity(fn),
                    model=None, num_samples=int(num_samples), dim=int(dim))

    return _Problem(fn, fn, w0, None, int(num_samples), False, (), ("w",), "potential", vectorised=True,
                    identity=identity)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
def _chain_seeds(seed: int, num_chains: int) -> list[tuple[int, int]]:
    """Per chain (noise seed, batch seed), spawned from one seed."""
    children = np.random.SeedSequence(int(seed)).spawn(num_chains)
    return [tuple(int(v) for v in c.generate_state(2, dtype=np.uint32)) for c in children]


class _BatchOrders:
    """Streamed data: chain c walks its own permutation of the batch list, reshuffled every epoch."""

    def __init__(self, seeds: Sequence[int], num_batches: int):
        self.seeds, self.m = list(seeds), num_batches
        self._epoch, self._perms = -1, []

    def __call__(self, t: int) -> list[int]:
        epoch, j = divmod(t, self.m)
        if epoch != self._epoch:
            self._perms = []
            for s in self.seeds:
                g = torch.Generator().manual_seed(int(np.random.SeedSequence([s, epoch, 1]).generate_state(1)[0]))
                self._perms.append(torch.randperm(self.m, generator=g).tolist())
            self._epoch = epoch
        return [p[j] for p in self._perms]


class _Batches:
    """Per-chain batch orders: chain c reshuffles every epoch with its own seed (stateless in t)."""

    def __init__(self, seeds: Sequence[int], n: int, batch_size: int, device):
        self.seeds, self.n, self.b, self.device = list(seeds), n, batch_size, device
        self.per_epoch = n // batch_size
        self._cache: dict[int, Tensor] = {}
        self._epoch = -1

    def __call__(self, t: int) -> Tensor:
        epoch, j = divmod(t, self.per_epoch)
        if epoch != self._epoch:
            perms = []
            for s in self.seeds:
                g = torch.Generator().manual_seed(int(np.random.SeedSequence([s, epoch]).generate_state(1)[0]))
                perms.append(torch.randperm(self.n, generator=g))
            self._perms = torch.stack(perms).to(self.device)
            self._epoch = epoch
        return self._perms[:, j * self.b : (j + 1) * self.b]


CHECKPOINT_SECONDS = 60.0  # default checkpoint interval (wall clock) when checkpoint_every is None
_STATE_KEYS = ("steps_done", "losses", "dist2", "acceptance", "acceptance_steps", "w", "generators", "dead")


LOOP_CHAINS_FROM = 500_000  # parameters from which chains are looped instead of vmapped (value_and_grad)


class _ChainLoop:
    """C chains of one sampler kernel (:mod:`slt_interp.estimators.samplers`) advanced together.

    The loop owns what is not pure: the per-chain generators (noise ``ξ`` and Metropolis uniforms),
    the per-chain batch orders, the traces (float64, on the host) and the divergence test. Each step
    draws the batch of step t for every chain, the noise, and calls ``kernel.step`` once.
    """

    def __init__(self, problem: _Problem, *, num_chains: int, step_size: float | Tensor, localization: float,
                 nbeta: float, batch_size: int, seed: int, mala_every: int, divergence_threshold: float,
                 noise_scale: float = 1.0, sampler: str = "sgld", stop_on_divergence: bool = True,
                 chains: Sequence[int] | None = None):
        # ``chains``: which of the ``num_chains`` chains spawned from ``seed`` this loop runs (default all);
        # a process of a distributed run holds a slice of them (:mod:`slt_interp.estimators.distributed`)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        self.problem, self.num_chains, self.nbeta = problem, num_chains, nbeta
        self.mala = sampler == "mala"
        if self.mala:
            batch_size, mala_every = problem.num_samples, 1
        self.batch_size, self.mala_every, self.seed = batch_size, mala_every, seed
        self.divergence_threshold, self.stop_on_divergence = divergence_threshold, stop_on_divergence
        w0 = problem.w0
        self.dev, self.dtype, self.d = w0.device, w0.dtype, w0.numel()
        seeds = _chain_seeds(seed, num_chains)
        if chains is not None:
            seeds = [seeds[c] for c in chains]
            num_chains = self.num_chains = len(seeds)
        self.gens = [torch.Generator(device=self.dev).manual_seed(s[0]) for s in seeds]
        self.streamed = problem.chain_value_and_grad is not None
        if self.streamed and self.mala:
            raise ValueError("sampler='mala' needs the full-data gradient at every step, which streamed batches "
                             "(a DataLoader of dicts, a list of batches) do not give cheaply; use sampler='sgld' or "
                             "'rmsprop', or pass the data as tensors (inputs, targets)")
        self.full_batch = not self.streamed and ((not problem.has_data) or batch_size >= problem.num_samples)
        if self.streamed:
            self.batches = _BatchOrders([s[1] for s in seeds], len(problem.batches))
        else:
            self.batches = None if self.full_batch else _Batches([s[1] for s in seeds], problem.num_samples, batch_size,
                                                                 self.dev)
        self.step_size = step_size
        eps = torch.as_tensor(step_size, dtype=self.dtype, device=self.dev)
        nd = len(problem.data)
        batched = problem.batch_loss if problem.vectorised else vmap(
            problem.batch_loss, in_dims=(0,) + (None if self.full_batch else 0,) * nd)

        # one chain, or chains so large that the matrix products dominate: a loop of plain reverse passes
        # beats vmap (measured at 1 thread, MLP, batch 64: one chain 1.0 vs 1.9 ms per gradient at 69k
        # parameters, 8.0 vs 9.9 ms at 1M; eight chains 0.99 vs 1.10 ms at 69k, 8.2 vs 10.2 ms at 1M)
        looped = not problem.vectorised and (num_chains == 1 or self.d >= LOOP_CHAINS_FROM)

        def value_and_grad(W: Tensor, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
            # per-chain gradients as one vjp of the chain-vectorised loss (chains are independent, so the
            # cotangent of ones gives each chain its own gradient); cheaper than vmap(grad(.)) per call
            if self.streamed:
                return problem.chain_value_and_grad(W, batch)
            if looped:
                losses, grads = torch.empty(W.shape[0], dtype=W.dtype, device=W.device), torch.empty_like(W)
                with torch.enable_grad():
                    for c in range(W.shape[0]):
                        w = W[c].detach().requires_grad_(True)
                        L = problem.batch_loss(w, *(b if self.full_batch else b[c] for b in batch))
                        (grads[c],) = torch.autograd.grad(L, w)
                        losses[c] = L.detach()
                return losses, grads
            L, pullback = vjp(lambda w: batched(w, *batch), W)
            return L.detach(), pullback(torch.ones_like(L))[0]

        kernel_cls = SAMPLERS[sampler]
        self.kernel = kernel_cls(value_and_grad, w0, eps, nbeta, localization, problem.mask, noise_scale)
        # RMSProp: from step ``hold_from`` on, V is held fixed (the kernel with adapt=False; set by the
        # driver, :mod:`._adaptive`); None: V adapts at every step
        self.hold_from: int | None = None
        self._held = replace(self.kernel, adapt=False) if isinstance(self.kernel, RMSPropSGLDKernel) else self.kernel
        with torch.no_grad():
            self.baseline = float(problem.full_loss(w0).double()) if not problem.vectorised else float(
                problem.full_loss(w0[None])[0].double())
        if not math.isfinite(self.baseline):
            raise ValueError("the loss at w* is NaN or inf: check the model, the data and loss_fn")
        self.t = 0
        self.state: SamplerState | None = None
        self.w = w0.expand(num_chains, self.d).clone()
        self._losses: list[Tensor] = []
        self._dist2: list[Tensor] = []
        self._acc: list[Tensor] = []
        self._acc_steps: list[int] = []
        self.dead = torch.zeros(num_chains, dtype=torch.bool)
        self._noise: Tensor | None = None  # per-step buffers (advance)
        self._scratch: Tensor | None = None
        self._released = time.monotonic()  # when freed heap memory was last returned (advance)

    # ---- traces -----------------------------------------------------------------------------
    def _stack(self, rows: list[Tensor]) -> Tensor:
        return torch.stack(rows, 1) if rows else torch.zeros(self.num_chains, 0, dtype=torch.float64)

    @property
    def losses(self) -> Tensor:
        return self._stack(self._losses)

    @property
    def dist2(self) -> Tensor:
        return self._stack(self._dist2)

    @property
    def acceptance(self) -> Tensor:
        """(C, k) MALA acceptance probabilities at the monitored steps ``acceptance_steps``."""
        return self._stack(self._acc)

    @property
    def acceptance_steps(self) -> list[int]:
        return list(self._acc_steps)

    def run_record(self, diverged: tuple[int, ...] = ()) -> _Run:
        return _Run(self.losses, self.dist2, self._stack(self._acc), torch.tensor(self._acc_steps, dtype=torch.long),
                    self.baseline, self.w.clone(), self.t,
                    tuple(bool(x) or c in diverged for c, x in enumerate(self.dead.tolist())))

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        precond = self.state.precond if self.state is not None else None
        return dict(steps_done=self.t, losses=self.losses, dist2=self.dist2, acceptance=self._stack(self._acc),
                    acceptance_steps=torch.tensor(self._acc_steps, dtype=torch.long), w=self.w.detach().cpu(),
                    generators=[g.get_state() for g in self.gens], dead=self.dead.clone(),
                    precond=precond.detach().cpu() if precond is not None else torch.zeros(0))

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["steps_done"])
        self._losses = list(state["losses"].unbind(1))
        self._dist2 = list(state["dist2"].unbind(1))
        self._acc = list(state["acceptance"].unbind(1))
        self._acc_steps = [int(v) for v in state["acceptance_steps"]]
        self.w = state["w"].to(device=self.dev, dtype=self.dtype)
        precond = state.get("precond")
        # rebuilt from w at the next step (MALA recomputes its full-batch gradient); RMSProp keeps its V
        self.state = None if precond is None or precond.numel() == 0 else SamplerState(
            self.w, precond=precond.to(device=self.dev, dtype=self.dtype))
        for g, s in zip(self.gens, state["generators"]):
            g.set_state(s)
        self.dead = state["dead"].clone()

    # ---- stepping ---------------------------------------------------------------------------
    def _batch(self, t: int) -> tuple[Tensor, ...]:
        if self.streamed:
            return [self.problem.batches[j] for j in self.batches(t)]  # chain c's own batch (moved per use)
        if self.full_batch:
            return self.problem.data
        rows = self.batches(t)  # (C, B) sample indices, gathered outside vmap
        return tuple(d_[rows] for d_ in self.problem.data)

    def advance(self, steps: int) -> tuple[int, tuple[int, ...], str] | None:
        """Run ``steps`` steps; on a divergence stop before the step and return (t, chains, reason)."""
        w0 = self.problem.w0
        for _ in range(steps):
            t = self.t
            batch = self._batch(t)
            if self.state is None:
                self.state = self.kernel.init(self.w, batch)
            monitor = self.mala_every > 0 and t % self.mala_every == 0
            # each chain's own generator, written into buffers kept across steps: a fresh (C, d) tensor per
            # step costs page faults comparable to the update itself at d ~ 10⁵ (the kernel does not keep ξ)
            if self._noise is None:
                self._noise = torch.empty(len(self.gens), self.d, device=self.dev, dtype=self.dtype)
                self._scratch = torch.empty_like(self._noise)
            noise = self._noise
            for row, gc in zip(noise, self.gens):
                row.normal_(generator=gc)
            uniform = torch.stack([torch.rand((), generator=gc, device=self.dev, dtype=self.dtype)
                                   for gc in self.gens]) if self.mala else None
            kernel = self.kernel if self.hold_from is None or t < self.hold_from else self._held
            new, info = kernel.step(self.state, batch, noise, uniform, monitor)
            loss = info.loss.double().cpu()
            excursion = self.nbeta * (loss - self.baseline)
            bad = ~info.finite.cpu() | (excursion > self.divergence_threshold)
            if not self.stop_on_divergence:
                # pilots: a divergent chain is parked at w* and its later losses are recorded as NaN
                self.dead |= bad
                if bool(self.dead.any()):
                    park = self.dead.to(self.dev)[:, None]
                    new = SamplerState(torch.where(park, w0.expand_as(new.w), new.w).nan_to_num())
                    loss = torch.where(self.dead, torch.full_like(loss, math.nan), loss)
                bad = torch.zeros_like(bad)
            if bool(bad.any()):
                chains = tuple(int(c) for c in torch.nonzero(bad).reshape(-1))
                c0 = chains[0]
                reason = "NaN/inf loss or gradient" if not math.isfinite(float(excursion[c0])) else (
                    f"runaway loss nβ·(L − L*) = {float(excursion[c0]):.3g} > {self.divergence_threshold:.3g}")
                return t, chains, reason
            self._losses.append(loss)
            self._dist2.append(torch.sub(self.w, w0, out=self._scratch).square_().sum(-1).double().cpu())
            if monitor:
                self._acc.append(info.acceptance.double().cpu())
                self._acc_steps.append(t)
            self.state = new
            self.w = new.w
            self.t = t + 1
        now = time.monotonic()
        if now - self._released >= heap.RELEASE_EVERY_S:  # else glibc's heaps grow by ~1 MB per step (heap module)
            release_freed_memory()
            self._released = now
        return None


def run_chains(
    problem: _Problem,
    *,
    num_chains: int,
    num_draws: int,
    num_burnin: int,
    step_size: float | Tensor,
    localization: float,
    nbeta: float,
    batch_size: int,
    seed: int,
    mala_every: int,
    divergence_threshold: float,
    noise_scale: float = 1.0,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    on_divergence: Callable[[_Run, int, tuple[int, ...], str], None] | None = None,
    stop_on_divergence: bool = True,
    sampler: str = "sgld",
) -> _Run:
    """Run ``num_chains`` SGLD (or MALA) chains for ``num_burnin + num_draws`` steps from w*, all vectorised.

    A small driver over :class:`_ChainLoop`: checkpoints every ``checkpoint_every`` steps (burn-in
    included; None: every 60 s), at the end and before reporting a divergence; ``resume`` continues
    from a matching checkpoint. With ``sampler="mala"`` every step is accepted or rejected and the
    acceptance probability is recorded at every step; the batch is always the full data set.
    """
    loop = _ChainLoop(problem, num_chains=num_chains, step_size=step_size, localization=localization, nbeta=nbeta,
                      batch_size=batch_size, seed=seed, mala_every=mala_every, divergence_threshold=divergence_threshold,
                      noise_scale=noise_scale, sampler=sampler, stop_on_divergence=stop_on_divergence)
    total = num_burnin + num_draws
    cfg = dict(num_chains=num_chains, num_burnin=num_burnin, step_size=step_size, localization=localization,
               nbeta=nbeta, batch_size=loop.batch_size, seed=seed, mala_every=loop.mala_every, sampler=sampler,
               noise_scale=noise_scale, divergence_threshold=divergence_threshold, dtype=str(loop.dtype),
               device=loop.dev.type)
    ckpt = _checkpoint.check_path(checkpoint_path) if checkpoint_path is not None else None
    fp = _checkpoint.fingerprint(problem.identity(), cfg) if ckpt is not None else {}
    if ckpt is not None and resume:
        state = _checkpoint.load(ckpt, fp, _STATE_KEYS)
        if state is not None:
            if int(state["steps_done"]) > total:
                raise ValueError(f"checkpoint {ckpt} already holds {int(state['steps_done'])} steps, more than "
                                 f"num_burnin + num_draws = {total}; raise num_draws")
            loop.load_state_dict(state)

    def save() -> None:
        if ckpt is not None:
            _checkpoint.save(ckpt, fp, loop.state_dict())

    every = checkpoint_every if checkpoint_every else 50
    last = time.monotonic()
    while loop.t < total:
        chunk = min(every - loop.t % every, total - loop.t)
        div = loop.advance(chunk)
        if div is not None:
            save()
            t, chains, reason = div
            if on_divergence is None:
                raise SGLDDivergenceError(f"chain(s) {list(chains)} diverged at step {t}: {reason}", step=t, chains=chains)
            on_divergence(loop.run_record(chains), t, chains, reason)
            raise AssertionError("on_divergence must raise")  # pragma: no cover
        if ckpt is not None and loop.t < total and (checkpoint_every or time.monotonic() - last > CHECKPOINT_SECONDS):
            save()
            last = time.monotonic()
    save()
    return loop.run_record()
