"""Pruning of a component expansion: keep the largest terms, bound what was dropped.

Error metric: the worst case over every token sequence of length ≤ n_ctx and every position t of the
ℓ2 norm of the dropped terms' sum, sup_{x, t} ‖Σ_{dropped} term_t(x)‖₂ (in logit space by default).
The bound is Σ_{dropped} b_i, with b_i ≥ sup_{x,t} ‖term_i,t(x)‖₂ (triangle inequality).

Per-term bounds b_i, tightest first (docs/theory.md §5 lists the options; norm products alone can be
vacuous, compare Gross et al. 2024, arXiv 2406.11779):

* the embedding term and MLP terms whose two slots are the embedding depend on (x_t, t) only: exact
  maxima over the finite table of V·n_ctx embedding vectors;
* head terms whose three slots are the embedding: exact per-position table,
  b = max_{t, x_t} n(t)·[Σ_{s<t} max_{x_s} |e_tᵀ QK e_s|·‖M OV e_s‖ + |e_tᵀ QK e_t|·‖M OV e_t‖];
* otherwise a product of per-slot suprema sup ‖M out_c‖: exact where the slot is the embedding, the
  per-position table above (with readout M) where it is a layer-0 head, and otherwise ‖M‖₂·R_c, where
  R_c ≥ sup ‖out_c‖ is itself bounded recursively, layer by layer, as the sum of the bounds of
  component c's own terms. For MLP terms ‖u ⊙ v‖₂ ≤ min(‖u‖₂‖v‖_∞, ‖u‖_∞‖v‖₂).
* then, per term, the smaller of that and the per-position vertex bound of
  :mod:`~slt_interp.bilinear.vertex_bounds` (layer-0 outputs are sums of per-token vectors, the
  layer-0 MLP output is a pairwise function of the tokens, terms are multilinear in their sources, so
  maxima are taken over vertex combinations; on the report's induction model the median bound/worst
  ratio of layer-1 head terms is 4.4 against 643 for the norm products, of layer-1 MLP terms 67
  against 1.4·10⁷).

All bounds are bounds in exact arithmetic evaluated in float64 (the rounding is not enclosed).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .components import readout_matrix, term_index
from .expand import ComponentExpansion
from .expandable import check_expandable
from .layers import position_normaliser
from .vertex_bounds import vertex_bounds, vertex_bounds_fit

__all__ = ["TermBounds", "PruneResult", "term_bounds", "prune", "worst_case_error", "exhaustive_worst_case"]

_TABLE_LIMIT = 20_000_000  # entries of the (n_ctx·V)² exact table before falling back to norm products


@dataclass(frozen=True)
class TermBounds:
    """Bounds b_i ≥ sup_{x, t} ‖term_i,t(x)‖₂ over all token sequences (exact arithmetic, see below).

    Each bound is proven for exact arithmetic on the model's weights (module docstring) and evaluated in
    float64; the rounding of that evaluation (relative ~1e-13 at these sizes) is not enclosed.

    Attributes:
        values: (num_terms,) float64 bounds, in the expansion's term order.
        exact: (num_terms,) bool, True where the bound is an exact maximum (attained by some input).
        component_bounds: R_c ≥ sup ‖out_c‖₂ in the residual stream, per component name.
        readout: the readout the bounds refer to ("logits", "residual" or "matrix").
    """

    values: Tensor
    exact: Tensor
    component_bounds: dict = field(repr=False)
    readout: str = "logits"


def _spec(M: Tensor) -> float:
    return float(torch.linalg.matrix_norm(M, ord=2)) if M.numel() else 0.0


def term_bounds(expansion: ComponentExpansion, *, readout="logits", vertex: bool | None = None) -> TermBounds:
    """Per-term bounds on the worst-case norms of a :class:`~slt_interp.bilinear.expand.ComponentExpansion`.

    See the module docstring for the bounds used. Computed in float64 whatever the model dtype.

    Args:
        expansion: from ``expand(model)``.
        readout: "logits", "residual" or a (k, d_model) matrix: the bounds are on ‖readout·term‖₂.
        vertex: also compute the per-position vertex bounds of :mod:`~slt_interp.bilinear.vertex_bounds`
            (layer-0 outputs as sums of per-token vectors) and keep the smaller bound per term. None
            (default): when their tables fit (:func:`~slt_interp.bilinear.vertex_bounds.vertex_bounds_fit`:
            (n_ctx·V)³ and (n_ctx·V)²·width at most 3·10⁷ entries); False: the norm-product / table
            bounds alone; True: always (ValueError if they do not fit).

    Returns:
        A :class:`TermBounds`.

    Raises:
        TypeError: ``expansion`` is not a ComponentExpansion.
        NotExpandableError: the model was changed after the expansion was built (e.g. a hook added).
        ValueError: ``vertex=True`` for a model whose vertex tables do not fit.
    """
    if not isinstance(expansion, ComponentExpansion):
        raise TypeError(f"term_bounds needs a ComponentExpansion (expand(model)), got {type(expansion).__name__}")
    fits = vertex_bounds_fit(expansion.config)
    if vertex and not fits:
        c = expansion.config
        raise ValueError(f"vertex bounds need tables of (n_ctx·vocab)³ = {(c.n_ctx * c.vocab_size) ** 3:.3g} entries, "
                         "above the 3e7 limit; use vertex=None (skipped when too large) or vertex=False")
    vertex = fits if vertex is None else vertex
    model, cfg = expansion.model, expansion.config
    check_expandable(model)  # the model may have changed since the expansion was built
    with torch.no_grad():
        dev = model.W_E.device
        f64 = dict(dtype=torch.float64, device=dev)
        WE = model.W_E.detach().to(**f64)
        X0 = WE[None].expand(cfg.n_ctx, -1, -1)  # (n_ctx, V, d_model): embedding of token x at t
        if model.W_pos is not None:
            X0 = X0 + model.W_pos.detach().to(**f64)[:, None, :]
        Rout = readout_matrix(model, readout, torch.float64, dev)
        nvec = position_normaliser(cfg.n_ctx, cfg.normaliser, **f64)  # (n_ctx,)
        tpos = torch.arange(cfg.n_ctx, device=dev)
        causal = (tpos[None, :] <= tpos[:, None]).to(torch.float64)  # (t, s): s ≤ t
        pos_factor = float((nvec * (tpos + 1)).max())  # max_t n(t)·(t+1)
        table_ok = (cfg.n_ctx * cfg.vocab_size) ** 2 <= _TABLE_LIMIT
        comps = expansion.components
        R: list[float] = [float(X0.norm(dim=-1).max())]

        strict = (tpos[None, :] < tpos[:, None]).to(torch.float64)  # (t, s): s < t
        qk_tables: dict[int, Tensor] = {}  # per layer-0 head: |e_tᵀ QK e_s| for all (t, x, s, y)

        def qk_table(layer: int, h: int) -> Tensor:
            attn = model.blocks[layer].attn
            QK = attn.W_Q[h].detach().to(**f64).T @ attn.W_K[h].detach().to(**f64)  # (d_model, d_model)
            s = (X0 @ QK @ X0.reshape(-1, X0.shape[-1]).T).abs()  # (n_ctx, V, n_ctx·V)
            return s.reshape(cfg.n_ctx, cfg.vocab_size, cfg.n_ctx, cfg.vocab_size)  # (t, x, s, y)

        def table_bound(s: Tensor, w: Tensor) -> float:
            """max_{t, x_t} n(t)·[Σ_{s<t} max_{x_s} s·w + (s = t, x_s = x_t) term]; w: (s, y) value norms."""
            A = s * w[None, None]  # (t, x, s, y)
            off = (A.amax(dim=3) * strict[:, None, :]).sum(dim=2)  # (t, x)
            diag = A[tpos, :, tpos, :].diagonal(dim1=1, dim2=2)  # (t, x): s = t, y = x
            return float(((off + diag) * nvec[:, None]).max())

        def sup_norm(ci: int, M: Tensor, spec: float | None = None) -> float:  # ≥ sup ‖M out_ci‖₂
            if ci == 0:
                return float((X0 @ M.T).norm(dim=-1).max())
            generic = (_spec(M) if spec is None else spec) * R[ci]
            c = comps[ci]
            if table_ok and c.kind == "head" and c.layer == 0:
                # out_ci is a layer-0 head: exact per-position table with readout M
                if ci not in qk_tables:
                    qk_tables[ci] = qk_table(0, c.head)
                attn = model.blocks[0].attn
                MOV = M @ attn.W_O[c.head].detach().to(**f64) @ attn.W_V[c.head].detach().to(**f64)
                return min(generic, table_bound(qk_tables[ci], (X0 @ MOV.T).norm(dim=-1)))
            return generic

        def sup_inf(ci: int, M: Tensor) -> float:  # ≥ sup ‖M out_ci‖_∞
            if ci == 0:
                return float((X0 @ M.T).abs().max())
            return float(M.norm(dim=1).max()) * R[ci]

        def head_consts(ci: int, Ms: tuple) -> list[dict]:
            """Per-slot suprema a head's term bounds need, once per head and readout in Ms."""
            c = comps[ci]
            attn = model.blocks[c.layer].attn
            QK = attn.W_Q[c.head].detach().to(**f64).T @ attn.W_K[c.head].detach().to(**f64)  # (d, d)
            spec_qk = _spec(QK)
            qkT = {a: sup_norm(a, QK.T, spec_qk) for a in c.sources}  # ≥ sup ‖QKᵀ out_a‖
            qk = {b: sup_norm(b, QK, spec_qk) for b in c.sources}  # ≥ sup ‖QK out_b‖
            s = qk_table(c.layer, c.head) if table_ok else None
            sqk_ee = float((s * causal[:, None, :, None]).max()) if s is not None else None
            out = []
            for M in Ms:
                MOV = _mat(M, attn.W_O[c.head].detach().to(**f64)) @ attn.W_V[c.head].detach().to(**f64)
                spec_mov = _spec(MOV)
                k = dict(qkT=qkT, qk=qk, sqk_ee=sqk_ee, mov={v: sup_norm(v, MOV, spec_mov) for v in c.sources})
                k["ee"] = table_bound(s, (X0 @ MOV.T).norm(dim=-1)) if s is not None else None
                out.append(k)
            return out

        def head_bound(k: dict, a: int, b: int, c: int) -> float:
            if a == b == c == 0 and k["ee"] is not None:
                return k["ee"]
            if a == b == 0 and k["sqk_ee"] is not None:
                sqk = k["sqk_ee"]
            else:  # |x_aᵀ QK x_b| ≤ min(‖QKᵀ x_a‖·‖x_b‖, ‖x_a‖·‖QK x_b‖)
                sqk = min(k["qkT"][a] * R[b], R[a] * k["qk"][b])
            return pos_factor * sqk * k["mov"][c]

        def mlp_consts(ci: int, M: Tensor | None) -> dict:
            c = comps[ci]
            mlp = model.blocks[c.layer].mlp
            W, V = mlp.W.detach().to(**f64), mlp.V.detach().to(**f64)
            MP = _mat(M, mlp.P.detach().to(**f64))  # (out, d_mlp)
            y = ((X0 @ W.T) * (X0 @ V.T)) @ MP.T  # (n_ctx, V, out): the (emb, emb) term, exact
            sW, sV = _spec(W), _spec(V)
            return dict(spec_mp=_spec(MP), ee=float(y.norm(dim=-1).max()),
                        W2={a: sup_norm(a, W, sW) for a in c.sources}, V2={a: sup_norm(a, V, sV) for a in c.sources},
                        Winf={a: sup_inf(a, W) for a in c.sources}, Vinf={a: sup_inf(a, V) for a in c.sources})

        def mlp_bound(k: dict, a: int, b: int) -> float:
            if a == b == 0:
                return k["ee"]
            # ‖P (W x_a ⊙ V x_b)‖ ≤ ‖P‖₂ · min(‖W x_a‖₂‖V x_b‖_∞, ‖W x_a‖_∞‖V x_b‖₂)
            one = min(k["W2"][a] * k["Vinf"][b], k["Winf"][a] * k["V2"][b])
            if a != b:
                one += min(k["W2"][b] * k["Vinf"][a], k["Winf"][b] * k["V2"][a])
            return k["spec_mp"] * one

        values = [0.0] * len(expansion)
        exact = [False] * len(expansion)
        values[0], exact[0] = float(_apply_rows(Rout, X0).norm(dim=-1).max()), True
        for ci, c in enumerate(comps[1:], start=1):
            if c.kind == "head":
                kr, ko = head_consts(ci, (None, Rout))
            else:
                kr, ko = mlp_consts(ci, None), mlp_consts(ci, Rout)
            total = 0.0
            for ti in c.terms:
                idx = [expansion.component_index(s) for s in expansion.terms[ti].sources]
                if c.kind == "head":
                    total += head_bound(kr, *idx)
                    values[ti] = head_bound(ko, *idx)
                else:
                    total += mlp_bound(kr, *idx)
                    values[ti] = mlp_bound(ko, *idx)
                    exact[ti] = idx[0] == idx[1] == 0
            R.append(total)
        values = torch.tensor(values, dtype=torch.float64)
        if vertex:
            tight = vertex_bounds(expansion, Rout).cpu()
            values = torch.where(torch.tensor(exact), values, torch.minimum(values, tight))
    name = readout if isinstance(readout, str) else "matrix"
    return TermBounds(
        values=values,
        exact=torch.tensor(exact),
        component_bounds={c.name: R[i] for i, c in enumerate(comps)},
        readout=name,
    )


def _mat(M: Tensor | None, X: Tensor) -> Tensor:
    return X if M is None else M @ X


def _apply_rows(M: Tensor | None, X: Tensor) -> Tensor:
    return X if M is None else X @ M.T


@dataclass(frozen=True)
class PruneResult:
    """A pruned expansion with a bound on, and a measurement of, its error.

    The bounds hold in exact arithmetic on the stored weights; float64 rounding of their computation
    (about 1e-13 relative) is not enclosed, so they are not called certified.

    Attributes:
        kept: indices of the kept terms, sorted by decreasing bound (or measured size).
        dropped: indices of the dropped terms, sorted.
        error_bound: Σ_{dropped} b_i ≥ sup over all sequences and positions of ‖Σ_dropped term‖₂.
        measured_error: max over the given tokens and positions of ‖Σ_dropped term‖₂ (None: no tokens).
        num_sequences: number of sequences the measured error was taken over.
        eps: the requested error budget (None when ``num_keep`` was given).
        bounds: the per-term :class:`TermBounds` used.
        exhaustive_error: the worst case over *every* sequence of length n_ctx (hence every prefix), by
            enumeration, when requested (``exhaustive=True``); else None. Exact up to the rounding of the
            model's dtype (use a float64 model), and never above ``error_bound``.
    """

    kept: tuple[int, ...]
    dropped: tuple[int, ...]
    error_bound: float
    measured_error: float | None
    num_sequences: int
    eps: float | None
    bounds: TermBounds = field(repr=False)
    exhaustive_error: float | None = None

    @property
    def keep_mask(self) -> Tensor:
        """Boolean mask (num_terms,) of the kept terms, for ``evaluate_sum(tokens, keep=...)``."""
        mask = torch.zeros(len(self.kept) + len(self.dropped), dtype=torch.bool)
        mask[list(self.kept)] = True
        return mask


def worst_case_error(expansion: ComponentExpansion, dropped, tokens: Tensor, *, readout="logits") -> float:
    """Largest ‖Σ_{dropped} term_t‖₂ over the sequences in ``tokens`` and positions (measured, not proven).

    Args:
        expansion: from ``expand(model)``.
        dropped: indices (or a boolean mask) of the dropped terms.
        tokens: (B, T) integer tensor or nested list of ints.
        readout: as in :meth:`~slt_interp.bilinear.expand.ComponentExpansion.evaluate`.

    Returns:
        The largest ℓ2 norm of the dropped terms' sum over the sequences and positions.

    Raises:
        TypeError, ValueError: invalid tokens or term indices.
    """
    idx = term_index(dropped, len(expansion))
    if idx.numel() == 0:
        return 0.0
    err = expansion.evaluate(tokens, idx, readout=readout).sum(0)  # (B, T, out)
    return float(err.norm(dim=-1).max())


def all_sequences(vocab_size: int, n_ctx: int, start: int, stop: int, device=None) -> Tensor:
    """Sequences number start..stop-1 of the V^n_ctx sequences in lexicographic order.

    Args:
        vocab_size: V.
        n_ctx: sequence length.
        start: first sequence number.
        stop: one past the last sequence number.
        device: device of the result.

    Returns:
        Integer tensor of shape (stop - start, n_ctx).
    """
    idx = torch.arange(start, stop, device=device)
    powers = vocab_size ** torch.arange(n_ctx - 1, -1, -1, device=device)  # (n_ctx,)
    return (idx[:, None] // powers) % vocab_size


def exhaustive_worst_case(expansion: ComponentExpansion, dropped_sets, *, max_sequences: int = 200_000,
                          chunk_size: int = 512) -> list[float]:
    """Exact sup over every sequence and position of ‖Σ_{dropped} term_t‖₂, by enumeration.

    All V^n_ctx sequences of length n_ctx are enumerated (causality: their prefixes cover every shorter
    sequence). Exact up to float rounding of the evaluation.

    Args:
        expansion: from ``expand(model)``.
        dropped_sets: a list of index tensors (or boolean masks); one worst case is returned for each.
        max_sequences: refuse when V^n_ctx exceeds it.
        chunk_size: sequences evaluated at once.

    Returns:
        One worst case per dropped set.

    Raises:
        ValueError: the sequence space is larger than ``max_sequences``.
    """
    cfg = expansion.config
    total = cfg.vocab_size ** cfg.n_ctx
    if total > max_sequences:
        raise ValueError(f"{cfg.vocab_size}^{cfg.n_ctx} = {total:.3g} sequences > max_sequences = {max_sequences}; "
                         "use the bound (error_bound) or raise max_sequences")
    sets = [term_index(d, len(expansion)) for d in dropped_sets]
    worst = [0.0] * len(sets)
    device = expansion.model.W_E.device
    for start in range(0, total, chunk_size):
        tokens = all_sequences(cfg.vocab_size, cfg.n_ctx, start, min(total, start + chunk_size), device)
        values = expansion.evaluate(tokens)  # (num_terms, chunk, T, out)
        for i, d in enumerate(sets):
            if d.numel():
                worst[i] = max(worst[i], float(values[d.to(device)].sum(0).norm(dim=-1).max()))
    return worst


def prune(expansion: ComponentExpansion, eps: float | None = None, *, num_keep: int | None = None,
          tokens: Tensor | None = None, rank_by: str = "bound", exhaustive: bool = False,
          bounds: TermBounds | None = None) -> PruneResult:
    """Keep the largest terms; drop the rest; bound and measure the error of what was dropped.

    With ``eps``: drop the terms with the smallest bounds b_i as long as Σ_{dropped} b_i ≤ eps (the most
    terms that fit the budget). With ``num_keep``: keep that many terms, the largest by ``rank_by``:
    "bound" (the bounds b_i) or "measured" (max ‖term‖₂ over ``tokens``; the bound stays valid for
    every input, only the choice of terms uses the data). The bound Σ_{dropped} b_i bounds
    sup_{x, t} ‖logits_t(x) − pruned_t(x)‖₂ over every sequence of length ≤ n_ctx.

    Args:
        expansion: from ``expand(model)``.
        eps: error budget (≥ 0), or None with ``num_keep``.
        num_keep: number of terms to keep, or None with ``eps``.
        tokens: optional (B, T) sequences on which to measure the actual worst error.
        rank_by: "bound" or "measured" (with ``num_keep`` and ``tokens`` only).
        exhaustive: also compute the exact worst case over all V^n_ctx sequences
            (:func:`exhaustive_worst_case`; small vocabularies and contexts only).
        bounds: the expansion's :func:`term_bounds` (logit readout) when already computed, to prune at
            several budgets without recomputing them; None computes them.

    Returns:
        A :class:`PruneResult`.

    Raises:
        TypeError: ``expansion`` is not a ComponentExpansion, or invalid tokens.
        ValueError: neither or both of eps / num_keep, a negative value, or rank_by="measured" without
            tokens / with eps.
    """
    if not isinstance(expansion, ComponentExpansion):
        raise TypeError(f"prune needs a ComponentExpansion (expand(model)), got {type(expansion).__name__}")
    if tokens is not None:
        tokens = expansion.model.as_tokens(tokens)
    if (eps is None) == (num_keep is None):
        raise ValueError("give exactly one of eps (error budget) or num_keep (number of terms)")
    if eps is not None and not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    if num_keep is not None and not 0 <= num_keep <= len(expansion):
        raise ValueError(f"num_keep must lie in [0, {len(expansion)}], got {num_keep!r}")
    if rank_by not in ("bound", "measured"):
        raise ValueError(f"rank_by must be 'bound' or 'measured', got {rank_by!r}")
    if rank_by == "measured" and (tokens is None or num_keep is None):
        raise ValueError("rank_by='measured' needs tokens and num_keep (an eps budget always ranks by bound)")
    if bounds is None:
        bounds = term_bounds(expansion)
    elif not isinstance(bounds, TermBounds) or bounds.values.shape != (len(expansion),) or bounds.readout != "logits":
        raise ValueError("bounds must be term_bounds(expansion) of this expansion with the logit readout")
    values = None
    if rank_by == "measured":
        values = expansion.evaluate(tokens)  # (num_terms, B, T, vocab)
        size = values.norm(dim=-1).flatten(1).amax(dim=1).to(torch.float64).cpu()
        order = torch.argsort(size, descending=True, stable=True)
    else:
        order = torch.argsort(bounds.values, descending=True, stable=True)  # largest first
    tail = torch.cumsum(bounds.values[order].flip(0), 0).flip(0)  # Σ of bounds from position k on
    if num_keep is None:
        fits = (tail <= eps).nonzero()
        num_keep = int(fits[0]) if fits.numel() else len(expansion)
    kept, dropped = order[:num_keep], order[num_keep:]
    bound = float(tail[num_keep]) if num_keep < len(expansion) else 0.0  # the same sum the budget was checked on
    if tokens is None:
        measured = None
    elif values is not None:
        measured = float(values[dropped.to(values.device)].sum(0).norm(dim=-1).max()) if len(dropped) else 0.0
    else:
        measured = worst_case_error(expansion, dropped, tokens)
    return PruneResult(
        kept=tuple(kept.tolist()), dropped=tuple(sorted(dropped.tolist())), error_bound=bound,
        measured_error=measured, num_sequences=0 if tokens is None else int(tokens.shape[0]), eps=eps,
        bounds=bounds, exhaustive_error=exhaustive_worst_case(expansion, [dropped])[0] if exhaustive else None,
    )
