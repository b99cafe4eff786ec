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
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.utils.data import DataLoader, Dataset

from . import _checkpoint
from .samplers import MALAKernel, RMSPropSGLDKernel, SamplerState, SGLDKernel

SAMPLERS = {"sgld": SGLDKernel, "mala": MALAKernel, "rmsprop": RMSPropSGLDKernel}

ParamSelection = Union[None, Sequence[str], Mapping[str, Tensor]]


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
def materialize(data, what: str = "data") -> tuple[tuple[Tensor, ...], int | None]:
    """All samples of ``data`` as a tuple of stacked tensors, and the DataLoader's batch size if any.

    ``data``: a tuple/list of tensors with a common first dimension, a ``torch.utils.data.Dataset``
    whose items are tensors or tuples of tensors, or a ``DataLoader`` over such a data set. The
    vectorised chains need random access to every sample, so the data set is held in memory.
    """
    loader_batch = None
    if isinstance(data, DataLoader):
        loader_batch = data.batch_size
        data = data.dataset
    if isinstance(data, Tensor):
        return (data,), loader_batch
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
        sizes = {t.shape[0] if t.dim() else None for t in data}
        if len(sizes) != 1 or None in sizes:
            raise ValueError(
                f"{what}: the tensors must share their first (sample) dimension, got shapes "
                f"{[tuple(t.shape) for t in data]}"
            )
        return tuple(data), loader_batch
    if isinstance(data, Dataset):
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError as e:
            raise TypeError(f"{what}: the Dataset must have a length (an iterable data set cannot be sampled at random)") from e
        if n == 0:
            raise ValueError(f"{what}: the Dataset is empty")
        items = [data[i] for i in range(n)]
        first = items[0]
        if isinstance(first, Tensor):
            return (torch.stack(items),), loader_batch
        if isinstance(first, (tuple, list)) and all(isinstance(t, Tensor) for t in first):
            return tuple(torch.stack([it[k] for it in items]) for k in range(len(first))), loader_batch
        raise TypeError(f"{what}: Dataset items must be tensors or tuples of tensors, got {type(first).__name__}")
    raise TypeError(
        f"{what} must be a pair (inputs, targets) of tensors, a torch Dataset or a DataLoader; got {type(data).__name__}"
    )


def _selection_mask(model: nn.Module, params: ParamSelection, flat_names, shapes) -> Tensor | None:
    named = dict(model.named_parameters())
    if params is None:
        if all(p.requires_grad for p in named.values()):
            return None
        chosen = {n: torch.ones(named[n].shape, dtype=torch.bool) for n in flat_names if named[n].requires_grad}
    elif isinstance(params, Mapping):
        chosen = {}
        for n, m in params.items():
            if n not in named:
                raise ValueError(f"params: unknown parameter {n!r}; the model has {sorted(named)}")
            m = torch.as_tensor(m)
            if m.dtype != torch.bool or m.shape != named[n].shape:
                raise ValueError(
                    f"params[{n!r}] must be a boolean mask of shape {tuple(named[n].shape)}, "
                    f"got dtype {m.dtype} and shape {tuple(m.shape)}"
                )
            chosen[n] = m.cpu()
    else:
        if isinstance(params, str):
            raise TypeError("params must be a list of parameter names (or a dict name → boolean mask), not one string")
        chosen = {}
        for n in params:
            if n not in named:
                raise ValueError(f"params: unknown parameter {n!r}; the model has {sorted(named)}")
            chosen[n] = torch.ones(named[n].shape, dtype=torch.bool)
    if params is None and not chosen:
        raise ValueError("every parameter of the model has requires_grad=False, so there is nothing to sample; call "
                         "requires_grad_(True) on the parameters to sample, or name them with params=[...]")
    parts = [chosen.get(n, torch.zeros(s, dtype=torch.bool)).reshape(-1) for n, s in zip(flat_names, shapes)]
    mask = torch.cat(parts)
    if not mask.any():
        raise ValueError("params selects no coordinate to sample; name at least one parameter (or a non-empty mask)")
    return mask


def flat_parameters(model: nn.Module, params: ParamSelection, device):
    """The model's parameters as one flat w* for the samplers, checked once (floating point, one dtype, finite).

    Returns:
        ``(names, shapes, sizes, w0, buffers, mask, device, dtype)``: w0 and the buffers on ``device``
        (default: the parameters' device), the weight-refinement mask (or None) in w0's dtype.
    """
    named = dict(model.named_parameters())
    if not named:
        raise ValueError("the model has no parameters to sample")
    first = next(iter(named.values()))
    dev = torch.device(device) if device is not None else first.device
    dtype = first.dtype
    for n, p in named.items():
        if not p.is_floating_point():
            raise TypeError(f"parameter {n!r} has dtype {p.dtype}; SGLD needs floating-point parameters")
        if p.dtype != dtype:
            raise ValueError(f"all parameters must share one dtype; {n!r} is {p.dtype}, others {dtype}")
        if not torch.isfinite(p).all():
            raise ValueError(f"parameter {n!r} contains NaN or inf: w* must be finite")
    names = tuple(named)
    shapes = tuple(named[n].shape for n in names)
    sizes = [int(math.prod(s)) for s in shapes]
    w0 = torch.cat([named[n].detach().reshape(-1) for n in names]).to(dev)
    buffers = {n: b.to(dev) for n, b in model.named_buffers()}
    mask = _selection_mask(model, params, names, shapes)
    if mask is not None:
        mask = mask.to(device=dev, dtype=dtype)
    return names, shapes, sizes, w0, buffers, mask, dev, dtype


def model_problem(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    tensors: tuple[Tensor, ...],
    *,
    params: ParamSelection = None,
    device: torch.device | str | None = None,
    description: str = "",
) -> _Problem:
    """The sampling problem L(w) = loss_fn(model(x; w), y) over the samples ``tensors = (x, y)``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable as loss_fn(prediction, target) -> mean loss")
    if len(tensors) != 2:
        raise ValueError(f"data must hold (inputs, targets); got {len(tensors)} tensors per sample")
    names, shapes, sizes, w0, buffers, mask, dev, dtype = flat_parameters(model, params, device)
    x, y = (t.to(dev) if not t.is_floating_point() else t.to(device=dev, dtype=dtype) for t in tensors)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 samples (nβ = n/log n), got {n}")

    def unflatten(w: Tensor) -> dict[str, Tensor]:
        return {k: v.reshape(s) for k, v, s in zip(names, torch.split(w, sizes), shapes)}

    def loss_on(w: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        # eval mode (dropout off, batch-norm running statistics): the loss is a function of w, as the
        # behavioral reference f(x; w*) is; the caller's mode is restored
        was = model.training
        if was:
            model.eval()
        try:
            return loss_fn(functional_call(model, (unflatten(w), buffers), (xb,)), yb)
        finally:
            if was:
                model.train(True)

    def full_loss(w: Tensor) -> Tensor:
        return loss_on(w, x, y)

    def identity() -> dict:
        return dict(data=_checkpoint.tensor_digest(x, y), w_star=_checkpoint.tensor_digest(w0),
                    params=[list(names), _checkpoint.tensor_digest(mask)], loss=_checkpoint.callable_identity(loss_fn),
                    model=f"{type(model).__module__}.{type(model).__qualname__}:" + hashlib.sha256(
                        repr(model).encode()).hexdigest()[:16], num_samples=n, dim=int(w0.numel()))

    return _Problem(loss_on, full_loss, w0, mask, n, True, (x, y), names, description, identity=identity,
                    check=lambda: _probe(loss_on, w0, x, y))


def _probe(loss_on: Callable[..., Tensor], w0: Tensor, x: Tensor, y: Tensor) -> None:
    """Evaluate the loss once on a few rows and turn the usual mistakes into errors naming cause and fix:
    a model that cannot take the inputs (integer inputs to a float model), a loss that is not a scalar,
    is detached from the parameters, or sums over the batch instead of averaging."""
    n = x.shape[0]
    m = min(32, n // 2)
    w = w0.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            value = loss_on(w, x[:m], y[:m])
    except (RuntimeError, TypeError, ValueError, IndexError) as e:
        text = str(e)
        if not x.is_floating_point() and any(k in text for k in ("dtype", "Long", "Int", "expected scalar type", "Byte")):
            raise TypeError(
                f"the model cannot take the inputs: they have integer dtype {x.dtype} while the model computes in "
                f"{w0.dtype} ({type(e).__name__}: {text[:160]}); convert the inputs with x.to({w0.dtype}) — integer "
                "inputs suit only models that embed token ids") from e
        raise ValueError(f"evaluating loss_fn(model(x), y) at w* failed ({type(e).__name__}: {text[:300]}); check that the "
                         "model takes the inputs of `data` and loss_fn takes (prediction, target)") from e
    if not isinstance(value, Tensor):
        raise TypeError(f"loss_fn must return a torch scalar tensor (the mean loss over the batch), got "
                        f"{type(value).__name__}; return a tensor built from the prediction (no .item() or float())")
    if value.numel() != 1:
        raise ValueError(f"loss_fn returned a tensor of shape {tuple(value.shape)}, not a scalar: it must return the MEAN "
                         "loss over the batch; reduce it with .mean() (or reduction='mean' for torch losses)")
    if not value.requires_grad:
        raise ValueError(
            "loss_fn's value does not depend on the parameters through autograd (it is detached: .detach(), "
            ".item(), torch.no_grad() or numpy inside loss_fn or the model), so SGLD has no gradient to follow; "
            "compute the loss with differentiable torch operations on the model's output")
    if m < 2:
        return
    # sum or mean? For a loss summed over the batch L(A ∪ B) = L(A) + L(B); for a mean, (L(A) + L(B))/2.
    # Probed at a point near w* where the loss is not zero (an interpolating w* has L = 0 on every batch).
    g = torch.Generator(device="cpu").manual_seed(0)
    wp = w0.detach() + 1e-2 * (w0.detach().abs() + 1e-2) * torch.randn(w0.shape, generator=g, dtype=w0.dtype).to(w0.device)
    with torch.no_grad():
        a, b, c = (float(loss_on(wp, x[s], y[s]).double()) for s in (slice(0, m), slice(m, 2 * m), slice(0, 2 * m)))
    scale = abs(c)
    if scale > 0 and math.isfinite(scale) and abs(c - (a + b)) <= 1e-4 * scale and abs(c - (a + b) / 2) > 1e-2 * scale:
        raise ValueError(
            "loss_fn sums over the batch instead of averaging (its value on 2m samples is the sum of its values on the "
            "two halves): the estimators need the MEAN loss L_n = (1/n)·Σ ℓ_i. A summed loss is n times the mean, so "
            "nβ·L is n times too steep — the chains diverge for any reasonable step size and λ̂ would be off by that "
            "factor; divide by the batch size (use .mean(), or reduction='mean' for torch losses)")


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


class _ChainLoop:
    """C chains of one sampler kernel (:mod:`slt_interp.estimators.samplers`) advanced together.

    The loop owns what is not pure: the per-chain generators (noise ``ξ`` and Metropolis uniforms),
    the per-chain batch orders, the traces (float64, on the host) and the divergence test. Each step
    draws the batch of step t for every chain, the noise, and calls ``kernel.step`` once.
    """

    def __init__(self, problem: _Problem, *, num_chains: int, step_size: float | Tensor, localization: float,
                 nbeta: float, batch_size: int, seed: int, mala_every: int, divergence_threshold: float,
                 noise_scale: float = 1.0, sampler: str = "sgld", stop_on_divergence: bool = True):
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

        def value_and_grad(W: Tensor, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
            # per-chain gradients as one vjp of the chain-vectorised loss (chains are independent, so the
            # cotangent of ones gives each chain its own gradient); cheaper than vmap(grad(.)) per call
            if self.streamed:
                return problem.chain_value_and_grad(W, batch)
            L, pullback = vjp(lambda w: batched(w, *batch), W)
            return L.detach(), pullback(torch.ones_like(L))[0]

        kernel_cls = SAMPLERS[sampler]
        self.kernel = kernel_cls(value_and_grad, w0, eps, nbeta, localization, problem.mask, noise_scale)
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

    # ---- traces -----------------------------------------------------------------------------
    def _stack(self, rows: list[Tensor]) -> Tensor:
        return torch.stack(rows, 1) if rows else torch.zeros(self.num_chains, 0, dtype=torch.float64)

    @property
    def losses(self) -> Tensor:
        return self._stack(self._losses)

    @property
    def dist2(self) -> Tensor:
        return self._stack(self._dist2)

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
            noise = torch.stack([torch.randn(self.d, generator=gc, device=self.dev, dtype=self.dtype) for gc in self.gens])
            uniform = torch.stack([torch.rand((), generator=gc, device=self.dev, dtype=self.dtype)
                                   for gc in self.gens]) if self.mala else None
            new, info = self.kernel.step(self.state, batch, noise, uniform, monitor)
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
            self._dist2.append(((self.w - w0) ** 2).sum(-1).double().cpu())
            if monitor:
                self._acc.append(info.acceptance.double().cpu())
                self._acc_steps.append(t)
            self.state = new
            self.w = new.w
            self.t = t + 1
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
