"""SAE variants for the issue-15 studies: any encoder non-linearity, penalty and reconstruction loss.

The model is :mod:`experiments.sae`'s (f = σ(W_enc·(x − b_dec) + b_enc), x̂ = W_dec·f + b_dec, unit decoder
columns, Adam), with three hooks: ``encode(pre, coeff)`` (ReLU, or a prox acting on signed codes),
``penalty(f, params)`` → (batch,), and ``reconstruction(x, x̂)`` → (batch,) (‖x − x̂‖², or a downstream
error for end-to-end SAEs). Extra trainable tensors (e.g. group logits) ride along in ``extra``.
:func:`bisect_coeff` tunes the penalty coefficient to a target of any monotone metric (L0, FVU).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from experiments.sae import _threads, bisect_coeff  # noqa: F401 (bisect_coeff re-exported for the studies)


@dataclass(frozen=True)
class VariantResult:
    """A trained SAE variant and its metrics on the training activations."""

    params: dict = field(repr=False)
    l0: float
    fvu: float
    dead_fraction: float
    coeff: float
    seed: int
    encode: Callable = field(repr=False, default=None)

    def codes(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.encode(_pre(self.params, x), self.coeff)

    def decode(self, f: Tensor) -> Tensor:
        return f @ self.params["W_dec"].T + self.params["b_dec"]

    @property
    def decoder(self) -> Tensor:
        return self.params["W_dec"]


def _pre(p, x):
    return (x - p["b_dec"]) @ p["W_enc"].T + p["b_enc"]


def relu_encode(pre: Tensor, coeff: float) -> Tensor:
    return torch.relu(pre)


def mse(x: Tensor, xhat: Tensor) -> Tensor:
    return (x - xhat).pow(2).sum(-1)


def train_variant(x: Tensor, n_latents: int, *, penalty: Callable, coeff: float, encode: Callable = relu_encode,
                  reconstruction: Callable = mse, steps: int = 500, batch_size: int = 256, lr: float = 3e-3,
                  seed: int = 0, extra: dict | None = None, extra_lr: float | None = None,
                  hook: Callable | None = None, hook_every: int = 50, threads: int | None = 1) -> VariantResult:
    """Train one SAE variant with Adam; ``penalty(f, params)`` sees the extra tensors in ``params``.

    ``hook(params)`` runs every ``hook_every`` steps under no_grad (e.g. to recompute an oracle grouping).
    FVU is measured with ``reconstruction`` against its value for the mean prediction.
    """
    with _threads(threads):
        n, d = x.shape
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(d, n_latents, generator=gen, dtype=x.dtype)
        w = w / w.norm(dim=0, keepdim=True)
        params = {"W_enc": w.T.clone().requires_grad_(True),
                  "b_enc": torch.zeros(n_latents, dtype=x.dtype, requires_grad=True),
                  "W_dec": w.clone().requires_grad_(True),
                  "b_dec": x.mean(0).detach().clone().requires_grad_(True)}
        groups = [{"params": list(params.values()), "lr": lr}]
        extra = {k: v.detach().clone().requires_grad_(True) for k, v in (extra or {}).items()}
        if extra:
            groups.append({"params": list(extra.values()), "lr": extra_lr or lr})
        params.update(extra)
        opt = torch.optim.Adam(groups)
        bs = min(batch_size, n)
        for step in range(steps):
            xb = x[torch.randint(n, (bs,), generator=gen)]
            f = encode(_pre(params, xb), coeff)
            xhat = f @ params["W_dec"].T + params["b_dec"]
            loss = reconstruction(xb, xhat).mean() + coeff * penalty(f, params).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                params["W_dec"] /= params["W_dec"].norm(dim=0, keepdim=True).clamp_min(1e-12)
                if hook is not None and (step + 1) % hook_every == 0:
                    hook(params)
        final = {k: v.detach() for k, v in params.items()}
        with torch.no_grad():
            f = encode(_pre(final, x), coeff)
            xhat = f @ final["W_dec"].T + final["b_dec"]
            err = float(reconstruction(x, xhat).mean())
            base = float(reconstruction(x, x.mean(0).expand_as(x)).mean())
            active = f != 0
            l0 = float(active.sum(-1).float().mean())
            dead = float((active.sum(0) == 0).float().mean())
    return VariantResult(final, l0, err / base, dead, float(coeff), seed, encode)


def mean_std_err(values) -> tuple[float, float]:
    """Mean and standard error of the mean (NaN std_err for one value)."""
    v = [float(x) for x in values]
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, math.nan
    var = sum((x - m) ** 2 for x in v) / (len(v) - 1)
    return m, math.sqrt(var / len(v))


def fmt(values, digits: int = 3) -> str:
    """'mean ± std_err' of a list of per-seed values."""
    m, s = mean_std_err(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"
