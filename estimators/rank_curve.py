"""The finite-data view of Hessian-rank bounds: rank and bounds as a function of the threshold τ or of n.

docs/theory.md §3: on a quadratic basin with Hessian eigenvalues h_i, the localized SGLD target at sample size
n, inverse temperature β and localization γ is ½·Σ_i nβh_i/(nβh_i + γ) = ½·Σ_i h_i/(h_i + τ) with
τ = γ/(nβ) — half the effective dimension at scale τ (MacKay 1992; Maddox, Benton & Wilson 2020,
arXiv 2003.02139). An eigenvalue counts as "quadratic" only when h ≫ τ. Trained networks often show no
spectral gap, so the useful output is the curve

    rank(τ) = #{h_i > τ},   lower(τ) = rank(τ)/2,   upper = d/2,   soft_rank(τ) = Σ_i max(h_i, 0)/(max(h_i, 0) + τ),

over τ, or over n through τ(n) = γ/(nβ), β = 1/log n (the default of Lau et al. 2023, arXiv 2308.12108).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from .slq import EigenvalueCount, SpectralQuadrature
from .spectrum import Spectrum

__all__ = ["RankCurve", "rank_curve", "rank_curve_vs_n", "threshold_for_sample_size"]


@dataclass(frozen=True)
class RankCurve:
    """Numerical rank and LLC bounds over a range of thresholds.

    Attributes:
        thresholds: τ values, shape (T,), ascending, float64.
        ranks: #{λ > τ} (exact for a dense spectrum, SLQ mean otherwise), shape (T,).
        std_err: standard errors of ``ranks`` (zeros for a dense spectrum).
        soft_ranks: Σ_i h_i⁺/(h_i⁺ + τ), the effective dimension; ½·soft_rank is the SGLD target on the
            quadratic approximation.
        dim: d; the upper bound is d/2 at every τ.
        method: "dense" or "slq".
        num_samples: n for each τ when built with :func:`rank_curve_vs_n`, else None.
        localization, nbeta: the settings behind τ(n) (None for a plain τ grid).
        bracket: for SLQ, ``(low, high)`` rank counts per τ, shape (T,) each: the sharp quadrature
            bracket (:meth:`SpectralQuadrature.count_bracket`), where the probes' rank can lie given
            only the Lanczos steps taken. Its width is the resolution error the SE does not contain.
            None for a dense spectrum (exact).
    """

    thresholds: Tensor
    ranks: Tensor
    std_err: Tensor
    soft_ranks: Tensor
    dim: int
    method: str
    num_samples: Tensor | None = field(default=None)
    localization: float | None = None
    nbeta: Tensor | None = field(default=None, repr=False)
    bracket: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    @property
    def lower(self) -> Tensor:
        """rank(τ)/2, the Hessian-order lower bound at each threshold."""
        return self.ranks / 2

    @property
    def lower_bracket(self) -> tuple[Tensor, Tensor] | None:
        """(low, high)/2: the range of the lower bound rank(τ)/2 over the quadrature bracket (None: dense)."""
        return None if self.bracket is None else (self.bracket[0] / 2, self.bracket[1] / 2)

    @property
    def upper(self) -> float:
        """d/2 (independent of τ)."""
        return self.dim / 2

    @property
    def quadratic_llc(self) -> Tensor:
        """The localized SGLD target ½·soft_rank(τ) if the loss were exactly quadratic at w*."""
        return self.soft_ranks / 2


def _eigen_source(spectrum) -> tuple[str, Tensor | SpectralQuadrature, int]:
    if isinstance(spectrum, Spectrum):
        return "dense", spectrum.eigenvalues.double().cpu(), spectrum.dim
    if isinstance(spectrum, EigenvalueCount):
        if spectrum.quadrature is None:
            raise ValueError("this EigenvalueCount carries no quadrature; pass the SpectralQuadrature instead")
        spectrum = spectrum.quadrature
    if isinstance(spectrum, SpectralQuadrature):
        return "slq", spectrum, spectrum.dim
    if hasattr(spectrum, "eigenvalues") and hasattr(spectrum, "dim") and not isinstance(spectrum, Tensor):
        ev = spectrum.eigenvalues  # an LLCBounds from the dense method
        if ev is None:
            raise ValueError(
                "these LLCBounds carry no eigenvalues (matrix-free method): pass the EigenvalueCount or "
                "SpectralQuadrature from slt_interp.estimators.count_eigenvalues instead"
            )
        return "dense", ev.double().cpu(), int(spectrum.dim)
    if isinstance(spectrum, Tensor):
        if spectrum.dim() != 1:
            raise ValueError(f"eigenvalues must be a 1-d tensor, got shape {tuple(spectrum.shape)}")
        return "dense", spectrum.detach().double().cpu(), spectrum.numel()
    raise TypeError(
        "spectrum must be eigenvalues (Tensor), a Spectrum, LLCBounds with eigenvalues, an EigenvalueCount or "
        f"a SpectralQuadrature; got {type(spectrum).__name__}"
    )


def _curve(spectrum, taus: Tensor) -> dict:
    """The fields of a :class:`RankCurve` at the thresholds ``taus``."""
    method, src, dim = _eigen_source(spectrum)
    if method == "dense":
        h = src
        ranks = (h[None, :] > taus[:, None]).sum(-1).double()
        hp = h.clamp_min(0)
        soft = (hp[None, :] / (hp[None, :] + taus[:, None])).sum(-1)
        return dict(method=method, dim=dim, ranks=ranks, std_err=torch.zeros_like(ranks), soft_ranks=soft)
    ranks, ses, softs, lows, highs = [], [], [], [], []
    for t in taus.tolist():
        r, se = src.trace(lambda x, t=t: (x > t).double())
        s, _ = src.trace(lambda x, t=t: x.clamp_min(0) / (x.clamp_min(0) + t))
        low, high = src.count_bracket(t)
        ranks.append(r)
        ses.append(se)
        softs.append(s)
        lows.append(low)
        highs.append(high)
    f64 = dict(dtype=torch.float64)
    return dict(method=method, dim=dim, ranks=torch.tensor(ranks, **f64), std_err=torch.tensor(ses, **f64),
                soft_ranks=torch.tensor(softs, **f64), bracket=(torch.tensor(lows, **f64), torch.tensor(highs, **f64)))


def rank_curve(spectrum, thresholds: Sequence[float] | Tensor | None = None, *, num: int = 60) -> RankCurve:
    """Rank(τ), bounds and effective dimension over a grid of thresholds.

    Args:
        spectrum: eigenvalues (1-d Tensor), a :class:`Spectrum`, dense :class:`LLCBounds`, or an
            :class:`EigenvalueCount` / :class:`SpectralQuadrature` (counts read from the same quadrature).
        thresholds: τ values (> 0); default ``num`` log-spaced values from 1e-12·max|λ| to max|λ|.
        num: grid size for the default.

    Returns:
        :class:`RankCurve`.

    Raises:
        TypeError: unsupported spectrum.
        ValueError: non-positive or non-finite thresholds.

    Example:
        >>> c = rank_curve(torch.tensor([0.0, 1e-6, 1.0, 2.0], dtype=torch.float64), [1e-8, 1e-3])
        >>> c.ranks.tolist(), c.upper
        ([3.0, 2.0], 2.0)
    """
    method, src, dim = _eigen_source(spectrum)
    if thresholds is None:
        top = float(src.abs().max()) if method == "dense" else float(src.nodes.abs().max())
        top = top if top > 0 else 1.0
        taus = torch.logspace(math.log10(top) - 12, math.log10(top), int(num), dtype=torch.float64)
    else:
        taus = torch.as_tensor(thresholds, dtype=torch.float64).reshape(-1)
        if not bool((taus > 0).all()) or not bool(torch.isfinite(taus).all()):
            raise ValueError("thresholds must be finite and > 0 (τ = 0 counts round-off as rank)")
        taus = taus.sort().values
    return RankCurve(thresholds=taus, **_curve(spectrum, taus))


def threshold_for_sample_size(n, *, localization: float = 1.0, nbeta=None) -> Tensor:
    """τ(n) = γ/(nβ) with β = 1/log n by default: eigenvalues below τ(n) are effectively flat at n.

    Args:
        n: sample size(s), > 1.
        localization: localization strength γ > 0.
        nbeta: nβ explicitly (same shape as n); overrides β = 1/log n.

    Returns:
        τ as a float64 tensor shaped like ``n``.

    Raises:
        ValueError: n ≤ 1, γ ≤ 0 or nβ ≤ 0.

    Example:
        >>> float(threshold_for_sample_size(10_000)) == math.log(10_000) / 10_000
        True
    """
    n_t = torch.as_tensor(n, dtype=torch.float64)
    if not bool((n_t > 1).all()):
        raise ValueError(f"sample sizes must be > 1 (β = 1/log n), got {n}")
    if not localization > 0:
        raise ValueError(f"localization must be > 0, got {localization}")
    nb = n_t / torch.log(n_t) if nbeta is None else torch.as_tensor(nbeta, dtype=torch.float64)
    if not bool((nb > 0).all()):
        raise ValueError(f"nbeta must be > 0, got {nbeta}")
    return localization / nb


def rank_curve_vs_n(spectrum, num_samples, *, localization: float = 1.0, nbeta=None) -> RankCurve:
    """:func:`rank_curve` at τ(n) = γ/(nβ) for each n in ``num_samples`` (ascending n ⇒ descending τ).

    The curve's ``quadratic_llc`` is then the SGLD target ½·Σ nβh/(nβh + γ) of the quadratic
    approximation at each n (docs/theory.md §3).

    Args:
        spectrum: as for :func:`rank_curve`.
        num_samples: the sample sizes n (> 1).
        localization: γ > 0.
        nbeta: nβ per n (default n/log n).

    Returns:
        :class:`RankCurve` with ``num_samples``, ``localization`` and ``nbeta`` set.
    """
    n_t = torch.as_tensor(num_samples, dtype=torch.float64).reshape(-1)
    order = torch.argsort(n_t)
    n_t = n_t[order]
    nb = n_t / torch.log(n_t) if nbeta is None else torch.as_tensor(nbeta, dtype=torch.float64).reshape(-1)[order]
    taus = threshold_for_sample_size(n_t, localization=localization, nbeta=nb)
    return RankCurve(thresholds=taus, **_curve(spectrum, taus), num_samples=n_t, localization=float(localization),
                     nbeta=nb)
