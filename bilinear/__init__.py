"""Bilinear / linear-attention transformers and their closed-form expansions."""

__all__: list[str] = []
