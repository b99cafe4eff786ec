"""A synthetic language with long-range copying, for training small transformer LMs (issue 13).

Generative process (all randomness from explicit ``torch.Generator`` streams):

1. **The source.** A first-order Markov chain over ``vocab_size`` tokens, built once from
   ``LanguageConfig.seed``. Row ``i`` of the transition matrix puts mass on a random support
   ``S_i`` of ``branching`` tokens (drawn without replacement) with weights ``softmax(z_i)``,
   ``z_ij ~ N(0, logit_scale²)``, mixed with the uniform distribution::

       P[i, j] = (1 − smoothing) · softmax(z_i)_j · 1[j ∈ S_i] + smoothing / vocab_size.

   The smoothing makes the chain irreducible and aperiodic, so it has one stationary distribution
   ``π`` (``π P = π``), computed exactly in float64.
2. **A sequence** ``x_0 … x_{T−1}`` (``T = seq_len``) is written left to right. ``x_0 ~ π``. At each
   later position ``k`` that is not inside a copy, a *copy event* starts with probability
   ``copy_rate`` (if ``k ≥ min_offset``): it draws a length ``L ~ U{min_copy_len … max_copy_len}`` and
   an offset (period) ``d ~ U{min_offset … min(max_offset, k)}``, and the next ``L`` tokens (cut at
   ``T``) are copied, ``x_m = x_{m−d}`` for ``m = k … k+L−1``. When ``d < L`` the copy overlaps its
   own output, giving a periodic repeat of period ``d``. Otherwise ``x_k ~ P[x_{k−1}, ·]``. After a
   copy the chain resumes from the last copied token.
3. **Masks** (one entry per token, for the target that the logits at ``k − 1`` predict):

   * ``copy_mask[k]`` — token ``k`` was copied *and* token ``k − 1`` was copied by the same event:
     ``x_{k−1} = x_{k−1−d}`` and ``x_k = x_{k−d}``, so an induction head (find the earlier
     occurrence of the current token, predict the token after it) predicts ``x_k``. This is the
     in-context (copy-position) loss's set.
   * ``markov_mask[k]`` (``k ≥ 1``) — token ``k`` was drawn from ``P[x_{k−1}, ·]``.
   * the remaining positions are ``k = 0`` and the first token of each copy (``copy_start_mask``):
     copied, but not predictable by copying, since the start of a copy is not announced.

**Loss floors.** On Markov positions the token is drawn from ``P[x_{k−1}, ·]`` whatever the past, so
by Gibbs' inequality *every* predictor has expected loss at least the entropy rate of the chain,

    H = Σ_i π_i · H(P[i, ·]) = −Σ_i π_i Σ_j P[i, j] log P[i, j]   (nats),

and the Bayes predictor that knows a position is Markov attains it. Each marginal ``x_k`` is
distributed as ``π`` (copies of stationary tokens are stationary), so ``H`` is exactly the expected
optimal loss per Markov position: it is the floor reported as :attr:`MarkovSource.entropy_rate`. It is
a lower bound, not the attainable loss: a predictor that does not know whether a copy is under way
hedges between copying and the chain and pays more on Markov positions. On
copy positions the floor is 0 (an induction head can be arbitrarily sure), while the chain's own
bigram prediction pays ``H`` *or more* there: a copied pair ``(x_{k−1}, x_k)`` repeats an earlier pair,
which is a Markov pair unless it straddles the start of a copy (periodic copies with ``d < L``
repeat the pair at their own start every period). For the default config the chain's loss on copy
positions is ≈2.36 nats against ``H`` ≈ 1.80 (measured on 4096 sequences). The rise of the
Markov-position minus copy-position loss from its bigram-stage minimum is the in-context learning
signal. The expected share of copy positions is about
``r·m / (1 + r·m)`` with ``r = copy_rate`` and ``m`` the mean copy length (ignoring the edges).

    >>> lang = Language(LanguageConfig())
    >>> train, heldout = lang.splits(num_train=2048, num_heldout=512, seed=0)
    >>> train.tokens.shape, float(train.copy_mask.float().mean()), lang.source.entropy_rate
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["LanguageConfig", "MarkovSource", "LanguageSample", "Language", "repeated_tokens"]


@dataclass(frozen=True)
class LanguageConfig:
    """Settings of the synthetic language (see the module docstring for the generative process).

    Attributes:
        vocab_size: number of tokens V.
        seq_len: sequence length T.
        branching: size of each row's support |S_i| in the Markov source.
        logit_scale: standard deviation of the row logits z_ij (larger: lower entropy).
        smoothing: weight of the uniform distribution mixed into every row (> 0 for ergodicity).
        copy_rate: probability that a copy event starts at a position outside a copy.
        min_copy_len, max_copy_len: copy lengths are uniform on this inclusive range.
        min_offset, max_offset: copy offsets (periods) are uniform on this range, capped at the
            current position; ``max_offset=None`` means ``seq_len``.
        seed: seed of the Markov source (the language itself; sequences have their own seeds).
    """

    vocab_size: int = 64
    seq_len: int = 64
    branching: int = 8
    logit_scale: float = 1.0
    smoothing: float = 0.02
    copy_rate: float = 0.05
    min_copy_len: int = 6
    max_copy_len: int = 20
    min_offset: int = 4
    max_offset: int | None = None
    seed: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "branching", "min_copy_len", "max_copy_len", "min_offset"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LanguageConfig.{name} must be a positive int, got {value!r}")
        if self.vocab_size < 2:
            raise ValueError(f"LanguageConfig.vocab_size must be at least 2, got {self.vocab_size}")
        if self.branching > self.vocab_size:
            raise ValueError(f"LanguageConfig.branching={self.branching} exceeds vocab_size={self.vocab_size}; "
                             "use branching <= vocab_size")
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError(f"LanguageConfig.smoothing must be in (0, 1] so the chain is ergodic, got {self.smoothing}")
        if not 0.0 <= self.copy_rate <= 1.0:
            raise ValueError(f"LanguageConfig.copy_rate must be a probability, got {self.copy_rate}")
        if self.min_copy_len > self.max_copy_len:
            raise ValueError(f"LanguageConfig.min_copy_len={self.min_copy_len} > max_copy_len={self.max_copy_len}; "
                             "swap them")
        max_offset = self.seq_len if self.max_offset is None else self.max_offset
        if not self.min_offset <= max_offset:
            raise ValueError(f"LanguageConfig.min_offset={self.min_offset} > max_offset={max_offset}; "
                             "lower min_offset or raise max_offset")
        if self.logit_scale < 0:
            raise ValueError(f"LanguageConfig.logit_scale must be >= 0, got {self.logit_scale}")

    @property
    def offset_cap(self) -> int:
        """The largest offset, ``max_offset`` or ``seq_len`` when it is None."""
        return self.seq_len if self.max_offset is None else self.max_offset


@dataclass(frozen=True)
class MarkovSource:
    """The Markov chain of a language, in float64.

    Attributes:
        transition: (V, V) row-stochastic matrix P, ``P[i, j] = Pr(x_k = j | x_{k−1} = i)``.
        stationary: (V,) distribution π with ``π P = π``.
        entropy_rate: ``H = −Σ_i π_i Σ_j P_ij log P_ij`` in nats: the exact floor of the expected loss on
            Markov positions (module docstring).
        row_entropy: (V,) entropies ``H(P[i, ·])`` in nats.
    """

    transition: Tensor = field(repr=False)
    stationary: Tensor = field(repr=False)
    entropy_rate: float
    row_entropy: Tensor = field(repr=False)

    def log_prob(self, tokens: Tensor) -> Tensor:
        """Log-probability of each token given the previous one under the chain.

        Args:
            tokens: (N, T) integer tokens.

        Returns:
            (N, T) float64 tensor; entry k ≥ 1 is ``log P[x_{k−1}, x_k]``, entry 0 is ``log π[x_0]``.
        """
        logp = self.transition.to(tokens.device).log()
        first = self.stationary.to(tokens.device).log()[tokens[:, :1]]
        return torch.cat([first, logp[tokens[:, :-1], tokens[:, 1:]]], dim=1)


@dataclass(frozen=True)
class LanguageSample:
    """Sequences of the language and which positions are predictable by copying.

    Attributes:
        tokens: (N, T) int64 tokens.
        copy_mask: (N, T) bool; True where token k is copied and token k − 1 was copied by the same
            event (predictable by an induction head).
        markov_mask: (N, T) bool; True where token k (k ≥ 1) was drawn from the Markov chain.
        copy_start_mask: (N, T) bool; True at the first token of each copy event.
        offsets: (N, T) int64; the copy offset d at copied positions, 0 elsewhere.
        seed: the seed the sample was drawn with.
    """

    tokens: Tensor = field(repr=False)
    copy_mask: Tensor = field(repr=False)
    markov_mask: Tensor = field(repr=False)
    copy_start_mask: Tensor = field(repr=False)
    offsets: Tensor = field(repr=False)
    seed: int

    @property
    def num_sequences(self) -> int:
        """The number of sequences N."""
        return self.tokens.shape[0]

    def __getitem__(self, index) -> "LanguageSample":
        """The sequences at ``index`` (a slice or an index tensor), as a sample."""
        return LanguageSample(self.tokens[index], self.copy_mask[index], self.markov_mask[index],
                              self.copy_start_mask[index], self.offsets[index], self.seed)

    def to(self, device) -> "LanguageSample":
        """The same sample on ``device``."""
        return LanguageSample(self.tokens.to(device), self.copy_mask.to(device), self.markov_mask.to(device),
                              self.copy_start_mask.to(device), self.offsets.to(device), self.seed)


def _markov_source(config: LanguageConfig) -> MarkovSource:
    V, g = config.vocab_size, torch.Generator().manual_seed(config.seed)
    support = torch.rand(V, V, generator=g, dtype=torch.float64).argsort(dim=1)[:, : config.branching]  # (V, b)
    z = config.logit_scale * torch.randn(V, config.branching, generator=g, dtype=torch.float64)
    sparse = torch.zeros(V, V, dtype=torch.float64).scatter_(1, support, torch.softmax(z, dim=1))
    P = (1.0 - config.smoothing) * sparse + config.smoothing / V
    # π (P − I) = 0 with Σ π = 1: replace one equation of the transposed system by the normalisation
    A = (P - torch.eye(V, dtype=torch.float64)).T.clone()
    A[-1] = 1.0
    b = torch.zeros(V, dtype=torch.float64)
    b[-1] = 1.0
    pi = torch.linalg.solve(A, b)
    row_entropy = -(P * P.log()).sum(dim=1)
    return MarkovSource(P, pi, float(pi @ row_entropy), row_entropy)


class Language:
    """The synthetic language of a :class:`LanguageConfig`: its Markov source and a sampler.

    Args:
        config: the settings; the Markov source is built from ``config.seed``.

    Example:
        >>> lang = Language(LanguageConfig(vocab_size=16, seq_len=32))
        >>> s = lang.sample(8, seed=1)
        >>> bool((s.tokens[s.copy_mask] == s.tokens.gather(1, (torch.arange(32) - s.offsets).clamp(min=0))[s.copy_mask]).all())
        True
    """

    def __init__(self, config: LanguageConfig):
        if not isinstance(config, LanguageConfig):
            raise TypeError(f"Language takes a LanguageConfig, got {type(config).__name__}; "
                            "build one with LanguageConfig(vocab_size=..., seq_len=...)")
        self.config = config
        self.source = _markov_source(config)

    def __repr__(self) -> str:
        c = self.config
        return (f"Language(V={c.vocab_size}, T={c.seq_len}, entropy rate {self.source.entropy_rate:.4f} nats, "
                f"copy_rate={c.copy_rate}, copy length {c.min_copy_len}–{c.max_copy_len})")

    def sample(self, num_sequences: int, *, seed: int) -> LanguageSample:
        """Draw sequences of the language.

        Args:
            num_sequences: number of sequences N.
            seed: seed of the sequence stream (same seed, same sequences).

        Returns:
            A :class:`LanguageSample` on the CPU with (N, T) tokens and masks.

        Raises:
            ValueError: if ``num_sequences`` is not a positive int.
        """
        if not isinstance(num_sequences, int) or num_sequences < 1:
            raise ValueError(f"num_sequences must be a positive int, got {num_sequences!r}")
        c, N, T = self.config, num_sequences, self.config.seq_len
        g = torch.Generator().manual_seed(seed)
        P = self.source.transition
        rows = torch.arange(N)
        tokens = torch.zeros(N, T, dtype=torch.int64)
        offsets = torch.zeros(N, T, dtype=torch.int64)
        copy_mask = torch.zeros(N, T, dtype=torch.bool)
        copy_start = torch.zeros(N, T, dtype=torch.bool)
        remaining = torch.zeros(N, dtype=torch.int64)  # tokens left in the current copy event
        offset = torch.zeros(N, dtype=torch.int64)
        tokens[:, 0] = torch.multinomial(self.source.stationary, N, replacement=True, generator=g)
        for k in range(1, T):
            # every draw is made for all sequences, so the stream does not depend on the outcomes
            u = torch.rand(N, generator=g, dtype=torch.float64)
            length = torch.randint(c.min_copy_len, c.max_copy_len + 1, (N,), generator=g)
            hi = min(c.offset_cap, k)
            d = torch.randint(c.min_offset, max(hi, c.min_offset) + 1, (N,), generator=g)
            markov_next = torch.multinomial(P[tokens[:, k - 1]], 1, generator=g).squeeze(1)
            start = (remaining == 0) & (u < c.copy_rate) & (k >= c.min_offset)
            continuing = remaining > 0
            remaining = torch.where(start, length, remaining)
            offset = torch.where(start, d, offset)
            copying = remaining > 0
            source = tokens[rows, (k - offset).clamp(min=0)]
            tokens[:, k] = torch.where(copying, source, markov_next)
            offsets[:, k] = torch.where(copying, offset, 0)
            copy_mask[:, k] = continuing
            copy_start[:, k] = start
            remaining = (remaining - 1).clamp(min=0)
        markov = ~(copy_mask | copy_start)
        markov[:, 0] = False
        return LanguageSample(tokens, copy_mask, markov, copy_start, offsets, seed)

    def splits(self, num_train: int, num_heldout: int, *, seed: int) -> tuple[LanguageSample, LanguageSample]:
        """A training and a held-out sample from independent streams.

        Args:
            num_train: number of training sequences (the n of the LLC is counted in sequences or tokens
                by the caller).
            num_heldout: number of held-out sequences.
            seed: the training stream uses ``2·seed``, the held-out stream ``2·seed + 1``.

        Returns:
            ``(train, heldout)`` samples.
        """
        return self.sample(num_train, seed=2 * seed), self.sample(num_heldout, seed=2 * seed + 1)


def repeated_tokens(vocab_size: int, half_len: int, num_sequences: int, *, seed: int) -> Tensor:
    """Sequences of uniform random tokens repeated once, ``[r_1 … r_L, r_1 … r_L]``.

    The standard probe for induction heads (Olsson et al. 2022, "In-context learning and induction
    heads", arXiv 2209.11895).

    Args:
        vocab_size: tokens are uniform on ``0 … vocab_size − 1``.
        half_len: L, the length of the random half.
        num_sequences: number of sequences.
        seed: seed of the draw.

    Returns:
        (num_sequences, 2·half_len) int64 tokens.
    """
    g = torch.Generator().manual_seed(seed)
    half = torch.randint(0, vocab_size, (num_sequences, half_len), generator=g)
    return torch.cat([half, half], dim=1)
