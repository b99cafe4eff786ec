"""Training the issue-13 LM: the loss falls, checkpoints resume exactly, prefix matching and the
induction-transition finder."""
import math
from dataclasses import replace

import pytest
import torch

from experiments.lm.language import Language, LanguageConfig, repeated_tokens
from experiments.lm.model import LMConfig
from experiments.lm.train import (EvalRecord, TrainConfig, copy_attention_scores, evaluate, find_transition, list_checkpoints,
                                  load_checkpoint, next_token_losses, prefix_matching_scores, train)

LANG = LanguageConfig(vocab_size=8, seq_len=16, branching=2, logit_scale=2.0, min_copy_len=3, max_copy_len=6,
                      min_offset=2)
MODEL = LMConfig(vocab_size=8, seq_len=16, num_layers=1, num_heads=2, d_model=8)


@pytest.fixture(scope="module")
def data():
    return Language(LANG).splits(128, 64, seed=0)


def test_a_short_run_lowers_the_loss_far_beyond_noise(data):
    train_data, heldout = data
    cfg = TrainConfig(num_steps=40, batch_size=16, lr=2e-2, warmup_steps=5, eval_every=40, num_eval_sequences=64,
                      num_probe_sequences=2)
    run = train(MODEL, train_data, heldout, cfg)
    first, last = run.history[0], run.history[-1]
    assert first.step == 0 and last.step == 40
    assert first.heldout_loss == pytest.approx(math.log(8), abs=0.05)  # small init: nearly uniform
    # standard error of the final held-out loss over the 64 independent sequences
    per_seq = next_token_losses(run.model(heldout.tokens), heldout.tokens).double().mean(1).detach()
    std_err = float(per_seq.std() / math.sqrt(len(per_seq)))
    assert first.heldout_loss - last.heldout_loss > 0.3
    assert first.heldout_loss - last.heldout_loss > 10 * std_err
    assert last.heldout_loss == pytest.approx(evaluate(run.model, heldout[:64])[0], abs=1e-6)


def test_resuming_from_a_checkpoint_continues_identically(data, tmp_path):
    train_data, heldout = data
    kw = dict(batch_size=8, lr=1e-2, warmup_steps=2, eval_every=3, num_eval_sequences=16, num_probe_sequences=2)
    straight = train(MODEL, train_data, heldout, TrainConfig(num_steps=8, checkpoint_steps=(4,), **kw),
                     out_dir=tmp_path / "a")
    first = train(MODEL, train_data, heldout, TrainConfig(num_steps=4, **kw), out_dir=tmp_path / "b")
    assert first.resumed_from is None and list_checkpoints(tmp_path / "b") == (4,)
    resumed = train(MODEL, train_data, heldout, TrainConfig(num_steps=8, **kw), out_dir=tmp_path / "b")
    assert resumed.resumed_from == 4
    for (k, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), k
    strip = lambda h: [(r.step, r.heldout_loss, r.heldout_copy_loss, r.prefix_matching) for r in h]
    assert strip(straight.history) == strip(resumed.history)
    assert straight.checkpoint_steps == (4, 8)
    model, ckpt = load_checkpoint(tmp_path / "a", 4)
    _, other = load_checkpoint(tmp_path / "b", 4)
    assert ckpt["step"] == 4 and all(torch.equal(ckpt["model_state"][k], other["model_state"][k])
                                     for k in ckpt["model_state"])
    # the loaded model reproduces the held-out loss recorded at its step
    assert ckpt["history"][-1]["step"] == 4
    assert evaluate(model, heldout[:16])[0] == ckpt["history"][-1]["heldout_loss"]
    with pytest.raises(ValueError, match="trained with other settings .*'lr'"):
        train(MODEL, train_data, heldout, TrainConfig(num_steps=8, **{**kw, "lr": 5e-3}), out_dir=tmp_path / "b")
    with pytest.raises(FileNotFoundError, match=r"saved steps: \[4, 8\]"):
        load_checkpoint(tmp_path / "a", 5)


def _distinct_repeats(B, L, V, seed):
    g = torch.Generator().manual_seed(seed)
    half = torch.stack([torch.randperm(V, generator=g)[:L] for _ in range(B)])  # no repeat within a half
    return torch.cat([half, half], dim=1)


def test_prefix_matching_is_one_for_an_induction_pattern_and_small_for_uniform():
    B, L, V = 3, 12, 20
    tokens = _distinct_repeats(B, L, V, seed=0)
    T = 2 * L
    induction = torch.zeros(B, 1, T, T, dtype=torch.float64)
    for q in range(T):
        induction[:, 0, q, q - L + 1 if q >= L else 0] = 1.0  # second half: the token after the first copy
    uniform = torch.ones(T, T, dtype=torch.float64).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(B, 1, T, T)
    previous = torch.zeros(B, 1, T, T, dtype=torch.float64)
    previous[:, 0, torch.arange(T), (torch.arange(T) - 1).clamp(min=0)] = 1.0  # a previous-token head
    scores = prefix_matching_scores(torch.cat([induction, uniform, previous], dim=1), tokens)
    assert scores.shape == (3,)
    assert scores[0] == 1.0
    # uniform: each second-half query has exactly one target, weight 1/(q+1)
    assert float(scores[1]) == pytest.approx(sum(1 / (q + 1) for q in range(L, T)) / L, rel=1e-12)
    assert scores[1] < 0.1 and scores[2] == 0.0
    layered = prefix_matching_scores(torch.stack([induction, uniform]), tokens)   # (layers, B, H, T, T)
    assert layered.shape == (2, 1) and layered[0, 0] == 1.0


def test_copy_attention_is_one_on_the_copy_source_and_small_for_uniform():
    """Copies of length 3 with offset 4 at 4, 7, 10 (as in the language test): copy positions 5, 6, 8, 9,
    11, 12, whose query k − 1 should attend to k − 4."""
    cfg = LanguageConfig(vocab_size=8, seq_len=13, branching=3, copy_rate=1.0, min_copy_len=3, max_copy_len=3,
                         min_offset=4, max_offset=4)
    s = Language(cfg).sample(2, seed=0)
    T = 13
    source = torch.zeros(2, 1, T, T, dtype=torch.float64)
    for k in (5, 6, 8, 9, 11, 12):
        source[:, 0, k - 1, k - 4] = 1.0
    uniform = torch.ones(T, T, dtype=torch.float64).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(2, 1, T, T)
    scores = copy_attention_scores(torch.stack([torch.cat([source, uniform], 1)] * 3), s)  # (3 layers, H=2)
    assert scores.shape == (3, 2) and (scores[:, 0] == 1.0).all()
    assert float(scores[0, 1]) == pytest.approx(sum(1 / k for k in (5, 6, 8, 9, 11, 12)) / 6, rel=1e-12)
    with pytest.raises(ValueError, match="no copy position"):
        copy_attention_scores(uniform, Language(LanguageConfig(vocab_size=8, seq_len=13, copy_rate=0.0,
                                                               branching=3)).sample(2, seed=0))


def test_prefix_matching_needs_repeats():
    tokens = torch.arange(6).view(1, 6)
    with pytest.raises(ValueError, match="no query token occurs earlier"):
        prefix_matching_scores(torch.ones(1, 1, 6, 6), tokens)
    with pytest.raises(ValueError, match="patterns must be"):
        prefix_matching_scores(torch.ones(1, 1, 5, 5), repeated_tokens(4, 3, 1, seed=0))


def _history(gaps, step=100, prefix_matching=0.1):
    return [EvalRecord(step=i * step, train_batch_loss=0.0, train_loss=2.0, heldout_loss=2.0,
                       heldout_copy_loss=2.0 - g, heldout_markov_loss=2.0,
                       prefix_matching=((0.05, prefix_matching * i),), copy_attention=((0.0, 0.0),), wall_time_s=0.0)
            for i, g in enumerate(gaps)]


def test_find_transition_brackets_the_rise_of_the_in_context_gap():
    #        step: 0    100   200   300  400  500  600  700
    history = _history([0.0, -0.5, -0.48, -0.4, 0.3, 1.2, 1.45, 1.5])
    t = find_transition(history, checkpoint_steps=(0, 250, 350, 650))
    # rise 2.0 from −0.5: low level −0.1 (last at step 300), crossing 0.5 at step 500, high level 1.1 at 500
    assert t.found and (t.drop_start_step, t.drop_end_step) == (300, 500)
    assert (t.before_step, t.after_step) == (250, 650)
    assert t.copy_loss_before == pytest.approx(2.4) and t.copy_loss_after == pytest.approx(0.8)
    assert t.prefix_matching_after == pytest.approx(0.5)  # the largest head's score at step 500
    assert find_transition(history).before_step == 300  # every evaluation counts as a checkpoint
    with pytest.warns(UserWarning, match="no checkpoint at or after step 500"):
        assert find_transition(history, checkpoint_steps=(0,)).after_step is None


def test_find_transition_waits_for_the_heads_and_brackets_their_formation():
    # the gap's drop ends at step 500 but the best head prefix-matches (≥ 0.3) only from step 600
    history = _history([0.0, -0.5, -0.48, -0.4, 0.3, 1.2, 1.45, 1.5, 1.55])
    pm = [0.05, 0.05, 0.06, 0.06, 0.07, 0.1, 0.4, 0.5, 0.6]
    history = [replace(r, prefix_matching=((0.0, p),)) for r, p in zip(history, pm)]
    t = find_transition(history)
    assert t.found and (t.drop_start_step, t.drop_end_step) == (300, 500)
    # after: first score ≥ 0.3 (step 600); before: last score ≤ 0.05 + 0.2·(0.4 − 0.05) = 0.12 (step 500)
    assert (t.before_step, t.after_step) == (500, 600)
    assert t.prefix_matching_before == pytest.approx(0.1) and t.prefix_matching_after == pytest.approx(0.4)
    assert t.copy_loss_before == pytest.approx(0.8) and t.copy_loss_after == pytest.approx(0.55)


def test_find_transition_reports_no_drop():
    with pytest.warns(UserWarning, match="no induction heads yet"):
        t = find_transition(_history([0.0, -0.5, -0.45, -0.4]))
    assert not t.found and t.before_step is None and "no in-context loss drop" in str(t)
    with pytest.warns(UserWarning, match="no head prefix-matches"):   # the gap rises, no induction head
        t = find_transition(_history([0.0, -0.5, -0.48, -0.4, 0.3, 1.2, 1.45, 1.5], prefix_matching=0.01))
    assert not t.found and t.after_step is None and t.drop_end_step == 500
    assert "no induction-head transition" in str(t)
    assert find_transition(_history([0.0, -0.5, 1.5], prefix_matching=0.01), min_prefix_matching=None).found
    with pytest.raises(ValueError, match="non-empty history"):
        find_transition([])


def test_bad_settings_are_refused(data):
    with pytest.raises(ValueError, match="checkpoint_steps \\[20\\] are outside"):
        TrainConfig(num_steps=10, checkpoint_steps=(20,))
    with pytest.raises(ValueError, match="build the model config from the language"):
        train(LMConfig(vocab_size=4, seq_len=16, num_layers=1, num_heads=1, d_model=4), *data, TrainConfig(num_steps=1))
