"""Numerical estimation on torch models: curvature, LLC bounds and SGLD estimators."""
from .losses import behavioral_kl, behavioral_mse

__all__ = [
    "behavioral_kl",
    "behavioral_mse",
]
