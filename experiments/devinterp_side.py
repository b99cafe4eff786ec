"""Run devinterp's own SGLD chain loop on a (model, loss_fn, x, y) problem, for side-by-side checks.

devinterp 2.x (``devinterp.slt.sampler.sample_single_chain`` with its default sampler
``SGMCMC.sgld``) is written for language-model data sets of ``input_ids``; this adapter packs
``(x, y)`` into one ``input_ids`` tensor per sample and unpacks it in the ``evaluate`` callback, so
devinterp's real loop (DataLoader, optimizer step, callbacks) runs unchanged. Chains run one after
another, in one process, as in ``devinterp.slt.sampling.sample`` (which loops
``for chain_idx in range(num_chains)``). Each chain gets its own seed and batch order (seed + chain),
and the baseline is the full-data loss at w* — the fair setting the issue asks for, not devinterp's
default (init loss on a few batches, burn-in averaged in).
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor


MISSING = ("devinterp is not installed: the side-by-side studies and benchmarks compare against it. "
           "Install the experiments extra: pip install -e \".[experiments]\" (the library itself does not need it).")


def devinterp_available() -> bool:
    """Whether the peer library devinterp can be imported."""
    import importlib.util

    return importlib.util.find_spec("devinterp") is not None


def require_devinterp() -> None:
    """Raise an ImportError that names the missing extra when devinterp is absent."""
    if not devinterp_available():
        raise ImportError(MISSING)


@dataclass(frozen=True)
class DevinterpResult:
    mean: float
    std_err: float  # spread of chain means / √C (devinterp reports the spread only)
    per_chain: tuple[float, ...]
    loss_traces: Tensor  # (C, num_draws) float64
    baseline: float


class _Packed(torch.utils.data.Dataset):
    def __init__(self, x: Tensor, y: Tensor):
        self.z = torch.cat([x.reshape(len(x), -1), y.reshape(len(y), -1)], dim=1)

    def __len__(self):
        return len(self.z)

    def __getitem__(self, i):
        return {"input_ids": self.z[i]}


def devinterp_llc(model, loss_fn, x: Tensor, y: Tensor, *, num_chains: int, num_draws: int, num_burnin: int,
                  step_size: float, localization: float, nbeta: float | None = None, batch_size: int, seed: int = 0,
                  progress: bool = False) -> DevinterpResult:
    """devinterp's SGLD loop on the same problem; λ̂ = nβ·(mean draw loss − full-data L(w*))."""
    require_devinterp()
    import devinterp.slt.sampler as dsampler
    from devinterp.slt.config import SAMPLING_METHODS
    from devinterp.slt.sampler import sample_single_chain

    n = len(x)
    nb = nbeta if nbeta is not None else n / math.log(n)
    dx = x[0].numel()
    xs, ys = x.shape[1:], y.shape[1:]

    def evaluate(m, data):
        z = data["input_ids"]
        xb = z[:, :dx].reshape(len(z), *xs)
        yb = z[:, dx:].reshape(len(z), *ys)
        return loss_fn(m(xb), yb), {}

    with torch.no_grad():
        baseline = float(loss_fn(model(x), y).double())
    traces = torch.zeros(num_chains, num_draws, dtype=torch.float64)

    def on_draw(*, loss, draw, chain, **_):
        traces[chain, draw] = float(loss)

    ds = _Packed(x, y)
    masks = {name: None for name, _ in model.named_parameters()}
    old = dsampler.trange
    if not progress:  # devinterp opens one progress bar per chain; silence it for the duration
        dsampler.trange = functools.partial(old, disable=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for c in range(num_chains):
                sample_single_chain(
                    ref_model=model, dataset=ds, evaluate=evaluate, param_masks=masks, num_draws=num_draws,
                    num_burnin_steps=num_burnin, sampling_method=SAMPLING_METHODS["sgmcmc_sgld"],
                    sampling_method_kwargs=dict(lr=step_size, nbeta=nb, localization=localization),
                    chain=c, seed=seed + c, dataloader_seed=seed + c, device=str(x.device), callbacks=[on_draw],
                    batch_size=batch_size,
                )
    finally:
        dsampler.trange = old
    per_chain = nb * (traces.mean(1) - baseline)
    se = float(per_chain.std() / math.sqrt(num_chains)) if num_chains > 1 else float("nan")
    return DevinterpResult(float(per_chain.mean()), se, tuple(float(v) for v in per_chain), traces, baseline)
