"""The exact spectrum of a small curvature operator: dense matrix and symmetric eigendecomposition.

Ground truth for the matrix-free tools (:mod:`slt_interp.estimators.lanczos`, :mod:`slt_interp.estimators.slq`) and the
``method="dense"`` route of :func:`slt_interp.estimators.llc_bounds`. The d×d matrix is built from d operator
products and symmetrised, ½(A + Aᵀ), before ``torch.linalg.eigh`` in float64.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .curvature import CurvatureOperator

__all__ = ["Spectrum", "dense_spectrum"]


@dataclass(frozen=True)
class Spectrum:
    """All eigenvalues (ascending) and optionally eigenvectors of a symmetric operator, in float64.

    Attributes:
        eigenvalues: shape (d,), ascending, float64 on the CPU.
        eigenvectors: shape (d, d), columns, float64 on the operator's device; None if not requested.
        asymmetry: ‖A − Aᵀ‖_F / ‖A‖_F of the assembled matrix (round-off of the products; ≈ 1e-16 in float64).
        num_matvecs: operator products used (d).
    """

    eigenvalues: Tensor
    eigenvectors: Tensor | None = field(repr=False)
    asymmetry: float
    num_matvecs: int

    @property
    def dim(self) -> int:
        """d, the number of eigenvalues."""
        return int(self.eigenvalues.numel())

    def count_above(self, threshold: float) -> int:
        """#{i: λ_i > threshold}.

        Args:
            threshold: the threshold τ.

        Returns:
            The number of eigenvalues above τ.
        """
        return int((self.eigenvalues > threshold).sum())


def dense_spectrum(op: CurvatureOperator, *, eigenvectors: bool = True, chunk_size: int = 128) -> Spectrum:
    """Assemble the operator densely (float64) and diagonalise it with ``torch.linalg.eigh``.

    Args:
        op: a :class:`CurvatureOperator` with d ≲ 10⁴.
        eigenvectors: also return the eigenvectors.
        chunk_size: columns per block product while assembling.

    Returns:
        :class:`Spectrum`.

    Raises:
        ValueError: the operator is too large to assemble (see :meth:`CurvatureOperator.to_dense`).

    Example:
        >>> from slt_interp.estimators import HessianOperator
        >>> op = HessianOperator(lambda w: (w[0] ** 2 + 3 * w[1] ** 2) / 2, torch.zeros(2, dtype=torch.float64))
        >>> dense_spectrum(op).eigenvalues
        tensor([1., 3.], dtype=torch.float64)
    """
    before = op.num_matvecs
    A = op.to_dense(chunk_size=chunk_size).to(torch.float64)
    norm = float(A.norm())
    asym = float((A - A.T).norm()) / norm if norm > 0 else 0.0
    A = (A + A.T) / 2
    if eigenvectors:
        evals, evecs = torch.linalg.eigh(A)
    else:
        evals, evecs = torch.linalg.eigvalsh(A), None
    return Spectrum(evals.cpu(), evecs, asym, op.num_matvecs - before)
