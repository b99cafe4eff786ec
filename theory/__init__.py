"""Exact and symbolic results: learning coefficients from theorems, and the zoo of ground truths."""
from . import zoo
from .finite_n import FiniteNTarget, finite_n_target
from .attribution_sparsity import attribution, attribution_penalty, exact_attribution_penalty
from .competition_penalty import contiguous_groups, exclusive_group_penalty, product_code_penalty
from .deep_linear import deep_linear_network
from .fit_prior import FamilyFit, PriorFit, fit_prior
from .learning_coefficient import LearningCoefficient
from .newton_polyhedron import DegenerateError, NewtonPolyhedronResult, newton_polyhedron
from .normal_crossing import normal_crossing
from .prior_catalogue import CATALOGUE as _CATALOGUE
from .priors import PriorPenalty, l0, penalty_from_prior, prior_from_penalty
from .proximal import ProxOperator
from .prox_encoder import JumpReLU, ProxEncoder, heaviside_ste, jump_ste
from .reduced_rank import reduced_rank_regression

#: The standard sparsity priors and penalties (docs/theory.md §4): name → zero-argument factory of a
#: :class:`PriorPenalty` (:mod:`slt_interp.theory.prior_catalogue`).
PRIOR_CATALOGUE = _CATALOGUE

__all__ = [
    "attribution",
    "attribution_penalty",
    "contiguous_groups",
    "exact_attribution_penalty",
    "exclusive_group_penalty",
    "product_code_penalty",
    "FamilyFit",
    "PRIOR_CATALOGUE",
    "PriorFit",
    "PriorPenalty",
    "ProxOperator",
    "ProxEncoder",
    "JumpReLU",
    "heaviside_ste",
    "jump_ste",
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
