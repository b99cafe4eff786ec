"""Bilinear / linear-attention transformers and their closed-form expansions."""

from .config import BilinearConfig
from .expand import (
    ComponentExpansion,
    HeadFactors,
    NotExpandableError,
    PathExpansion,
    PathTerm,
    Term,
    expand,
)
from .factored import Eigh, FactoredBilinear, FactoredMatrix, FactoredSymmetric
from .layers import BilinearMLP, LinearAttention
from .model import BilinearTransformer, load_model, save_model
from .prune import PruneResult, TermBounds, exhaustive_worst_case, prune, term_bounds, worst_case_error
from .tasks import Task, modular_addition, repeated_tokens
from .train import TrainResult, accuracy, train

__all__ = [
    "BilinearConfig",
    "BilinearMLP",
    "LinearAttention",
    "BilinearTransformer",
    "save_model",
    "load_model",
    "expand",
    "ComponentExpansion",
    "PathExpansion",
    "Term",
    "PathTerm",
    "HeadFactors",
    "NotExpandableError",
    "FactoredMatrix",
    "FactoredSymmetric",
    "FactoredBilinear",
    "Eigh",
    "prune",
    "term_bounds",
    "worst_case_error",
    "exhaustive_worst_case",
    "PruneResult",
    "TermBounds",
    "Task",
    "modular_addition",
    "repeated_tokens",
    "train",
    "accuracy",
    "TrainResult",
]
