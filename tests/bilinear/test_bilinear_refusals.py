"""expand() refuses what it cannot expand exactly, and checks the sum of its terms (issue 11 item 2)."""
import warnings

import pytest
import torch

from slt_interp.bilinear import BilinearMLP, BilinearTransformer, LinearAttention, NotExpandableError, expand, prune
from slt_interp.bilinear import layers as bilinear_layers
from slt_interp.bilinear.expand import ComponentExpansion
from slt_interp.bilinear.expandable import sum_tolerance, verify_sum
from tests.bilinear._bilinear_helpers import random_model, random_tokens

LEVELS = ["component", "path"]


def _model(**kw):
    return random_model("cpu", n_layers=2, n_heads=2, d_mlp=4, **kw)


def _changes_forward(model, patch) -> bool:
    tokens = random_tokens(model, 2, 0, "cpu")
    before = model(tokens).detach()
    patch(model)
    return not torch.allclose(model(tokens).detach(), before)


HOOKS = {
    "model forward hook": lambda m: m.register_forward_hook(lambda mod, i, o: o + 0.3),
    "model pre-hook": lambda m: m.register_forward_pre_hook(lambda mod, args: ((args[0] + 1) % 5,)),
    "mlp forward hook": lambda m: m.blocks[0].mlp.register_forward_hook(lambda mod, i, o: 2 * o),
    "attention hook with kwargs": lambda m: m.blocks[1].attn.register_forward_hook(
        lambda mod, args, kwargs, o: o * 1.5, with_kwargs=True),
    "block pre-hook": lambda m: m.blocks[1].register_forward_pre_hook(lambda mod, args: (args[0] * 0.5,)),
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kind", list(HOOKS))
def test_refuses_forward_hooks(kind, level):
    model = _model()
    handles = []
    assert _changes_forward(model, lambda m: handles.append(HOOKS[kind](m)))
    with pytest.raises(NotExpandableError, match=r"forward (pre-)?hook.*Remove it \(handle.remove\(\)"):
        expand(model, level)
    handles[0].remove()
    expand(model, level)  # the fix the message names works


@pytest.mark.parametrize("pre", [False, True])
def test_refuses_global_module_hooks(pre):
    model = _model()
    if pre:
        handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda mod, args: None)
    else:
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda mod, i, o: o * 1.1 if isinstance(mod, BilinearMLP) else None)
    try:
        with pytest.raises(NotExpandableError, match="global module forward (pre-)?hook.*handle.remove"):
            expand(model)
    finally:
        handle.remove()
    expand(model)


def test_hook_added_after_expand_is_refused_at_evaluation():
    model = _model()
    exp, paths = expand(model), expand(model, "path")
    tokens = random_tokens(model, 2, 1, "cpu")
    model.blocks[0].mlp.register_forward_hook(lambda mod, i, o: o + 1.0)
    with pytest.raises(NotExpandableError, match="forward hook"):
        exp.evaluate(tokens)
    with pytest.raises(NotExpandableError, match="forward hook"):
        paths.evaluate([0, 5], tokens)
    with pytest.raises(NotExpandableError, match="forward hook"):
        prune(exp, num_keep=3)


MISMATCHES = {
    "normaliser": (lambda m: setattr(m.blocks[0].attn, "normaliser", "none"),
                   r"model.blocks\[0\].attn.normaliser is 'none' but the config says 'position'"),
    "positional embedding": (lambda m: setattr(m, "W_pos", None), r"W_pos is not None is False but the config"),
    "MLP removed": (lambda m: setattr(m.blocks[1], "mlp", None), r"model.blocks\[1\].mlp is not None is False"),
    "head dropped": (lambda m: setattr(m.blocks[0].attn, "W_Q", torch.nn.Parameter(m.blocks[0].attn.W_Q[:1])),
                     r"W_Q.shape is \(1, 3, 6\) but the config says \(2, 3, 6\)"),
    "layer dropped": (lambda m: m.blocks.__delitem__(1), r"len\(model.blocks\) is 1 but the config says 2"),
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kind", list(MISMATCHES))
def test_refuses_attributes_that_differ_from_the_config(kind, level):
    patch, message = MISMATCHES[kind]
    model = _model()
    with torch.no_grad():
        assert _changes_forward(model, patch)
    with pytest.raises(NotExpandableError, match=message + r".*load_state_dict"):
        expand(model, level)


def test_refuses_context_length_that_differs_from_the_config():
    model = _model()
    model.blocks[1].attn.n_ctx = 2
    with pytest.raises(NotExpandableError, match=r"attn.n_ctx is 2 but the config says 4"):
        expand(model)


def _double_output(module):
    original = type(module).forward

    def forward(*args):
        return 2 * original(module, *args)

    return forward


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("where", ["model", "mlp", "attn"])
def test_refuses_forward_replaced_on_an_instance(where, level):
    model = _model()
    module = {"model": model, "mlp": model.blocks[0].mlp, "attn": model.blocks[1].attn}[where]
    assert _changes_forward(model, lambda m: setattr(module, "forward", _double_output(module)))
    with pytest.raises(NotExpandableError, match=r"forward\(\) replaced on the instance.*del .*\.forward"):
        expand(model, level)
    del module.forward
    expand(model, level)


@pytest.mark.parametrize("cls,method", [(BilinearMLP, "forward"), (LinearAttention, "pattern"),
                                        (BilinearTransformer, "residual")])
def test_refuses_a_patched_class(monkeypatch, cls, method):
    model = _model()
    original = getattr(cls, method)

    def patched(self, *args):
        return 1.25 * original(self, *args)

    assert _changes_forward(model, lambda m: monkeypatch.setattr(cls, method, patched))
    with pytest.raises(NotExpandableError, match=f"overrides {method}\\(\\).*patched class"):
        expand(model)
    monkeypatch.undo()
    expand(model)


class _ScaledPattern(LinearAttention):
    def pattern(self, x_q, x_k):
        return 0.5 * super().pattern(x_q, x_k)


def test_refuses_a_subclassed_layer():
    model = _model()
    old = model.blocks[0].attn
    new = _ScaledPattern(6, 2, 3, 4)
    new.load_state_dict(old.state_dict())
    model.blocks[0].attn = new
    with pytest.raises(NotExpandableError, match=r"_ScaledPattern overrides pattern\(\)"):
        expand(model)


def test_sum_is_checked_against_the_forward_pass(monkeypatch):
    """What the structural checks cannot see (here a patched module-level helper that only the forward
    pass uses) is caught by comparing the sum of the terms with one forward pass."""
    model = _model()
    original = bilinear_layers.causal_weights
    assert _changes_forward(model, lambda m: monkeypatch.setattr(
        bilinear_layers, "causal_weights", lambda *a, **k: 1.1 * original(*a, **k)))
    for level in LEVELS:
        with pytest.raises(NotExpandableError, match=r"sum of the expansion's terms differs from the forward pass "
                                                     r"by .* \(relative .* > tolerance"):
            expand(model, level)
    monkeypatch.undo()
    exp = ComponentExpansion(model)
    residual = lambda tokens: exp.evaluate(tokens, readout="residual")  # noqa: E731
    assert verify_sum(model, residual) <= sum_tolerance(torch.float64)

    def off(tokens):  # one term off by 1e-11 of the sum of the terms' sizes: far above float64 rounding
        values = residual(tokens)
        values[3] += 1e-11 * float(values.abs().sum(0).max())
        return values

    with pytest.raises(NotExpandableError, match="differs from the forward pass"):
        verify_sum(model, off)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_models_get_a_warning(dtype):
    model = _model().to(dtype)
    with pytest.warns(UserWarning, match=r"bfloat16|float16") as record:
        exp = expand(model)
    assert "model.double()" in str(record[0].message) and "not exactly" in str(record[0].message)
    assert record[0].filename == __file__  # points at the caller, not into the package
    tokens = random_tokens(model, 2, 1, "cpu")
    ref = model.double()(tokens).detach()
    assert float((exp.evaluate_sum(tokens).double() - ref).abs().max()) < 0.1 * float(ref.abs().max())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expand(_model())  # float64: no warning
        expand(_model().float(), "path")  # float32: no warning


def test_tokens_as_nested_lists_are_accepted_everywhere():
    model = _model()
    tokens = [[0, 1, 2, 3], [4, 3, 2, 1]]
    as_tensor = torch.tensor(tokens)
    exp, paths = expand(model), expand(model, "path")
    assert torch.equal(model(tokens), model(as_tensor))
    assert torch.equal(exp.evaluate(tokens), exp.evaluate(as_tensor))
    assert torch.equal(exp.evaluate_sum(tokens, keep=[0, 2]), exp.evaluate_sum(as_tensor, keep=[0, 2]))
    assert torch.equal(paths.evaluate([0, 7], tokens), paths.evaluate([0, 7], as_tensor))
    assert prune(exp, num_keep=3, tokens=tokens).measured_error == prune(exp, num_keep=3, tokens=as_tensor).measured_error
    for bad, error, message in [([[0.0, 1.5]], TypeError, "integer tensor.*tokens.long"),
                                ([[0, 1], [2]], TypeError, "nested list of ints"),
                                ([0, 1, 2], ValueError, r"shape \(batch, seq\).*tokens\[None\]")]:
        with pytest.raises(error, match=message):
            model(bad)
        with pytest.raises(error, match=message):
            exp.evaluate(bad)
        with pytest.raises(error, match=message):
            paths.evaluate([0], bad)
