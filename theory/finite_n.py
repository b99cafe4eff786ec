"""The finite-n target of the SGLD LLC estimator, by quadrature, for 1- and 2-parameter potentials.

The SGLD estimator (Lau, Furman, Wang, Murfet, Wei 2023, arXiv 2308.12108) does not estimate λ at a
finite n: it estimates

    T(n, γ) = E_p[nβ·K(w)],   p(w) ∝ exp(−nβ·K(w) − (γ/2)·‖w − w*‖²),   β = 1/log n,

(docs/theory.md §1; w* = 0 for the zoo potentials). T → λ as n → ∞ at fixed γ, and large γ drags T towards
0. For a potential of one or two variables T is a ratio of two integrals that a fine tensor grid
computes to many digits: this is the exact oracle the sampler tests compare against.

The grid is uniform in t and mapped by w = R·sinh(a·t)/sinh(a), which puts most points near the
singular locus at 0 (where the posterior mass of a singular K concentrates) while still reaching the
Gaussian tail of the localization at radius R = 10/√γ (or the K-confined region when that is wider).
The reported error is the change between the grid and a grid of half the resolution.

Example (docs/theory.md §1, K = ½w1²w2⁴, λ = 1/4):
    >>> from slt_interp.theory import finite_n_target, zoo
    >>> t = finite_n_target(zoo.normal_crossing_potential([1, 2]), 10_000, localization=1.0)
    >>> round(t.value, 3)
    0.221
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import sympy as sp
import torch
from torch import Tensor

from .zoo import Potential

__all__ = ["FiniteNTarget", "finite_n_target"]

PotentialLike = Union[Potential, sp.Expr, Callable[[Tensor], Tensor]]


@dataclass(frozen=True)
class FiniteNTarget:
    """E_p[nβK] for the localized tempered posterior p ∝ exp(−nβK − γ‖w‖²/2).

    Attributes:
        value: the target E_p[nβK].
        error: the absolute change of ``value`` on a grid of half the resolution (a quadrature error estimate).
        num_samples: n.
        nbeta: nβ used (n / log n unless given).
        localization: γ.
        dim: number of variables (1 or 2).
        grid_points: points per axis of the finer grid.
        radius: half-width R of the grid.
    """

    value: float
    error: float
    num_samples: float
    nbeta: float
    localization: float
    dim: int
    grid_points: int
    radius: float

    def __float__(self) -> float:
        return self.value


def _as_torch_fn(K: PotentialLike) -> tuple[Callable[[Tensor], Tensor], int | None]:
    """A function of ``w`` with shape (..., d) and the dimension d when known."""
    if isinstance(K, Potential):
        return K.fn, K.dim
    if isinstance(K, sp.Expr):
        syms = sorted(K.free_symbols, key=lambda s: s.name)
        if not syms:
            raise ValueError("the sympy expression K has no free symbols; pass K(w1, w2) with 1 or 2 variables")
        f = sp.lambdify(syms, K, modules="numpy")

        def fn(w: Tensor) -> Tensor:
            out = f(*[w[..., i].numpy() for i in range(len(syms))])
            return torch.as_tensor(out, dtype=w.dtype) + torch.zeros(w.shape[:-1], dtype=w.dtype)

        return fn, len(syms)
    if callable(K):
        return K, None
    raise TypeError(
        f"K must be a slt_interp.theory.zoo.Potential, a sympy expression or a torch function of w (..., d); "
        f"got {type(K).__name__}"
    )


def _grid(points: int, radius: float, stretch: float, dtype) -> tuple[Tensor, Tensor]:
    """Nodes w and trapezoid weights dw of the sinh-mapped grid on [−R, R]."""
    t = torch.linspace(-1.0, 1.0, points, dtype=dtype)
    w = radius * torch.sinh(stretch * t) / math.sinh(stretch)
    dwdt = radius * stretch * torch.cosh(stretch * t) / math.sinh(stretch)
    h = 2.0 / (points - 1)
    weights = dwdt * h
    weights[0] *= 0.5
    weights[-1] *= 0.5
    return w, weights


def _expectation(fn, dim: int, nbeta: float, localization: float, points: int, radius: float, stretch: float) -> float:
    dtype = torch.float64
    w, dw = _grid(points, radius, stretch, dtype)
    if dim == 1:
        W = w[:, None]
        logwt = torch.log(dw)
    else:
        W = torch.stack(torch.meshgrid(w, w, indexing="ij"), dim=-1)
        logwt = torch.log(dw)[:, None] + torch.log(dw)[None, :]
    K = fn(W).to(dtype)
    if K.shape != W.shape[:-1]:
        raise ValueError(f"K must map w of shape (..., {dim}) to shape (...); got {tuple(K.shape)} for {tuple(W.shape)}")
    if not torch.isfinite(K).all() or (K < -1e-12).any():
        raise ValueError("K must be finite and ≥ 0 on the grid (a potential with its minimum K(0) = 0)")
    logp = -nbeta * K - 0.5 * localization * (W ** 2).sum(-1) + logwt
    logp = logp - logp.max()
    p = torch.exp(logp)
    return float((p * nbeta * K).sum() / p.sum())


def finite_n_target(
    K: PotentialLike,
    num_samples: float,
    localization: float = 1.0,
    *,
    nbeta: float | None = None,
    dim: int | None = None,
    grid_points: int = 801,
    radius: float | None = None,
) -> FiniteNTarget:
    """E_p[nβ·K] with p(w) ∝ exp(−nβ·K(w) − (γ/2)‖w‖²), by quadrature (docs/theory.md §1).

    This is what the SGLD estimator λ̂ = nβ·(E_w[L_n(w)] − L_n(w*)) converges to for the population
    loss K at finite n (Lau et al. 2023, arXiv 2308.12108); β = 1/log n, so nβ = n/log n by default,
    the same convention as :func:`slt_interp.estimators.estimate_llc`.

    Args:
        K: a :class:`slt_interp.theory.zoo.Potential`, a sympy expression in 1 or 2 symbols (sorted by name), or
            a torch function of ``w`` of shape (..., d) returning K of shape (...). K(0) = 0, K ≥ 0.
        num_samples: n (> 1).
        localization: γ ≥ 0. With γ = 0 the posterior must be normalisable by K alone.
        nbeta: override nβ (default n / log n).
        dim: number of variables, needed only for a plain torch function (default 2 then).
        grid_points: points per axis (odd; ≥ 201).
        radius: half-width of the grid (default 10/√γ, at least 3).

    Returns:
        :class:`FiniteNTarget` with the value and a quadrature error estimate.

    Raises:
        ValueError: n ≤ 1, γ < 0, dim not in {1, 2}, too few grid points, or K negative / not finite.
    """
    if not num_samples > 1:
        raise ValueError(f"num_samples must be > 1 (β = 1/log n), got {num_samples}")
    if localization < 0:
        raise ValueError(f"localization γ must be ≥ 0, got {localization}")
    if grid_points < 201:
        raise ValueError(f"grid_points must be ≥ 201 for a meaningful quadrature, got {grid_points}")
    fn, known_dim = _as_torch_fn(K)
    d = dim if dim is not None else (known_dim if known_dim is not None else 2)
    if known_dim is not None and dim is not None and dim != known_dim:
        raise ValueError(f"dim={dim} contradicts K, which has {known_dim} variables")
    if d not in (1, 2):
        raise ValueError(f"finite_n_target integrates on a grid in 1 or 2 variables; K has {d}")
    nb = float(nbeta) if nbeta is not None else num_samples / math.log(num_samples)
    if radius is None:
        radius = max(3.0, 10.0 / math.sqrt(localization)) if localization > 0 else 10.0
    points = grid_points | 1  # odd, so that 0 is a node
    half = (points // 2) | 1
    stretch = 8.0  # smallest spacing ≈ R·a/sinh(a)·h: resolves the singular locus at large nβ
    fine = _expectation(fn, d, nb, localization, points, radius, stretch)
    coarse = _expectation(fn, d, nb, localization, half, radius, stretch)
    return FiniteNTarget(fine, abs(fine - coarse), float(num_samples), nb, float(localization), d, points, float(radius))
