"""Stochastic Lanczos quadrature (SLQ): spectral sums and eigenvalue counts of a large operator.

tr f(A) = E_z[zᵀ f(A) z] for Rademacher probes z (Hutchinson 1989). For each probe, m Lanczos steps from
q₁ = z/‖z‖ give T_m = S·diag(θ)·Sᵀ and the Gauss quadrature zᵀ f(A) z ≈ d·Σ_j τ_j·f(θ_j), τ_j = S_{1j}²
(Golub & Meurant 2010; Ubaru, Chen & Saad 2017, SIAM J. Matrix Anal. Appl. 38(4), "Fast estimation of
tr(f(A)) via stochastic Lanczos quadrature"). With f = 1[λ > τ] this counts the eigenvalues above a
threshold — the numerical rank (Ubaru & Saad, ICML 2016, "Fast methods for estimating the numerical rank
of large matrices").

Accuracy near zero is decided by the number of Lanczos steps, not the number of probes (docs/theory.md §3):
:func:`count_eigenvalues` doubles the steps until the count stops moving, then reports the mean over
probes with its standard error and a Student-t confidence interval. At m = d steps (or when the Krylov
space of a probe becomes invariant, e.g. for a low-rank operator) the quadrature is exact and only the
probe variance remains.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .curvature import CurvatureOperator
from .lanczos import _LanczosRuns

__all__ = ["SpectralQuadrature", "EigenvalueCount", "stochastic_lanczos_quadrature", "count_eigenvalues"]


@dataclass(frozen=True)
class EigenvalueCount:
    """An estimate of #{i: λ_i > threshold} (or < threshold) with its standard error.

    Attributes:
        count: the mean over probes of the quadrature estimates.
        std_err: standard error of that mean (sample std over probes / √P).
        ci: (low, high) Student-t confidence interval at ``confidence``, clipped to [0, d].
        threshold: the threshold τ.
        above: True for #{λ > τ}, False for #{λ < τ}.
        confidence: level of ``ci``.
        dim: d.
        num_probes, num_steps: SLQ settings.
        num_matvecs: operator products used by the quadrature.
        converged: whether the step count stopped moving before ``max_steps`` (True for fixed steps).
        steps_history: ((m, count on the first probe block), ...) while the steps were grown.
        quadrature: the :class:`SpectralQuadrature` behind the count; other thresholds and spectral sums
            can be read from it at no extra cost.
        bracket: (low, high), the mean over probes of the Chebyshev–Markov–Stieltjes bounds
            (:meth:`SpectralQuadrature.count_bracket`): where the count of these probes can lie given only m
            Lanczos steps. Its width is the quadrature's resolution error at the threshold, which
            ``std_err`` (the probe-to-probe spread) does not contain.
    """

    count: float
    std_err: float
    ci: tuple[float, float]
    threshold: float
    above: bool
    confidence: float
    dim: int
    num_probes: int
    num_steps: int
    num_matvecs: int
    converged: bool = True
    steps_history: tuple[tuple[int, float], ...] = ()
    quadrature: "SpectralQuadrature | None" = field(default=None, repr=False, compare=False)
    bracket: tuple[float, float] | None = None

    def __repr__(self) -> str:
        rel = ">" if self.above else "<"
        br = "" if self.bracket is None else f", quadrature bracket [{self.bracket[0]:.1f}, {self.bracket[1]:.1f}]"
        return (
            f"EigenvalueCount(#{{λ {rel} {self.threshold:.3g}}} = {self.count:.1f} ± {self.std_err:.1f}, "
            f"{100 * self.confidence:.0f}% CI [{self.ci[0]:.1f}, {self.ci[1]:.1f}]{br}, {self.num_probes} probes × "
            f"{self.num_steps} steps)"
        )


@dataclass(frozen=True)
class SpectralQuadrature:
    """Per-probe Gauss quadrature rules for the spectral measure of a symmetric operator.

    zᵀ f(A) z ≈ d·Σ_j weights[p, j]·f(nodes[p, j]); averaging over probes p estimates tr f(A).

    Attributes:
        nodes: Ritz values, shape (P, m), float64.
        weights: squared first components of the Ritz vectors, shape (P, m); each row sums to 1.
        dim: d.
        num_steps: m.
        num_matvecs: operator products used.
        converged: see :class:`EigenvalueCount`.
        steps_history: see :class:`EigenvalueCount`.
    """

    nodes: Tensor = field(repr=False)
    weights: Tensor = field(repr=False)
    dim: int
    num_steps: int
    num_matvecs: int
    converged: bool = True
    steps_history: tuple[tuple[int, float], ...] = ()

    @property
    def num_probes(self) -> int:
        """P, the number of probe vectors."""
        return int(self.nodes.shape[0])

    def samples(self, f: Callable[[Tensor], Tensor]) -> Tensor:
        """The per-probe estimates d·Σ_j τ_pj·f(θ_pj) of tr f(A).

        Args:
            f: an elementwise function of the eigenvalues (tensor → tensor).

        Returns:
            The P estimates, shape (P,), float64.
        """
        return self.dim * (self.weights * f(self.nodes)).sum(-1)

    def trace(self, f: Callable[[Tensor], Tensor]) -> tuple[float, float]:
        """The mean over probes of the estimates of tr f(A), with its standard error.

        Args:
            f: an elementwise function of the eigenvalues (tensor → tensor).

        Returns:
            ``(estimate, std_err)``; the standard error is inf for a single probe.
        """
        s = self.samples(f)
        se = float(s.std(unbiased=True)) / math.sqrt(len(s)) if len(s) > 1 else float("inf")
        return float(s.mean()), se

    def count_bracket(self, threshold: float, *, above: bool = True) -> tuple[float, float]:
        """Bounds on the probes' count #{λ > τ} (or #{λ < τ}) that hold whatever the m Lanczos steps missed.

        For one probe, let μ be its spectral measure (zᵀ1[A ≤ x]z / d = μ(−∞, x]) and x₁ < … < x_m the
        Gauss nodes with weights w_j, S_k = Σ_{j≤k} w_j. The Chebyshev–Markov–Stieltjes inequalities
        (Szegő 1975, *Orthogonal Polynomials*, Thm 3.41.1; Golub & Meurant 2010, §6.3) give
        S_{k−1} ≤ μ(−∞, x_k) ≤ μ(−∞, x_k] ≤ S_k, so with x_j ≤ τ < x_{j+1}:
        S_{j−1} ≤ μ(−∞, τ] ≤ S_{j+1}: the count is uncertain by the weights of the two nodes next to τ.
        The bounds are exact-arithmetic statements (the Lanczos runs are fully reorthogonalised) and
        conservative: a Ritz value that has converged to an eigenvalue next to τ still counts as uncertain
        (at m = d the count is exact and returned as both bounds). The mean over probes of each bound is
        returned; the probe variance (``std_err``) comes on top.

        Args:
            threshold: τ.
            above: bracket #{λ > τ} (True) or #{λ < τ} (False).

        Returns:
            ``(low, high)`` with low ≤ the quadrature count ≤ high, in eigenvalues.
        """
        if self.num_steps >= self.dim:  # m = d: the quadrature is exact
            value = float(self.samples(lambda x: (x > threshold if above else x < threshold).double()).mean())
            return value, value
        nodes, order = torch.sort(self.nodes, dim=-1)
        w = torch.gather(self.weights, -1, order)
        m = w.shape[-1]
        partial = torch.cat([torch.zeros_like(w[:, :1]), torch.cumsum(w, -1)], -1)  # S_0 … S_m
        partial[:, -1] = 1.0  # each probe's measure has mass 1 (the weights sum to 1 up to rounding)
        j = (nodes <= threshold).sum(-1) if above else (nodes < threshold).sum(-1)
        low_cdf = torch.gather(partial, -1, (j - 1).clamp(min=0)[:, None])[:, 0]
        high_cdf = torch.gather(partial, -1, (j + 1).clamp(max=m)[:, None])[:, 0]
        if above:
            return float(self.dim * (1 - high_cdf).mean()), float(self.dim * (1 - low_cdf).mean())
        return float(self.dim * low_cdf.mean()), float(self.dim * high_cdf.mean())

    def count(self, threshold: float, *, above: bool = True, confidence: float = 0.95) -> EigenvalueCount:
        """#{λ > threshold} (``above``) or #{λ < threshold}, with a Student-t confidence interval.

        Args:
            threshold: the threshold τ.
            above: count the eigenvalues above τ (True) or below it (False).
            confidence: the level of the confidence interval, in (0, 1).

        Returns:
            The :class:`EigenvalueCount`, its interval clipped to [0, d].

        Raises:
            ValueError: ``confidence`` outside (0, 1).
        """
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        if above:
            value, se = self.trace(lambda x: (x > threshold).double())
        else:
            value, se = self.trace(lambda x: (x < threshold).double())
        if self.num_probes > 1:
            from scipy.stats import t as student_t

            half = float(student_t.ppf((1 + confidence) / 2, self.num_probes - 1)) * se
        else:
            half = float("inf")
        ci = (max(0.0, value - half), min(float(self.dim), value + half))
        return EigenvalueCount(
            value, se, ci, float(threshold), above, confidence, self.dim, self.num_probes, self.num_steps,
            self.num_matvecs, self.converged, self.steps_history, self, self.count_bracket(threshold, above=above),
        )


def _rademacher(dim: int, num: int, generator: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (dim, num), generator=generator, device=generator.device).double() * 2 - 1


def _quadrature(runs: _LanczosRuns, num_steps: int) -> tuple[Tensor, Tensor]:
    theta, S = torch.linalg.eigh(runs.tridiagonal(num_steps))  # (B, m), (B, m, m)
    return theta, S[:, 0, :] ** 2


def _ambiguous_mass(runs: _LanczosRuns, num_steps: int, threshold: float) -> Tensor:
    """Per run: d·Σ_j τ_j over Ritz values θ_j with |θ_j − threshold| ≤ r_j = |β_m·s_mj|.

    Each interval [θ_j − r_j, θ_j + r_j] contains an eigenvalue of A (Kahan–Parlett), so the weight of the
    nodes whose interval straddles the threshold is the part of the count the quadrature cannot yet place.

    Returns:
        The ambiguous mass per run, shape (B,).
    """
    theta, S = torch.linalg.eigh(runs.tridiagonal(num_steps))
    beta_m = runs.beta[num_steps - 1].abs()  # (B,)
    residual = beta_m[:, None] * S[:, -1, :].abs()
    straddle = (theta - threshold).abs() <= residual
    return runs.op.dim * (S[:, 0, :] ** 2 * straddle.double()).sum(-1)


def _check(op: CurvatureOperator, num_probes: int, block_size: int) -> None:
    if not isinstance(op, CurvatureOperator):
        raise TypeError(f"op must be a CurvatureOperator (e.g. HessianOperator), got {type(op).__name__}")
    if int(num_probes) < 2:
        raise ValueError(f"num_probes must be ≥ 2 to estimate a standard error, got {num_probes}")
    if int(block_size) < 1:
        raise ValueError(f"block_size must be ≥ 1, got {block_size}")


def stochastic_lanczos_quadrature(
    op: CurvatureOperator,
    *,
    num_probes: int = 16,
    num_steps: int = 60,
    block_size: int = 8,
    generator: torch.Generator | None = None,
) -> SpectralQuadrature:
    """SLQ with a fixed number of Lanczos steps (Ubaru, Chen & Saad 2017).

    Args:
        op: a symmetric :class:`CurvatureOperator`.
        num_probes: Rademacher probes P ≥ 2.
        num_steps: Lanczos steps m per probe (capped at d).
        block_size: probes advanced together (memory: (m + 1)·d·block_size numbers).
        generator: seeds the probes (``None``: a CPU generator with seed 0).

    Returns:
        :class:`SpectralQuadrature`.
    """
    _check(op, num_probes, block_size)
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    before = op.num_matvecs
    m = min(int(num_steps), op.dim)
    nodes, weights = [], []
    for start in range(0, int(num_probes), int(block_size)):
        runs = _LanczosRuns(op, _rademacher(op.dim, min(block_size, num_probes - start), generator))
        runs.extend(m)
        theta, tau = _quadrature(runs, m)
        nodes.append(theta)
        weights.append(tau)
    return SpectralQuadrature(torch.cat(nodes), torch.cat(weights), op.dim, m, op.num_matvecs - before)


def count_eigenvalues(
    op: CurvatureOperator,
    threshold: float,
    *,
    num_probes: int = 32,
    num_steps: int | None = None,
    min_steps: int = 20,
    max_steps: int | None = None,
    confidence: float = 0.95,
    block_size: int = 8,
    generator: torch.Generator | None = None,
) -> EigenvalueCount:
    """Estimate #{λ > threshold} of a symmetric operator by SLQ, growing the Lanczos steps until stable.

    With ``num_steps=None`` the first block of probes is run for m = ``min_steps`` steps and extended
    (m → 2m) until the count moves by at most tol = max(0.5, ½·SE) between consecutive m (SE: the standard
    error expected from all probes) and the Ritz values whose residual interval |θ − τ| ≤ |β_m·s_m| straddles
    the threshold carry at most tol eigenvalues, or m reaches ``max_steps`` (default min(d, 640); a RuntimeWarning says
    the count did not settle). The remaining probes then run for the chosen m. Ubaru & Saad 2016;
    Ubaru, Chen & Saad 2017.

    Args:
        op: a symmetric :class:`CurvatureOperator`.
        threshold: τ; eigenvalues > τ are counted.
        num_probes: Rademacher probes P ≥ 2.
        num_steps: fixed number of steps (skip the growth).
        min_steps: the first number of steps of the growth.
        max_steps: the last (default min(d, 640)).
        confidence: level of the confidence interval.
        block_size: probes advanced together.
        generator: seeds the probes (``None``: a CPU generator with seed 0).

    Returns:
        :class:`EigenvalueCount` (its ``.quadrature`` gives other thresholds at no extra cost).

    Raises:
        TypeError: not an operator.
        ValueError: fewer than 2 probes, bad settings.

    Example:
        >>> from slt_interp.estimators import HessianOperator
        >>> op = HessianOperator(lambda w: (torch.linspace(0, 1, 50, dtype=w.dtype) * w ** 2).sum() / 2,
        ...                      torch.zeros(50, dtype=torch.float64))
        >>> count = count_eigenvalues(op, 0.5, generator=torch.Generator().manual_seed(0))
        >>> round(count.count)  # a diagonal operator: Rademacher probes have zero variance
        25
    """
    _check(op, num_probes, block_size)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    num_probes, block_size = int(num_probes), int(block_size)
    if num_steps is not None:
        quad = stochastic_lanczos_quadrature(op, num_probes=num_probes, num_steps=num_steps, block_size=block_size, generator=generator)
        return quad.count(threshold, confidence=confidence)

    before = op.num_matvecs
    max_steps = min(op.dim, 640) if max_steps is None else min(int(max_steps), op.dim)
    m = min(int(min_steps), max_steps)
    first = min(block_size, num_probes)
    runs = _LanczosRuns(op, _rademacher(op.dim, first, generator))
    history: list[tuple[int, float]] = []
    previous = None
    converged = False
    ambiguous = float("nan")
    while True:
        runs.extend(m)
        theta, tau = _quadrature(runs, m)
        samples = op.dim * (tau * (theta > threshold).double()).sum(-1)
        current = float(samples.mean())
        history.append((m, current))
        ambiguous = float(_ambiguous_mass(runs, m, threshold).mean())
        exact = m >= op.dim or not bool(runs.alive.any())
        se_final = float(samples.std(unbiased=True)) / math.sqrt(num_probes) if first > 1 else 0.0
        tol = max(0.5, 0.5 * se_final)
        if previous is not None and abs(current - previous) <= tol and ambiguous <= tol:
            converged = True
        if converged or exact:
            converged = True
            break
        if m >= max_steps:
            warnings.warn(
                f"the eigenvalue count above {threshold:.3g} had not settled at {m} Lanczos steps (max_steps): it moved "
                f"from {previous:.1f} to {current:.1f} and Ritz values within their residual of the threshold carry "
                f"{ambiguous:.1f} eigenvalues; raise max_steps or the threshold",
                RuntimeWarning,
                stacklevel=2,
            )
            break
        previous = current
        m = min(2 * m, max_steps)
    nodes, weights = [theta], [tau]
    for start in range(first, num_probes, block_size):
        more = _LanczosRuns(op, _rademacher(op.dim, min(block_size, num_probes - start), generator))
        more.extend(m)
        t, w = _quadrature(more, m)
        nodes.append(t)
        weights.append(w)
    quad = SpectralQuadrature(
        torch.cat(nodes), torch.cat(weights), op.dim, m, op.num_matvecs - before, converged, tuple(history)
    )
    return quad.count(threshold, confidence=confidence)
