"""SAE latents of a bilinear transformer explained through its closed form, with measured faithfulness.

For a TopK SAE (Gao et al. 2024, arXiv 2406.04093) on a residual stream r = Σ_j term_j (final, or the
input of a later block, with the sum over the terms of the components before it) of a
bilinear / linear-attention transformer, the pre-activation of latent i is linear in r:
a_i = w_iᵀ(r − b_dec) + b_enc,i = Σ_j w_iᵀ term_j + const, an exact decomposition into the terms of
:func:`slt_interp.bilinear.expand` (read out along w_i). Per live latent this module measures

* the driving terms: k terms chosen greedily on one half of the positions (the others mean-ablated),
  and the held-out R² of the pre-activation they reconstruct;
* the effect on the logits and the held-out R² of its reconstruction (TopK applied to the reconstructed
  pre-activations of all latents): for an SAE on the final residual stream the decoder direction d_i
  feeds only the unembedding (effect f_i·W_U d_i); for an SAE at the input of the last block
  (``site``) the effect is exact through the later block, logits(r) − logits(r − f_i d_i), and
  :func:`feed_terms` splits it into the terms d_i feeds (W_U d_i, each later head with the latent in
  its q / k / v slots, the later MLP's cross and square terms);
* the same two R² for a baseline: a random direction of the same norm as w_i with a threshold firing
  at the latent's rate (what any linear readout of r gets from k terms);
* sign-correct token attributions: a head term with the embedding in its value slot is exactly
  Σ_s n(t)·score(t, s)·w_iᵀ W_O W_V e(x_s, s), so each source position s gets a signed share (the sign
  of the score included); the top source token is compared with the next-token target.

The SAE trainer is its own (not experiments/sae.py's): decoder columns start at data points (centred,
unit norm; encoder = decoderᵀ) and latents silent for ``resample_every`` steps are resampled onto the
worst-reconstructed inputs (Bricken et al. 2023, "Towards Monosemanticity", resampling), which keeps
the dead fraction low.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from slt_interp.bilinear.layers import causal_weights

__all__ = ["TopKSAE", "train_topk_sae", "LatentReport", "explain_latents", "feed_terms"]


@dataclass(frozen=True)
class TopKSAE:
    """A trained TopK SAE: f = TopK(W_enc (x − b_dec) + b_enc), x̂ = W_dec f + b_dec.

    Attributes:
        W_enc: (m, d); b_enc: (m,); W_dec: (d, m), unit columns; b_dec: (d,); k: latents kept.
        fvu: fraction of variance unexplained on the training activations.
        dead_fraction: share of latents never active on the training activations.
        resampled: number of resampling events.
    """

    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor
    k: int
    fvu: float
    dead_fraction: float
    resampled: int = 0

    def pre(self, x: Tensor) -> Tensor:
        """Pre-activations (..., m)."""
        return (x - self.b_dec) @ self.W_enc.T + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        """TopK codes (..., m)."""
        return topk_codes(self.pre(x), self.k)


def topk_codes(pre: Tensor, k: int) -> Tensor:
    """Keep the k largest pre-activations (ReLU'd), zero elsewhere."""
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))


def train_topk_sae(x: Tensor, n_latents: int, *, k: int, steps: int, lr: float = 3e-3, batch_size: int = 256,
                   resample_every: int = 100, seed: int = 0) -> TopKSAE:
    """Train a TopK SAE with Adam, data-point initialisation and resampling of silent latents.

    Args:
        x: activations (n, d).
        n_latents: m.
        k: latents kept per input.
        steps: Adam steps.
        lr: learning rate.
        batch_size: inputs per step.
        resample_every: resample latents silent over this many steps (none in the last 30% of steps).
        seed: seeds the initialisation, the batches and the resampling.

    Returns:
        The :class:`TopKSAE` (float64 tensors if x is float64).
    """
    g = torch.Generator().manual_seed(seed)
    n, d = x.shape
    mean = x.mean(0)
    xc = x - mean
    pick = torch.randint(n, (n_latents,), generator=g)
    dec = xc[pick].T.clone()  # (d, m): data points
    dec = dec / dec.norm(dim=0, keepdim=True).clamp_min(1e-12)
    scale = float(xc.norm(dim=1).mean())
    params = {"W_enc": (dec.T / scale).clone().requires_grad_(True),
              "b_enc": torch.zeros(n_latents, dtype=x.dtype, requires_grad=True),
              "W_dec": (dec * scale).clone().requires_grad_(True),
              "b_dec": mean.clone().requires_grad_(True)}
    opt = torch.optim.Adam(params.values(), lr=lr)
    last_active = torch.zeros(n_latents, dtype=torch.int64)
    resampled = 0
    for step in range(steps):
        xb = x[torch.randint(n, (batch_size,), generator=g)]
        f = topk_codes((xb - params["b_dec"]) @ params["W_enc"].T + params["b_enc"], k)
        err = xb - (f @ params["W_dec"].T + params["b_dec"])
        loss = err.pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            last_active[(f > 0).any(0)] = step
            silent = (step - last_active >= resample_every).nonzero().flatten()
            if step < 0.7 * steps and len(silent) and step % resample_every == resample_every - 1:
                worst = err.pow(2).sum(-1).argsort(descending=True)[: len(silent)]  # worst-reconstructed inputs
                for latent, row in zip(silent.tolist(), worst.tolist()):
                    direction = err[row] / err[row].norm().clamp_min(1e-12)
                    params["W_dec"][:, latent] = direction * scale
                    params["W_enc"][latent] = direction / scale
                    params["b_enc"][latent] = 0.0
                    last_active[latent] = step
                resampled += len(silent)
    W_dec = params["W_dec"].detach()
    norms = W_dec.norm(dim=0).clamp_min(1e-12)
    sae = TopKSAE(params["W_enc"].detach() * norms[:, None], params["b_enc"].detach() * norms, W_dec / norms,
                  params["b_dec"].detach(), k, 0.0, 0.0, resampled)  # unit decoder columns, same codes × norm
    with torch.no_grad():
        f = sae.encode(x)
        xhat = f @ sae.W_dec.T + sae.b_dec
        fvu = float((x - xhat).pow(2).sum(-1).mean() / xc.pow(2).sum(-1).mean())
        dead = float(((f > 0).sum(0) == 0).double().mean())
    return TopKSAE(sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, k, fvu, dead, resampled)


@dataclass(frozen=True)
class LatentReport:
    """One live latent through the closed form (see the module docstring).

    Attributes:
        latent: its index; frequency: share of positions where it fires.
        terms: names of the k greedily chosen driving terms, in order; shares: their share of
            Σ_j |w_iᵀ term_j| where the latent fires.
        r2_pre, r2_effect: held-out R² of the pre-activation and of the logit effect from those terms.
        r2_pre_baseline, r2_effect_baseline: the same for a random direction of equal norm.
        r2_pre_by_k: held-out R² of the pre-activation with 1..k_max terms.
        promotes, suppresses: the tokens its decoder direction raises / lowers most (W_U d_i).
        top_target: most common next-token target where it fires, and its share.
        attribution_term: the driving head term with the embedding in its value slot used for the
            token attribution (None if no such term is among the drivers).
        attribution_match: share of firing positions where the source token with the largest signed
            attribution equals the next-token target (None without an attribution term).
        feeds: the two terms its decoder direction feeds (:func:`feed_terms`) with the largest mean
            logit norm where it fires, with their share of the total.
    """

    latent: int
    frequency: float
    terms: tuple[str, ...]
    shares: tuple[float, ...]
    r2_pre: float
    r2_effect: float
    r2_pre_baseline: float
    r2_effect_baseline: float
    r2_pre_by_k: tuple[float, ...] = field(repr=False)
    promotes: tuple[int, ...] = ()
    suppresses: tuple[int, ...] = ()
    top_target: tuple[int, float] = (0, 0.0)
    attribution_term: str | None = None
    attribution_match: float | None = None
    feeds: tuple[tuple[str, float], ...] = ()


def _r2(y: Tensor, yhat: Tensor) -> float:
    ss = (y - y.mean(0)).pow(2).sum()
    return float(1 - (y - yhat).pow(2).sum() / ss) if ss > 0 else float("nan")


def _greedy(contrib: Tensor, target: Tensor, train: Tensor, k: int) -> list[int]:
    """Greedy forward selection of k terms on the train positions; the rest mean-ablated.

    contrib: (num_terms, n) exact contributions; target: (n,) = Σ_j contrib_j + const.
    """
    mean = contrib[:, train].mean(1, keepdim=True)
    centred = contrib - mean  # selecting term j adds its deviation from its train mean
    chosen: list[int] = []
    resid = (target - target[train].mean())[train]
    for _ in range(k):
        gain = (2 * centred[:, train] @ resid - centred[:, train].pow(2).sum(1))
        if chosen:
            gain[chosen] = -float("inf")
        j = int(gain.argmax())
        chosen.append(j)
        resid = resid - centred[j, train]
    return chosen


def _reconstruct(contrib: Tensor, target: Tensor, train: Tensor, chosen: list[int]) -> Tensor:
    """const + Σ_chosen contrib_j + Σ_other mean_train(contrib_j), with const fitted on train (exact: the
    decomposition has coefficient 1)."""
    part = contrib[chosen].sum(0) if chosen else torch.zeros_like(target)
    return part + (target - part)[train].mean()


def explain_latents(exp, sae: TopKSAE, tokens: Tensor, targets: Tensor, *, mask: Tensor | None = None,
                    site: int | None = None, k_terms: int = 3, k_max: int = 8, min_frequency: float = 0.0,
                    seed: int = 0) -> list[LatentReport]:
    """Explain every live latent through the closed form (module docstring).

    Args:
        exp: the model's :class:`~slt_interp.bilinear.expand.ComponentExpansion` (float64).
        sae: a :class:`TopKSAE` trained on the residual stream at ``site``.
        tokens: (B, T) sequences to measure on.
        targets: (B, T) next-token targets (for the "top target" and the attribution check).
        mask: (B, T) bool, the positions measured on (all when None), e.g. a task's scored positions.
        site: None for the final residual stream (the decoder feeds the unembedding only), or the
            index l of the block whose input the SAE reads (the residual written by the components
            before layer l; then the decoder direction feeds the later components too, and the logit
            effect is exact: logits with the latent's f·d minus logits without, through the later blocks).
        k_terms: terms kept for the reported R².
        k_max: largest k in ``r2_pre_by_k``.
        min_frequency: latents firing less often than this on ``tokens`` are skipped (0: every latent
            that fires at least 4 times).
        seed: seeds the train / held-out split and the baseline directions.

    Returns:
        One :class:`LatentReport` per live latent, by decreasing frequency.
    """
    model = exp.model
    g = torch.Generator().manual_seed(seed)
    B, T = tokens.shape
    with torch.no_grad():
        if site is None:
            site_terms = torch.arange(len(exp))
            resid = model.residual(tokens)  # (B, T, d)
        else:
            site_terms = torch.tensor([t.index for t in exp if t.kind == "embed" or t.layer < site])
            resid = exp.evaluate(tokens, site_terms, readout="residual").sum(0)  # input of block `site`
        keep = torch.ones(tokens.shape, dtype=torch.bool) if mask is None else mask
        flat = keep.reshape(-1)
        x_all = resid.reshape(-1, resid.shape[-1])  # (B·T, d)
        pre_all = sae.pre(x_all)  # (B·T, m)
        codes_all = topk_codes(pre_all, sae.k)
        m = pre_all.shape[1]
        where = flat.nonzero().flatten()
        perm = where[torch.randperm(len(where), generator=g)]
        train = torch.zeros(B * T, dtype=torch.bool)
        train[perm[: len(perm) // 2]] = True
        test = torch.zeros(B * T, dtype=torch.bool)
        test[perm[len(perm) // 2:]] = True
        contrib = exp.evaluate(tokens, site_terms, readout=sae.W_enc).reshape(len(site_terms), -1, m)  # w_iᵀ term_j
        rand = torch.randn(m, x_all.shape[1], generator=g, dtype=x_all.dtype)
        rand = rand / rand.norm(dim=1, keepdim=True) * sae.W_enc.norm(dim=1, keepdim=True)
        contrib_r = exp.evaluate(tokens, site_terms, readout=rand).reshape(len(site_terms), -1, m)
        pre_r = x_all @ rand.T  # (B·T, m): random readouts (no bias; the constant is fitted)
        codes = codes_all[flat]
        freq = (codes > 0).double().mean(0)
        live = [i for i in torch.argsort(freq, descending=True).tolist()
                if int((codes[:, i] > 0).sum()) >= 4 and float(freq[i]) >= min_frequency]
        chosen = {i: _greedy(contrib[:, :, i], pre_all[:, i], train, k_max) for i in live}
        pre_hat = pre_all.clone()
        for i in live:
            pre_hat[:, i] = _reconstruct(contrib[:, :, i], pre_all[:, i], train, chosen[i][:k_terms])
        codes_hat = topk_codes(pre_hat, sae.k)
        logit_dir = sae.W_dec.T @ model.W_U.detach().T  # (m, vocab): W_U d_i
        tgt = targets.reshape(-1)[flat]
        names = [exp[int(j)].name for j in site_terms]

        def effect(base: Tensor, f: Tensor, i: int) -> Tensor:  # logits(base + f·d_i) − logits(base), test positions
            if site is None:
                return f[test][:, None] * logit_dir[i]
            d = sae.W_dec[:, i]
            out = _logits_from(model, base + (f[:, None] * d).reshape(B, T, -1), site) - _logits_from(model, base, site)
            return out.reshape(B * T, -1)[test]

        reports = []
        for i in live:
            on = codes[:, i] > 0
            ci = contrib[:, :, i]
            share = ci[:, flat][:, on].abs().mean(1)
            share = share / share.sum()
            by_k = tuple(_r2(pre_all[test, i], _reconstruct(ci, pre_all[:, i], train, chosen[i][:kk])[test])
                         for kk in range(1, k_max + 1))
            u = logit_dir[i]
            f, f_hat = codes_all[:, i], codes_hat[:, i]
            rest = resid - (f[:, None] * sae.W_dec[:, i]).reshape(B, T, -1)
            eff, eff_hat = effect(rest, f, i), effect(rest, f_hat, i)
            # baseline: a random direction of the same norm, thresholded to fire at the latent's rate
            cr, yr = contrib_r[:, :, i], pre_r[:, i]
            sel = _greedy(cr, yr, train, k_terms)
            yr_hat = _reconstruct(cr, yr, train, sel)
            theta = torch.quantile(yr[train], 1 - float(freq[i]))
            fr, fr_hat = torch.relu(yr - theta), torch.relu(yr_hat - theta)
            common = torch.bincount(tgt[on], minlength=model.config.vocab_size)
            attr_term, match = _attribution(exp, sae, tokens, targets, i, [int(site_terms[j]) for j in chosen[i][:k_terms]],
                                            on, flat)
            feeds = _feeds(model, rest, (f[:, None] * sae.W_dec[:, i]).reshape(B, T, -1), site, keep, on)
            reports.append(LatentReport(
                latent=i, frequency=float(freq[i]), terms=tuple(names[j] for j in chosen[i][:k_terms]),
                shares=tuple(float(share[j]) for j in chosen[i][:k_terms]),
                r2_pre=by_k[k_terms - 1], r2_effect=_r2(eff, eff_hat),
                r2_pre_baseline=_r2(yr[test], yr_hat[test]),
                r2_effect_baseline=_r2(effect(resid, fr, i), effect(resid, fr_hat, i)),
                r2_pre_by_k=by_k, promotes=tuple(torch.argsort(u, descending=True)[:2].tolist()),
                suppresses=tuple(torch.argsort(u)[:2].tolist()),
                top_target=(int(common.argmax()), float(common.max() / common.sum())),
                attribution_term=attr_term, attribution_match=match, feeds=feeds))
    return reports


def _logits_from(model, x: Tensor, layer: int) -> Tensor:
    """Logits from the residual stream entering block ``layer`` (the reference blocks, then W_U)."""
    for block in model.blocks[layer:]:
        x = block(x)
    return x @ model.W_U.detach().T


def feed_terms(model, rest: Tensor, delta: Tensor, site: int | None) -> dict[str, Tensor]:
    """Exact split of a latent's logit effect logits(rest + δ) − logits(rest) into the terms δ feeds.

    For the final residual stream (site None) the only term is the unembedding, W_U δ. For the input of
    the last block (site = n_layers − 1): the direct path W_U δ; each head's terms with δ in at least one
    of its (q, k, v) slots (the other slots filled by ``rest``: 7 per head); and the MLP's terms
    B(μ, Δ) + B(Δ, μ) and B(Δ, Δ), where μ is the δ-free part of the MLP's input and Δ the rest
    (δ plus every head term above). The terms sum to the effect exactly.

    Args:
        model: the model.
        rest: (B, T, d) the residual at the site without the latent.
        delta: (B, T, d) the latent's contribution f·d.
        site: None or n_layers − 1.

    Returns:
        ``{name: (B, T, vocab) logits}``.

    Raises:
        ValueError: a site other than None or the last block's input.
    """
    WU = model.W_U.detach()
    if site is None:
        return {"W_U (direct)": delta @ WU.T}
    if site != model.config.n_layers - 1:
        raise ValueError(f"feed_terms splits through the last block only (site {model.config.n_layers - 1}); got {site}")
    block = model.blocks[site]
    attn, T = block.attn, rest.shape[1]
    mask = causal_weights(T, model.config.normaliser, dtype=rest.dtype, device=rest.device)
    out = {"W_U (direct)": delta @ WU.T}
    mu = rest + attn(rest)  # δ-free part of the MLP input
    Delta = delta.clone()
    src = {"δ": delta, "r": rest}
    for h in range(model.config.n_heads):
        for combo in ((a, b, c) for a in "δr" for b in "δr" for c in "δr"):
            if combo == ("r", "r", "r"):
                continue
            q = src[combo[0]] @ attn.W_Q[h].T
            k = src[combo[1]] @ attn.W_K[h].T
            v = src[combo[2]] @ attn.W_V[h].T
            z = ((q @ k.transpose(-1, -2)) * mask) @ v @ attn.W_O[h].T  # (B, T, d)
            Delta = Delta + z
            out[f"L{site}.H{h}(q={combo[0]}, k={combo[1]}, v={combo[2]})"] = z @ WU.T
    if block.mlp is not None:
        mlp = block.mlp
        bil = lambda a, b: ((a @ mlp.W.T) * (b @ mlp.V.T)) @ mlp.P.T
        out[f"L{site}.mlp(μ, Δ)"] = (bil(mu, Delta) + bil(Delta, mu)) @ WU.T
        out[f"L{site}.mlp(Δ, Δ)"] = bil(Delta, Delta) @ WU.T
    return out


def _feeds(model, rest, delta, site, keep, on) -> tuple[tuple[str, float], ...]:
    """The two terms the latent feeds with the largest mean ‖logits‖ where it fires, with their shares."""
    terms = feed_terms(model, rest, delta, site)
    size = {n: float(v.reshape(-1, v.shape[-1])[keep.reshape(-1)][on].norm(dim=-1).mean()) for n, v in terms.items()}
    total = sum(size.values()) or 1.0
    top = sorted(size.items(), key=lambda kv: -kv[1])[:2]
    return tuple((n, s / total) for n, s in top)


def _attribution(exp, sae, tokens, targets, latent, chosen, on, flat) -> tuple[str | None, float | None]:
    """Signed per-source-position attribution of the first driving head term with v = emb."""
    model = exp.model
    term = next((exp[j] for j in chosen if exp[j].kind == "head" and exp[j].sources[2] == "emb"), None)
    if term is None:
        return None, None
    with torch.no_grad():
        outs = model.component_outputs(tokens)
        attn = model.blocks[term.layer].attn
        q = outs[term.sources[0]] @ attn.W_Q[term.head].T  # (B, T, d_head)
        k = outs[term.sources[1]] @ attn.W_K[term.head].T
        w = sae.W_enc[latent]
        val = outs["emb"] @ (attn.W_O[term.head] @ attn.W_V[term.head]).T @ w  # (B, S): w·OV e(x_s, s)
        T = tokens.shape[1]
        scores = (q @ k.transpose(-1, -2)) * causal_weights(T, model.config.normaliser, dtype=q.dtype)  # (B, T, S)
        attr = scores * val[:, None, :]  # (B, T, S): signed, sums over s to the term's contribution
        best = attr.argmax(-1)  # source position with the largest signed attribution
        src_tok = torch.gather(tokens, 1, best)  # (B, T)
        match = (src_tok.reshape(-1) == targets.reshape(-1))[flat][on]
    return term.name, float(match.double().mean())
