"""Numerical estimation on torch models: curvature, LLC bounds and SGLD estimators."""
from .calibration import StepSizeCalibration, calibrate_step_size
from .diagnostics import effective_sample_size, geweke_z, mean_std_err, split_rhat
from .llc_estimate import (
    ConvergenceTargets,
    LLCConvergenceWarning,
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
from .batch_loss import BatchLoss, batch_loss
from .curvature import CurvatureOperator, GaussNewtonOperator, HessianOperator
from .curvature_plots import plot_rank_curve, plot_spectrum
from .lanczos import LanczosResult, lanczos
from .llc_bounds import LLCBounds, NotAMinimumError, NotAMinimumWarning, llc_bounds
from .distributed import ShardedLoss
from .flat import FlatProblem, flatten
from .model_losses import DataLoss, behavioral_loss, reference_outputs, training_loss
from .rank_curve import RankCurve, rank_curve, rank_curve_vs_n, threshold_for_sample_size
from .slq import EigenvalueCount, SpectralQuadrature, count_eigenvalues, stochastic_lanczos_quadrature
from .spectrum import Spectrum, dense_spectrum
from .samplers import MALAKernel, RMSPropSGLDKernel, SamplerState, SGLDKernel, StepInfo
from .sgld import mala_acceptance, sgld_step
from .taylor import TaylorMode, directional_derivatives, fourth_derivative, third_derivative_vector

__all__ = [
    "BatchLoss",
    "batch_loss",
    "CurvatureOperator",
    "GaussNewtonOperator",
    "HessianOperator",
    "plot_rank_curve",
    "plot_spectrum",
    "LanczosResult",
    "lanczos",
    "LLCBounds",
    "NotAMinimumError",
    "NotAMinimumWarning",
    "llc_bounds",
    "DataLoss",
    "FlatProblem",
    "ShardedLoss",
    "behavioral_loss",
    "flatten",
    "reference_outputs",
    "training_loss",
    "RankCurve",
    "rank_curve",
    "rank_curve_vs_n",
    "threshold_for_sample_size",
    "EigenvalueCount",
    "SpectralQuadrature",
    "count_eigenvalues",
    "stochastic_lanczos_quadrature",
    "Spectrum",
    "dense_spectrum",
    "QuarticAnalysis",
    "TaylorMode",
    "analyze_quartic",
    "bounds_from_quartic",
    "directional_derivatives",
    "fourth_derivative",
    "sharpen_bounds",
    "third_derivative_vector",
    "ConvergenceTargets",
    "LLCConvergenceWarning",
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
    "geweke_z",
    "mala_acceptance",
    "MALAKernel",
    "RMSPropSGLDKernel",
    "SamplerState",
    "SGLDKernel",
    "StepInfo",
    "mean_std_err",
    "sgld_step",
    "split_rhat",
    "behavioral_kl",
    "behavioral_mse",
]
