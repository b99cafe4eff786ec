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

__all__ = ["FactoredMatrix", "FactoredSymmetric", "FactoredBilinear", "Eigh"]


def _check_matrix(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be a matrix (2-d), got shape {tuple(x.shape)}")


@dataclass(frozen=True)
class Eigh:
    """Eigenpairs of a symmetric matrix, eigenvalues sorted by decreasing |μ|.

    Attributes:
        values: (k,) eigenvalues μ_i.
        vectors: (n, k) orthonormal eigenvectors q_i as columns.
    """

    values: Tensor
    vectors: Tensor


class FactoredMatrix:
    """The matrix M = A @ B of shape (m, n) kept as A (m, r) and B (r, n).

    Example:
        >>> A, B = torch.randn(5, 2, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
        >>> M = FactoredMatrix(A, B)
        >>> bool(torch.allclose(M.frobenius_norm(), torch.linalg.norm(A @ B)))
        True
    """

    def __init__(self, A: Tensor, B: Tensor):
        _check_matrix("A", A)
        _check_matrix("B", B)
        if A.shape[1] != B.shape[0]:
            raise ValueError(f"inner dimensions differ: A is {tuple(A.shape)}, B is {tuple(B.shape)}")
        if A.dtype != B.dtype or A.device != B.device:
            raise ValueError(f"A and B must share dtype and device, got {A.dtype}/{A.device} and {B.dtype}/{B.device}")
        self.A, self.B = A, B

    @property
    def shape(self) -> tuple[int, int]:
        return (self.A.shape[0], self.B.shape[1])

    @property
    def inner(self) -> int:
        return self.A.shape[1]

    @property
    def T(self) -> "FactoredMatrix":
        return FactoredMatrix(self.B.T, self.A.T)

    def dense(self) -> Tensor:
        """A @ B, shape (m, n)."""
        return self.A @ self.B

    def __matmul__(self, other):
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
        if isinstance(other, Tensor):
            if other.dim() == 1:
                return (other @ self.A) @ self.B
            return FactoredMatrix(other @ self.A, self.B)
        return NotImplemented

    def _core(self) -> tuple[Tensor, Tensor, Tensor]:
        """Thin QR of both factors: A = Q_A R_A, Bᵀ = Q_B R_B, so M = Q_A (R_A R_Bᵀ) Q_Bᵀ."""
        Qa, Ra = torch.linalg.qr(self.A)
        Qb, Rb = torch.linalg.qr(self.B.T)
        return Qa, Ra @ Rb.T, Qb

    def svd(self) -> tuple[Tensor, Tensor, Tensor]:
        """Thin SVD M = U diag(S) Vᵀ from an r × r core; returns (U (m, k), S (k,), V (n, k))."""
        Qa, core, Qb = self._core()
        u, s, vh = torch.linalg.svd(core)
        return Qa @ u, s, Qb @ vh.T

    def singular_values(self) -> Tensor:
        return torch.linalg.svdvals(self._core()[1])

    def spectral_norm(self) -> Tensor:
        """‖A B‖₂, the largest singular value."""
        return self.singular_values().max()

    def frobenius_norm(self) -> Tensor:
        """‖A B‖_F = sqrt(tr(AᵀA · B Bᵀ)) by self-contraction, without forming A B."""
        return torch.sqrt(((self.A.T @ self.A) * (self.B @ self.B.T)).sum().clamp_min(0))

    def eigenvalues(self) -> Tensor:
        """Non-zero spectrum of a square A B from the small side: eig(B A), an r × r matrix (complex)."""
        if self.shape[0] != self.shape[1]:
            raise ValueError(f"eigenvalues need a square matrix, this one is {self.shape}")
        return torch.linalg.eigvals(self.B @ self.A)

    def symmetric(self) -> "FactoredSymmetric":
        """The symmetric part ½(M + Mᵀ) = L·C·Lᵀ with L = [A, Bᵀ] and C = ½[[0, I], [I, 0]]."""
        if self.shape[0] != self.shape[1]:
            raise ValueError(f"the symmetric part needs a square matrix, this one is {self.shape}")
        r = self.inner
        L = torch.cat([self.A, self.B.T], dim=1)  # (n, 2r)
        eye = torch.eye(r, dtype=L.dtype, device=L.device)
        zero = torch.zeros_like(eye)
        C = 0.5 * torch.cat([torch.cat([zero, eye], 1), torch.cat([eye, zero], 1)], 0)  # (2r, 2r)
        return FactoredSymmetric(L, C)

    def __repr__(self) -> str:
        return f"FactoredMatrix(shape={self.shape}, inner={self.inner}, dtype={self.A.dtype})"


class FactoredSymmetric:
    """A symmetric matrix S = L·C·Lᵀ (n × n) kept as L (n, r) and a symmetric core C (r, r).

    The eigendecomposition comes from the small side: L = Q R (thin QR), S = Q (R C Rᵀ) Qᵀ.
    """

    def __init__(self, L: Tensor, C: Tensor):
        _check_matrix("L", L)
        _check_matrix("C", C)
        if C.shape != (L.shape[1], L.shape[1]):
            raise ValueError(f"core C must be ({L.shape[1]}, {L.shape[1]}) for L of shape {tuple(L.shape)}, got {tuple(C.shape)}")
        if not torch.allclose(C, C.T, rtol=1e-6, atol=1e-12 * float(C.abs().max().clamp_min(1e-300))):
            raise ValueError("core C must be symmetric; pass ½(C + Cᵀ)")
        self.L, self.C = L, C

    @property
    def shape(self) -> tuple[int, int]:
        return (self.L.shape[0], self.L.shape[0])

    def dense(self) -> Tensor:
        return self.L @ self.C @ self.L.T

    def quadratic(self, x: Tensor) -> Tensor:
        """xᵀ S x for x of shape (..., n), returns (...)."""
        y = x @ self.L  # (..., r)
        return ((y @ self.C) * y).sum(-1)

    def eigh(self, k: int | None = None) -> Eigh:
        """Eigenpairs sorted by decreasing |μ| (the top k when given), from an r × r problem."""
        Q, R = torch.linalg.qr(self.L)
        mu, U = torch.linalg.eigh(R @ self.C @ R.T)
        order = torch.argsort(mu.abs(), descending=True)
        if k is not None:
            order = order[:k]
        return Eigh(values=mu[order], vectors=Q @ U[:, order])

    def spectral_norm(self) -> Tensor:
        return self.eigh(k=1).values.abs()[0]

    def frobenius_norm(self) -> Tensor:
        """‖L C Lᵀ‖_F = sqrt(tr(C G C G)), G = LᵀL, without densifying."""
        G = self.L.T @ self.L
        CG = self.C @ G
        return torch.sqrt((CG * CG.T).sum().clamp_min(0))

    def __repr__(self) -> str:
        return f"FactoredSymmetric(shape={self.shape}, rank<={self.L.shape[1]}, dtype={self.L.dtype})"


class FactoredBilinear:
    """The bilinear map y = P·((W x) ⊙ (V y)), i.e. the tensor B_aij = Σ_h P_ah W_hi V_hj.

    Shapes: P (m, h), W (h, n), V (h, n). Only the symmetric part ½(B_a + B_aᵀ) acts on x ⊗ x.
    """

    def __init__(self, P: Tensor, W: Tensor, V: Tensor):
        for name, x in (("P", P), ("W", W), ("V", V)):
            _check_matrix(name, x)
        if not (P.shape[1] == W.shape[0] == V.shape[0]) or W.shape[1] != V.shape[1]:
            raise ValueError(f"shapes must be P (m, h), W (h, n), V (h, n); got P {tuple(P.shape)}, "
                             f"W {tuple(W.shape)}, V {tuple(V.shape)}")
        self.P, self.W, self.V = P, W, V

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.P.shape[0], self.W.shape[1], self.W.shape[1])

    def __call__(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """B(x, y) = P((W x) ⊙ (V y)); y defaults to x. x, y: (..., n) -> (..., m)."""
        y = x if y is None else y
        return ((x @ self.W.T) * (y @ self.V.T)) @ self.P.T

    def dense(self) -> Tensor:
        """B as a dense (m, n, n) tensor (small models only)."""
        return torch.einsum("ah,hi,hj->aij", self.P, self.W, self.V)

    def interaction(self, u: Tensor) -> FactoredSymmetric:
        """Q(u) = ½ Σ_a u_a (B_a + B_aᵀ) = ½(Wᵀ D V + Vᵀ D W), D = diag(Pᵀu); so uᵀB(x, x) = xᵀ Q(u) x."""
        if u.shape != (self.P.shape[0],):
            raise ValueError(f"output direction u must have shape ({self.P.shape[0]},), got {tuple(u.shape)}")
        d = u @ self.P  # (h,)
        h = d.shape[0]
        L = torch.cat([self.W.T, self.V.T], dim=1)  # (n, 2h)
        D = torch.diag(d)
        zero = torch.zeros(h, h, dtype=d.dtype, device=d.device)
        C = 0.5 * torch.cat([torch.cat([zero, D], 1), torch.cat([D, zero], 1)], 0)  # (2h, 2h)
        return FactoredSymmetric(L, C)

    def frobenius_norm(self, symmetric: bool = True) -> Tensor:
        """‖B‖_F (or of its symmetric part) by self-contraction over the hidden index.

        ‖B‖² = Σ_hh' (PᵀP)_hh' (W Wᵀ)_hh' (V Vᵀ)_hh'; ⟨B, Bᵀ⟩ = Σ_hh' (PᵀP)_hh' (W Vᵀ)_hh' (V Wᵀ)_hh';
        ‖½(B + Bᵀ)‖² = ½(‖B‖² + ⟨B, Bᵀ⟩).
        """
        PP = self.P.T @ self.P
        full = (PP * (self.W @ self.W.T) * (self.V @ self.V.T)).sum()
        if not symmetric:
            return torch.sqrt(full.clamp_min(0))
        cross = (PP * (self.W @ self.V.T) * (self.V @ self.W.T)).sum()
        return torch.sqrt((0.5 * (full + cross)).clamp_min(0))

    def __repr__(self) -> str:
        return f"FactoredBilinear(shape={self.shape}, hidden={self.P.shape[1]}, dtype={self.P.dtype})"
