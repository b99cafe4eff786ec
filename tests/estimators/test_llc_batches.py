"""The data users have: DataLoaders, Datasets and re-iterables of tuple or dict batches, kept on the host
and moved per batch; each chain its own batch order; the baseline L(w*) over all batches."""
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from slt_interp.estimators import estimate_llc
from tests.estimators._sgld_problems import mse

KW = dict(num_chains=2, num_draws=20, num_burnin=5, step_size=1e-4, seed=0, on_nonminimum="ignore")


def _mlp_data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    with torch.no_grad():
        y = model(x) + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return model, x, y


class _Dicts(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class _DictMLP(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, y):
        return self.net(x)


def test_list_of_batches_matches_dataloader_and_baseline_is_over_all_batches():
    model, x, y = _mlp_data()
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 96, 32)]
    a = estimate_llc(model, mse, batches, **KW)
    loader = DataLoader(_Dicts(x, y), batch_size=32)  # dict batches: loss_fn(output, batch)
    b = estimate_llc(_DictMLP(model), lambda out, batch: mse(out, batch["y"]), loader, **KW)
    with torch.no_grad():
        full = float(mse(model(x), y))
    assert a.baseline_loss == pytest.approx(full, rel=1e-12) and b.baseline_loss == pytest.approx(full, rel=1e-12)
    assert a.settings.num_samples == 96 and a.settings.batch_size == 32
    assert a.settings.nbeta == pytest.approx(96 / math.log(96))
    assert torch.allclose(a.loss_traces, b.loss_traces, rtol=1e-12, atol=0)  # same batches, same chains
    assert not torch.equal(a.loss_traces[0], a.loss_traces[1])  # every chain its own batches
    # each draw is the loss of one of the batches (32 samples), not of the whole data set
    with pytest.raises(ValueError, match="batch_size=16 cannot change them"):
        estimate_llc(model, mse, batches, batch_size=16, **KW)
    with pytest.raises(TypeError, match="one-shot iterator"):
        estimate_llc(model, mse, iter(batches), **KW)


def test_gpt2_from_a_local_config_with_a_dataloader_of_token_batches():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=37, n_positions=12, n_embd=16, n_layer=2, n_head=2)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 37, (24, 12), generator=g)
    rows = [{"input_ids": ids[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": ids[i]} for i in range(24)]
    loader = DataLoader(rows, batch_size=8)
    d = sum(p.numel() for p in model.parameters())
    est = estimate_llc(model, None, loader, num_chains=2, num_draws=6, num_burnin=2, step_size=1e-6, seed=0,
                       on_nonminimum="ignore", mala_every=0)
    assert est.settings.num_samples == 24 and est.settings.batch_size == 8 and est.settings.num_sampled_params == d
    assert torch.isfinite(est.loss_traces).all() and model.training  # the model's mode is restored
    with torch.no_grad():
        model.eval()
        base = sum(float(model(**b).loss) * 8 / 24 for b in loader)
        model.train()
    assert est.baseline_loss == pytest.approx(base, rel=1e-5)
