"""Taylor-mode rules for the operations of language models, against dense float64 torch.func references.

Each loss is a function of a flat vector of ≤ 12 parameters, so that the dense derivative tensors
H = ∇²f, T₃ = ∇³f and T₄ = ∇⁴f (nested jacfwd over torch.func.hessian) are small. ``method="taylor"``
raises on any operation without a rule, so each test also checks that the rule is used.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.func import hessian, jacfwd
from torch.nn.attention import SDPBackend, sdpa_kernel

from slt_interp.estimators import TaylorMode
from slt_interp.estimators.taylor import UnsupportedOperation, _Jet, _sdpa_rule, nested_directional_derivative

_G = torch.Generator().manual_seed(0)
_X = torch.randn(6, 3, generator=_G, dtype=torch.float64)
_Y = torch.tensor([0, 3, 1, 2, 3, 0])
_MASK = torch.randn(6, 4, generator=_G) > 0.3
_MASK[:, 0] = False  # no row masked throughout (its softmax would be NaN)


def _logits(w):
    return _X @ w[:12].reshape(3, 4)  # (6, 4)


def _cross_entropy(w):
    return F.cross_entropy(_logits(w), _Y)


def _cross_entropy_weighted_ignore(w):
    y = torch.tensor([0, -100, 1, 2, 3, -100])
    return F.cross_entropy(_logits(w), y, weight=torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64))


def _cross_entropy_sequence(w):  # (batch, classes, positions): nll_loss2d in the trace
    return F.cross_entropy(_logits(w).reshape(2, 3, 4).transpose(1, 2), _Y.reshape(2, 3))


def _layer_norm(w):
    h = _X @ w[:6].reshape(3, 2)  # (6, 2) -> 3 features by a fixed lift
    h = torch.cat([h, torch.tanh(h[:, :1])], dim=1)
    out = F.layer_norm(h, (3,), weight=w[6:9], bias=w[9:12], eps=1e-3)
    return (out ** 3).mean() + out[:, 0].pow(2).mean()


def _layer_norm_explicit(w):
    # (h − μ)/√(σ² + ε)·weight + bias written out: the reference for F.layer_norm, because torch.func's
    # higher derivatives of F.layer_norm with an affine weight are wrong in torch 2.13 (nested jvp and
    # jacrev∘jacrev disagree with finite differences and with autograd's double backward)
    h = _X @ w[:6].reshape(3, 2)
    h = torch.cat([h, torch.tanh(h[:, :1])], dim=1)
    c = h - h.mean(-1, keepdim=True)
    out = c * (c.pow(2).mean(-1, keepdim=True) + 1e-3).pow(-0.5) * w[6:9] + w[9:12]
    return (out ** 3).mean() + out[:, 0].pow(2).mean()


def _logsumexp(w):
    z = _logits(w)
    return torch.logsumexp(z, -1).mean() - z[:, 0].mean() + torch.logsumexp(z * 0.5, dim=(0, 1), keepdim=True).sum()


def _gather(w):
    logp = torch.log_softmax(_logits(w), -1)
    return -logp.gather(1, _Y[:, None]).mean() + (logp.gather(1, _Y[:, None]) ** 2).mean()


def _masked_fill(w):
    z = torch.tanh(_logits(w))
    scalar = (z.masked_fill(_MASK, 0.5) ** 3).sum()
    tensor = (z.masked_fill(~_MASK, torch.tensor(-0.25, dtype=torch.float64)) ** 2).sum()
    attention_like = torch.softmax(_logits(w).masked_fill(_MASK, float("-inf")), -1)[:, 0].sum()
    return scalar + tensor + attention_like


def _where(w):  # aten.where.self: both branches jets, a constant first branch, a broadcast scalar branch
    z = _logits(w)
    both = torch.where(_MASK, torch.tanh(z), z ** 2).pow(3).sum()
    constant_first = torch.where(_MASK, _X[:, :1], torch.sin(z)).pow(2).sum()
    scalar = torch.where(z > 0, z ** 3, 0.0).sum()
    return both + constant_first + scalar


_ATT_X = torch.randn(1, 2, 4, 3, generator=_G, dtype=torch.float64)  # (batch, heads, positions, features)
_ATT_MASK = torch.tensor([[True, False, True, True]] * 4)


def _attention_inputs(w):
    q = _ATT_X @ w[:6].reshape(3, 2)
    k = _ATT_X @ w[6:12].reshape(3, 2)
    return q, k, torch.tanh(q + k)


def _sdpa_causal(w):
    return (F.scaled_dot_product_attention(*_attention_inputs(w), is_causal=True) ** 2).sum()


def _sdpa_masked(w):
    return (F.scaled_dot_product_attention(*_attention_inputs(w), attn_mask=_ATT_MASK, scale=0.3) ** 2).sum()


def _sdpa_fused(w):  # the fused CPU flash kernel: no forward-mode AD in torch
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        return _sdpa_causal(w)


def _one_hot(w):  # F.one_hot reads its labels with .item(): the default trace fails
    return -(F.one_hot(_Y, 4).to(torch.float64) * torch.log_softmax(_logits(w), -1)).sum(-1).mean()


def _embedding(w):
    table = w[:12].reshape(4, 3)
    e = F.embedding(torch.tensor([[0, 2, 3], [1, 1, 0]]), table)  # (2, 3, 3)
    return (torch.tanh(e) ** 3).sum()


CASES = {
    "cross_entropy": (_cross_entropy, _cross_entropy),
    "cross_entropy_weighted_ignore_index": (_cross_entropy_weighted_ignore, _cross_entropy_weighted_ignore),
    "cross_entropy_sequence": (_cross_entropy_sequence, _cross_entropy_sequence),
    "layer_norm": (_layer_norm, _layer_norm_explicit),
    "logsumexp": (_logsumexp, _logsumexp),
    "gather": (_gather, _gather),
    "masked_fill": (_masked_fill, _masked_fill),
    "where": (_where, _where),
    "sdpa_causal": (_sdpa_causal, _sdpa_causal),
    "sdpa_bool_mask_and_scale": (_sdpa_masked, _sdpa_masked),
    # the fused kernel is checked against the math kernel: the same function
    "sdpa_fused_cpu_flash_kernel": (_sdpa_fused, _sdpa_causal),
    "one_hot": (_one_hot, _one_hot),
    "embedding": (_embedding, _embedding),
}


def _dense_reference(fn, w, V):
    """(f, ∇f·v, vᵀHv, T₃[v³], T₄[v⁴]) per row of V and T₃[·, v, v], from dense torch.func tensors."""
    with sdpa_kernel([SDPBackend.MATH]):  # the attention kernel with forward-mode AD
        return _dense(fn, w, V)


def _dense(fn, w, V):
    H = hessian(fn)(w)
    T3 = jacfwd(hessian(fn))(w)
    T4 = jacfwd(jacfwd(hessian(fn)))(w)
    g = torch.func.grad(fn)(w)
    d = torch.stack([torch.stack([fn(w), g @ v, v @ H @ v, torch.einsum("ijk,i,j,k->", T3, v, v, v),
                                  torch.einsum("ijkl,i,j,k,l->", T4, v, v, v, v)]) for v in V])
    return d, torch.einsum("ijk,mj,mk->mi", T3, V, V)


@pytest.mark.parametrize("name", list(CASES))
def test_rule_matches_dense_float64_reference(name):
    fn, reference = CASES[name]
    w = torch.randn(12, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.8
    V = torch.randn(2, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(fn(w), reference(w), rtol=1e-13, atol=1e-13)  # the same function
    tm = TaylorMode(fn, w, method="taylor")  # raises UnsupportedOperation if any op lacks a rule
    assert tm.uses_taylor
    d_ref, t3_ref = _dense_reference(reference, w, V)
    scale = float(d_ref.abs().max())
    torch.testing.assert_close(tm.derivatives(V, 4), d_ref, rtol=1e-9, atol=1e-10 * scale)
    torch.testing.assert_close(tm.third_vector(V), t3_ref, rtol=1e-9, atol=1e-10 * float(t3_ref.abs().max()))
    g3, vhv, t4 = tm.quartic_terms(V)
    torch.testing.assert_close(g3, t3_ref, rtol=1e-9, atol=1e-10 * float(t3_ref.abs().max()))
    torch.testing.assert_close(vhv, d_ref[:, 2], rtol=1e-9, atol=1e-10 * scale)
    torch.testing.assert_close(t4, d_ref[:, 4], rtol=1e-9, atol=1e-10 * scale)


def test_tiny_transformer_block_runs_in_taylor_mode():
    # embedding → LayerNorm → causal SDPA → tied unembedding → cross-entropy, all with rules
    vocab, width = 5, 4
    tokens = torch.tensor([[0, 1, 2, 3, 4, 0], [4, 3, 2, 1, 0, 4]])
    sizes = {"emb": vocab * width, "ln_w": width, "ln_b": width, "q": width * width, "k": width * width}

    def layer_norm(x, weight, bias):  # written out for the reference (see _layer_norm_explicit)
        c = x - x.mean(-1, keepdim=True)
        return c * (c.pow(2).mean(-1, keepdim=True) + 1e-5).pow(-0.5) * weight + bias

    def loss(w, norm=lambda x, a, b: F.layer_norm(x, (width,), a, b)):
        parts = dict(zip(sizes, torch.split(w, list(sizes.values()))))
        emb = parts["emb"].reshape(vocab, width)
        h = norm(F.embedding(tokens, emb), parts["ln_w"], parts["ln_b"])  # (2, seq, width)
        q, k = h @ parts["q"].reshape(width, width), h @ parts["k"].reshape(width, width)
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], h[:, None], is_causal=True)[:, 0]
        logits = (h + a) @ emb.T  # (2, seq, vocab)
        return F.cross_entropy(logits[:, :-1].reshape(-1, vocab), tokens[:, 1:].reshape(-1))

    dim = sum(sizes.values())
    w = torch.randn(dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.5
    v = torch.randn(dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    tm = TaylorMode(lambda x: loss(x), w, method="taylor")

    def reference(x):
        return loss(x, layer_norm)

    torch.testing.assert_close(loss(w), reference(w), rtol=1e-13, atol=1e-13)
    with sdpa_kernel([SDPBackend.MATH]):  # the attention kernel with forward-mode AD
        ref = torch.stack([nested_directional_derivative(reference, w, v, k) for k in range(5)])
        H = hessian(reference)(w)
        t3_ref = jacfwd(lambda x: v @ hessian(reference)(x) @ v)(w)
    torch.testing.assert_close(tm.derivatives(v, 4), ref, rtol=1e-9, atol=1e-10 * float(ref.abs().max()))
    torch.testing.assert_close(tm.quartic_terms(v)[1], v @ H @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tm.third_vector(v), t3_ref, rtol=1e-9, atol=1e-10 * float(t3_ref.abs().max()))


def test_nested_fallback_routes_fused_attention_to_the_math_kernel():
    # float32 on CPU picks the fused flash kernel (no forward-mode AD); cumprod has no rule, so "auto"
    # falls back to nested jvp, which must run attention through the math kernel instead of raising
    def loss(w, dtype=torch.float32):
        q, k, v = (t.to(dtype) for t in _attention_inputs(w))
        att = (F.scaled_dot_product_attention(q, k, v, is_causal=True) ** 2).sum()
        return att.to(torch.float64) + torch.cumprod(w, 0).sum()

    w = torch.randn(12, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.8
    v = torch.randn(12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    tm = TaylorMode(lambda x: loss(x), w, method="auto")
    assert not tm.uses_taylor and "cumprod" in tm.unsupported
    with sdpa_kernel([SDPBackend.MATH]):
        ref = torch.stack([nested_directional_derivative(lambda x: loss(x, torch.float64), w, v, k) for k in range(5)])
    torch.testing.assert_close(tm.derivatives(v, 4), ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_trace_failure_falls_back_or_raises_clearly(monkeypatch):
    import torch.fx.experimental.proxy_tensor as proxy_tensor

    def refuse(*args, **kwargs):
        raise RuntimeError("cannot trace this loss")

    monkeypatch.setattr(proxy_tensor, "make_fx", refuse)
    f = lambda w: torch.tanh(w).pow(3).sum()  # noqa: E731
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    v = torch.tensor([1.0, 0.5, -0.25], dtype=torch.float64)
    tm = TaylorMode(f, w, method="auto")
    assert not tm.uses_taylor and "could not be traced" in tm.unsupported
    ref = torch.stack([nested_directional_derivative(f, w, v, k) for k in range(5)])
    torch.testing.assert_close(tm.derivatives(v, 4), ref)
    with pytest.raises(UnsupportedOperation, match="could not be traced.*method='nested'"):
        TaylorMode(f, w, method="taylor")


def test_attention_with_dropout_is_refused():
    q, k, v = _attention_inputs(torch.randn(12, dtype=torch.float64))
    jet = _Jet([q, torch.ones_like(q), None])
    with pytest.raises(UnsupportedOperation, match="dropout_p > 0"):
        _sdpa_rule(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default, (jet, k, v, 0.5), {}, 2)


def test_nested_fallback_is_exact_for_layer_norm():
    # torch's nested jvp through F.layer_norm is wrong (torch 2.13); the fallback decomposes LayerNorm
    def loss(w):
        return _layer_norm(w) + torch.cumprod(w, 0).sum()  # cumprod: no rule, so "auto" falls back

    def reference(w):
        return _layer_norm_explicit(w) + torch.cumprod(w, 0).sum()

    w = torch.randn(12, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.8
    V = torch.randn(2, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    tm = TaylorMode(loss, w, method="auto")
    assert not tm.uses_taylor and "cumprod" in tm.unsupported
    d_ref, t3_ref = _dense_reference(reference, w, V)
    torch.testing.assert_close(tm.derivatives(V, 4), d_ref, rtol=1e-9, atol=1e-10 * float(d_ref.abs().max()))
    torch.testing.assert_close(tm.third_vector(V), t3_ref, rtol=1e-9, atol=1e-10 * float(t3_ref.abs().max()))
