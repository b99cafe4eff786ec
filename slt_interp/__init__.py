"""slt_interp: singular learning theory and interpretability as checked numerical tools.

Subpackages (imported on first use of ``slt_interp.<name>``, or directly):

- :mod:`slt_interp.theory` — exact learning coefficients, the zoo of known-λ models and potentials,
  sparsity penalties derived from priors;
- :mod:`slt_interp.estimators` — curvature operators, LLC bounds from the Taylor expansion, SGLD / MALA
  estimators of the LLC and the behavioral LLC;
- :mod:`slt_interp.bilinear` — bilinear / linear-attention transformers and their closed-form expansion.

The formulas behind every routine are stated once, with references, in ``docs/theory.md``.
"""
import importlib

__version__ = "0.1.0"
__all__ = ["bilinear", "estimators", "theory"]


def __getattr__(name):
    # Lazy subpackages: ``import slt_interp`` stays light; ``slt_interp.theory`` imports on first use.
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
