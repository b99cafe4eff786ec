"""Factored (never densified unless asked) matrices and bilinear tensors.

In the spirit of TransformerLens's ``FactoredMatrix`` (Nanda & Bloom, 2022): keep A·B unmultiplied and
take spectra from the small side; generalised to the bilinear tensor of a bilinear MLP
B_aij = Σ_h P_ah W_hi V_hj (Sharkey 2023, arXiv 2305.03452) and to its interaction matrices
Q(u) = ½ Σ_a u_a (B_a + B_aᵀ) (Pearce, Dooms, Rigg et al. 2024, arXiv 2410.08417), whose
eigendecomposition writes uᵀ·y(x) = Σ_i μ_i (q_iᵀ x)².

No method-level caches (instances stay collectable) and no assert-based checks: invalid input raises.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["FactoredMatrix", "FactoredSymmetric", "FactoredBilinear", "Eigh", "InteractionEig"]


def _check_matrix(name: str, x: Tensor, batch: bool = False) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if (x.dim() < 2) if batch else (x.dim() != 2):
        want = "a matrix or a batch of matrices (≥ 2-d)" if batch else "a matrix (2-d)"
        raise ValueError(f"{name} must be {want}, got shape {tuple(x.shape)}")


@dataclass(frozen=True)
class Eigh:
    """Eigenpairs of a symmetric matrix, eigenvalues sorted by decreasing |μ|.

    Attributes:
        values: (k,) eigenvalues μ_i.
        vectors: (n, k) orthonormal eigenvectors q_i as columns.
    """

    values: Tensor
    vectors: Tensor


@dataclass(frozen=True)
class InteractionEig:
    """Eigendecompositions of k interaction matrices Q_k = Σ_i μ_ki q_ki q_kiᵀ (Pearce et al. 2024).

    Attributes:
        values: (k, r) eigenvalues per output, sorted by decreasing |μ|.
        vectors: (k, n, r) orthonormal eigenvectors q_ki as columns.
    """

    values: Tensor
    vectors: Tensor

    def truncate(self, rank: int) -> "InteractionEig":
        """Keep the top ``rank`` eigenpairs (by |μ|) of every output (eigenvector truncation).

        Pearce et al. 2024, arXiv 2410.08417, §4: a few eigenvectors carry most of each output's interaction.

        Args:
            rank: number of eigenpairs kept, ≥ 0.

        Returns:
            The truncated :class:`InteractionEig`.

        Raises:
            ValueError: a negative rank.
        """
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        return InteractionEig(self.values[:, :rank], self.vectors[:, :, :rank])

    def dense(self) -> Tensor:
        """The interaction matrices Σ_i μ_ki q_ki q_kiᵀ, shape (k, n, n)."""
        return (self.vectors * self.values[:, None, :]) @ self.vectors.mT

    def __call__(self, x: Tensor) -> Tensor:
        """The outputs Σ_i μ_ki (q_kiᵀ x)² for every output k.

        Args:
            x: inputs, shape (..., n).

        Returns:
            Shape (..., k).
        """
        proj = torch.einsum("...n,knr->...kr", x, self.vectors)
        return (proj.square() * self.values).sum(-1)


class FactoredMatrix:
    """The matrix M = A @ B of shape (..., m, n) kept as A (..., m, r) and B (..., r, n).

    Leading batch dimensions broadcast as in ``torch.matmul`` (e.g. one matrix per layer and head).
    Parity with TransformerLens ``FactoredMatrix``: ``AB``, ``BA``, ``U``/``S``/``Vh``, ``svd()``,
    ``eigenvalues`` from the small side, scalar products ``s * M``, ``collapse_l``/``collapse_r``,
    ``norm()``. One convention differs: here ``Vh`` is the (..., k, n) conjugate transpose as in
    ``torch.linalg.svd`` (M = U diag(S) Vh), where TransformerLens's ``Vh`` is its transpose (..., n, k).

    Args:
        A: left factor, (..., m, r).
        B: right factor, (..., r, n), same dtype and device as A.

    Raises:
        TypeError: a factor is not a tensor.
        ValueError: a factor has fewer than 2 dimensions, the inner dimensions differ, the batch
            dimensions do not broadcast, or dtype/device differ.

    Example:
        >>> A, B = torch.randn(5, 2, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
        >>> M = FactoredMatrix(A, B)
        >>> bool(torch.allclose(M.frobenius_norm(), torch.linalg.norm(A @ B)))
        True
    """

    def __init__(self, A: Tensor, B: Tensor):
        """Keep M = A @ B unmultiplied (see the class docstring)."""
        _check_matrix("A", A, batch=True)
        _check_matrix("B", B, batch=True)
        if A.shape[-1] != B.shape[-2]:
            raise ValueError(f"inner dimensions differ: A is {tuple(A.shape)}, B is {tuple(B.shape)}")
        if A.dtype != B.dtype or A.device != B.device:
            raise ValueError(f"A and B must share dtype and device, got {A.dtype}/{A.device} and {B.dtype}/{B.device}")
        try:
            batch = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        except RuntimeError as exc:
            raise ValueError(f"batch dimensions of A {tuple(A.shape)} and B {tuple(B.shape)} do not broadcast") from exc
        self.A, self.B = A.expand(*batch, *A.shape[-2:]), B.expand(*batch, *B.shape[-2:])

    @property
    def shape(self) -> tuple[int, ...]:
        """(..., m, n)."""
        return (*self.A.shape[:-1], self.B.shape[-1])

    @property
    def ndim(self) -> int:
        """Number of dimensions, batch dimensions included."""
        return self.A.dim()

    @property
    def inner(self) -> int:
        """The inner dimension r (an upper bound on the rank)."""
        return self.A.shape[-1]

    @property
    def T(self) -> "FactoredMatrix":
        """The transpose Bᵀ Aᵀ (last two dimensions), still factored."""
        return FactoredMatrix(self.B.mT, self.A.mT)

    def dense(self) -> Tensor:
        """A @ B, shape (..., m, n)."""
        return self.A @ self.B

    @property
    def AB(self) -> Tensor:
        """The product A @ B (TransformerLens name), shape (..., m, n)."""
        return self.dense()

    @property
    def BA(self) -> Tensor:
        """The small-side product B @ A, shape (..., r, r); needs m = n."""
        if self.shape[-2] != self.shape[-1]:
            raise ValueError(f"B @ A needs a square matrix, this one is {self.shape}")
        return self.B @ self.A

    def __getitem__(self, index) -> "FactoredMatrix":
        """Index the batch dimensions: ``M[l, h]`` is one matrix of a (L, H, m, n) stack."""
        if self.ndim == 2:
            raise IndexError("a single matrix has no batch dimensions to index; use .dense()[...]")
        return FactoredMatrix(self.A[index], self.B[index])

    def __mul__(self, scalar) -> "FactoredMatrix":
        """Scalar product s·M = (s·A) B; ``scalar`` a number or a 0-d tensor."""
        if isinstance(scalar, Tensor) and scalar.dim() != 0:
            return NotImplemented
        if not isinstance(scalar, (int, float, Tensor)):
            return NotImplemented
        return FactoredMatrix(self.A * scalar, self.B)

    __rmul__ = __mul__

    def __matmul__(self, other):
        """Right product M @ other: factored for a matrix or a FactoredMatrix, a vector for a vector."""
        if isinstance(other, FactoredMatrix):
            # (A B)(C D) = A (B C D): keep the smaller inner dimension outside
            if self.inner <= other.inner:
                return FactoredMatrix(self.A, (self.B @ other.A) @ other.B)
            return FactoredMatrix(self.A @ (self.B @ other.A), other.B)
        if isinstance(other, Tensor):
            if other.dim() == 1:
                return self.A @ (self.B @ other)
            return FactoredMatrix(self.A, self.B @ other)
        return NotImplemented

    def __rmatmul__(self, other):
        """Left product other @ M: factored for a matrix, a vector for a vector."""
        if isinstance(other, Tensor):
            if other.dim() == 1:
                return (other @ self.A) @ self.B
            return FactoredMatrix(other @ self.A, self.B)
        return NotImplemented

    def _core(self) -> tuple[Tensor, Tensor, Tensor]:
        """Thin QR of both factors: A = Q_A R_A, Bᵀ = Q_B R_B, so M = Q_A (R_A R_Bᵀ) Q_Bᵀ."""
        Qa, Ra = torch.linalg.qr(self.A)
        Qb, Rb = torch.linalg.qr(self.B.mT)
        return Qa, Ra @ Rb.mT, Qb

    def svd(self) -> tuple[Tensor, Tensor, Tensor]:
        """Thin SVD M = U diag(S) Vᵀ from a small core (r × r at most).

        Returns:
            (U (..., m, k), S (..., k), V (..., n, k)) with k = min(r, m, n), S decreasing
            (V = ``Vh.mT``).
        """
        Qa, core, Qb = self._core()
        u, s, vh = torch.linalg.svd(core)
        return Qa @ u, s, Qb @ vh.mT

    @property
    def U(self) -> Tensor:
        """Left singular vectors (..., m, k) (see :meth:`svd`)."""
        return self.svd()[0]

    @property
    def S(self) -> Tensor:
        """Singular values (..., k), decreasing."""
        return self.singular_values()

    @property
    def Vh(self) -> Tensor:
        """Right singular vectors as rows, (..., k, n): M = U diag(S) Vh."""
        return self.svd()[2].mT

    def collapse_l(self) -> Tensor:
        """The factorisation with its orthonormal left factor removed: diag(S)·Vh, shape (..., k, n).

        M = U @ collapse_l() (TransformerLens ``collapse_l``).

        Returns:
            Shape (..., k, n).
        """
        _, s, v = self.svd()
        return s[..., :, None] * v.mT

    def collapse_r(self) -> Tensor:
        """The factorisation with its orthonormal right factor removed: U·diag(S), shape (..., m, k).

        M = collapse_r() @ Vh (TransformerLens ``collapse_r``).

        Returns:
            Shape (..., m, k).
        """
        u, s, _ = self.svd()
        return u * s[..., None, :]

    def singular_values(self) -> Tensor:
        """Singular values of M (..., k), decreasing, from the small core."""
        return torch.linalg.svdvals(self._core()[1])

    def spectral_norm(self) -> Tensor:
        """‖A B‖₂, the largest singular value (per batch element)."""
        return self.singular_values()[..., 0]

    def frobenius_norm(self) -> Tensor:
        """‖A B‖_F = sqrt(tr(AᵀA · B Bᵀ)) by self-contraction, without forming A B (per batch element)."""
        return torch.sqrt(((self.A.mT @ self.A) * (self.B @ self.B.mT)).sum(dim=(-2, -1)).clamp_min(0))

    def norm(self) -> Tensor:
        """The Frobenius norm (TransformerLens name), per batch element."""
        return self.frobenius_norm()

    def eigenvalues(self) -> Tensor:
        """Non-zero spectrum of a square A B from the small side: eig(B A), an r × r matrix.

        AB and BA have the same non-zero eigenvalues; BA is r × r with r ≤ m.

        Returns:
            The r eigenvalues of B A (complex), shape (..., r).

        Raises:
            ValueError: M is not square.
        """
        if self.shape[-2] != self.shape[-1]:
            raise ValueError(f"eigenvalues need a square matrix, this one is {self.shape}")
        return torch.linalg.eigvals(self.B @ self.A)

    def symmetric(self) -> "FactoredSymmetric":
        """The symmetric part ½(M + Mᵀ) = L·C·Lᵀ with L = [A, Bᵀ] and C = ½[[0, I], [I, 0]].

        Returns:
            A :class:`FactoredSymmetric`.

        Raises:
            ValueError: M is not square.
        """
        if self.ndim != 2:
            raise ValueError(f"symmetric() takes one matrix; index the batch first (M[i]), shape {self.shape}")
        if self.shape[0] != self.shape[1]:
            raise ValueError(f"the symmetric part needs a square matrix, this one is {self.shape}")
        r = self.inner
        L = torch.cat([self.A, self.B.T], dim=1)  # (n, 2r)
        eye = torch.eye(r, dtype=L.dtype, device=L.device)
        zero = torch.zeros_like(eye)
        C = 0.5 * torch.cat([torch.cat([zero, eye], 1), torch.cat([eye, zero], 1)], 0)  # (2r, 2r)
        return FactoredSymmetric(L, C)

    def __repr__(self) -> str:
        """Shape, inner dimension and dtype."""
        return f"FactoredMatrix(shape={self.shape}, inner={self.inner}, dtype={self.A.dtype})"


class FactoredSymmetric:
    """A symmetric matrix S = L·C·Lᵀ (n × n) kept as L (n, r) and a symmetric core C (r, r).

    The eigendecomposition comes from the small side: L = Q R (thin QR), S = Q (R C Rᵀ) Qᵀ.

    Args:
        L: (n, r) factor.
        C: (r, r) symmetric core.

    Raises:
        TypeError: a factor is not a tensor.
        ValueError: wrong shapes, or C is not symmetric.
    """

    def __init__(self, L: Tensor, C: Tensor):
        """Keep S = L C Lᵀ unmultiplied (see the class docstring)."""
        _check_matrix("L", L)
        _check_matrix("C", C)
        if C.shape != (L.shape[1], L.shape[1]):
            raise ValueError(f"core C must be ({L.shape[1]}, {L.shape[1]}) for L of shape {tuple(L.shape)}, got {tuple(C.shape)}")
        if not torch.allclose(C, C.T, rtol=1e-6, atol=1e-12 * float(C.abs().max().clamp_min(1e-300))):
            raise ValueError("core C must be symmetric; pass ½(C + Cᵀ)")
        self.L, self.C = L, C

    @property
    def shape(self) -> tuple[int, int]:
        """(n, n)."""
        return (self.L.shape[0], self.L.shape[0])

    def dense(self) -> Tensor:
        """L C Lᵀ, shape (n, n)."""
        return self.L @ self.C @ self.L.T

    def quadratic(self, x: Tensor) -> Tensor:
        """The quadratic form xᵀ S x, without densifying S.

        Args:
            x: points, shape (..., n).

        Returns:
            Shape (...).
        """
        y = x @ self.L  # (..., r)
        return ((y @ self.C) * y).sum(-1)

    def eigh(self, k: int | None = None) -> Eigh:
        """Eigenpairs sorted by decreasing |μ|, from an r × r problem.

        Args:
            k: keep the top k pairs (all when None).

        Returns:
            An :class:`Eigh`.
        """
        Q, R = torch.linalg.qr(self.L)
        mu, U = torch.linalg.eigh(R @ self.C @ R.T)
        order = torch.argsort(mu.abs(), descending=True)
        if k is not None:
            order = order[:k]
        return Eigh(values=mu[order], vectors=Q @ U[:, order])

    def spectral_norm(self) -> Tensor:
        """‖S‖₂ = max |μ_i|."""
        return self.eigh(k=1).values.abs()[0]

    def frobenius_norm(self) -> Tensor:
        """‖L C Lᵀ‖_F = sqrt(tr(C G C G)), G = LᵀL, without densifying."""
        G = self.L.T @ self.L
        CG = self.C @ G
        return torch.sqrt((CG * CG.T).sum().clamp_min(0))

    def __repr__(self) -> str:
        """Shape, rank bound and dtype."""
        return f"FactoredSymmetric(shape={self.shape}, rank<={self.L.shape[1]}, dtype={self.L.dtype})"


class FactoredBilinear:
    """The bilinear map y = P·((W x) ⊙ (V y)), i.e. the tensor B_aij = Σ_h P_ah W_hi V_hj.

    Shapes: P (m, h), W (h, n), V (h, n). Only the symmetric part ½(B_a + B_aᵀ) acts on x ⊗ x.
    Sharkey 2023 (arXiv 2305.03452); Pearce, Dooms, Rigg et al. 2024 (arXiv 2410.08417).

    Args:
        P: output matrix, (m, h).
        W: first input matrix, (h, n).
        V: second input matrix, (h, n).

    Raises:
        TypeError: a factor is not a tensor.
        ValueError: shapes that do not fit.
    """

    def __init__(self, P: Tensor, W: Tensor, V: Tensor):
        """Keep B = (P, W, V) factored (see the class docstring)."""
        for name, x in (("P", P), ("W", W), ("V", V)):
            _check_matrix(name, x)
        if not (P.shape[1] == W.shape[0] == V.shape[0]) or W.shape[1] != V.shape[1]:
            raise ValueError(f"shapes must be P (m, h), W (h, n), V (h, n); got P {tuple(P.shape)}, "
                             f"W {tuple(W.shape)}, V {tuple(V.shape)}")
        self.P, self.W, self.V = P, W, V

    @property
    def shape(self) -> tuple[int, int, int]:
        """(m, n, n)."""
        return (self.P.shape[0], self.W.shape[1], self.W.shape[1])

    def __call__(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """B(x, y) = P((W x) ⊙ (V y)).

        Args:
            x: first argument, (..., n).
            y: second argument, (..., n); defaults to x.

        Returns:
            Shape (..., m).
        """
        y = x if y is None else y
        return ((x @ self.W.T) * (y @ self.V.T)) @ self.P.T

    def dense(self) -> Tensor:
        """B as a dense (m, n, n) tensor (small models only)."""
        return torch.einsum("ah,hi,hj->aij", self.P, self.W, self.V)

    def interaction(self, u: Tensor) -> FactoredSymmetric:
        """The interaction matrix Q(u) = ½ Σ_a u_a (B_a + B_aᵀ) = ½(Wᵀ D V + Vᵀ D W), D = diag(Pᵀu).

        So uᵀB(x, x) = xᵀ Q(u) x (Pearce et al. 2024, arXiv 2410.08417).

        Args:
            u: output direction, shape (m,).

        Returns:
            Q(u) as a :class:`FactoredSymmetric` (n × n, rank ≤ 2h).

        Raises:
            ValueError: ``u`` has the wrong shape.
        """
        if u.shape != (self.P.shape[0],):
            raise ValueError(f"output direction u must have shape ({self.P.shape[0]},), got {tuple(u.shape)}")
        d = u @ self.P  # (h,)
        h = d.shape[0]
        L = torch.cat([self.W.T, self.V.T], dim=1)  # (n, 2h)
        D = torch.diag(d)
        zero = torch.zeros(h, h, dtype=d.dtype, device=d.device)
        C = 0.5 * torch.cat([torch.cat([zero, D], 1), torch.cat([D, zero], 1)], 0)  # (2h, 2h)
        return FactoredSymmetric(L, C)

    def interactions(self, U: Tensor) -> "InteractionEig":
        """Batched per-output interaction matrices and their eigendecompositions (Pearce et al. 2024).

        For each output direction u_k (a row of U): Q_k = ½(Wᵀ D_k V + Vᵀ D_k W), D_k = diag(Pᵀu_k), so
        u_kᵀ B(x, x) = xᵀ Q_k x = Σ_i μ_ki (q_kiᵀ x)² (Pearce, Dooms, Rigg et al. 2024, arXiv 2410.08417,
        §3; with U = W_U the rows are the per-logit interaction matrices). All k problems are solved
        from the small side: one thin QR L = [Wᵀ, Vᵀ] = Q R (n × 2h), then k eigenproblems of size 2h.

        Args:
            U: output directions, shape (k, m) (a single direction: shape (m,)).

        Returns:
            An :class:`InteractionEig` with eigenvalues sorted by decreasing |μ| per output.

        Raises:
            ValueError: ``U`` has the wrong shape.
        """
        U = U[None] if U.dim() == 1 else U
        if U.dim() != 2 or U.shape[1] != self.P.shape[0]:
            raise ValueError(f"output directions U must have shape (k, {self.P.shape[0]}), got {tuple(U.shape)}")
        d = U @ self.P  # (k, h)
        h = d.shape[1]
        L = torch.cat([self.W.T, self.V.T], dim=1)  # (n, 2h)
        Q, R = torch.linalg.qr(L)  # Q (n, r), R (r, 2h)
        zero = torch.zeros(d.shape[0], h, h, dtype=d.dtype, device=d.device)
        D = torch.diag_embed(d)  # (k, h, h)
        C = 0.5 * torch.cat([torch.cat([zero, D], 2), torch.cat([D, zero], 2)], 1)  # (k, 2h, 2h)
        mu, vec = torch.linalg.eigh(R @ C @ R.T)  # (k, r), (k, r, r)
        order = torch.argsort(mu.abs(), dim=1, descending=True)
        mu = torch.gather(mu, 1, order)
        vec = torch.gather(vec, 2, order[:, None, :].expand_as(vec))
        return InteractionEig(values=mu, vectors=Q @ vec)

    def frobenius_norm(self, symmetric: bool = True) -> Tensor:
        """‖B‖_F (or of its symmetric part) by self-contraction over the hidden index.

        ‖B‖² = Σ_hh' (PᵀP)_hh' (W Wᵀ)_hh' (V Vᵀ)_hh'; ⟨B, Bᵀ⟩ = Σ_hh' (PᵀP)_hh' (W Vᵀ)_hh' (V Wᵀ)_hh';
        ‖½(B + Bᵀ)‖² = ½(‖B‖² + ⟨B, Bᵀ⟩).

        Args:
            symmetric: the norm of the symmetric part ½(B_a + B_aᵀ) (what acts on x ⊗ x) when True,
                of B itself when False.

        Returns:
            The norm (a 0-d tensor).
        """
        PP = self.P.T @ self.P
        full = (PP * (self.W @ self.W.T) * (self.V @ self.V.T)).sum()
        if not symmetric:
            return torch.sqrt(full.clamp_min(0))
        cross = (PP * (self.W @ self.V.T) * (self.V @ self.W.T)).sum()
        return torch.sqrt((0.5 * (full + cross)).clamp_min(0))

    def __repr__(self) -> str:
        """Shape, hidden width and dtype."""
        return f"FactoredBilinear(shape={self.shape}, hidden={self.P.shape[1]}, dtype={self.P.dtype})"
