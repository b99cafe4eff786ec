"""Numerical estimation on torch models: curvature, LLC bounds and SGLD estimators."""
from .calibration import StepSizeCalibration, calibrate_step_size
from .diagnostics import effective_sample_size, mean_std_err, split_rhat
from .llc_estimate import (
    LLCDiagnostics,
    LLCEstimate,
    SGLDDivergenceError,
    SGLDSettings,
    estimate_behavioral_llc,
    estimate_llc,
    estimate_potential_llc,
)
from .higher_order import QuarticAnalysis, analyze_quartic, bounds_from_quartic, sharpen_bounds
from .losses import behavioral_kl, behavioral_mse
from .sgld import mala_acceptance, sgld_step
from .taylor import TaylorMode, directional_derivatives, fourth_derivative, third_derivative_vector

__all__ = [
    "QuarticAnalysis",
    "TaylorMode",
    "analyze_quartic",
    "bounds_from_quartic",
    "directional_derivatives",
    "fourth_derivative",
    "sharpen_bounds",
    "third_derivative_vector",
    "LLCDiagnostics",
    "LLCEstimate",
    "SGLDDivergenceError",
    "SGLDSettings",
    "StepSizeCalibration",
    "calibrate_step_size",
    "effective_sample_size",
    "estimate_behavioral_llc",
    "estimate_llc",
    "estimate_potential_llc",
    "mala_acceptance",
    "mean_std_err",
    "sgld_step",
    "split_rhat",
    "behavioral_kl",
    "behavioral_mse",
]
