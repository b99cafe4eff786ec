"""HessianOperator over dict batches (Hugging Face style) against the dense float64 Hessian."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian

from slt_interp.estimators import BatchLoss, HessianOperator, batch_loss
from slt_interp.estimators.flat import flatten


class _TinyLM(nn.Module):
    """model(input_ids=..., labels=...) -> {"logits", "loss"}, as a causal LM does."""

    def __init__(self, vocab: int = 5, width: int = 3):
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.drop = nn.Dropout(0.5)  # off in eval mode, which the loss uses
        self.out = nn.Linear(width, vocab)

    def forward(self, input_ids, labels=None):
        logits = self.out(self.drop(torch.tanh(self.emb(input_ids))))  # (batch, seq, vocab)
        result = {"logits": logits}
        if labels is not None:
            result["loss"] = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        return result


def _data():
    g = torch.Generator().manual_seed(0)
    model = _TinyLM().double()
    ids = torch.randint(0, 5, (7, 4), generator=g)
    batches = [{"input_ids": ids[:3], "labels": ids[:3]}, {"input_ids": ids[3:], "labels": ids[3:]}]
    return model, ids, batches


def _dense_hessian(model, ids):
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def full(ps):  # the full-data mean over the 7 sequences (each contributes 3 tokens)
        logits = functional_call(model, ps, (ids,))["logits"]
        return F.cross_entropy(logits[:, :-1].reshape(-1, 5), ids[:, 1:].reshape(-1))

    p = flatten(full, params)
    H = hessian(p.fn)(p.w0)
    model.train()
    return H


@pytest.mark.parametrize("mode", ["forward", "reverse", "auto"])
def test_hessian_over_dict_batches_matches_dense(mode):
    model, ids, batches = _data()
    model.train()  # dropout: the loss must evaluate in eval mode
    loss, params = batch_loss(model, batches)  # loss from the output's "loss"
    assert isinstance(loss, BatchLoss) and loss.num_samples == 7
    H = _dense_hessian(model, ids)
    op = HessianOperator(loss, params, mode=mode)
    torch.testing.assert_close(op.to_dense(chunk_size=16), H, rtol=1e-10, atol=1e-12)
    assert model.training  # the mode is restored


def test_loss_fn_on_dict_and_tuple_batches():
    model, ids, batches = _data()
    H = _dense_hessian(model, ids)

    def from_dict(out, batch):
        return F.cross_entropy(out["logits"][:, :-1].reshape(-1, 5), batch["labels"][:, 1:].reshape(-1))

    loss, params = batch_loss(model, batches, from_dict)
    torch.testing.assert_close(HessianOperator(loss, params).to_dense(), H, rtol=1e-10, atol=1e-12)

    def from_tuple(out, labels):
        return F.cross_entropy(out["logits"][:, :-1].reshape(-1, 5), labels[:, 1:].reshape(-1))

    tuples = [(b["input_ids"], b["labels"]) for b in batches]
    loss, params = batch_loss(model, tuples, from_tuple)
    torch.testing.assert_close(HessianOperator(loss, params).to_dense(), H, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="needs dict batches"):
        batch_loss(model, tuples)
    with pytest.raises(TypeError, match="one-shot iterator"):
        batch_loss(model, iter(batches))
