"""Bilinear / linear-attention transformers and their closed-form expansions."""

from .circuits import Circuits, CompositionScores, circuits, composition_scores
from .components import Component
from .config import BilinearConfig
from .expand import ComponentExpansion, HeadFactors, PathExpansion, PathTerm, Term, expand
from .expandable import NotExpandableError
from .factored import Eigh, FactoredBilinear, FactoredMatrix, FactoredSymmetric, InteractionEig
from .layers import BilinearMLP, LinearAttention
from .model import BilinearTransformer, load_model, save_model
from .prune import PruneResult, TermBounds, exhaustive_worst_case, prune, term_bounds, worst_case_error
from .tasks import Task, associative_recall, fixed_offset_accuracy, induction, modular_addition, repeated_tokens
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
    "Component",
    "NotExpandableError",
    "FactoredMatrix",
    "FactoredSymmetric",
    "FactoredBilinear",
    "Eigh",
    "InteractionEig",
    "circuits",
    "Circuits",
    "composition_scores",
    "CompositionScores",
    "prune",
    "term_bounds",
    "worst_case_error",
    "exhaustive_worst_case",
    "PruneResult",
    "TermBounds",
    "Task",
    "modular_addition",
    "repeated_tokens",
    "induction",
    "associative_recall",
    "fixed_offset_accuracy",
    "train",
    "accuracy",
    "TrainResult",
]
