"""The Lanczos iteration with full reorthogonalisation, and extreme eigenpairs of a curvature operator.

Lanczos (1950): from a unit vector q₁, build an orthonormal basis Q_m of the Krylov space
span{q₁, Aq₁, …, A^{m−1}q₁} in which A is tridiagonal, T_m = Q_mᵀ A Q_m = tridiag(β, α, β). The
eigenvalues of T_m (Ritz values) approximate the extreme eigenvalues of A first; the residual of a Ritz
pair (θ, Q_m s) is |β_m·s_m|. Full reorthogonalisation (classical Gram–Schmidt, twice) keeps Q_m
orthonormal to working precision, so no spurious copies of converged eigenvalues appear
(Golub & Van Loan, Matrix Computations, 4th ed., §10.1). Several independent runs are advanced at once
as the columns of a block, so each step costs one block product with the operator.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .curvature import CurvatureOperator

__all__ = ["LanczosResult", "lanczos"]


class _LanczosRuns:
    """B independent Lanczos runs on the columns of ``start`` (d, B), extendable step by step.

    Keeps the basis Q (B, m+1, d) in the operator's dtype and α, β in float64.
    """

    def __init__(self, op: CurvatureOperator, start: Tensor):
        if start.dim() != 2 or start.shape[0] != op.dim:
            raise ValueError(f"start vectors must have shape ({op.dim}, B), got {tuple(start.shape)}")
        self.op = op
        d, B = start.shape
        q = start.to(device=op.device, dtype=op.dtype).T  # (B, d)
        self.Q = torch.empty(B, 16, d, dtype=op.dtype, device=op.device)  # (B, capacity, d)
        self.Q[:, 0] = q / q.norm(dim=1, keepdim=True)
        self.alpha = torch.zeros(0, B, dtype=torch.float64)
        self.beta = torch.zeros(0, B, dtype=torch.float64)
        self.alive = torch.ones(B, dtype=torch.bool, device=op.device)
        self.scale = 0.0  # running estimate of ‖A‖ for the breakdown test
        self.steps = 0

    def basis(self, num_steps: int | None = None) -> Tensor:
        """Q_m for every run, shape (B, m, d)."""
        return self.Q[:, : (self.steps if num_steps is None else num_steps)]

    def extend(self, num_steps: int) -> None:
        """Advance every run to ``num_steps`` steps (at most d).

        A run whose Krylov space became invariant stops with β = 0, which leaves its quadrature exact.
        """
        num_steps = min(int(num_steps), self.op.dim)
        eps = torch.finfo(self.op.dtype).eps
        tiny = torch.finfo(self.op.dtype).tiny
        while self.steps < num_steps:
            j = self.steps
            if j + 2 > self.Q.shape[1]:
                cap = min(max(2 * self.Q.shape[1], num_steps + 1), self.op.dim + 1)
                grown = torch.empty(self.Q.shape[0], cap, self.Q.shape[2], dtype=self.Q.dtype, device=self.Q.device)
                grown[:, : self.Q.shape[1]] = self.Q
                self.Q = grown
            q = self.Q[:, j]  # (B, d)
            w = (self.op @ q.T).T  # (B, d)
            a = (q * w).sum(1)
            w = w - a[:, None] * q
            if j > 0:
                w = w - self.beta[j - 1].to(w.device, w.dtype)[:, None] * self.Q[:, j - 1]
            basis = self.Q[:, : j + 1]  # (B, j+1, d)
            for _ in range(2):  # classical Gram–Schmidt twice: orthogonal to working precision
                w = w - torch.bmm(basis.transpose(1, 2), torch.bmm(basis, w[:, :, None]))[:, :, 0]
            b = w.norm(dim=1)
            self.scale = max(self.scale, float(a.abs().max()), float(b.max()))
            self.alive &= b > (self.op.dim ** 0.5) * 10 * eps * max(self.scale, tiny)
            b = torch.where(self.alive, b, torch.zeros_like(b))
            safe = torch.where(self.alive, b, torch.ones_like(b))
            self.Q[:, j + 1] = torch.where(self.alive[:, None], w / safe[:, None], torch.zeros_like(w))
            self.alpha = torch.cat([self.alpha, a.detach().double().cpu()[None]])
            self.beta = torch.cat([self.beta, b.detach().double().cpu()[None]])
            self.steps += 1

    def tridiagonal(self, num_steps: int | None = None) -> Tensor:
        """T_m for every run, shape (B, m, m), float64 (m = ``num_steps`` ≤ steps taken)."""
        m = self.steps if num_steps is None else int(num_steps)
        alpha, beta = self.alpha[:m].T, self.beta[: m - 1].T
        T = torch.diag_embed(alpha)
        if m > 1:
            T = T + torch.diag_embed(beta, offset=1) + torch.diag_embed(beta, offset=-1)
        return T


@dataclass(frozen=True)
class LanczosResult:
    """Extreme eigenpairs of a symmetric operator from one Lanczos run.

    Attributes:
        eigenvalues: the requested Ritz values, ascending (float64, CPU).
        eigenvectors: the Ritz vectors as columns, shape (d, k), on the operator's device and dtype.
        residual_norms: ‖A·y − θ·y‖ = |β_m·s_m| for each pair (float64, CPU).
        which: "largest" or "smallest".
        num_steps: Lanczos steps taken.
        num_matvecs: operator products used.
        converged: whether every residual is ≤ tol·max|θ|.
        tol: the relative residual tolerance.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor = field(repr=False)
    residual_norms: Tensor
    which: str
    num_steps: int
    num_matvecs: int
    converged: bool
    tol: float


def lanczos(
    op: CurvatureOperator,
    num_eigenvalues: int = 1,
    *,
    which: str = "largest",
    tol: float = 1e-8,
    max_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> LanczosResult:
    """The ``num_eigenvalues`` largest (or smallest) eigenpairs of a symmetric operator by Lanczos.

    Starts from a Gaussian vector drawn with ``generator``, takes max(2k + 10, 20) steps and keeps
    extending (×1.5) until every requested Ritz pair has residual |β_m·s_m| ≤ tol·max|θ| or ``max_steps``
    (default min(d, 500)) is reached. Lanczos 1950; Golub & Van Loan, Matrix Computations, §10.1.

    Args:
        op: a :class:`CurvatureOperator`.
        num_eigenvalues: k ≥ 1.
        which: "largest" or "smallest" (algebraic).
        tol: relative residual tolerance.
        max_steps: cap on the Krylov dimension.
        generator: seeds the start vector (``None``: a fresh generator with seed 0).

    Returns:
        :class:`LanczosResult`; ``converged`` is False when the cap was reached first.

    Raises:
        ValueError: bad ``which`` or ``num_eigenvalues``.

    Example:
        >>> from slt_interp.estimators import HessianOperator
        >>> op = HessianOperator(lambda w: (torch.arange(1., 6, dtype=w.dtype) * w ** 2).sum() / 2,
        ...                      torch.zeros(5, dtype=torch.float64))
        >>> round(float(lanczos(op).eigenvalues[0]), 8)
        5.0
    """
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}")
    if not 1 <= int(num_eigenvalues) <= op.dim:
        raise ValueError(f"num_eigenvalues must be between 1 and d = {op.dim}, got {num_eigenvalues}")
    k = int(num_eigenvalues)
    max_steps = min(op.dim, 500) if max_steps is None else min(int(max_steps), op.dim)
    if generator is None:
        generator = torch.Generator(device=op.device).manual_seed(0)
    start = torch.randn(op.dim, 1, generator=generator, dtype=torch.float64, device=generator.device)
    before = op.num_matvecs
    runs = _LanczosRuns(op, start)
    m = min(max(2 * k + 10, 20), max_steps)
    while True:
        runs.extend(m)
        m_taken = runs.alpha.shape[0]
        theta, S = torch.linalg.eigh(runs.tridiagonal()[0])
        idx = torch.arange(m_taken - 1, m_taken - 1 - min(k, m_taken), -1) if which == "largest" else torch.arange(min(k, m_taken))
        beta_m = runs.beta[m_taken - 1, 0]
        residual = (beta_m * S[-1, idx]).abs()
        scale = max(float(theta.abs().max()), torch.finfo(torch.float64).tiny)
        converged = bool((residual <= tol * scale).all()) and len(idx) == k
        if converged or m_taken >= max_steps or not bool(runs.alive[0]):
            break
        m = min(int(1.5 * m_taken) + 1, max_steps)
    order = torch.argsort(theta[idx])
    idx = idx[order]
    Qm = runs.basis(m_taken)[0]  # (m, d)
    vectors = Qm.T @ S[:, idx].to(Qm.device, Qm.dtype)
    return LanczosResult(
        eigenvalues=theta[idx].clone(),
        eigenvectors=vectors,
        residual_norms=residual[order].clone(),
        which=which,
        num_steps=m_taken,
        num_matvecs=op.num_matvecs - before,
        converged=converged or not bool(runs.alive[0]),
        tol=tol,
    )
