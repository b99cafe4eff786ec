"""Report sections, one module each (see :mod:`experiments.report`)."""
