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
from functools import cached_property
from typing import Callable

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
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
        bracket: (low, high), the mean over probes of the sharp moment bounds
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
        alpha, beta: the Lanczos coefficients, shapes (P, m) and (P, m − 1) (None: rebuilt from the rule
            when :meth:`count_bracket` needs them).
        exact: per probe, whether its Krylov space became invariant (its quadrature is exact).
    """

    nodes: Tensor = field(repr=False)
    weights: Tensor = field(repr=False)
    dim: int
    num_steps: int
    num_matvecs: int
    converged: bool = True
    steps_history: tuple[tuple[int, float], ...] = ()
    alpha: Tensor | None = field(default=None, repr=False, compare=False)
    beta: Tensor | None = field(default=None, repr=False, compare=False)
    exact: Tensor | None = field(default=None, repr=False, compare=False)

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

    @cached_property
    def _jacobi(self) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Per probe, the Jacobi matrix (α, β) of the Gauss rule (None: the rule is exact)."""
        out = []
        for p in range(self.num_probes):
            if self.num_steps >= self.dim or (self.exact is not None and bool(self.exact[p])):
                out.append(None)
            elif self.alpha is not None:
                out.append((self.alpha[p].numpy(), self.beta[p].numpy()))
            else:
                out.append(_jacobi_from_rule(self.nodes[p].numpy(), self.weights[p].numpy()))
        return out

    def count_bracket(self, threshold: float, *, above: bool = True) -> tuple[float, float]:
        """Sharp bounds on the probes' count #{λ > τ} (or #{λ < τ}) given the m Lanczos steps taken.

        For one probe, let μ be its spectral measure (zᵀ1[A ≤ x]z / d = μ(−∞, x]). The m Lanczos steps fix
        its moments up to degree 2m − 1. Among all measures with the moments up to 2m − 2, μ(−∞, τ) and
        μ(−∞, τ] range exactly over [L, L + ρ], where the m-point Gauss–Radau rule with a node at τ puts
        mass L below τ and ρ at τ (ρ(τ) = 1/Σ_{k<m} p_k(τ)², the Christoffel function). This is the
        Chebyshev–Markov–Stieltjes inequality (Szegő 1975, *Orthogonal Polynomials*, Thm 3.41.1, at the
        Gauss nodes), extended to any τ by the canonical representation with a node at τ (Krein &
        Nudelman 1977, *The Markov Moment Problem*); the Radau rule is sharp because it is itself such a
        measure (Golub & Meurant 2010, *Matrices, Moments and Quadrature*). So the count above τ lies in d·[1 − L − ρ, 1 − L]. The width d·ρ(τ) is the
        quadrature's resolution error at τ, which the probe spread (``std_err``) does not contain. The
        bounds hold in exact arithmetic (the Lanczos runs are fully reorthogonalised); a probe whose Krylov
        space became invariant, or m = d, is exact and contributes its count to both ends. The mean over
        probes of each bound is returned; the probe variance comes on top.

        Args:
            threshold: τ.
            above: bracket #{λ > τ} (True) or #{λ < τ} (False).

        Returns:
            ``(low, high)`` with low ≤ the quadrature count ≤ high, in eigenvalues.
        """
        tau = float(threshold)
        point = self.samples(lambda x: ((x > tau) if above else (x < tau)).double())
        lows, highs = [], []
        for p, jac in enumerate(self._jacobi):
            if jac is None:
                lows.append(float(point[p]))
                highs.append(float(point[p]))
                continue
            below, at = _radau_split(*jac, tau)  # μ(−∞, τ) ≥ below, μ(−∞, τ] ≤ below + at
            if above:
                lows.append(self.dim * max(0.0, 1 - below - at))
                highs.append(self.dim * min(1.0, 1 - below))
            else:
                lows.append(self.dim * max(0.0, below))
                highs.append(self.dim * min(1.0, below + at))
        low, high = float(np.mean(lows)), float(np.mean(highs))
        mean = float(point.mean())  # the Gauss rule's count lies inside up to rounding
        return min(low, mean), max(high, mean)

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


def _coefficients(runs: _LanczosRuns, num_steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """(α (B, m), β (B, m − 1), exact (B,)) of the runs' first m steps."""
    return (runs.alpha[:num_steps].T.contiguous(), runs.beta[: num_steps - 1].T.contiguous(),
            ~runs.alive.cpu() | (num_steps >= runs.op.dim))


def _stack(coeffs) -> dict:
    return {"alpha": torch.cat([c[0] for c in coeffs]), "beta": torch.cat([c[1] for c in coeffs]),
            "exact": torch.cat([c[2] for c in coeffs])}


def _quadrature(runs: _LanczosRuns, num_steps: int) -> tuple[Tensor, Tensor]:
    theta, S = torch.linalg.eigh(runs.tridiagonal(num_steps))  # (B, m), (B, m, m)
    return theta, S[:, 0, :] ** 2


def _jacobi_from_rule(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Jacobi matrix whose Gauss rule is (x, w): Lanczos on diag(x) from √w, reorthogonalised.

    Stops early (a shorter matrix) where the rule has fewer nodes of non-negligible weight.

    Returns:
        ``(α, β)``: the diagonal (length k ≤ m) and the off-diagonal (length k − 1).
    """
    m = len(x)
    Q = np.zeros((m, m))
    q = np.sqrt(np.clip(w, 0, None))
    Q[:, 0] = q / np.linalg.norm(q)
    alpha, beta = [], []
    scale = max(float(np.abs(x).max()), np.finfo(float).tiny)
    for k in range(m):
        v = x * Q[:, k]
        alpha.append(float(Q[:, k] @ v))
        for _ in range(2):
            v -= Q[:, : k + 1] @ (Q[:, : k + 1].T @ v)
        b = float(np.linalg.norm(v))
        if k + 1 == m or b <= 1e-13 * scale:
            break
        beta.append(b)
        Q[:, k + 1] = v / b
    return np.array(alpha), np.array(beta)


def _radau_split(alpha: np.ndarray, beta: np.ndarray, tau: float) -> tuple[float, float]:
    """Masses of the Gauss–Radau rule with a node at τ, from the first m − 1 steps of a Jacobi matrix.

    The rule has m nodes and is exact for polynomials of degree ≤ 2m − 2 (m = len(α)).

    Returns:
        ``(mass below τ, mass at τ)``.
    """
    m = len(alpha)
    if m == 1:
        return 0.0, 1.0  # only the total mass is known
    a0, b0, last = alpha[: m - 1], beta[: m - 2], float(beta[m - 2])
    phi, U = eigh_tridiagonal(a0, b0) if m > 2 else (a0.copy(), np.ones((1, 1)))
    gap = phi - tau
    scale = max(float(np.abs(phi).max()), abs(tau), np.finfo(float).tiny)
    gap = np.where(np.abs(gap) < 1e-14 * scale, 1e-14 * scale, gap)  # τ on a node of T_{m−1}: nudge
    a_last = tau + last ** 2 * float((U[-1] ** 2 / gap).sum())
    theta, V = eigh_tridiagonal(np.append(a0, a_last), np.append(b0, last))
    w = V[0] ** 2
    k = int(np.argmin(np.abs(theta - tau)))
    return float(w[:k].sum()), float(w[k])


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
    nodes, weights, coeffs = [], [], []
    for start in range(0, int(num_probes), int(block_size)):
        runs = _LanczosRuns(op, _rademacher(op.dim, min(block_size, num_probes - start), generator))
        runs.extend(m)
        theta, tau = _quadrature(runs, m)
        nodes.append(theta)
        weights.append(tau)
        coeffs.append(_coefficients(runs, m))
    return SpectralQuadrature(torch.cat(nodes), torch.cat(weights), op.dim, m, op.num_matvecs - before,
                              **_stack(coeffs))


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
    nodes, weights, coeffs = [theta], [tau], [_coefficients(runs, m)]
    for start in range(first, num_probes, block_size):
        more = _LanczosRuns(op, _rademacher(op.dim, min(block_size, num_probes - start), generator))
        more.extend(m)
        t, w = _quadrature(more, m)
        nodes.append(t)
        weights.append(w)
        coeffs.append(_coefficients(more, m))
    quad = SpectralQuadrature(
        torch.cat(nodes), torch.cat(weights), op.dim, m, op.num_matvecs - before, converged, tuple(history),
        **_stack(coeffs),
    )
    return quad.count(threshold, confidence=confidence)
