"""Shared helpers for the bilinear tests (not a test module)."""
import copy
import itertools

import torch

from slt_interp.bilinear import BilinearConfig, BilinearTransformer


def random_model(device, seed=0, **kw) -> BilinearTransformer:
    base = dict(vocab_size=5, n_ctx=4, d_model=6, n_layers=1, n_heads=2, d_head=3, d_mlp=5)
    base.update(kw)
    return BilinearTransformer(BilinearConfig(**base), seed=seed).double().to(device)


def random_tokens(model, batch, seed, device):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    return torch.randint(0, c.vocab_size, (batch, c.n_ctx), generator=g).to(device)


def all_sequences(vocab_size, n_ctx, device):
    return torch.tensor(list(itertools.product(range(vocab_size), repeat=n_ctx)), device=device)


def modified(model, fn):
    """A copy of ``model`` with ``fn(copy)`` applied to its weights under no_grad."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        fn(m)
    return m


def rel_err(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
