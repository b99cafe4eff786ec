"""A catalogue of standard sparsity priors and penalties (docs/theory.md §4).

Each entry is derived by :func:`~slt_interp.theory.priors.penalty_from_prior` or
:func:`~slt_interp.theory.priors.prior_from_penalty`.

Independent (one-variable) entries: Laplace ↔ |a| (Tibshirani 1996), exponential on a ≥ 0 ↔ a
(ReLU-L1 SAEs), Gaussian ↔ a², Cauchy ↔ log(1 + a²/s²), Student-t ↔ ((ν+1)/2)·log(1 + a²/(νs²)),
generalised Gaussian ↔ |a|^p, log(1 + |a|) ↔ (1 + |a|)^(−s) (proper iff s > 1), Lomax on a ≥ 0 ↔
(α + 1)·log(1 + a/s), spike-and-slab ↔ L1 + L0 (Mitchell & Beauchamp 1988; JumpReLU SAEs, Rajamanoharan
et al. 2024, arXiv 2407.14435).

Dependent (non-factorised) entries in d variables: group lasso ‖a‖₂ (Yuan & Lin 2006; co-activation),
exclusive lasso (Σ|a_i|)² (Zhou, Jin & Hoi 2010; competition), ‖a‖_{1/2} = (Σ√|a_i|)², the product
Π(1 + |a_i|), and the k-sparse support constraint ‖a‖₀ ≤ k whose prox is TopK (Makhzani & Frey 2013;
Gao et al. 2024, arXiv 2406.04093).

``CATALOGUE`` maps a name to a zero-argument factory with default sizes (d = 3, k = 1).
"""
from __future__ import annotations

import sympy as sp

from .priors import PriorPenalty, penalty_from_prior, prior_from_penalty
from .proximal import ProxOperator, block_soft_threshold, topk_projection

__all__ = [
    "laplace", "exponential", "gaussian", "half_normal", "cauchy", "student_t", "generalized_gaussian", "log_penalty",
    "lomax", "spike_and_slab", "group_lasso", "exclusive_lasso", "half_norm", "product_penalty",
    "k_sparse", "CATALOGUE",
]

A = sp.Symbol("a", real=True)
X = sp.Symbol("a", nonnegative=True)
LAM = sp.Symbol("lambda", positive=True)
S = sp.Symbol("s", positive=True)
NU = sp.Symbol("nu", positive=True)
P = sp.Symbol("p", positive=True)
ALPHA = sp.Symbol("alpha", positive=True)
PI0 = sp.Symbol("pi_0", positive=True)


def _coords(d: int):
    if d < 2:
        raise ValueError(f"a dependent prior needs d ≥ 2 variables, got d = {d}")
    return sp.symbols(f"a1:{d + 1}", real=True)


def laplace() -> PriorPenalty:
    """Laplace prior (λ/2)·e^{−λ|a|} ↔ the L1 penalty λ|a| (Tibshirani 1996).

    Z = 2/λ, proper.

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.
    """
    return penalty_from_prior(LAM / 2 * sp.exp(-LAM * sp.Abs(A)), [A], parameters=[LAM], source="Laplace ↔ L1")


def exponential() -> PriorPenalty:
    """Exponential prior λ·e^{−λa} on a ≥ 0 ↔ λa, the L1 penalty of ReLU SAEs.

    Z = 1/λ.

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.
    """
    return penalty_from_prior(LAM * sp.exp(-LAM * X), [X], parameters=[LAM], source="exponential on a ≥ 0 ↔ L1")


def half_normal() -> PriorPenalty:
    """Half-normal prior √(2/(πs²))·e^{−a²/(2s²)} on a ≥ 0 ↔ a²/(2s²).

    Z = s·√(π/2).

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.
    """
    return penalty_from_prior(sp.sqrt(2 / (sp.pi * S**2)) * sp.exp(-X**2 / (2 * S**2)), [X], parameters=[S],
                              source="half-normal on a ≥ 0 ↔ L2²")


def gaussian() -> PriorPenalty:
    """Gaussian prior N(0, s²) ↔ the L2² penalty a²/(2s²).

    Z = s·√(2π).

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.
    """
    return penalty_from_prior(sp.exp(-A**2 / (2 * S**2)) / sp.sqrt(2 * sp.pi * S**2), [A], parameters=[S],
                              source="Gaussian ↔ L2²")


def cauchy() -> PriorPenalty:
    """Cauchy prior 1/(πs(1 + a²/s²)) ↔ log(1 + a²/s²) (tail index 2).

    Z = πs.

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.
    """
    return penalty_from_prior(1 / (sp.pi * S * (1 + A**2 / S**2)), [A], parameters=[S], source="Cauchy")


def student_t() -> PriorPenalty:
    """Student-t prior with ν degrees of freedom and scale s ↔ ((ν + 1)/2)·log(1 + a²/(νs²)).

    Z = √(νπ)·s·Γ(ν/2)/Γ((ν + 1)/2), tail index ν + 1.

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.
    """
    dens = sp.gamma((NU + 1) / 2) / (sp.sqrt(NU * sp.pi) * S * sp.gamma(NU / 2)) * (1 + A**2 / (NU * S**2)) ** (-(NU + 1) / 2)
    return penalty_from_prior(dens, [A], parameters=[NU, S], source="Student-t")


def generalized_gaussian() -> PriorPenalty:
    """Generalised Gaussian prior ∝ e^{−|a/s|^p} ↔ the penalty |a/s|^p.

    Z = 2s·Γ(1 + 1/p). For p < 1 the penalty has a cusp at 0, where its torch gradient is the
    subgradient 0.

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.
    """
    return prior_from_penalty(sp.Abs(A / S) ** P, [A], parameters=[S, P], source="generalised Gaussian ↔ |a|^p")


def log_penalty() -> PriorPenalty:
    """The penalty s·log(1 + |a|) ↔ (1 + |a|)^(−s), a Laplacian scale mixture.

    proper iff s > 1 (tail index s), Z = 2/(s − 1).

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.
    """
    return prior_from_penalty(sp.log(1 + sp.Abs(A)), [A], strength=S,
                              source="log(1 + |a|) ↔ (1 + |a|)^(−s), a Laplacian scale mixture")


def lomax() -> PriorPenalty:
    """Lomax (Pareto II) prior (α/s)(1 + a/s)^(−(α+1)) on a ≥ 0 ↔ (α + 1)·log(1 + a/s): a heavy tail.

    Z = s/α, tail index α + 1.

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.
    """
    dens = ALPHA / S * (1 + X / S) ** (-(ALPHA + 1))
    return penalty_from_prior(dens, [X], parameters=[ALPHA, S], source="Lomax (Pareto II) on a ≥ 0: heavy tail")


def spike_and_slab() -> PriorPenalty:
    """Spike-and-slab π₀·δ₀ + (1 − π₀)·λe^{−λa} on a ≥ 0 ↔ the penalty L1 + L0.

    L0 weight log(π₀/((1 − π₀)λ)), P(a = 0) = π₀. Mitchell & Beauchamp 1988; JumpReLU SAEs,
    Rajamanoharan et al. 2024, arXiv 2407.14435.

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.
    """
    dens = PI0 * sp.DiracDelta(X) + (1 - PI0) * LAM * sp.exp(-LAM * X)
    return penalty_from_prior(dens, [X], parameters=[PI0, LAM], source="spike-and-slab ↔ L1 + L0")


def group_lasso(d: int = 3) -> PriorPenalty:
    """Group lasso ‖a‖₂ = √(Σ a_i²) over d latents (Yuan & Lin 2006): co-activation.

    Its prox is the block soft threshold.

    Args:
        d: the group size (≥ 2).

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.

    Raises:
        ValueError: d < 2.
    """
    a = _coords(d)
    r = prior_from_penalty(sp.sqrt(sum(v**2 for v in a)), a, source="group lasso ‖a‖₂: co-activation")
    prox = ProxOperator(r.penalty, r.variables, r.support, "block soft threshold",
                        special=lambda v, t, _values: block_soft_threshold(v, t, d))
    return _replace(r, prox=prox)


def exclusive_lasso(d: int = 3) -> PriorPenalty:
    """Exclusive lasso (Σ|a_i|)² over d latents (Zhou, Jin & Hoi 2010): competition.

    Args:
        d: the group size (≥ 2).

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.

    Raises:
        ValueError: d < 2.
    """
    a = _coords(d)
    return prior_from_penalty(sum(sp.Abs(v) for v in a) ** 2, a, source="exclusive lasso (Σ|a_i|)²: competition")


def half_norm(d: int = 3) -> PriorPenalty:
    """The quasi-norm ‖a‖_{1/2} = (Σ√|a_i|)² over d latents: competition.

    Its torch gradient at a_i = 0 is the subgradient 0 in that coordinate (slope ±∞).

    Args:
        d: the group size (≥ 2).

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.

    Raises:
        ValueError: d < 2.
    """
    a = _coords(d)
    return prior_from_penalty(sum(sp.sqrt(sp.Abs(v)) for v in a) ** 2, a, source="‖a‖_{1/2}: competition")


def product_penalty(d: int = 3) -> PriorPenalty:
    """The product Π(1 + |a_i|) over d latents: competition (∂²ρ/∂a_i∂a_j = 1 on the orthant).

    A different prior from Σ log(1 + |a_i|), which has the same level sets.

    Args:
        d: the group size (≥ 2).

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.

    Raises:
        ValueError: d < 2.
    """
    a = _coords(d)
    return prior_from_penalty(sp.Mul(*[1 + sp.Abs(v) for v in a]), a,
                              source="product Π(1 + |a_i|): not Σ log(1 + |a_i|); competition")


def k_sparse(d: int = 3, k: int = 1) -> PriorPenalty:
    """The constraint ‖a‖₀ ≤ k: ρ = 0 on k-sparse vectors, +∞ elsewhere; prox = TopK (a projection).

    Its prior is uniform over the k-sparse vectors (a flat slab on each support): improper, and not
    separable (the supports compete). Built directly: the penalty is not differentiable. TopK SAEs:
    Makhzani & Frey 2013; Gao et al. 2024, arXiv 2406.04093.

    Args:
        d: the group size.
        k: the number of non-zeros allowed per group (1 ≤ k < d).

    Returns:
        The :class:`~slt_interp.theory.priors.PriorPenalty`.

    Raises:
        ValueError: k outside 1 ≤ k < d.
    """
    if not 1 <= k < d:
        raise ValueError(f"need 1 ≤ k < d for a k-sparse constraint, got k = {k}, d = {d}")
    a = _coords(d)
    count = sum(sp.sign(sp.Abs(v)) for v in a)  # ‖a‖₀: sign(|a_i|) is 1 off zero, 0 at zero
    penalty = sp.Piecewise((0, count <= k), (sp.oo, True))
    prox = ProxOperator(penalty, a, "real", "top-k projection",
                        special=lambda v, t, _values: topk_projection(v, k, group=d))
    return PriorPenalty(
        variables=a, parameters=(), penalty=penalty, density=sp.Piecewise((1, count <= k), (0, True)),
        dropped_constant=sp.Integer(0), support="real", slab_penalty=penalty, l0_weight=None,
        zero_probability=None, normaliser=None, proper=False, proper_condition=sp.false, separable=False,
        coupling="competition", coupling_derivative=None, coupling_proven=True, prox=prox,
        notes=("the coupling is combinatorial (activating one latent can forbid others), not a derivative",),
        source=f"k-sparse support ‖a‖₀ ≤ {k} ↔ TopK",
    )


def _replace(r: PriorPenalty, **changes) -> PriorPenalty:
    from dataclasses import replace

    return replace(r, **changes)


CATALOGUE = {
    "laplace": laplace,
    "exponential": exponential,
    "gaussian": gaussian,
    "half_normal": half_normal,
    "cauchy": cauchy,
    "student_t": student_t,
    "generalized_gaussian": generalized_gaussian,
    "log_penalty": log_penalty,
    "lomax": lomax,
    "spike_and_slab": spike_and_slab,
    "group_lasso": group_lasso,
    "exclusive_lasso": exclusive_lasso,
    "half_norm": half_norm,
    "product_penalty": product_penalty,
    "k_sparse": k_sparse,
}
