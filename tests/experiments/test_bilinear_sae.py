"""experiments/bilinear_sae.py: SAE latents through the closed form (issue 14 item 2)."""
import torch

from slt_interp.bilinear import BilinearConfig, BilinearTransformer, expand, induction
from slt_interp.bilinear.layers import causal_weights
from experiments.bilinear_sae import _reconstruct, explain_latents, topk_codes, train_topk_sae


def _setup():
    cfg = BilinearConfig(vocab_size=6, n_ctx=8, d_model=8, n_layers=2, n_heads=1, d_head=4, d_mlp=8)
    model = BilinearTransformer(cfg, seed=0).double()
    task = induction(6, 8, 60, periods=[2, 3], seed=0)
    acts = model.residual(task.tokens).detach().reshape(-1, 8)
    return model, task, acts


def test_topk_sae_trains_with_few_dead_latents():
    model, task, acts = _setup()
    sae = train_topk_sae(acts, 16, k=2, steps=300, seed=0)
    assert sae.dead_fraction < 0.2
    assert sae.fvu < 0.6
    assert torch.allclose(sae.W_dec.norm(dim=0), torch.ones(16, dtype=torch.float64))
    codes = sae.encode(acts)
    assert int((codes > 0).sum(1).max()) <= 2
    assert torch.equal(topk_codes(torch.tensor([[3.0, -1.0, 2.0]]), 1), torch.tensor([[3.0, 0.0, 0.0]]))


def test_latent_pre_activation_is_exactly_the_sum_of_its_terms():
    model, task, acts = _setup()
    sae = train_topk_sae(acts, 8, k=2, steps=100, seed=0)
    exp = expand(model)
    contrib = exp.evaluate(task.tokens, readout=sae.W_enc).reshape(len(exp), -1, 8)  # (terms, n, m)
    pre = sae.pre(acts)
    const = sae.b_enc - sae.W_enc @ sae.b_dec
    assert torch.allclose(contrib.sum(0) + const, pre, atol=1e-12)
    train = torch.zeros(pre.shape[0], dtype=torch.bool)
    train[::2] = True
    full = _reconstruct(contrib[:, :, 0], pre[:, 0], train, list(range(len(exp))))
    assert torch.allclose(full, pre[:, 0], atol=1e-12)  # all terms: exact, R² = 1
    reports = explain_latents(exp, sae, task.tokens, task.targets, k_terms=2, k_max=len(exp), seed=0)
    assert reports and all(abs(r.r2_pre_by_k[-1] - 1) < 1e-9 for r in reports)  # every term kept: exact
    for r in reports:
        assert len(r.terms) == 2 and r.r2_pre_baseline <= 1 and r.r2_effect <= 1


def test_head_term_attribution_is_signed_and_exact():
    """The per-source split n(t)·score(t, s)·wᵀOV e(x_s) sums to the term's contribution (sign of the score kept)."""
    model, task, acts = _setup()
    exp = expand(model)
    i = exp.index("L1.H0(q=emb, k=L0.H0, v=emb)")
    w = torch.randn(1, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    outs = model.component_outputs(task.tokens)
    attn = model.blocks[1].attn
    q = outs["emb"] @ attn.W_Q[0].T
    k = outs["L0.H0"] @ attn.W_K[0].T
    val = outs["emb"] @ (attn.W_O[0] @ attn.W_V[0]).T @ w[0]
    scores = (q @ k.transpose(-1, -2)) * causal_weights(8, model.config.normaliser, dtype=q.dtype)
    attr = (scores * val[:, None, :]).detach()
    assert torch.allclose(attr.sum(-1), exp.evaluate(task.tokens, [i], readout=w)[0, ..., 0], atol=1e-12)
    assert bool((attr < 0).any()) and bool((attr > 0).any())  # both signs occur: |score| would be wrong


def test_feed_terms_split_the_latent_effect_exactly():
    from experiments.bilinear_sae import _logits_from, feed_terms
    model, task, acts = _setup()
    exp = expand(model)
    site = [t.index for t in exp if t.kind == "embed" or t.layer < 1]
    resid = exp.evaluate(task.tokens, site, readout="residual").sum(0)  # input of block 1
    x = model.embed(task.tokens)
    assert torch.allclose(resid, model.blocks[0](x), atol=1e-12)
    g = torch.Generator().manual_seed(1)
    delta = torch.randn(resid.shape, generator=g, dtype=torch.float64) * 0.3
    rest = resid - delta
    terms = feed_terms(model, rest, delta, 1)
    assert len(terms) == 1 + 7 * model.config.n_heads + 2
    total = _logits_from(model, resid, 1) - _logits_from(model, rest, 1)
    assert torch.allclose(sum(terms.values()), total, atol=1e-10)
    assert torch.allclose(feed_terms(model, rest, delta, None)["W_U (direct)"], delta @ model.W_U.detach().T)
    sae = train_topk_sae(resid.reshape(-1, 8), 8, k=2, steps=100, seed=0)
    reports = explain_latents(exp, sae, task.tokens, task.targets, site=1, k_terms=2, k_max=len(site), seed=0)
    assert reports and all(abs(r.r2_pre_by_k[-1] - 1) < 1e-9 for r in reports)  # the site's terms are exact
    assert all(r.feeds and set(n for n, _ in r.feeds) <= set(terms) for r in reports)
