"""Runnable studies that produce the validation report (``python -m experiments``).

Never imported by library code.
"""
