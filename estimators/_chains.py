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

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.utils.data import DataLoader, Dataset

from .sgld import localized_potential, mala_acceptance, sgld_step

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
    parts = [chosen.get(n, torch.zeros(s, dtype=torch.bool)).reshape(-1) for n, s in zip(flat_names, shapes)]
    mask = torch.cat(parts)
    if not mask.any():
        raise ValueError("params selects no coordinate to sample; name at least one parameter (or a non-empty mask)")
    return mask


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
    x, y = (t.to(dev) if not t.is_floating_point() else t.to(device=dev, dtype=dtype) for t in tensors)
    mask = _selection_mask(model, params, names, shapes)
    if mask is not None:
        mask = mask.to(device=dev, dtype=dtype)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 samples (nβ = n/log n), got {n}")

    def unflatten(w: Tensor) -> dict[str, Tensor]:
        return {k: v.reshape(s) for k, v, s in zip(names, torch.split(w, sizes), shapes)}

    def loss_on(w: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        return loss_fn(functional_call(model, (unflatten(w), buffers), (xb,)), yb)

    def full_loss(w: Tensor) -> Tensor:
        return loss_on(w, x, y)

    return _Problem(loss_on, full_loss, w0, mask, n, True, (x, y), names, description)


def potential_problem(fn: Callable[[Tensor], Tensor], dim: int, num_samples: int, *, dtype=torch.float64, device=None) -> _Problem:
    """The sampling problem L(w) = K(w) for a potential with its minimum K(0) = 0 (population loss)."""
    w0 = torch.zeros(dim, dtype=dtype, device=device)

    return _Problem(fn, fn, w0, None, int(num_samples), False, (), ("w",), "potential", vectorised=True)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
def _chain_seeds(seed: int, num_chains: int) -> list[tuple[int, int]]:
    """Per chain (noise seed, batch seed), spawned from one seed."""
    children = np.random.SeedSequence(int(seed)).spawn(num_chains)
    return [tuple(int(v) for v in c.generate_state(2, dtype=np.uint32)) for c in children]


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


def _fingerprint(problem: _Problem, cfg: Mapping[str, Any]) -> dict:
    keys = ("num_chains", "num_burnin", "step_size", "localization", "nbeta", "batch_size", "seed", "mala_every")
    fp = {k: cfg[k] for k in keys}
    fp["step_size"] = [float(v) for v in torch.as_tensor(cfg["step_size"]).reshape(-1)]
    fp["dim"] = int(problem.w0.numel())
    fp["w0_sum"] = float(problem.w0.double().sum())
    fp["num_samples"] = problem.num_samples
    return fp


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
    checkpoint_every: int = 0,
    resume: bool = False,
    on_divergence: Callable[[_Run, int, tuple[int, ...], str], None] | None = None,
    stop_on_divergence: bool = True,
    sampler: str = "sgld",
) -> _Run:
    """Run ``num_chains`` SGLD (or MALA) chains for ``num_burnin + num_draws`` steps from w*, all vectorised.

    With ``sampler="mala"`` every step is accepted or rejected and the acceptance probability is
    recorded at every step (``mala_every`` is ignored); the batch is always the full data set.
    """
    if sampler not in ("sgld", "mala"):
        raise ValueError(f"sampler must be 'sgld' or 'mala', got {sampler!r}")
    mala = sampler == "mala"
    if mala:
        batch_size, mala_every = problem.num_samples, 1
    w0, mask = problem.w0, problem.mask
    dev, dtype = w0.device, w0.dtype
    d = w0.numel()
    total = num_burnin + num_draws
    cfg = dict(num_chains=num_chains, num_burnin=num_burnin, step_size=step_size, localization=localization,
               nbeta=nbeta, batch_size=batch_size, seed=seed, mala_every=mala_every)
    seeds = _chain_seeds(seed, num_chains)
    gens = [torch.Generator(device=dev).manual_seed(s[0]) for s in seeds]
    full_batch = (not problem.has_data) or batch_size >= problem.num_samples
    batches = None if full_batch else _Batches([s[1] for s in seeds], problem.num_samples, batch_size, dev)
    eps = torch.as_tensor(step_size, dtype=dtype, device=dev)
    eps_c = eps if eps.dim() == 0 else eps.reshape(-1, 1)

    nd = len(problem.data)
    batched_loss = problem.batch_loss if problem.vectorised else vmap(problem.batch_loss, in_dims=(0,) + (None if full_batch else 0,) * nd)

    def vg(W: Tensor, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        # per-chain gradients as one vjp of the chain-vectorised loss (chains are independent, so the
        # cotangent of ones gives each chain its own gradient); cheaper than vmap(grad(.)) per call
        L, pullback = vjp(lambda w: batched_loss(w, *batch), W)
        return pullback(torch.ones_like(L))[0], L.detach()

    with torch.no_grad():
        baseline = float(problem.full_loss(w0).double())
    if not math.isfinite(baseline):
        raise ValueError("the loss at w* is NaN or inf: check the model, the data and loss_fn")

    losses = torch.full((num_chains, total), float("nan"), dtype=torch.float64)
    dist2 = torch.full((num_chains, total), float("nan"), dtype=torch.float64)
    monitored = list(range(0, total, mala_every)) if mala_every > 0 else []
    acceptance = torch.full((num_chains, len(monitored)), float("nan"), dtype=torch.float64)
    W = w0.expand(num_chains, d).clone()
    start = 0

    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    fp = _fingerprint(problem, cfg)
    if mala:
        fp["sampler"] = sampler
    if ckpt is not None and resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state["fingerprint"] != fp:
            diff = {k for k in fp if state["fingerprint"].get(k) != fp[k]}
            raise ValueError(
                f"checkpoint {ckpt} was written with different settings ({sorted(diff)}); resume with the "
                "same settings (only num_draws may grow) or delete the file to start afresh"
            )
        start = int(state["steps_done"])
        if start > total:
            raise ValueError(f"checkpoint {ckpt} already holds {start} steps, more than num_burnin + num_draws = {total}")
        losses[:, :start] = state["losses"][:, :start]
        dist2[:, :start] = state["dist2"][:, :start]
        k_done = sum(1 for s in monitored if s < start)
        acceptance[:, :k_done] = state["acceptance"][:, :k_done]
        W = state["w"].to(device=dev, dtype=dtype)
        for g, s in zip(gens, state["generators"]):
            g.set_state(s)

    def save(steps_done: int) -> None:
        if ckpt is None:
            return
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        torch.save(dict(fingerprint=fp, steps_done=steps_done, losses=losses[:, :steps_done].clone(),
                        dist2=dist2[:, :steps_done].clone(), acceptance=acceptance.clone(), w=W.detach().cpu(),
                        generators=[g.get_state() for g in gens]), tmp)
        os.replace(tmp, ckpt)

    def partial(steps_done: int, bad: tuple[int, ...]) -> _Run:
        k = sum(1 for s in monitored if s < steps_done)
        return _Run(losses[:, :steps_done], dist2[:, :steps_done], acceptance[:, :k],
                    torch.tensor(monitored[:k]), baseline, W.clone(), steps_done,
                    tuple(c in bad for c in range(num_chains)))

    k = sum(1 for s in monitored if s < start)
    mask_b = mask if mask is not None else None
    dead = torch.zeros(num_chains, dtype=torch.bool)
    carried = None  # MALA: (∇L, L) at the current W from the previous step's accept/reject
    for t in range(start, total):
        if full_batch:
            idx = problem.data
        else:
            rows = batches(t)  # (C, B) sample indices, gathered outside vmap
            idx = tuple(d_[rows] for d_ in problem.data)
        if carried is not None:
            g, L = carried
        else:
            g, L = vg(W, idx)
            if mask_b is not None:
                g = g * mask_b
        losses[:, t] = L.detach().double().cpu()
        dist2[:, t] = ((W - w0) ** 2).sum(-1).double().cpu()
        excursion = nbeta * (losses[:, t] - baseline)
        bad = ~torch.isfinite(losses[:, t]) | (excursion > divergence_threshold) | ~torch.isfinite(g).all(-1).cpu()
        if not stop_on_divergence:
            # pilots: a divergent chain is parked at w* and its later losses are recorded as NaN
            dead |= bad
            losses[dead, t] = float("nan")
            park = dead.to(dev)[:, None]
            W = torch.where(park, w0.expand_as(W), W)
            g = torch.where(park, torch.zeros_like(g), g).nan_to_num()
            L = torch.where(park[:, 0], torch.zeros_like(L), L)
            bad = torch.zeros_like(bad)
        if bool(bad.any()):
            chains = tuple(int(c) for c in torch.nonzero(bad).reshape(-1))
            reason = "NaN/inf loss" if not torch.isfinite(losses[chains[0], t]) else (
                f"runaway loss nβ·(L − L*) = {float(excursion[chains[0]]):.3g} > {divergence_threshold:.3g}")
            save(t)
            if on_divergence is None:
                raise SGLDDivergenceError(f"chain(s) {list(chains)} diverged at step {t}: {reason}", step=t, chains=chains)
            on_divergence(partial(t, chains), t, chains, reason)
            raise AssertionError("on_divergence must raise")  # pragma: no cover
        noise = torch.stack([torch.randn(d, generator=gc, device=dev, dtype=dtype) for gc in gens])
        if noise_scale != 1.0:
            noise = noise * noise_scale
        W_new = sgld_step(W, g, w_star=w0, step_size=eps, nbeta=nbeta, localization=localization, noise=noise, mask=mask_b)
        if mala or (k < len(monitored) and monitored[k] == t):
            g2, L2 = vg(W_new, idx)
            if mask_b is not None:
                g2 = g2 * mask_b
            U = localized_potential(L, W, w0, nbeta, localization)
            U2 = localized_potential(L2, W_new, w0, nbeta, localization)
            gU = nbeta * g + localization * (W - w0)
            gU2 = nbeta * g2 + localization * (W_new - w0)
            alpha = mala_acceptance(W, W_new, U, gU, U2, gU2, eps, mask_b)
            acceptance[:, k] = alpha.double().cpu()
            k += 1
            if mala:
                # accept with probability α (non-finite proposals have α = 0: rejected, W stays finite)
                u = torch.stack([torch.rand((), generator=gc, device=dev, dtype=dtype) for gc in gens])
                accept = u < alpha
                W_new = torch.where(accept[:, None], W_new, W)
                carried = (torch.where(accept[:, None], g2, g).detach(), torch.where(accept, L2, L).detach())
        W = W_new.detach()
        done = t + 1
        if ckpt is not None and checkpoint_every > 0 and done > num_burnin and (done - num_burnin) % checkpoint_every == 0:
            save(done)
    if ckpt is not None:
        save(total)
    return _Run(losses, dist2, acceptance, torch.tensor(monitored, dtype=torch.long), baseline, W, total,
                tuple(bool(x) for x in dead))
