"""Order-4 analysis of the loss on the Hessian null space: the Schur-corrected quartic g₄.

docs/theory.md §3. Write K(w* + δ) = ½δᵀHδ + (1/6)T₃[δ³] + (1/24)T₄[δ⁴] + …, r = rank H, k = d − r. For
v ∈ null(H), eliminating the range directions u (minimise over u the terms ½uᵀHu + ½uᵀb(v)) leaves

    g₄(v) = (1/24)·T₄[v, v, v, v] − (1/8)·b(v)ᵀH⁺b(v),   b(v) = P_range T₃[·, v, v],

the order-4 part of g in the splitting lemma K ~ |u|² + g(v) (Watanabe 2009, *Algebraic Geometry and
Statistical Learning Theory*, §7; Arnold, Gusein-Zade & Varchenko 1985, vol. 1, §11). T₄ alone is
wrong: for (w1 − w2²)² it would give w2⁴, while g₄ ≡ 0 there (substitute u = w1 − w2²: λ = 1/2).
With 1/ord ≤ lct ≤ dim/ord (Lin 2011, arXiv 1103.2407; Saito 2007):

* g₄ positive definite on null(H): λ = r/2 + k/4 exactly, m = 1;
* g₄ ≢ 0: r/2 + 1/4 ≤ λ ≤ r/2 + k/4;
* g₄ ≡ 0: the order is ≥ 6, so r/2 ≤ λ ≤ r/2 + k/6.

The upper bound r/2 + k/4 holds at every local minimum (the cubic vanishes on the null space there),
compare Bushnaq's LessWrong post on Hessian-rank LLC bounds (August 2024; not peer reviewed).

What is certified and what is observed (see :class:`QuarticAnalysis`). A certificate must not depend
on the units of w: under w ↦ c·w every order-4 quantity (T₄[v⁴]/24, b(v)ᵀH⁺b(v)/8, g₄) scales by c⁴,
so every test compares g₄ only with those terms, never with λ_max(H) (which scales by c²).

* Small null spaces (at most ``max_monomials`` quartic monomials): g₄(Nx) is a quartic form in
  x ∈ R^k; its coefficients are recovered by least squares from evaluations at random points (exact up
  to rounding, the fit residual is reported). "Positive definite" is certified by a sum-of-squares
  Gram matrix (q = m(x)ᵀQm(x) with ‖m(x)‖² = ‖x‖⁴, so g₄ ≥ λ_min(Q) − rounding on the sphere;
  Parrilo 2003) or, failing that, by interval branch-and-bound on the faces of the cube
  (q(x) − atol·‖x‖⁴ > 0 on every face); "not positive definite" and "not zero" are certified by
  witness directions whose |g₄| exceeds the margin atol.
* Large null spaces: g₄ is minimised on the unit sphere of the null space with seeded restarts (exact
  line search in 2-planes). A witness with |g₄| > atol certifies g₄ ≢ 0; positive definiteness is only
  observed, and the returned bounds do not rely on it.
* "Zero" (g₄ ≡ 0) is never certified: floating-point evaluations cannot prove that a quartic vanishes,
  and a tolerance test is not a proof (1e-7·b⁴ next to a² is not zero). It is reported in ``observed``
  with the order-6 bound r/2 + k/6 it would imply; the certified bounds stay r/2 ≤ λ ≤ r/2 + k/4.

The margin: atol = rtol·s with s = max(max |T₄[v⁴]|/24, max b(v)ᵀH⁺b(v)/8) over the unit null
directions evaluated — g₄ is the difference of these two terms, so its rounding error is a small
multiple of ε·s, far below rtol = 1e-6 (float64) or 1e-2 (lower precision). The null space itself
is numerical (eigenvalues ≤ the rank threshold τ count as zero): an eigenvalue h ≤ τ that is not
exactly zero still dominates g₄ at distances |v| ≲ (h/g₄)^{1/2}, so the order-4 statements describe
the loss at scales above that.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.func import grad, vmap

from .flat import FlatProblem
from .llc_bounds_result import LLCBounds
from .taylor import TaylorMode

__all__ = ["QuarticAnalysis", "analyze_quartic", "sharpen_bounds"]

CLASSES = ("positive definite", "degenerate", "zero", "indefinite")


@dataclass(frozen=True)
class QuarticAnalysis:
    """The Schur-corrected quartic g₄ on the unit sphere of the Hessian null space.

    Attributes:
        classification: "positive definite", "degenerate" (≢ 0, not positive definite), "zero", or
            "indefinite" (g₄ or the cubic takes negative values: w* is not a minimum at this order).
        proven: True when the classification is proven by a scale-free test with a margin (a witness
            direction, or a sum-of-squares / interval certificate on the fitted quartic), False when it
            rests on sampling, numerical minimisation or a tolerance. "zero" is never proven (module
            docstring).
        rank, nullity: r and k.
        minimum: the smallest g₄ found on the unit sphere (observed).
        maximum_abs: the largest |g₄| found on the unit sphere (observed).
        proven_lower: a proven lower bound on g₄ over the unit sphere (sum of squares or
            branch-and-bound), or None.
        atol, rtol, scale: the tolerance atol = rtol·scale, with scale the largest order-4 term met
            (see the module docstring).
        cubic_max: the largest |T₃[v, v, v]| found on unit null directions (≈ 0 at a minimum).
        fit_residual: max |g₄ − fitted quartic| over the evaluations (coefficient method), else None.
        method: "coefficients" (small k) or "sphere search" (large k).
        num_evaluations: how many g₄ evaluations were made.
        restarts: number of sphere-search restarts.
        minimizer: a unit null vector (in R^d) where ``minimum`` was found.
        exponents, coefficients: the monomials x^α and their coefficients in the null basis
            (coefficient method only).
        certified: statements that are proven.
        observed: statements that rest on sampling or on a tolerance.
    """

    classification: str
    proven: bool
    rank: int
    nullity: int
    minimum: float
    maximum_abs: float
    proven_lower: float | None
    atol: float
    rtol: float
    scale: float
    cubic_max: float
    fit_residual: float | None
    method: str
    num_evaluations: int
    restarts: int
    minimizer: Tensor | None = field(default=None, repr=False, compare=False)
    exponents: tuple[tuple[int, ...], ...] | None = field(default=None, repr=False)
    coefficients: Tensor | None = field(default=None, repr=False, compare=False)
    certified: tuple[str, ...] = ()
    observed: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# g₄ on the null space
# --------------------------------------------------------------------------------------------
class _NullQuartic:
    """Evaluates g₄(M z) for coordinates z (batched); M maps coordinates into null(H)."""

    def __init__(self, tm: TaylorMode, null_map: Callable[[Tensor], Tensor], U: Tensor, lam: Tensor):
        self.tm, self.null_map, self.U, self.lam = tm, null_map, U, lam
        self.count = 0

    def _single(self, z: Tensor):
        v = self.null_map(z)
        t3, _, t4 = self.tm.quartic_terms(v)
        b = self.U.T @ t3  # coordinates of P_range T₃[·, v, v] in the eigenbasis of the range
        corr = (b ** 2 / self.lam).sum()
        cubic = t3 @ v  # T₃[v, v, v]
        return t4 / 24 - corr / 8, t4 / 24, corr / 8, cubic, t3.norm()

    def parts(self, Z: Tensor):
        self.count += Z.shape[0]
        return vmap(self._single)(Z)

    def values(self, Z: Tensor) -> Tensor:
        return self.parts(Z)[0]

    def grads(self, Z: Tensor) -> Tensor:
        self.count += Z.shape[0]
        return vmap(grad(lambda z: self._single(z)[0]))(Z)


def _exponents(k: int) -> list[tuple[int, ...]]:
    out = []
    for combo in itertools.combinations_with_replacement(range(k), 4):
        a = [0] * k
        for i in combo:
            a[i] += 1
        out.append(tuple(a))
    return out


def _monomials(X: Tensor, E: Tensor) -> Tensor:
    """x^α for every row x of X (m, k) and exponent row α of E (N, k): shape (m, N)."""
    return torch.prod(X[:, None, :] ** E[None, :, :], dim=-1)


class _PolyQuartic:
    """A quartic form given by its coefficients (for cheap sphere searches)."""

    def __init__(self, E: Tensor, c: Tensor):
        self.E, self.c = E, c

    def values(self, Z: Tensor) -> Tensor:
        return _monomials(Z, self.E) @ self.c

    def grads(self, Z: Tensor) -> Tensor:
        with torch.enable_grad():
            Z = Z.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.values(Z).sum(), Z)  # rows are independent
        return g


def _trig_basis(theta: np.ndarray) -> np.ndarray:
    """cos^{4−i}θ·sin^iθ for i = 0..4: the basis of binary quartics on a circle; shape (..., 5)."""
    c, s = np.cos(theta)[..., None], np.sin(theta)[..., None]
    i = np.arange(5)
    return c ** (4 - i) * s ** i


def _plane_minimiser(a: np.ndarray) -> np.ndarray:
    """argmin over θ ∈ [0, π) of Σ_i a_i cos^{4−i}θ sin^iθ for each column of a (5, m)."""
    grid = np.linspace(0, np.pi, 721)
    theta = grid[(_trig_basis(grid) @ a).argmin(0)]
    width = grid[1] - grid[0]
    offsets = np.linspace(-1, 1, 201)
    for _ in range(2):  # zoom in twice around the minimiser
        local = theta[None, :] + offsets[:, None] * width  # (201, m)
        curve = np.einsum("gmi,im->gm", _trig_basis(local), a)
        theta = local[curve.argmin(0), np.arange(a.shape[1])]
        width = width / 100
    return theta


def _sphere_minimise(
    q, Z: Tensor, steps: int, project: Callable[[Tensor], Tensor], sign: float = 1.0, stop_below: float | None = None,
    abs_tol: float = 0.0,
):
    """Minimise sign·q on the unit sphere from the rows of Z by exact line search in 2-planes.

    Each step takes y ⟂ z along the negative Riemannian gradient, fits the binary quartic
    θ ↦ q(cos θ·z + sin θ·y) from 5 values and moves to its minimiser (θ = 0 is among the
    candidates, so the value never increases). Stops early once some value is below ``stop_below``,
    or when no value moved by more than max(1e-12·scale, ``abs_tol``) in a step.

    Returns:
        (end points, their values of q).
    """
    angles = np.arange(5) * (np.pi / 5)
    basis_inv = np.linalg.inv(_trig_basis(angles))  # (5, 5)
    cos_a = torch.tensor(np.cos(angles[1:]), dtype=Z.dtype, device=Z.device)[:, None, None]
    sin_a = torch.tensor(np.sin(angles[1:]), dtype=Z.dtype, device=Z.device)[:, None, None]
    vals = sign * q.values(Z)
    scale = max(float(vals.abs().max()), 1e-300)
    for _ in range(steps):
        if stop_below is not None and float(vals.min()) < stop_below:
            break
        g = project(sign * q.grads(Z))
        g = g - (g * Z).sum(-1, keepdim=True) * Z
        gn = g.norm(dim=-1, keepdim=True)
        if float(gn.max()) <= 1e-14 * scale:
            break
        Y = -g / gn.clamp_min(1e-300)
        pts = cos_a * Z[None] + sin_a * Y[None]  # (4, m, p)
        pv = sign * q.values(pts.reshape(-1, Z.shape[-1])).reshape(4, -1)
        samples = torch.cat([vals[None], pv], dim=0).detach().cpu().numpy()  # (5, m)
        theta = torch.tensor(_plane_minimiser(basis_inv @ samples), dtype=Z.dtype, device=Z.device)
        Z = torch.cos(theta)[:, None] * Z + torch.sin(theta)[:, None] * Y
        Z = project(Z)
        Z = Z / Z.norm(dim=-1, keepdim=True)
        new = sign * q.values(Z)
        converged = bool(((vals - new).abs() <= max(1e-12 * scale, abs_tol)).all())
        vals = torch.minimum(vals, new)
        if converged:
            break
    return Z, sign * vals


# --------------------------------------------------------------------------------------------
# Branch-and-bound certificate of positivity of a quartic form
# --------------------------------------------------------------------------------------------
def _interval_power(lo: np.ndarray, hi: np.ndarray, e: int):
    if e == 0:
        return np.ones_like(lo), np.ones_like(hi)
    a, b = lo ** e, hi ** e
    if e % 2 == 1:
        return a, b
    mn = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(a, b))
    return mn, np.maximum(a, b)


def _certify_positive(E: np.ndarray, c: np.ndarray, margin: float, max_boxes: int) -> tuple[bool, float, int]:
    """Prove q(x) − margin·‖x‖⁴ > 0 for x ≠ 0 (q = Σ c_α x^α a quartic form in k variables).

    By homogeneity and q(−x) = q(x) it suffices to prove it on the k faces x_i = 1 of the cube
    [−1, 1]^k. Each face is covered by boxes; on a box, interval arithmetic on every monomial gives a
    lower bound; boxes whose bound is not positive are bisected along their widest side.

    Returns:
        (proved, a proven lower bound of q on the unit sphere or nan, boxes processed).
    """
    k = E.shape[1]
    # subtract margin·(Σ x_i²)² = margin·Σ_{|β|=2} (2; β) x^{2β}
    c = c.astype(np.float64).copy()
    index = {tuple(a): i for i, a in enumerate(E.tolist())}
    for i in range(k):
        for j in range(k):
            a = [0] * k
            a[i] += 2
            a[j] += 2
            c[index[tuple(a)]] -= margin
    processed = 0
    for face in range(k):
        lo = -np.ones((1, k))
        hi = np.ones((1, k))
        lo[:, face] = hi[:, face] = 1.0
        while lo.shape[0]:
            processed += lo.shape[0]
            if processed > max_boxes:
                return False, float("nan"), processed
            total_lo = np.zeros(lo.shape[0])
            for alpha, coef in zip(E, c):
                if coef == 0:
                    continue
                plo, phi = np.ones(lo.shape[0]), np.ones(lo.shape[0])
                for i, e in enumerate(alpha):
                    if e == 0:
                        continue
                    alo, ahi = _interval_power(lo[:, i], hi[:, i], int(e))
                    cands = np.stack([plo * alo, plo * ahi, phi * alo, phi * ahi])
                    plo, phi = cands.min(0), cands.max(0)
                total_lo += np.where(coef > 0, coef * plo, coef * phi)
            # interval sums carry rounding ≲ 1e-13 relative; demand a strictly positive bound
            open_ = total_lo <= 1e-12 * np.abs(c).sum()
            if not open_.any():
                break
            lo, hi = lo[open_], hi[open_]
            centre = (lo + hi) / 2
            cv = np.prod(centre[:, None, :] ** E[None], axis=-1) @ c
            if (cv <= 0).any():
                return False, float("nan"), processed
            width = hi - lo
            split = width.argmax(1)
            rows = np.arange(lo.shape[0])
            mid = centre[rows, split]
            lo2, hi2 = lo.copy(), hi.copy()
            hi[rows, split] = mid
            lo2[rows, split] = mid
            lo, hi = np.concatenate([lo, lo2]), np.concatenate([hi, hi2])
    # q − margin‖x‖⁴ > 0 on the cube faces ⇒ q(u) > margin on the unit sphere
    return True, margin, processed


def _certify_sos(E: np.ndarray, c: np.ndarray, margin: float, maxiter: int = 400) -> tuple[bool, float]:
    """Prove q(u) > margin on the unit sphere with a sum-of-squares (Gram matrix) certificate.

    With m(x) = (x_i², √2·x_i·x_j (i < j)), ‖m(x)‖² = ‖x‖⁴, so any symmetric Q with q(x) = m(x)ᵀQm(x)
    gives q(u) ≥ λ_min(Q) on the unit sphere (Parrilo 2003, Math. Program. 96; Choi, Lam & Reznick 1995).
    The Gram matrices form an affine space; λ_min is maximised over it by L-BFGS on a soft minimum of
    the eigenvalues. The identity holds up to the rounding residual ρ = q − mᵀQm, bounded on the sphere
    by Σ_α |ρ_α| (as |u^α| ≤ 1), so the proven bound is λ_min(Q) − Σ|ρ_α|.

    Returns:
        (proved, bound).
    """
    from scipy.optimize import minimize

    k = E.shape[1]
    index = {tuple(a): i for i, a in enumerate(E.tolist())}
    beta, scale2 = [], []
    for i in range(k):
        for j in range(i, k):
            b = [0] * k
            b[i] += 1
            b[j] += 1
            beta.append(b)
            scale2.append(1.0 if i == j else math.sqrt(2.0))
    n2 = len(beta)
    pairs = [(a, b) for a in range(n2) for b in range(a, n2)]
    A = np.zeros((len(index), len(pairs)))
    for col, (a, b) in enumerate(pairs):
        alpha = tuple(x + y for x, y in zip(beta[a], beta[b]))
        A[index[alpha], col] = scale2[a] * scale2[b] * (1.0 if a == b else 2.0)
    q0 = np.linalg.lstsq(A, c, rcond=None)[0]
    _, sv, vt = np.linalg.svd(A)
    null = vt[int((sv > 1e-10 * sv.max()).sum()):].T  # free directions of the Gram matrix
    rows = np.array([a for a, _ in pairs])
    cols = np.array([b for _, b in pairs])
    off = rows != cols

    def gram(y):
        qv = q0 + null @ y
        Q = np.zeros((n2, n2))
        Q[rows, cols] = qv
        Q[cols, rows] = qv
        return Q, qv

    size = max(np.abs(c).max(), 1e-300)
    mu = 50.0 / size

    def objective(y):
        Q, _ = gram(y)
        lam, V = np.linalg.eigh(Q)
        z = -mu * (lam - lam[0])
        w = np.exp(z)
        soft = lam[0] - np.log(w.sum()) / mu
        w /= w.sum()
        # ∂λ_i/∂q_ab = v_a v_b (a = b) or 2·v_a v_b (a ≠ b)
        dq = (V[rows] * V[cols] * w).sum(1) * np.where(off, 2.0, 1.0)
        return -soft / size, -(null.T @ dq) / size

    y = np.zeros(null.shape[1])
    if null.shape[1]:
        y = minimize(objective, y, jac=True, method="L-BFGS-B", options={"maxiter": maxiter}).x
    Q, qv = gram(y)
    residual = np.abs(A @ qv - c).sum()
    bound = float(np.linalg.eigvalsh(Q)[0] - residual)
    return bound > margin, bound


# --------------------------------------------------------------------------------------------
# Public: the analysis
# --------------------------------------------------------------------------------------------
def _range_from_hvp(hvp, d: int, rank: int, max_rank: int, like: Tensor, generator):
    if rank > max_rank:
        raise ValueError(
            f"the matrix-free order-4 analysis computes the top {rank} Hessian eigenpairs and supports "
            f"rank ≤ max_rank = {max_rank}; pass the dense eigendecomposition (eigenvalues=, eigenvectors=) "
            "for small models or raise max_rank"
        )
    if rank == 0:
        return like.new_zeros(d, 0), like.new_zeros(0)
    from scipy.sparse.linalg import LinearOperator, eigsh

    def mv(x):
        t = torch.as_tensor(np.asarray(x).reshape(-1), dtype=like.dtype, device=like.device)
        return hvp(t).detach().to("cpu", torch.float64).numpy()

    g = generator if generator is not None else torch.Generator().manual_seed(0)
    v0 = torch.randn(d, generator=g, dtype=torch.float64).numpy()
    if rank >= d - 1:
        raise ValueError(f"rank {rank} of dimension {d}: use the dense eigendecomposition for this model")
    op = LinearOperator((d, d), matvec=mv, dtype=np.float64)
    lam, vec = eigsh(op, k=rank, which="LA", v0=v0, tol=1e-12)
    U = torch.as_tensor(vec, dtype=like.dtype, device=like.device)
    return U, torch.as_tensor(lam, dtype=like.dtype, device=like.device)


def analyze_quartic(
    problem: FlatProblem,
    *,
    rank: int,
    eigenvalues: Tensor | None = None,
    eigenvectors: Tensor | None = None,
    hvp: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    rtol: float | None = None,
    max_monomials: int = 500,
    restarts: int = 8,
    steps: int = 50,
    max_boxes: int = 20_000,
    max_rank: int = 256,
    threshold: float | None = None,
    taylor: TaylorMode | None = None,
) -> QuarticAnalysis:
    """Classify g₄(v) = T₄[v⁴]/24 − b(v)ᵀH⁺b(v)/8 on the unit sphere of null(H) (module docstring).

    Args:
        problem: the flat loss (:func:`slt_interp.estimators.flatten`); ``problem.w0`` is w*.
        rank: r, the number of Hessian eigenvalues counted as non-zero.
        eigenvalues: the eigenvalues of the dense H at w*, ascending; the top ``rank`` count as the
            range, the others as the null space.
        eigenvectors: the matching eigenvectors, as columns.
        hvp: v ↦ Hv, used when no dense decomposition is given (top-``rank`` eigenpairs by Lanczos,
            null space = their orthogonal complement, sphere search only).
        generator: seeds the evaluation points and the restarts (default: seed 0).
        rtol: the margin relative to the largest order-4 term, atol = rtol·max(|T₄[v⁴]|/24,
            b(v)ᵀH⁺b(v)/8) (default 1e-6 in float64, 1e-2 otherwise); independent of the units of w.
        max_monomials: use the coefficient method when C(k + 3, 4) ≤ this.
        restarts: sphere-search restarts.
        steps: sphere-search steps per restart.
        max_boxes: budget of the branch-and-bound positivity certificate.
        max_rank: largest rank handled matrix-free.
        threshold: the rank threshold τ; bounds the null-space eigenvalues in the matrix-free case (the
            dense case reads them off ``eigenvalues``). Along a unit null direction with eigenvalue h,
            h/2·t² + T₃[v³]/6·t³ + T₄[v⁴]/24·t⁴ ≥ 0 for all t iff T₃[v³]² ≤ 3·h·T₄[v⁴], so a cubic up to
            √(3·h_max·max T₄[v⁴]) (+ atol) is consistent with a minimum and is tolerated.
        taylor: a prebuilt :class:`TaylorMode` for ``problem`` (to reuse its trace).

    Returns:
        :class:`QuarticAnalysis`.

    Raises:
        ValueError: inconsistent rank / decomposition, neither a decomposition nor an hvp, or a
            matrix-free rank above ``max_rank``.
        FloatingPointError: g₄ evaluates to NaN or inf (the loss is not smooth at w*).

    Example:
        >>> from slt_interp.estimators.flat import flatten
        >>> p = flatten(lambda w: w[0] ** 2 + w[1] ** 4, torch.zeros(2, dtype=torch.float64))
        >>> H = torch.func.hessian(p.fn)(p.w0); ev, U = torch.linalg.eigh(H)
        >>> analyze_quartic(p, rank=1, eigenvalues=ev, eigenvectors=U).classification
        'positive definite'
    """
    w0 = problem.w0
    d = w0.numel()
    if int(rank) != rank or not 0 <= rank <= d:
        raise ValueError(f"rank must be an integer in [0, {d}], got {rank}")
    k = d - rank
    if rtol is None:
        rtol = 1e-6 if w0.dtype == torch.float64 else 1e-2
    g = generator if generator is not None else torch.Generator(device="cpu").manual_seed(0)
    tm = taylor if taylor is not None else TaylorMode(problem.fn, w0)

    if eigenvectors is not None:
        if eigenvalues is None or eigenvectors.shape != (d, d) or eigenvalues.shape != (d,):
            raise ValueError(
                f"eigenvalues must have shape ({d},) and eigenvectors ({d}, {d}) (columns, ascending), got "
                f"{tuple(getattr(eigenvalues, 'shape', ()))} and {tuple(eigenvectors.shape)}"
            )
        if rank and eigenvalues[k] <= 0:
            raise ValueError(f"rank {rank} counts a non-positive eigenvalue ({float(eigenvalues[k]):.3g}) as non-zero")
        evecs = eigenvectors.to(w0.dtype).to(w0.device)
        N, U = evecs[:, :k], evecs[:, k:]
        lam = eigenvalues.to(w0.dtype).to(w0.device)[k:]
        coords = k

        def null_map(z):
            return N @ z

        def project(Z):
            return Z

        lam_max = float(eigenvalues.abs().max()) if d else 0.0
        h_null = float(eigenvalues[:k].abs().max()) if k else 0.0
    elif hvp is not None:
        U, lam = _range_from_hvp(hvp, d, rank, max_rank, w0, g)
        coords = d
        N = None

        def null_map(z):
            return z - U @ (U.T @ z)

        def project(Z):
            return Z - (Z @ U) @ U.T

        lam_max = float(lam.max()) if rank else 0.0
        h_null = float(threshold) if threshold is not None else 0.0
        lanczos_note = (
            f"range(H) from the top {rank} eigenpairs by Lanczos (scipy eigsh, tol 1e-12)"
            + (f"; smallest of them {float(lam.min()):.3g}" if rank else "")
        )
    else:
        raise ValueError("pass the dense eigendecomposition (eigenvalues=, eigenvectors=) or an hvp (v ↦ Hv)")

    if k == 0:
        return QuarticAnalysis(
            "positive definite", True, rank, 0, float("inf"), 0.0, None, 0.0, rtol, lam_max, 0.0, None,
            "none", 0, 0, certified=("the Hessian has full rank: no null space, λ = d/2",),
        )

    q = _NullQuartic(tm, null_map, U, lam)
    num_monomials = math.comb(k + 3, 4)
    use_coefficients = N is not None and num_monomials <= max_monomials
    dtype, device = w0.dtype, w0.device

    def unit(m):
        Z = torch.randn(m, coords, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
        Z = project(Z)
        return Z / Z.norm(dim=-1, keepdim=True)

    n_samples = 2 * num_monomials + 8 if use_coefficients else max(4 * restarts, 32)
    Z0 = unit(n_samples)
    g4, quart, corr, cubic, t3_norm = q.parts(Z0)
    if not all(bool(torch.isfinite(t).all()) for t in (g4, quart, corr, cubic, t3_norm)):
        raise FloatingPointError(
            "g₄ evaluated to NaN or inf on the null space: the loss is not smooth at w* along these directions "
            "(e.g. a power with a fractional exponent at 0); check the loss, or use TaylorMode(method='nested')"
        )
    # Order-4 quantities only: under w ↦ c·w the terms T₄[v⁴]/24 and b(v)ᵀH⁺b(v)/8 both scale by c⁴,
    # so comparing g₄ (their difference) with them is independent of the units of w. Comparing with
    # λ_max(H) (which scales by c²) is not: it declared 1e-7·b⁴ "zero" next to a².
    scale = max(float(quart.abs().max()), float(corr.abs().max()))
    atol = rtol * scale
    cubic_max = float(cubic.abs().max())
    # the cubic T₃[v³] (∝ c³) against the rounding of T₃[·, v, v] (∝ c³) and √(h·T₄) (∝ c³)
    cubic_tol = rtol * float(t3_norm.max()) + math.sqrt(3.0 * max(h_null, 0.0) * 24.0 * float(quart.abs().max()))
    certified_st, observed_st = [], []
    if N is None:
        observed_st.append(lanczos_note)
    fit_residual = None
    exps = coefs = None
    proven_lower = None

    if use_coefficients:
        E = torch.tensor(_exponents(k), dtype=dtype, device=device)
        A = _monomials(Z0, E)
        sol_np = np.linalg.lstsq(A.detach().cpu().numpy(), g4.detach().cpu().numpy(), rcond=None)[0]
        sol = torch.as_tensor(sol_np, dtype=dtype, device=device)
        fit_residual = float((A @ sol - g4).abs().max())
        exps, coefs = tuple(tuple(int(a) for a in row) for row in E.tolist()), sol
        search = _PolyQuartic(E, sol)
        n_restarts = min(max(restarts, 4 * k), 32)
    else:
        search = q
        n_restarts = restarts

    # sphere search: minimum of g₄ (and of −g₄ when no sample is clearly non-zero)
    order = torch.argsort(g4)
    starts = torch.cat([Z0[order[: n_restarts // 2]], unit(n_restarts - n_restarts // 2)])
    Zmin, vmin = _sphere_minimise(search, starts, steps, project, stop_below=-atol, abs_tol=1e-3 * atol)
    i = int(vmin.argmin())
    zstar = Zmin[i : i + 1]
    g4_star = float(q.values(zstar)[0])  # re-evaluate the true g₄ (not the fit) at the minimiser
    if float(g4.min()) < g4_star:  # a sampled start was better than every search end point
        zstar = Z0[int(g4.argmin())][None]
        g4_star = float(g4.min())
    minimum = g4_star
    maximum_abs = float(g4.abs().max())
    if maximum_abs <= atol:
        Zmax, vmax = _sphere_minimise(search, unit(n_restarts), steps, project, sign=-1.0, stop_below=-atol,
                                      abs_tol=1e-3 * atol)
        j = int(vmax.argmax())
        maximum_abs = max(maximum_abs, abs(float(q.values(Zmax[j : j + 1])[0])))
    minimizer = null_map(zstar[0]).detach()
    tol_text = f"atol = {atol:.3g} (rtol {rtol:g} × scale {scale:.3g})"

    if cubic_max > cubic_tol:
        classification, proven = "indefinite", True
        certified_st.append(
            f"the cubic T₃[v, v, v] on the null space is non-zero (max |·| = {cubic_max:.3g} > {cubic_tol:.3g} = rtol·‖T₃[·, v, v]‖ + "
            f"√(3·h·max T₄[v⁴]) with null eigenvalues |h| ≤ {h_null:.3g}): w* is not a minimum along the numerical "
            "null space at this threshold (or the threshold counts non-negligible eigenvalues as zero); the order-4 "
            "bounds are not applied"
        )
    elif minimum < -atol:
        classification, proven = "indefinite", True
        certified_st.append(
            f"g₄ < 0 at a null direction (g₄ = {minimum:.3g} < −{tol_text}): on an exact null space w* would not be a "
            f"local minimum; with null-space eigenvalues up to {h_null:.3g} it can also mean that the threshold counts "
            "non-negligible eigenvalues as zero. Either way the order-4 bounds are not applied"
        )
    elif use_coefficients and float(coefs.abs().sum()) <= atol:
        # a tolerance test, not a proof: a g₄ of 1e-7·b⁴ next to a² is not zero (issue 11, item 7)
        classification, proven = "zero", False
        observed_st.append(
            f"g₄ ≡ 0 within {tol_text}: Σ|coefficients| = {float(coefs.abs().sum()):.3g} bounds |g₄| on the "
            f"unit sphere (quartic fitted to {n_samples} evaluations, residual {fit_residual:.2g}); observed, "
            "not proven: floating-point evaluation cannot prove a quartic to be exactly zero"
        )
    elif maximum_abs <= atol:
        classification, proven = "zero", False
        observed_st.append(
            f"|g₄| ≤ {tol_text} on every evaluated unit null direction ({q.count} evaluations incl. a maximisation): "
            "g₄ ≡ 0 is observed, not proven"
        )
    elif minimum > atol:
        classification = "positive definite"
        proven = False
        if use_coefficients and fit_residual <= atol:
            E_np, c_np = np.array(exps), coefs.detach().cpu().numpy()
            ok, bound = _certify_sos(E_np, c_np, atol)
            how = "a sum-of-squares Gram-matrix certificate"
            if not ok:
                ok, bound, boxes = _certify_positive(E_np, c_np, atol, max_boxes)
                how = f"interval branch-and-bound ({boxes} boxes)"
            if ok:
                proven, proven_lower = True, bound
                certified_st.append(
                    f"g₄ ≥ {bound:.3g} > {tol_text} on the unit sphere of the null space: {how} on the fitted "
                    f"quartic (fit residual {fit_residual:.2g} over {n_samples} evaluations)"
                )
        if not proven:
            observed_st.append(
                f"g₄ appears positive definite on the null space: min over {n_restarts} restarts = {minimum:.3g} "
                f"> {tol_text} (not proven; would give λ = r/2 + k/4 exactly)"
            )
        certified_st.append(f"g₄ ≢ 0: a unit null direction has g₄ = {minimum:.3g} > {tol_text}")
    else:
        classification, proven = "degenerate", True
        certified_st.append(
            f"g₄ ≢ 0 (a unit null direction has |g₄| = {maximum_abs:.3g} > {tol_text}) and g₄ is not positive "
            f"definite beyond the tolerance (a unit null direction has g₄ = {minimum:.3g} ≤ atol)"
        )
    if cubic_max <= atol:
        observed_st.append(f"cubic T₃[v, v, v] on the null space ≈ 0 (max |·| = {cubic_max:.2g}), as at a minimum")
    elif cubic_max <= cubic_tol:
        observed_st.append(
            f"cubic T₃[v, v, v] on the null space up to {cubic_max:.2g}, within the {cubic_tol:.2g} that null-space "
            f"eigenvalues |h| ≤ {h_null:.2g} allow at a minimum; the order-4 statements describe the loss at "
            "distances |δ| ≫ (h/g₄)^(1/2), where the quartic dominates"
        )
    if fit_residual is not None:
        observed_st.append(
            f"quartic coefficients of g₄ in the null basis fitted from {n_samples} evaluations, residual {fit_residual:.2g}"
        )

    return QuarticAnalysis(
        classification=classification, proven=proven, rank=rank, nullity=k, minimum=minimum,
        maximum_abs=maximum_abs, proven_lower=proven_lower, atol=atol, rtol=rtol, scale=scale,
        cubic_max=cubic_max, fit_residual=fit_residual,
        method="coefficients" if use_coefficients else "sphere search", num_evaluations=q.count,
        restarts=n_restarts, minimizer=minimizer, exponents=exps, coefficients=coefs,
        certified=tuple(certified_st), observed=tuple(observed_st),
    )


def sharpen_bounds(
    base: LLCBounds,
    problem: FlatProblem,
    *,
    eigenvalues: Tensor | None = None,
    eigenvectors: Tensor | None = None,
    hvp: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    **options,
) -> LLCBounds:
    """Order-4 bounds from order-2 bounds ``base``: classify g₄ on null(H) and apply docs/theory.md §3.

    With r = base.rank, k = base.nullity:
    g₄ positive definite (certified) → λ = r/2 + k/4, ``exact`` (m = 1);
    g₄ ≢ 0 (certified by a witness) → r/2 + 1/4 ≤ λ ≤ r/2 + k/4;
    g₄ ≡ 0 (never proven, module docstring) → r/2 ≤ λ ≤ r/2 + k/4 (the k/6 bound is listed in
    ``observed``);
    indefinite (w* not a minimum along the null space), or ``base.is_minimum`` False → ``base``'s bounds.
    ``lower``/``upper`` only ever hold certified bounds (intersected with ``base``'s); statements that
    rest on sampling go to ``observed``. When the rank itself was estimated stochastically
    (``base.rank_ci`` set, e.g. SLQ) every bound is conditional on it: the bound statements go to
    ``observed`` and ``exact`` stays False. ``options`` go to :func:`analyze_quartic`.

    Args:
        base: the order-2 bounds (from :func:`slt_interp.estimators.llc_bounds`).
        problem: the flat loss whose Hessian ``base`` describes.
        eigenvalues: the dense Hessian eigenvalues (ascending), if computed.
        eigenvectors: the matching eigenvectors as columns.
        hvp: v ↦ Hv, for the matrix-free path.
        generator: seeds the evaluation points.
        **options: passed to :func:`analyze_quartic`.

    Returns:
        A new :class:`LLCBounds` with ``order=4`` and ``quartic`` set. The full analysis is attached as
        ``certified``/``observed`` statements; call :func:`analyze_quartic` for the numbers.

    Raises:
        TypeError: ``base`` is not an :class:`LLCBounds`.
        ValueError: ``base`` and ``problem`` have different dimensions.
    """
    if not isinstance(base, LLCBounds):
        raise TypeError(f"base must be an LLCBounds (the order-2 result), got {type(base).__name__}")
    if base.dim != problem.dim:
        raise ValueError(f"base.dim = {base.dim} but the problem has {problem.dim} parameters")
    options.setdefault("threshold", base.threshold)
    qa = analyze_quartic(
        problem, rank=base.rank, eigenvalues=eigenvalues, eigenvectors=eigenvectors, hvp=hvp,
        generator=generator, **options,
    )
    return bounds_from_quartic(base, qa)


def bounds_from_quartic(base: LLCBounds, qa: QuarticAnalysis) -> LLCBounds:
    """Combine order-2 bounds with a :class:`QuarticAnalysis` (see :func:`sharpen_bounds`).

    Args:
        base: the order-2 bounds.
        qa: the order-4 analysis at the same rank.

    Returns:
        The order-4 :class:`LLCBounds`.

    Raises:
        ValueError: ``qa`` used another rank than ``base``, or the bounds would contradict each other.
    """
    r, k = base.rank, base.nullity
    if (qa.rank, qa.nullity) != (r, k):
        raise ValueError(f"the quartic analysis used rank {qa.rank} / nullity {qa.nullity}, the bounds rank {r} / nullity {k}")
    half = Fraction(r, 2)
    certified = list(base.certified) + list(qa.certified)
    observed = list(base.observed) + list(qa.observed)
    stochastic_rank = base.rank_ci is not None
    # with a sampled rank (SLQ) every bound on λ is conditional on it: it goes to ``observed``
    bound_statements = observed if stochastic_rank else certified
    prefix = f"given the estimated rank r = {r}: " if stochastic_rank else ""
    cls = qa.classification
    exact = False
    if k == 0:
        lower = upper = half
        exact = base.exact
        cls = None
    elif cls == "positive definite" and qa.proven:
        lower = upper = half + Fraction(k, 4)
        exact = True
        bound_statements.append(prefix + f"λ = r/2 + k/4 = {lower} exactly, m = 1 (g₄ positive definite on the null space)")
    elif cls in ("positive definite", "degenerate"):
        lower, upper = half + Fraction(1, 4), half + Fraction(k, 4)
        bound_statements.append(prefix + f"order 4 on the null space: r/2 + 1/4 ≤ λ ≤ r/2 + k/4, i.e. [{lower}, {upper}]")
    elif cls == "zero":  # never proven (module docstring): only the order-≥ 4 bounds are certain
        lower, upper = half, half + Fraction(k, 4)
        bound_statements.append(
            prefix + f"at a minimum the null-space part g has order ≥ 4: r/2 ≤ λ ≤ r/2 + k/4, i.e. [{lower}, {upper}]"
        )
        observed.append(f"if g₄ ≡ 0 (observed only), λ ≤ r/2 + k/6 = {half + Fraction(k, 6)}")
    else:  # indefinite: the order-4 theory of a minimum does not apply
        lower, upper = base.lower, base.upper
    if getattr(base, "is_minimum", None) is False and k:
        # the order-2 check already found w* is not a minimum: the order-4 rules do not apply either
        lower, upper, exact = base.lower, base.upper, False
        observed.append("order-4 bounds not applied: the order-2 analysis found that w* is not a local minimum")
    lower, upper = max(lower, base.lower), min(upper, base.upper)
    if lower > upper:  # cannot happen for consistent inputs; never return an empty interval silently
        raise ValueError(f"order-4 bounds [{lower}, {upper}] contradict the order-2 bounds [{base.lower}, {base.upper}]")
    exact = exact and not stochastic_rank
    return replace(
        base, lower=lower, upper=upper, exact=exact or (lower == upper and base.exact), order=4, quartic=cls,
        certified=tuple(certified), observed=tuple(observed),
    )
