"""Exact and symbolic results: learning coefficients from theorems, and the zoo of ground truths."""
from . import zoo
from .learning_coefficient import LearningCoefficient
from .normal_crossing import normal_crossing
from .reduced_rank import reduced_rank_regression

__all__ = [
    "LearningCoefficient",
    "normal_crossing",
    "reduced_rank_regression",
    "zoo",
]
