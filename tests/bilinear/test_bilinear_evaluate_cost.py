"""evaluate(terms=...) computes the selected terms only (issue 14 item 5)."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from slt_interp.bilinear import expand
from tests.bilinear._bilinear_helpers import random_model, random_tokens, rel_err


class _Flops(TorchDispatchMode):
    """Counts matmul / einsum FLOPs at the aten level (torch's own formulas). FlopCounterMode itself
    registers global module hooks, which expand() rightly refuses."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry:
            self.total += flop_registry[packet](*args, **kwargs, out_val=out)
        return out


def _flops(fn) -> int:
    with _Flops() as counter:
        fn()
    return counter.total


def test_selected_terms_equal_the_full_evaluation(device):
    model = random_model(device, n_layers=2, n_heads=2, d_mlp=5)
    exp = expand(model)
    tokens = random_tokens(model, 3, 0, device)
    full = exp.evaluate(tokens)
    g = torch.Generator().manual_seed(1)
    picks = torch.randint(0, len(exp), (40,), generator=g).tolist() + [0, len(exp) - 1, 5, 5]
    for readout in ("logits", "residual", torch.randn(3, model.config.d_model, dtype=torch.float64).to(device)):
        ref = exp.evaluate(tokens, readout=readout)
        assert rel_err(exp.evaluate(tokens, picks, readout=readout), ref[picks]) < 1e-13
    mask = torch.zeros(len(exp), dtype=torch.bool)
    mask[[3, 17, 40]] = True
    assert rel_err(exp.evaluate(tokens, mask), full[mask]) < 1e-13
    assert rel_err(exp.evaluate_sum(tokens, keep=mask), full[mask].sum(0)) < 1e-13
    assert exp.evaluate(tokens, []).shape == (0, *full.shape[1:])
    assert float(exp.evaluate_sum(tokens, keep=[]).abs().max()) == 0.0


def test_one_term_costs_about_one_term_not_all():
    model = random_model("cpu", vocab_size=8, n_ctx=8, d_model=16, n_layers=2, n_heads=2, d_head=4, d_mlp=16)
    exp = expand(model)
    tokens = random_tokens(model, 4, 0, "cpu")
    forward = _flops(lambda: model(tokens))
    every = _flops(lambda: exp.evaluate(tokens))
    assert every > 5 * forward  # the model has enough terms for the comparison to mean something
    for name in ("L1.H1(q=L0.mlp, k=L0.H0, v=emb)", "L1.mlp(L0.H1, L1.H0)", "emb"):
        one = _flops(lambda: exp.evaluate(tokens, [exp.index(name)]))
        # the forward pass plus at most one component's own work (an MLP term projects both its sources)
        assert one < 2 * forward < every / 3, name
