"""Exact and symbolic results: learning coefficients from theorems, and the zoo of ground truths."""
from . import zoo
from .finite_n import FiniteNTarget, finite_n_target
from .deep_linear import deep_linear_network
from .fit_prior import FamilyFit, PriorFit, fit_prior
from .learning_coefficient import LearningCoefficient
from .newton_polyhedron import DegenerateError, NewtonPolyhedronResult, newton_polyhedron
from .normal_crossing import normal_crossing
from .prior_catalogue import CATALOGUE as _CATALOGUE
from .priors import PriorPenalty, l0, penalty_from_prior, prior_from_penalty
from .proximal import ProxOperator
from .reduced_rank import reduced_rank_regression

#: The standard sparsity priors and penalties (docs/theory.md §4): name → zero-argument factory of a
#: :class:`PriorPenalty` (:mod:`slt_interp.theory.prior_catalogue`).
PRIOR_CATALOGUE = _CATALOGUE

__all__ = [
    "FamilyFit",
    "PRIOR_CATALOGUE",
    "PriorFit",
    "PriorPenalty",
    "ProxOperator",
    "fit_prior",
    "l0",
    "penalty_from_prior",
    "prior_from_penalty",
    "FiniteNTarget",
    "finite_n_target",
    "DegenerateError",
    "NewtonPolyhedronResult",
    "deep_linear_network",
    "newton_polyhedron",
    "LearningCoefficient",
    "normal_crossing",
    "reduced_rank_regression",
    "zoo",
]
