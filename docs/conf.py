"""Sphinx configuration: the API reference of slt_interp, built from its docstrings.

Build (warnings are errors, as in tests/test_docs.py)::

    sphinx-build -W -q -b html docs docs/_build/html
"""
import re

project = "slt-interp"
author = "slt-interp developers"
copyright = "2026, slt-interp developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style docstrings (Args:, Returns:, Raises:)
    "sphinx.ext.mathjax",
    "myst_parser",  # docs/theory.md stays Markdown
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]

# autodoc: document what each package lists in __all__, in source order, signatures with type hints
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True, "no-value": True}

# napoleon: Google style only; "Attributes:" as :ivar: fields, so dataclass fields are not described twice
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

myst_heading_anchors = 3
html_theme = "alabaster"


# The docstrings write absolute values and norms as |x|, which reStructuredText would read as a
# substitution reference. Escape every bar outside inline literals (``...``), literal blocks (after
# "::") and doctest blocks (">>>" up to the next blank line).
_INLINE_LITERAL = re.compile(r"(``.+?``)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _escape_bars(app, what, name, obj, options, lines):
    literal_indent = None  # indentation of the line that opened a literal block
    doctest = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if literal_indent is not None and stripped and _indent(line) <= literal_indent:
            literal_indent = None
        if stripped.startswith(">>>"):
            doctest = True
        elif not stripped:
            doctest = False
        if literal_indent is None and not doctest:
            parts = _INLINE_LITERAL.split(line)
            lines[i] = "".join(p if p.startswith("``") else p.replace("|", r"\|") for p in parts)
        if literal_indent is None and stripped.endswith("::"):
            literal_indent = _indent(line)


def setup(app):
    app.connect("autodoc-process-docstring", _escape_bars)
