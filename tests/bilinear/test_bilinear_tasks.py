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
    torch.manual_seed(0)
    model = BilinearTransformer(BilinearConfig(vocab_size=6, n_ctx=3, d_model=16, n_heads=2, d_head=4, d_mlp=32))
    before = accuracy(model, task)
    result = train(model, task, steps=200, lr=1e-2, weight_decay=0.0, seed=0, progress=False)
    assert result.train_accuracy == 1.0 > before
    assert result.losses[-1] < 0.05
    with pytest.raises(ValueError, match="vocabulary"):
        train(model, modular_addition(6), steps=1, progress=False)
