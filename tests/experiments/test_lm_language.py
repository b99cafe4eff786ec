"""The synthetic language of issue 13: determinism, copy masks, the Markov source and its entropy rate."""
import math

import pytest
import torch

from experiments.lm.language import Language, LanguageConfig, repeated_tokens

SMALL = LanguageConfig(vocab_size=16, seq_len=48, branching=4, copy_rate=0.08, min_copy_len=4, max_copy_len=10)


def test_same_seed_same_sequences_and_other_seed_other_sequences():
    lang = Language(SMALL)
    a, b, c = lang.sample(32, seed=3), lang.sample(32, seed=3), lang.sample(32, seed=4)
    for name in ("tokens", "copy_mask", "markov_mask", "copy_start_mask", "offsets"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.tokens, c.tokens)
    assert torch.equal(Language(SMALL).source.transition, lang.source.transition)  # the language is seeded too
    train, heldout = lang.splits(8, 8, seed=1)
    assert not torch.equal(train.tokens, heldout.tokens)


def test_masks_follow_the_copy_events():
    """Every copied token equals the token ``offset`` back; copy positions continue an event; the masks
    partition positions 1..T−1; the first token of a copy is not a copy position."""
    s = Language(SMALL).sample(64, seed=0)
    T = SMALL.seq_len
    copied = s.copy_mask | s.copy_start_mask
    assert torch.equal(copied, s.offsets > 0)
    src = s.tokens.gather(1, (torch.arange(T) - s.offsets).clamp(min=0))
    assert torch.equal(s.tokens[copied], src[copied])
    # a copy position continues the event of its predecessor (same offset), so the previous-token
    # lookup works: x[k−1] = x[k−1−d] and x[k] = x[k−d]
    prev_copied = torch.zeros_like(copied)
    prev_copied[:, 1:] = copied[:, :-1]
    assert not (s.copy_mask & ~prev_copied).any()
    prev_offset = torch.zeros_like(s.offsets)
    prev_offset[:, 1:] = s.offsets[:, :-1]
    assert torch.equal(s.offsets[s.copy_mask], prev_offset[s.copy_mask])
    assert (s.offsets[copied] >= SMALL.min_offset).all()
    total = s.copy_mask.int() + s.markov_mask.int() + s.copy_start_mask.int()
    assert (total[:, 1:] == 1).all() and (total[:, 0] == 0).all()
    assert 0.1 < s.copy_mask.float().mean() < 0.6  # copies are frequent, but not everything


def test_masks_on_a_constructed_example():
    """With copies forced at every opportunity (copy_rate=1) and fixed length and offset, the process is
    known by hand: x_0..x_3 Markov, then copies of length 3 with offset 4 starting at 4, 7, 10, …"""
    cfg = LanguageConfig(vocab_size=8, seq_len=13, branching=3, copy_rate=1.0, min_copy_len=3, max_copy_len=3,
                         min_offset=4, max_offset=4)
    s = Language(cfg).sample(5, seed=0)
    starts, inside = [4, 7, 10], [5, 6, 8, 9, 11, 12]
    assert s.copy_start_mask[:, starts].all() and s.copy_start_mask.sum() == 5 * len(starts)
    assert s.copy_mask[:, inside].all() and s.copy_mask.sum() == 5 * len(inside)
    assert s.markov_mask[:, 1:4].all() and s.markov_mask.sum() == 5 * 3
    for k in starts + inside:  # period 4: x_k = x_{k−4}
        assert torch.equal(s.tokens[:, k], s.tokens[:, k - 4])


def test_stationary_distribution_and_entropy_rate_are_exact():
    src = Language(SMALL).source
    P, pi = src.transition, src.stationary
    assert torch.allclose(P.sum(1), torch.ones(16, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(pi @ P, pi, atol=1e-14) and abs(float(pi.sum()) - 1) < 1e-14
    assert (P >= SMALL.smoothing / 16 - 1e-17).all()
    dense = -sum(float(pi[i] * P[i, j] * math.log(P[i, j])) for i in range(16) for j in range(16))
    assert src.entropy_rate == pytest.approx(dense, rel=1e-12)
    assert 0 < src.entropy_rate < math.log(16)


def test_markov_positions_have_the_entropy_rate_as_mean_loss():
    """The chain's own loss on Markov positions estimates H: within 4 standard errors (over independent
    sequences) of the exact entropy rate."""
    lang = Language(SMALL)
    s = lang.sample(1500, seed=7)
    nll = -lang.source.log_prob(s.tokens)
    m = s.markov_mask.double()
    per_seq_sum, per_seq_count = (nll * m).sum(1), m.sum(1)
    mean = float(per_seq_sum.sum() / per_seq_count.sum())
    # ratio estimator: SE from the residuals per sequence
    resid = per_seq_sum - mean * per_seq_count
    std_err = float(resid.std() * math.sqrt(len(resid)) / per_seq_count.sum())
    assert abs(mean - lang.source.entropy_rate) < 4 * std_err
    assert std_err < 0.02  # the check has power


def test_repeated_tokens_repeat():
    t = repeated_tokens(10, 7, 3, seed=0)
    assert t.shape == (3, 14) and torch.equal(t[:, :7], t[:, 7:]) and int(t.max()) < 10


def test_bad_config_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="branching=9 exceeds vocab_size=8"):
        LanguageConfig(vocab_size=8, branching=9)
    with pytest.raises(ValueError, match="smoothing must be in"):
        LanguageConfig(smoothing=0.0)
    with pytest.raises(ValueError, match="min_copy_len=5 > max_copy_len=4"):
        LanguageConfig(min_copy_len=5, max_copy_len=4)
    with pytest.raises(ValueError, match="num_sequences must be a positive int"):
        Language(SMALL).sample(0, seed=0)
