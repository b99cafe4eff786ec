"""Toy tasks generated locally (no downloads), as (tokens, targets, loss mask) triples.

* Modular addition (Power et al. 2022, arXiv 2201.02177; Nanda et al. 2023, arXiv 2301.05217):
  sequences [a, b, =] with target (a + b) mod p at the last position.
* Induction on repeated random tokens (Olsson et al. 2022, arXiv 2209.11895): a random sequence of
  length m followed by its repetition; the next token is predictable in the second half only. With a
  fixed m this can be solved by copying the token m − 1 back (a positional shortcut), so
* :func:`induction` draws the period and the offset of the repeated block at random per sequence: only
  "find the previous occurrence of the current token and copy its successor" solves it, and
  :func:`fixed_offset_accuracy` measures how well any positional copier does (near chance).
* In-context associative recall (Ba et al. 2016, arXiv 1610.06258; Zoology, Arora et al. 2023, arXiv
  2312.04927): key-value pairs then a query key, answer its value; solved by an induction head (attend
  to the position after the query's earlier occurrence), again with no fixed offset.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Task", "modular_addition", "repeated_tokens", "induction", "associative_recall", "fixed_offset_accuracy"]


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
        """Sequence length T."""
        return self.tokens.shape[1]

    def split(self, train_fraction: float, *, seed: int) -> tuple["Task", "Task"]:
        """Random train / test split of the sequences (seeded).

        Args:
            train_fraction: share of the sequences in the training part, in (0, 1).
            seed: seeds the permutation (explicit generator).

        Returns:
            (train, test) tasks.

        Raises:
            ValueError: ``train_fraction`` outside (0, 1).
        """
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

    Vocabulary p + 1, context 3 (Power et al. 2022, arXiv 2201.02177).

    Args:
        p: the modulus (≥ 2).

    Returns:
        The :class:`Task`.

    Raises:
        ValueError: p is not an int ≥ 2.
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

    Context 2m; the positions m..2m-2 (predicting x_2..x_m of the repeat) need induction (Olsson et
    al. 2022, arXiv 2209.11895).

    Args:
        vocab_size: tokens are drawn uniformly from [0, vocab_size).
        half_length: m, the length of the random half.
        num_sequences: number of sequences N.
        seed: seeds the tokens (explicit generator).

    Returns:
        The :class:`Task`.

    Raises:
        ValueError: vocab_size < 2, half_length < 2 or num_sequences < 1.
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


def induction(vocab_size: int, n_ctx: int, num_sequences: int, *, periods, seed: int) -> Task:
    """Induction with a random period and a random offset per sequence (no positional shortcut).

    Each sequence is noise, then a block of p distinct random tokens starting at a random offset o,
    then the same block again, then noise (all noise uniform on the vocabulary). The period p is drawn
    from ``periods`` with probability ∝ 1/(p − 1), so every period contributes the same expected number
    of scored positions. Scored positions t ∈ [o + p, o + 2p − 2], with target x_{t+1} = x_{t+1−p}: the
    successor of the previous occurrence of the current token x_t (the block tokens are distinct, so
    that occurrence is unique inside the block). A copier "predict the token k − 1 back" is right only
    on sequences with p = k, or by chance: see :func:`fixed_offset_accuracy` (Olsson et al. 2022, arXiv
    2209.11895, for induction heads).

    Args:
        vocab_size: V; tokens are drawn from [0, V) (V ≥ max period).
        n_ctx: sequence length T (≥ 2·max period + 1).
        num_sequences: N.
        periods: the periods p to draw from (ints ≥ 2); use disjoint sets for training and testing to
            check that a model did not learn one offset.
        seed: seeds everything (explicit generator).

    Returns:
        The :class:`Task`.

    Raises:
        ValueError: a period < 2, a vocabulary smaller than a period, a context too short for two blocks,
            or num_sequences < 1.
    """
    periods = sorted({int(p) for p in periods})
    if not periods or periods[0] < 2:
        raise ValueError(f"periods must be ints >= 2, got {periods}")
    if vocab_size < periods[-1]:
        raise ValueError(f"vocab_size {vocab_size} < period {periods[-1]}: a block needs distinct tokens; raise "
                         "vocab_size or lower the periods")
    if n_ctx < 2 * periods[-1] + 1:
        raise ValueError(f"n_ctx {n_ctx} too short for two blocks of period {periods[-1]} (need >= "
                         f"{2 * periods[-1] + 1})")
    if num_sequences < 1:
        raise ValueError(f"num_sequences must be >= 1, got {num_sequences}")
    g = torch.Generator().manual_seed(seed)
    weights = torch.tensor([1.0 / (p - 1) for p in periods], dtype=torch.float64)
    period = torch.tensor(periods)[torch.multinomial(weights, num_sequences, replacement=True, generator=g)]
    tokens = torch.randint(0, vocab_size, (num_sequences, n_ctx), generator=g)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    offsets = torch.empty(num_sequences, dtype=torch.int64)
    for i in range(num_sequences):
        p = int(period[i])
        o = int(torch.randint(0, n_ctx - 2 * p + 1, (1,), generator=g))
        block = torch.randperm(vocab_size, generator=g)[:p]
        tokens[i, o:o + p] = block
        tokens[i, o + p:o + 2 * p] = block
        mask[i, o + p:o + 2 * p - 1] = True
        offsets[i] = o
    targets = torch.zeros_like(tokens)
    targets[:, :-1] = tokens[:, 1:]
    name = f"induction, random period in {periods} and offset (V={vocab_size}, T={n_ctx})"
    return Task(name, tokens, targets, mask, vocab_size)


def associative_recall(num_keys: int, num_values: int, num_pairs: int, num_sequences: int, *, seed: int) -> Task:
    """In-context associative recall: k₁ v₁ k₂ v₂ … k_n v_n q, answer the value paired with q.

    Keys are tokens [0, num_keys) (distinct within a sequence), values [num_keys, num_keys + num_values),
    the query q is one of the sequence's keys, chosen uniformly; the last position is scored. Context
    2·num_pairs + 1. Ba et al. 2016 (arXiv 1610.06258); multi-query form in Zoology (Arora et al. 2023,
    arXiv 2312.04927). Known solution: an induction head (previous-token head, then attend from q to the
    position after q's earlier occurrence and copy it); the queried pair's position is uniform, so no
    fixed offset solves it.

    Args:
        num_keys: key vocabulary (≥ num_pairs).
        num_values: value vocabulary (≥ 2).
        num_pairs: n pairs per sequence (≥ 1).
        num_sequences: N.
        seed: seeds everything (explicit generator).

    Returns:
        The :class:`Task` (vocabulary num_keys + num_values).

    Raises:
        ValueError: fewer keys than pairs, fewer than 2 values, or num_pairs / num_sequences < 1.
    """
    if num_pairs < 1 or num_sequences < 1 or num_values < 2 or num_keys < num_pairs:
        raise ValueError(f"need num_pairs >= 1, num_sequences >= 1, num_values >= 2 and num_keys >= num_pairs; got "
                         f"{num_keys} keys, {num_values} values, {num_pairs} pairs, {num_sequences} sequences")
    g = torch.Generator().manual_seed(seed)
    keys = torch.argsort(torch.rand(num_sequences, num_keys, generator=g), dim=1)[:, :num_pairs]  # distinct
    values = num_keys + torch.randint(0, num_values, (num_sequences, num_pairs), generator=g)
    which = torch.randint(0, num_pairs, (num_sequences,), generator=g)
    rows = torch.arange(num_sequences)
    tokens = torch.empty(num_sequences, 2 * num_pairs + 1, dtype=torch.int64)
    tokens[:, 0:-1:2], tokens[:, 1:-1:2] = keys, values
    tokens[:, -1] = keys[rows, which]
    targets = torch.zeros_like(tokens)
    targets[:, -1] = values[rows, which]
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, -1] = True
    name = f"associative recall ({num_pairs} pairs, {num_keys} keys, {num_values} values)"
    return Task(name, tokens, targets, mask, num_keys + num_values)


def fixed_offset_accuracy(task: Task, offset: int) -> float:
    """Accuracy of the positional copier "predict x_{t+1} = x_{t+1−offset}" on the scored positions.

    Positions with t + 1 − offset < 0 count as wrong. With ``offset`` = the period, this is the shortcut
    a fixed-period induction task allows (:func:`repeated_tokens`: offset m); on :func:`induction` and
    :func:`associative_recall` every offset stays near chance.

    Args:
        task: the task.
        offset: k ≥ 1.

    Returns:
        The accuracy in [0, 1].

    Raises:
        ValueError: offset < 1.
    """
    if offset < 1:
        raise ValueError(f"offset must be >= 1, got {offset}")
    b, t = task.mask.nonzero(as_tuple=True)
    src = t + 1 - offset
    ok = src >= 0
    pred = task.tokens[b[ok], src[ok]]
    return float((pred == task.targets[b[ok], t[ok]]).sum()) / max(1, len(b))
