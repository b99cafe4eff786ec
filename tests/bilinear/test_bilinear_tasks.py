import pytest
import torch

from slt_interp.bilinear import BilinearConfig, BilinearTransformer, accuracy, modular_addition, repeated_tokens, train


def test_modular_addition_data():
    task = modular_addition(7)
    assert task.tokens.shape == (49, 3) and task.vocab_size == 8
    a, b = task.tokens[:, 0], task.tokens[:, 1]
    assert torch.equal(task.targets[:, -1], (a + b) % 7)
    assert torch.all(task.tokens[:, 2] == 7) and task.mask.sum() == 49
    tr, te = task.split(0.5, seed=1)
    assert len(tr.tokens) + len(te.tokens) == 49
    assert torch.equal(task.split(0.5, seed=1)[0].tokens, tr.tokens)
    with pytest.raises(ValueError, match="modulus p"):
        modular_addition(1)
    with pytest.raises(ValueError, match="train_fraction"):
        task.split(1.0, seed=0)


def test_repeated_tokens_data():
    task = repeated_tokens(6, 4, 10, seed=3)
    assert task.tokens.shape == (10, 8)
    assert torch.equal(task.tokens[:, :4], task.tokens[:, 4:])
    assert torch.equal(task.targets[task.mask], task.tokens[:, 5:].flatten())
    assert torch.equal(repeated_tokens(6, 4, 10, seed=3).tokens, task.tokens)
    assert not torch.equal(repeated_tokens(6, 4, 10, seed=4).tokens, task.tokens)


def test_training_learns_modular_addition():
    task = modular_addition(5)
    model = BilinearTransformer(BilinearConfig(vocab_size=6, n_ctx=3, d_model=16, n_heads=2, d_head=4, d_mlp=32), seed=0)
    before = accuracy(model, task)
    result = train(model, task, steps=200, lr=1e-2, weight_decay=0.0, seed=0, progress=False)
    assert result.train_accuracy == 1.0 > before
    assert result.losses[-1] < 0.05
    with pytest.raises(ValueError, match="vocabulary"):
        train(model, modular_addition(6), steps=1, progress=False)


@pytest.mark.parametrize("setting,message", [
    (dict(batch_size=0), r"batch_size must be an int >= 1.*or None for the full batch"),
    (dict(batch_size=2.5), r"batch_size must be an int >= 1"),
    (dict(lr=-1e-3), r"lr must be a finite learning rate > 0.*try lr=3e-3"),
    (dict(lr=0.0), r"lr must be a finite learning rate > 0"),
    (dict(lr=float("nan")), r"lr must be a finite learning rate > 0"),
    (dict(lr=float("inf")), r"lr must be a finite learning rate > 0"),
    (dict(weight_decay=-0.1), r"weight_decay must be finite and >= 0"),
    (dict(grad_clip=0.0), r"grad_clip must be a finite gradient-norm bound > 0"),
    (dict(steps=0), r"steps must be an int >= 1"),
])
def test_train_rejects_bad_settings(setting, message):
    task = modular_addition(3)
    model = BilinearTransformer(BilinearConfig(vocab_size=4, n_ctx=3, d_model=4, n_heads=1, d_head=2, d_mlp=4))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=message):
        train(model, task, steps=setting.pop("steps", 2), progress=False, **setting)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))  # refused before any step


def _induction_oracle(task):
    """Predict the successor of the previous occurrence of the current token (the induction rule)."""
    correct = 0
    b, t = task.mask.nonzero(as_tuple=True)
    for i, j in zip(b.tolist(), t.tolist()):
        row = task.tokens[i]
        prev = [s for s in range(j) if row[s] == row[j]]
        correct += bool(prev) and int(row[prev[-1] + 1]) == int(task.targets[i, j])
    return correct / len(b)


def test_induction_task_has_no_positional_shortcut():
    from slt_interp.bilinear import fixed_offset_accuracy, induction
    periods = range(2, 8)
    task = induction(8, 16, 3000, periods=periods, seed=0)
    b, t = task.mask.nonzero(as_tuple=True)
    assert torch.equal(task.targets[b, t], task.tokens[b, t + 1])
    n = int(task.mask.sum())
    # every fixed-offset copier is right only on its own period's share (1/6 of the scored positions) or
    # by chance (1/V); the repeat-with-fixed-length task is solved by one offset
    bound = 1 / len(periods) + 1 / 8
    for k in range(1, 16):
        acc = fixed_offset_accuracy(task, k)
        assert acc <= bound + 3 * (bound * (1 - bound) / n) ** 0.5, k
    assert fixed_offset_accuracy(repeated_tokens(8, 4, 500, seed=0), 4) == 1.0
    # on periods never seen in training, every offset a copier could have learnt is at or below chance
    held_out = induction(8, 16, 2000, periods=[4, 6], seed=1)
    m = int(held_out.mask.sum())
    for k in (2, 3, 5, 7):
        assert fixed_offset_accuracy(held_out, k) <= 1 / 8 + 3 * (1 / 8 * 7 / 8 / m) ** 0.5
    assert _induction_oracle(task) == 1.0 and _induction_oracle(held_out) == 1.0
    # the period is really random: each appears with about equal share of the scored positions
    lengths = task.mask.sum(1)
    for p in periods:
        share = float(lengths[lengths == p - 1].sum()) / n
        assert abs(share - 1 / len(periods)) < 0.05
    with pytest.raises(ValueError, match="distinct tokens"):
        induction(4, 16, 10, periods=[5], seed=0)
    with pytest.raises(ValueError, match="too short"):
        induction(8, 8, 10, periods=[4], seed=0)
    with pytest.raises(ValueError, match="periods must be ints >= 2"):
        induction(8, 16, 10, periods=[1], seed=0)


def test_associative_recall_task():
    from slt_interp.bilinear import associative_recall, fixed_offset_accuracy
    task = associative_recall(6, 8, 4, 3000, seed=0)
    assert task.tokens.shape == (3000, 9) and task.vocab_size == 14
    keys, values = task.tokens[:, 0:-1:2], task.tokens[:, 1:-1:2]
    assert bool((keys < 6).all()) and bool((values >= 6).all())
    assert all(len(set(r.tolist())) == 4 for r in keys[:200])  # distinct keys
    hit = keys == task.tokens[:, -1:]
    assert torch.equal(hit.sum(1), torch.ones(3000, dtype=torch.int64))
    assert torch.equal(task.targets[:, -1], values[hit])
    assert _induction_oracle(task) == 1.0
    # a copier reaching back to a value slot is right on the queried pair's share (1/4) or by chance (1/8)
    bound = 1 / 4 + 1 / 8
    for k in range(1, 9):
        assert fixed_offset_accuracy(task, k) <= bound + 3 * (bound * (1 - bound) / 3000) ** 0.5
    with pytest.raises(ValueError, match="num_keys >= num_pairs"):
        associative_recall(3, 4, 4, 10, seed=0)


def test_training_restores_the_thread_setting():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = BilinearTransformer(BilinearConfig(vocab_size=4, n_ctx=3, d_model=4, n_heads=1, d_head=2, d_mlp=4))
        train(model, modular_addition(3), steps=2, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
