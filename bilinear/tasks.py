"""Toy tasks generated locally (no downloads), as (tokens, targets, loss mask) triples.

* Modular addition (Power et al. 2022, arXiv 2201.02177; Nanda et al. 2023, arXiv 2301.05217):
  sequences [a, b, =] with target (a + b) mod p at the last position.
* Induction on repeated random tokens (Olsson et al. 2022, arXiv 2209.11895): a random sequence of
  length m followed by its repetition; the next token is predictable in the second half only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Task", "modular_addition", "repeated_tokens"]


@dataclass(frozen=True)
class Task:
    """A supervised next-token data set.

    Attributes:
        name: readable name.
        tokens: (N, T) int64 inputs.
        targets: (N, T) int64 next-token targets (arbitrary where ``mask`` is False).
        mask: (N, T) bool, the positions that count in the loss and the accuracy.
        vocab_size: tokens lie in [0, vocab_size).
    """

    name: str
    tokens: Tensor
    targets: Tensor
    mask: Tensor
    vocab_size: int

    @property
    def n_ctx(self) -> int:
        return self.tokens.shape[1]

    def split(self, train_fraction: float, *, seed: int) -> tuple["Task", "Task"]:
        """Random train / test split of the sequences (seeded)."""
        if not 0 < train_fraction < 1:
            raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction!r}")
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(self.tokens.shape[0], generator=g)
        k = int(round(train_fraction * len(perm)))
        parts = []
        for idx in (perm[:k], perm[k:]):
            parts.append(Task(self.name, self.tokens[idx], self.targets[idx], self.mask[idx], self.vocab_size))
        return parts[0], parts[1]


def modular_addition(p: int) -> Task:
    """All p² sequences [a, b, p] (token p is "="), target (a + b) mod p at the last position.

    Vocabulary p + 1, context 3.
    """
    if not isinstance(p, int) or p < 2:
        raise ValueError(f"modulus p must be an int >= 2, got {p!r}")
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.flatten(), b.flatten()
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)  # (p², 3)
    targets = torch.zeros_like(tokens)
    targets[:, -1] = (a + b) % p
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, -1] = True
    return Task(f"modular addition mod {p}", tokens, targets, mask, p + 1)


def repeated_tokens(vocab_size: int, half_length: int, num_sequences: int, *, seed: int) -> Task:
    """Random tokens x_1..x_m followed by x_1..x_m; targets are next tokens, counted in the second half.

    Context 2m; the positions m..2m-2 (predicting x_2..x_m of the repeat) need induction.
    """
    if vocab_size < 2 or half_length < 2 or num_sequences < 1:
        raise ValueError("need vocab_size >= 2, half_length >= 2, num_sequences >= 1; got "
                         f"{vocab_size}, {half_length}, {num_sequences}")
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(0, vocab_size, (num_sequences, half_length), generator=g)
    tokens = torch.cat([first, first], dim=1)  # (N, 2m)
    targets = torch.zeros_like(tokens)
    targets[:, :-1] = tokens[:, 1:]
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, half_length:-1] = True
    return Task(f"induction on repeated tokens (V={vocab_size}, m={half_length})", tokens, targets, mask, vocab_size)
