"""Per-position term bounds from the vertex structure of layer-0 outputs (docs/theory.md §5).

Every bound here is an upper bound on sup over all token sequences of ‖M·term_t‖₂ at each position t,
proven in exact arithmetic from four facts:

1. **Layer-0 outputs are sums of per-token vectors.** With e(x, t) = W_E[x] + W_pos[t], head h of layer
   0 writes at position t, given the token x = x_t,
   z_h(t) = λ_h(t, x; t, x)·v_h(t, x) + Σ_{s<t} λ_h(t, x; s, x_s)·v_h(s, x_s),
   λ_h(t, x; s, y) = n(t)·e(x, t)ᵀ W_Qᵀ W_K e(y, s), v_h(s, y) = W_O W_V e(y, s),
   with x_s free for s < t: the set of z_h(t) is the Minkowski sum of finite per-token sets, and its
   convex hull has the sums of per-token vectors as vertices.
2. **Terms are multilinear in their sources**, so a norm or |linear functional| of a term is convex in
   each source and its maximum over a source's set is attained at a vertex combination: sup ‖L z‖ over
   a Minkowski sum ≤ Σ_slots max_vertex ‖L·vertex‖ (triangle inequality; exact when one slot), and
   sup |wᵀ z| = support function, computed exactly slot by slot.
3. **The layer-0 MLP output is a pairwise function of the tokens.** Given x_t, r(t) = c + Σ_{s<t} g_s(x_s),
   so w·m(t) = w·P((W r) ⊙ (V r)) = C + Σ_s U_s(x_s) + Σ_{s<s'} Q_{ss'}(x_s, x_s'): its maximum over the
   V^t token choices is at most C + Σ_{s<s'} max [Q_{ss'} + (U_s + U_s')/(t−1)] (an equivalent split of
   the function into pair potentials, each maximised exactly), the same for the minimum
   (``_Layer0.mlp0_support``); norms ‖L m‖ ≤ ‖(sup |L_r·m|)_r‖₂ row by row.
4. **Products of sources** are bounded by interval products of signed supports, by Cauchy–Schwarz
   (|qᵀ A k| ≤ ‖Aᵀq‖·‖k‖) and, for bilinear MLPs, ‖P (u ⊙ v)‖ ≤ ‖P‖₂·min(‖u‖₂‖v‖_∞, ‖u‖_∞‖v‖₂), with
   every factor a per-position (and per-token) supremum from 1–3.

For a head term (q=a, k=b, v=c) at query position t, branching on the query token x = x_t and the key
token y = x_s (the key and value at s share it; at s = t, y = x):
‖Σ_{s≤t} n(t)(q_tᵀ A k_s)·B v_s‖ ≤ n(t) max_x Σ_{s≤t} max_y S(t, x, s, y)·N(s, y), with S ≥ sup|q_tᵀ A k_s|
and N ≥ sup‖B v_s‖ given (x, y) (the other tokens free, independently per factor); and, in an
orthonormal basis u_r of B's range, |u_rᵀ·term| ≤ n(t) Σ_s max_y (largest corner of [S_lo, S_hi] ×
[inf u_rᵀB v_s, sup u_rᵀB v_s]), signed score bounds kept, then ‖·‖₂ over r; the smaller is used. S is
exact where a slot is the embedding and the other a layer-0 head; a layer-0 head slot is split into its
atoms λ·v_h, each paired with the signed support of the other slot along A·v_h; where the key is the
embedding, the query head's atom at s is the one of the key token y. For any two slots, with the SVD
A = Σ_j σ_j u_j w_jᵀ, qᵀ A k = Σ_j σ_j (u_jᵀ q)(w_jᵀ k) lies in the sum of the corner intervals of the
two signed supports. **Joint per position:** where the score A and a value coordinate B are both sums
of per-token atoms over the same sequence (no MLP slot, at most one head slot in the score), given
x_t = x and x_s = y, 4AB = (μA + B/μ)² − (μA − B/μ)² for any μ > 0, so sup AB ≤ sup (μA + B/μ)²/4 and
inf AB ≥ −sup (μA − B/μ)²/4, with the sup of the square the larger square of the exact separable sup
and inf (each free token maximised once for both factors; μ = (sup|B| / sup|A|)^½). For an MLP
term (a, b): one slot the embedding e(x, t) makes the term linear in the other source,
M P (diag(W e) V + diag(V e) W)·out_b(t), bounded by fact 2; otherwise fact 4. Sources deeper than
layer 0 enter through per-position norm bounds R_c(t) = Σ_{terms of c} bound_t (identity readout).
Every bound is checked against all V^T inputs on small vocabularies in
tests/bilinear/test_bilinear_vertex_bounds.py.

Rounding: these are bounds (exact arithmetic): proven for the exact real-number evaluation of the
formulas on the model's weights, then evaluated in float64. The rounding of that evaluation (relative
~1e-13 of the norm products involved at these sizes; Higham 2002, §3.1) is not enclosed, so they are
not float64 certificates; a margin that would make them so is not added.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._threads import small_work_threads
from .layers import position_normaliser

__all__ = ["vertex_bounds", "vertex_bounds_fit"]

_LIMIT = 30_000_000  # entries of the largest intermediate table
_PAIR_LIMIT = 600_000_000  # (n_ctx·V)³·d_mlp·(map rows) allowed for one layer-0 MLP pair expansion
_SUPPORT_ROWS = 512  # map rows for which the layer-0 MLP's signed pairwise supports are computed


def vertex_bounds_fit(config) -> bool:
    """Whether the vertex tables of a model with this config fit (≤ 3·10⁷ entries each).

    The largest tables have (n_ctx·V)³ entries (score supports over pairs of layer-0 vertex sets) and
    (n_ctx·V)²·width (the layer-0 residual's atoms).

    Args:
        config: a :class:`~slt_interp.bilinear.config.BilinearConfig`.

    Returns:
        True when :func:`vertex_bounds` is affordable.
    """
    tv = config.n_ctx * config.vocab_size
    return tv ** 3 <= _LIMIT and tv ** 2 * max(config.d_model, config.d_mlp, config.vocab_size) <= _LIMIT

class _Layer0:
    """Per-token vertex data of the layer-0 components (emb, heads) and per-position sup norms."""

    def __init__(self, model, f64):
        c = model.config
        self.T, self.V = c.n_ctx, c.vocab_size
        WE = model.W_E.detach().to(**f64)
        e = WE[None].expand(c.n_ctx, -1, -1)  # (T, V, d): e(x, t)
        if model.W_pos is not None:
            e = e + model.W_pos.detach().to(**f64)[:, None, :]
        self.e = e.contiguous()
        self.n = position_normaliser(c.n_ctx, c.normaliser, **f64)  # (T,)
        t = torch.arange(c.n_ctx, device=e.device)
        self.strict = (t[None, :] < t[:, None]).to(torch.float64)  # (t, s): s < t
        self.lam, self.val = {}, {}
        self._support_cache: dict = {}  # mlp0_support results per direction set
        attn = model.blocks[0].attn
        flat = self.e.reshape(-1, self.e.shape[-1])  # (T·V, d)
        for h in range(c.n_heads):
            QK = attn.W_Q[h].detach().to(**f64).T @ attn.W_K[h].detach().to(**f64)
            OV = attn.W_O[h].detach().to(**f64) @ attn.W_V[h].detach().to(**f64)
            lam = (flat @ QK @ flat.T).reshape(self.T, self.V, self.T, self.V) * self.n[:, None, None, None]
            self.lam[h] = lam  # (t, x, s, y)
            self.val[h] = self.e @ OV.T  # (s, y, d)

    def resid_atoms(self) -> tuple[Tensor, Tensor]:
        """The layer-0 attention residual r(t) = e + Σ_h z_h given x_t = x, as c(t, x) + Σ_{s<t} g(t, x; s, y_s).

        The heads share the tokens, so the atoms are summed over heads (an exact description).

        Returns:
            c (T, V, d) and g (T, V, T, V, d) (zero for s ≥ t).
        """
        if not hasattr(self, "_resid"):
            idx = torch.arange(self.T, device=self.e.device)
            c, g = self.e.clone(), torch.zeros(self.T, self.V, self.T, self.V, self.e.shape[-1], dtype=self.e.dtype,
                                               device=self.e.device)
            for h in self.lam:
                atoms = self.lam[h][..., None] * self.val[h][None, None]  # (t, x, s, y, d)
                c = c + atoms[idx, :, idx, :].diagonal(dim1=1, dim2=2).transpose(1, 2)  # (t, x, d): s = t, y = x
                g = g + atoms * self.strict[:, None, :, None, None]
            self._resid = (c, g)
        return self._resid

    def resid_abs_sup(self, w: Tensor) -> Tensor:
        """sup |w_k · r(t)| over the layer-0 attention residual given x_t (exact support function): (T, V, k)."""
        hi, lo = self.resid_support(w)
        return torch.maximum(hi, -lo)

    def resid_support(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Exact sup and inf of w_k · r(t) given x_t (support functions of the residual's vertex set): (T, V, k) each."""
        c, g = self.resid_atoms()
        cw = c @ w.T  # (t, x, k)
        gw = g @ w.T  # (t, x, s, y, k)
        return cw + gw.amax(dim=3).sum(dim=2), cw + gw.amin(dim=3).sum(dim=2)  # zero rows for s ≥ t add nothing

    def _mlp_weights(self, mlp) -> tuple[Tensor, Tensor, Tensor]:
        """W, V, P of a bilinear MLP, detached, in the bounds' dtype."""
        return tuple(m.detach().to(self.e.dtype) for m in (mlp.W, mlp.V, mlp.P))

    def mlp0_sup(self, mlp, L: Tensor, branch: bool = False) -> Tensor:
        """Bound on sup ‖L_k P((W r) ⊙ (V r))‖ for the layer-0 MLP output: (k, T).

        Per hidden unit i, U_i = sup |W_i r| and V_i = sup |V_i r| are exact support functions of the
        residual's vertex set, and u_i v_i lies in the interval of the corner products; row by row,
        |(L P)_r (u ⊙ v)| ≤ max(Σ_i max, −Σ_i min) of (L P)_ri × that interval, then ‖·‖₂; and also
        ≤ ‖L P‖₂ · min(‖U‖₂ max V, max U ‖V‖₂).

        Args:
            mlp: the layer-0 :class:`~slt_interp.bilinear.layers.BilinearMLP`.
            L: maps (k, m, d).
            branch: keep the token x_t = x: (k, T, V).

        Returns:
            Shape (k, T), or (k, T, V) with ``branch``.
        """
        W, V, P = self._mlp_weights(mlp)
        if not hasattr(self, "_mlp0_coords"):
            (uh, ul), (vh, vl) = self.resid_support(W), self.resid_support(V)  # (t, x, d_mlp) each
            corners = torch.stack([uh * vh, uh * vl, ul * vh, ul * vl])
            # u_i v_i lies in the interval spanned by the corner products (interval arithmetic)
            self._mlp0_coords = (torch.maximum(uh, -ul), torch.maximum(vh, -vl), corners.amax(0), corners.amin(0))
        U, Vs, prod_hi, prod_lo = self._mlp0_coords
        LP = L @ P  # (k, m, d_mlp)
        # per output row r: (L P)_r (u ⊙ v) = Σ_i (L P)_ri π_i with π_i ∈ [prod_lo_i, prod_hi_i]: its sup and inf
        # are sums of per-unit maxima / minima; then ‖·‖₂ over the rows (≤ the column-norm form
        # Σ_i ‖(L P)_{:,i}‖ U_i V_i by Minkowski's inequality)
        a, b = torch.einsum("kri,txi->ktxri", LP, prod_hi), torch.einsum("kri,txi->ktxri", LP, prod_lo)
        up, down = torch.maximum(a, b).sum(-1), torch.minimum(a, b).sum(-1)  # (k, t, x, r)
        coord = torch.maximum(up, -down).norm(dim=-1)
        spec = _spec(LP)  # (k,)
        cs = torch.minimum(U.norm(dim=-1) * Vs.amax(dim=-1), U.amax(dim=-1) * Vs.norm(dim=-1))  # (t, x)
        out = torch.minimum(coord, spec[:, None, None] * cs[None])  # (k, t, x)
        return out if branch else out.amax(dim=2)

    def mlp0_support(self, mlp, w: Tensor) -> tuple[Tensor, Tensor]:
        """Bounds hi ≥ sup and lo ≤ inf of w_k · m(t) given x_t, m = P((W r) ⊙ (V r)) the layer-0 MLP output.

        Given x_t = x, r = c + Σ_{s<t} g_s(y_s), so with p = Pᵀw the functional is a pairwise function of
        the free tokens, f(y) = C + Σ_s U_s(y_s) + Σ_{s<s'} Q_{ss'}(y_s, y_s'):
        C = p·(Wc ⊙ Vc), U_s = p·(Wc ⊙ Vg_s + Wg_s ⊙ Vc + Wg_s ⊙ Vg_s),
        Q_{ss'} = p·(Wg_s ⊙ Vg_s' + Wg_s' ⊙ Vg_s). Its maximum over the V^t token choices is at most
        C + Σ_{s<s'} max_{y,y'} [Q_{ss'} + (U_s + U_s')/(t−1)] (the unary terms folded into the t−1 pairs
        each token is in: the sum of the pair potentials equals f, and a sum of maxima bounds the maximum
        of the sum; never above the separable C + Σ_s max U_s + Σ_{s<s'} max Q_{ss'}, as
        max(f + g) ≤ max f + max g). Exact for t ≤ 1 (one free token). Same for −f.

        Args:
            mlp: the layer-0 :class:`~slt_interp.bilinear.layers.BilinearMLP`.
            w: directions (k, d).

        Returns:
            (hi, lo), each (k, T, V).
        """
        key = (w.shape, w.detach().cpu().numpy().tobytes())
        if key in self._support_cache:
            return self._support_cache[key]
        P = mlp.P.detach().to(self.e.dtype)
        cwv, single, folded = self._mlp0_quadratic(mlp)
        p = w @ P  # (k, h)
        k = w.shape[0]
        hi = (cwv @ p.T).permute(2, 0, 1).clone()  # (k, t, x): C
        lo = hi.clone()
        if self.T > 1:  # t = 1: one free token, its unary part maximised exactly
            u = single[1, :, 0] @ p.T  # (x, y, k)
            hi[:, 1] += u.amax(dim=1).T
            lo[:, 1] += u.amin(dim=1).T
        for t, Hf in folded.items():  # Hf: (h, x·pairs·y·y'), the unaries already folded into the pairs
            chunk = max(1, _LIMIT // Hf.shape[1])
            for k0 in range(0, k, chunk):
                Q = (p[k0:k0 + chunk] @ Hf).view(-1, self.V, t * (t - 1) // 2, self.V * self.V)  # (kc, x, pairs, y·y')
                hi[k0:k0 + chunk, t] += Q.amax(dim=3).sum(dim=2)
                lo[k0:k0 + chunk, t] += Q.amin(dim=3).sum(dim=2)
        self._support_cache[key] = (hi, lo)
        return hi, lo

    def _mlp0_quadratic(self, mlp) -> tuple[Tensor, Tensor, dict]:
        """Hidden-space parts of the layer-0 MLP as a pairwise function of the free tokens, once per model.

        Returns:
            Wc ⊙ Vc (t, x, h); the single-slot part S_s = Wc ⊙ Vg_s + Wg_s ⊙ Vc + Wg_s ⊙ Vg_s (t, x, s, y, h);
            per t ≥ 2, the folded pair potentials (h, x·pairs·y·y') Wg_s ⊙ Vg_s' + Wg_s' ⊙ Vg_s
            + (S_s(y) + S_s'(y'))/(t − 1) for the pairs s < s' < t (row-major in x, pair, y, y').
        """
        if not hasattr(self, "_quadratic"):
            W, V, _ = self._mlp_weights(mlp)
            c, g = self.resid_atoms()
            cw, cv, gw, gv = c @ W.T, c @ V.T, g @ W.T, g @ V.T  # (t, x, h), (t, x, s, y, h)
            single = cw[:, :, None, None] * gv + gw * cv[:, :, None, None] + gw * gv  # (t, x, s, y, h)
            folded = {}
            for t in range(2, self.T):
                si, sj = torch.triu_indices(t, t, 1, device=c.device)
                a, b, u = gw[t], gv[t], single[t] / (t - 1)  # (x, s, y, h)
                H = a[:, si, :, None] * b[:, sj, None] + a[:, sj, None] * b[:, si, :, None]  # (x, pairs, y, y', h)
                H += u[:, si, :, None] + u[:, sj, None]
                folded[t] = H.reshape(-1, H.shape[-1]).T.contiguous()
            self._quadratic = (cw * cv, single, folded)
        return self._quadratic

    def mlp0_pair_sup(self, mlp, L: Tensor, branch: bool = False) -> Tensor:
        """Bound on sup ‖L_k P((W r) ⊙ (V r))‖ by expanding the quadratic over the residual's atom slots: (k, T).

        With r = c + Σ_{s<t} g_s(y_s) (given x_t) and B(a, b) = P((W a) ⊙ (V b)):
        f(r) = B(c, c) + Σ_s [B(c, g_s) + B(g_s, c) + B(g_s, g_s)] + Σ_{s<s'} [B(g_s, g_s') + B(g_s', g_s)],
        and the triangle inequality over these slots, each maximised exactly over its V (or V²) atoms.

        Args:
            mlp: the layer-0 :class:`~slt_interp.bilinear.layers.BilinearMLP`.
            L: maps (k, m, d).
            branch: keep the token x_t = x: (k, T, V).

        Returns:
            Shape (k, T), or (k, T, V) with ``branch``.
        """
        W, V, P = self._mlp_weights(mlp)
        c, g = self.resid_atoms()
        LP = L @ P  # (k, m, h)
        cw, cv, gw, gv = c @ W.T, c @ V.T, g @ W.T, g @ V.T  # (t, x, h), (t, x, s, y, h)
        out = torch.einsum("kmh,txh->ktxm", LP, cw * cv).norm(dim=-1)  # (k, t, x)
        single = cw[:, :, None, None] * gv + gw * cv[:, :, None, None] + gw * gv  # (t, x, s, y, h); 0 for s ≥ t
        out = out + torch.einsum("kmh,txsyh->ktxsym", LP, single).norm(dim=-1).amax(dim=4).sum(dim=3)
        if not hasattr(self, "_pairs"):  # hidden-space products of every pair of atom slots, once per model
            self._pairs = {}
            for t in range(2, self.T):
                a, b = gw[t, :, :t], gv[t, :, :t]  # (x, s, y, h)
                self._pairs[t] = a[:, :, :, None, None] * b[:, None, None] + b[:, :, :, None, None] * a[:, None, None]
        k, m = LP.shape[:2]
        flat = LP.reshape(k * m, -1).T  # (h, k·m)
        for t, pair in self._pairs.items():  # pair: (x, s, y, s', y', h)
            vals = (pair @ flat).unflatten(-1, (k, m)).norm(dim=-1).amax(dim=(2, 4))  # (x, s, s', k)
            upper = torch.ones(t, t, dtype=vals.dtype, device=vals.device).triu(1)[None, :, :, None]
            out[:, t] += (vals * upper).sum(dim=(1, 2)).T  # (k, x)
        return out if branch else out.amax(dim=2)

    def emb_sup(self, L: Tensor) -> Tensor:
        """max_x ‖L_k e(x, t)‖ for maps L (k, m, d): (k, T), exact."""
        return torch.einsum("kmd,tvd->ktvm", L, self.e).norm(dim=-1).amax(dim=2)

    def head_sup(self, h: int, L: Tensor, branch: bool = False) -> Tensor:
        """Bound on sup ‖L_k z_h(t)‖ (fact 2), (k, T); per token x_t when ``branch`` ((k, T, V))."""
        if L.shape[1] == 1:  # one row: |w·z| has the exact support function Σ_s max_y (and min_y)
            hi, lo = self.head_support(h, L[:, 0])
            out = torch.maximum(hi, -lo)
            return out if branch else out.amax(dim=2)
        Lv = torch.einsum("kmd,syd->ksym", L, self.val[h]).norm(dim=-1)  # (k, s, y)
        lam = self.lam[h].abs()  # (t, x, s, y)
        prod = lam[None] * Lv[:, None, None]  # (k, t, x, s, y)
        off = (prod.amax(dim=4) * self.strict[None, :, None, :]).sum(dim=3)  # (k, t, x): Σ_{s<t} max_y
        idx = torch.arange(self.T, device=lam.device)
        diag = lam[idx, :, idx, :].diagonal(dim1=1, dim2=2)  # (t, x): λ(t, x; t, x)
        base = diag[None] * Lv  # Lv[k, t, x]: the value vector of the token at t itself
        out = off + base  # (k, t, x)
        return out if branch else out.amax(dim=2)

    def head_support(self, h: int, w: Tensor) -> tuple[Tensor, Tensor]:
        """Exact sup and inf of w_k·z_h(t) given x_t = x (support functions of the vertex set): (k, T, V) each."""
        wv = torch.einsum("kd,syd->ksy", w, self.val[h])  # (k, s, y)
        a = self.lam[h][None] * wv[:, None, None]  # (k, t, x, s, y)
        idx = torch.arange(self.T, device=a.device)
        diag = a[:, idx, :, idx, :].diagonal(dim1=2, dim2=3).transpose(0, 1)  # (k, t, x): s = t, y = x
        hi = diag + (a.amax(dim=4) * self.strict[None, :, None, :]).sum(dim=3)
        lo = diag + (a.amin(dim=4) * self.strict[None, :, None, :]).sum(dim=3)
        return hi, lo

    def atom_sum(self, h: int, G: Tensor, signed: tuple[Tensor, Tensor] | None = None,
                 branch: bool = False, parts: bool = False):
        """Σ over the atom slots of z_h(τ) of the largest value of a per-atom table: (τ, p).

        With ``G`` (s, y, p) ≥ sup |Y_p · (direction of atom (s, y))|, returns
        max_x Σ_{s<τ} max_y |λ_h(τ, x; s, y)|·G[s, y, p] + |λ_h(τ, x; τ, x)|·G[τ, x, p] (sublinearity of the
        support function of the other factor's set). With ``signed`` = (hi, lo), each (s, y, p, x'), the
        exact sup / inf of the other factor along +direction (x' its branch), it returns the tighter
        max over both branches of max(Σ max_y max(λ·hi, λ·lo), −Σ min_y min(λ·hi, λ·lo)): (τ, p).

        Args:
            h: the layer-0 head whose atoms are summed.
            G: (s, y, p) table, or None with ``signed``.
            signed: (hi, lo), each (s, y, p, x').
            branch: keep the token x at τ (the last output dimension before p): (τ, x, p).
            parts: with ``signed``, return the sup and inf bounds (up, down), each (τ, x, p, x'), instead.

        Returns:
            Shape (τ, p), or (τ, x, p) with ``branch``, or a pair with ``parts``.
        """
        lam = self.lam[h]  # (τ, x, s, y)
        idx = torch.arange(self.T, device=lam.device)
        if signed is None:
            a = lam.abs()[..., None] * G[None, None]  # (τ, x, s, y, p)
            diag = a[idx, :, idx, :].diagonal(dim1=1, dim2=2).permute(0, 2, 1)  # (τ, x, p)
            out = diag + (a.amax(dim=3) * self.strict[:, None, :, None]).sum(dim=2)  # (τ, x, p)
            return out if branch else out.amax(dim=1)
        hi, lo = signed  # (s, y, p, x')
        top = torch.maximum(lam[..., None, None] * hi[None, None], lam[..., None, None] * lo[None, None])
        bot = torch.minimum(lam[..., None, None] * hi[None, None], lam[..., None, None] * lo[None, None])
        # (τ, x, s, y, p, x')
        dt = top[idx, :, idx, :].diagonal(dim1=1, dim2=2).permute(0, 3, 1, 2)  # (τ, x, p, x')
        db = bot[idx, :, idx, :].diagonal(dim1=1, dim2=2).permute(0, 3, 1, 2)
        m = self.strict[:, None, :, None, None]
        up = dt + (top.amax(dim=3) * m).sum(dim=2)  # (τ, x, p, x')
        down = db + (bot.amin(dim=3) * m).sum(dim=2)
        if parts:  # the signed bounds themselves, given x at τ and the other factor's x': sup ≤ up, inf ≥ down
            return up, down  # (τ, x, p, x') each
        out = torch.maximum(up, -down).amax(dim=3)  # (τ, x, p)
        return out if branch else out.amax(dim=1)

    def head_sup_given_x(self, h: int, G: Tensor) -> Tensor:
        """Bound on sup ‖G_{t,x} z_h(t)‖ with a map per (t, x) (the token at t shared with z_h's branch).

        Args:
            h: the layer-0 head.
            G: (T, V, m, d) maps.

        Returns:
            Shape (T, V).
        """
        Gv = torch.einsum("txmd,syd->txsym", G, self.val[h]).norm(dim=-1)  # (t, x, s, y)
        lam = self.lam[h].abs()
        off = ((lam * Gv).amax(dim=3) * self.strict[:, None, :]).sum(dim=2)  # (t, x)
        idx = torch.arange(self.T, device=lam.device)
        diag = (lam * Gv)[idx, :, idx, :].diagonal(dim1=1, dim2=2)  # (t, x)
        return off + diag


    def head_pair_score(self, ha: int, hb: int, A: Tensor) -> tuple[Tensor, Tensor]:
        """Bounds hi ≥ sup and lo ≤ inf of z_ha(t)ᵀ A z_hb(s) given x_t = x and x_s = y: (t, x, s, y) each.

        Both slots are layer-0 heads, so with α_p(z) = λ_ha(t, x; p, z) v_ha(p, z) (p ≤ t) and
        β_p'(z') = λ_hb(s, y; p', z') v_hb(p', z') (p' ≤ s) the score Σ_{p, p'} α_p(x_p)ᵀ A β_p'(x_p') is
        a pairwise function of the free tokens x_f, f ∈ F = {f < t, f ≠ s}: a constant (both positions
        fixed), unaries (one fixed, or p = p' = f) and pairs Q_ff'(z, z') = α_f(z)ᵀAβ_f'(z') + α_f'(z')ᵀAβ_f(z);
        its maximum over the V^|F| choices is at most Σ_{f<f'} max_{z, z'} [Q_ff' + (U_f + U_f')/(|F| − 1)]
        (the pair potentials sum to the function, each position being in |F| − 1 pairs, and a sum of
        maxima bounds the maximum of the sum; this is never above the separable Σ max U + Σ max Q),
        the minimum likewise; exact for |F| ≤ 1. Zero for s > t; at s = t only y = x is meaningful.

        Args:
            ha: the query's layer-0 head.
            hb: the key's layer-0 head.
            A: the layer-1 head's W_Qᵀ W_K (d, d).

        Returns:
            (hi, lo), each (T, V, T, V).
        """
        T, V = self.T, self.V
        H = torch.einsum("pzd,de,qwe->pzqw", self.val[ha], A, self.val[hb])  # v_ha(p, z)ᵀ A v_hb(p', z')
        la, lb = self.lam[ha], self.lam[hb]  # (t, x, p, z)
        idx = torch.arange(T, device=H.device)
        own_a = la[idx, :, idx, :].diagonal(dim1=1, dim2=2)  # (t, x): λ_ha(t, x; t, x)
        own_b = lb[idx, :, idx, :].diagonal(dim1=1, dim2=2)  # (s, y): λ_hb(s, y; s, y)
        bk_all = lb * self.strict[:, None, :, None]  # (s, y, f, z): the key's free atoms, f < s
        Hd = H[idx, :, idx, :].diagonal(dim1=1, dim2=2)  # (p, z): H[p, z, p, z]
        hi = torch.zeros(T, V, T, V, dtype=H.dtype, device=H.device)
        lo = hi.clone()
        for t in range(T):
            S = t + 1  # key positions s ≤ t, all at once
            ks = idx[:S]
            below = (ks < t).to(H.dtype)  # (s,): x_s is a second fixed token of the query
            qs = la[t][:, ks, :] * below[None, :, None]  # (x, s, y): the query's atom at the fixed s < t
            # constant: query atoms at t and s, key atom at s
            C = own_a[t][:, None, None] * own_b[:S][None] * H[t, :, :S, :] + qs * own_b[:S][None] * Hd[:S][None]
            hi[t, :, :S], lo[t, :, :S] = C, C
            if t == 0:
                continue
            aq = la[t, :, :t]  # (x, f, z): the query's atoms at f < t
            bk = bk_all[:S, :, :t]  # (s, y, f, z)
            # unaries (x, s, y, f, z): query at f × key at s; key at f × query at t; key at f × query at s;
            # query and key both at f
            U = aq[:, None, None] * (own_b[:S, :, None, None] * H[:t, :, :S, :].permute(2, 3, 0, 1))[None]
            U += (own_a[t][:, None, None] * H[t, :, :t, :])[:, None, None] * bk[None]
            U += qs[..., None, None] * bk[None] * H[:S, :, :t, :][None]
            U += aq[:, None, None] * bk[None] * Hd[:t][None, None, None]
            U *= (idx[:t][None, :] != ks[:, None]).to(H.dtype)[None, :, None, :, None]  # x_s is fixed, not free
            n = t - below  # (s,): number of free positions
            single = U.amax(dim=-1).sum(dim=-1), U.amin(dim=-1).sum(dim=-1)  # exact for n ≤ 1
            if t < 2:
                hi[t, :, :S] += single[0]
                lo[t, :, :S] += single[1]
                continue
            # pair potentials over the positions f < f' < t (pairs with f or f' = s are dropped below):
            # Q_ff' + (U_f + U_f')/(n − 1), the same tensor giving the sup (amax) and the inf (amin) splits
            si, sj = torch.triu_indices(t, t, 1, device=H.device)
            share = (1 / (n - 1).clamp_min(1))[None, :, None, None, None, None]
            Q = aq[:, None, None, si, :, None] * (bk[:, :, sj, None, :] * H[si, :, sj, :])[None]
            Q += aq[:, None, None, sj, None, :] * (bk[:, :, si, :, None] * H[sj, :, si, :].transpose(-1, -2))[None]
            Q += U[..., si, :, None] * share
            Q += U[..., sj, None, :] * share  # (x, s, y, pairs, z, z')
            ok = ((si[None] != ks[:, None]) & (sj[None] != ks[:, None])).to(H.dtype)[None, :, None]  # free pairs
            many = (n >= 2)[None, :, None]
            hi[t, :, :S] += torch.where(many, (Q.amax(dim=(-2, -1)) * ok).sum(dim=-1), single[0])
            lo[t, :, :S] += torch.where(many, (Q.amin(dim=(-2, -1)) * ok).sum(dim=-1), single[1])
        return hi, lo


def _spec(M: Tensor) -> Tensor:
    """Spectral norms of a batch of matrices (k, m, d) → (k,)."""
    return torch.linalg.matrix_norm(M, ord=2) if M.numel() else torch.zeros(M.shape[0], dtype=M.dtype)


def vertex_bounds(expansion, readout: Tensor | None) -> Tensor:
    """Per-term bounds b_i ≥ sup_{x, t} ‖M·term_i,t(x)‖₂ from the vertex structure (module docstring).

    Bounds (exact arithmetic): see the module docstring on rounding. Used by
    :func:`~slt_interp.bilinear.prune.term_bounds`, which keeps the smaller of these and its own.

    Args:
        expansion: a :class:`~slt_interp.bilinear.expand.ComponentExpansion`.
        readout: M (out, d_model) in float64, or None for the identity (residual stream).

    Returns:
        (num_terms,) float64 bounds, in the expansion's term order.
    """
    with small_work_threads(expansion.model.W_E.device):
        return _vertex_bounds(expansion, readout)


def _vertex_bounds(expansion, readout: Tensor | None) -> Tensor:
    model, cfg = expansion.model, expansion.config
    dev = model.W_E.device
    f64 = dict(dtype=torch.float64, device=dev)
    with torch.no_grad():
        base = _Layer0(model, f64)
        T = cfg.n_ctx
        eye = torch.eye(cfg.d_model, **f64)
        comps = expansion.components
        per_pos: dict[int, Tensor] = {}  # R_c(t) for components deeper than the layer-0 heads (identity readout)
        score_sum: dict[int, Tensor] = {}  # per head component: Σ_{(a, b)} sup |q_aᵀ A k_b| per (t, s)
        causal = base.strict + torch.eye(T, **f64)
        # the layer-0 MLP's pair table (x, pairs s < s' < t, y, y', d_mlp) summed over t must fit
        support_fits = cfg.vocab_size ** 3 * cfg.d_mlp * sum(t * (t - 1) // 2 for t in range(T)) <= _LIMIT

        def sup(ci: int, L: Tensor, branch: bool = False) -> Tensor:
            """Bound on sup ‖L_k out_ci(t)‖ per map and position: (k, T); given x_t = x when ``branch``: (k, T, V)."""
            c = comps[ci]
            if branch:
                if c.kind == "embed":
                    return torch.einsum("kmd,tvd->ktvm", L, base.e).norm(dim=-1)  # exact
                if c.kind == "head" and c.layer == 0:
                    return base.head_sup(c.head, L, branch=True)
                if c.kind == "mlp" and c.layer == 0:
                    return mlp0_sup_branch(ci, L)
                return sup(ci, L)[..., None].expand(-1, -1, base.V)  # no per-token information
            if c.kind == "embed":
                return base.emb_sup(L)
            if c.kind == "head" and c.layer == 0:
                return base.head_sup(c.head, L)
            generic = _spec(L)[:, None] * per_pos[ci][None]
            if c.kind == "mlp" and c.layer == 0:
                return torch.minimum(generic, mlp0_sup_branch(ci, L).amax(dim=2))
            if c.kind == "head":  # Σ_terms n(t) Σ_s S_ab(t, s) N_v(s) = n(t) Σ_s (Σ_ab S_ab)(Σ_v N_v) per map
                attn = model.blocks[c.layer].attn
                B = L @ (attn.W_O[c.head].detach().to(**f64) @ attn.W_V[c.head].detach().to(**f64))  # (k, m, d)
                N = sum(sup(v, B) for v in c.sources)  # (k, s)
                tight = base.n[None] * ((score_sum[ci] * causal)[None] * N[:, None, :]).sum(dim=2)  # (k, t)
                return torch.minimum(generic, tight)
            return generic

        def mlp0_sup_branch(ci: int, L: Tensor) -> Tensor:
            """Bound on sup ‖L_k m(t)‖ given x_t for the layer-0 MLP output m: (k, T, V)."""
            mlp = model.blocks[0].mlp
            best = base.mlp0_sup(mlp, L, branch=True)
            tv = T * base.V
            if tv ** 3 * cfg.d_mlp * L.shape[0] * L.shape[1] <= _PAIR_LIMIT:  # cost of the pair expansion
                best = torch.minimum(best, base.mlp0_pair_sup(mlp, L, branch=True))
            if L.shape[0] * L.shape[1] <= _SUPPORT_ROWS and support_fits:  # row by row: signed pairwise supports
                hi, lo = base.mlp0_support(mlp, L.reshape(-1, L.shape[-1]))  # (k·m, T, V)
                rows = torch.maximum(hi, -lo).unflatten(0, L.shape[:2])  # (k, m, T, V): sup |L_kr · m(t)| given x_t
                best = torch.minimum(best, rows.norm(dim=1))
            return best

        def support(ci: int, w: Tensor) -> tuple[Tensor, Tensor]:
            """Bounds hi ≥ sup and lo ≤ inf of w_k · out_ci(t) given x_t = x: (k, T, V) each."""
            c = comps[ci]
            if c.kind == "embed":
                val = torch.einsum("kd,tvd->ktv", w, base.e)  # exact
                return val, val
            if c.kind == "head" and c.layer == 0:
                return base.head_support(c.head, w)  # exact
            absb = sup(ci, w[:, None, :], branch=True)  # (k, T, V)
            if c.kind == "mlp" and c.layer == 0 and w.shape[0] <= _SUPPORT_ROWS and support_fits:
                hi, lo = base.mlp0_support(model.blocks[0].mlp, w)
                return torch.minimum(hi, absb), torch.maximum(lo, -absb)
            return absb, -absb

        def sup_inf(ci: int, L: Tensor) -> Tensor:
            """Bound on sup ‖L out_ci(t)‖_∞ for one map L (m, d): (T,)."""
            return sup(ci, L[:, None, :]).amax(dim=0)

        same_token = torch.ones(T, base.V, T, base.V, **f64)  # (t, x, s, y): 0 where s = t and y ≠ x
        same_token[torch.arange(T), :, torch.arange(T), :] = torch.eye(base.V, **f64)

        idx_t = torch.arange(T, device=dev)
        below = (idx_t[None, :] <= idx_t[:, None]).to(torch.float64)  # (t, p): p ≤ t
        eye_v = torch.eye(base.V, **f64)
        zv = torch.arange(base.V, device=dev)
        at_t = (idx_t[:, None] == idx_t[None, :]).to(torch.float64)  # (t, p): p = t
        # (t, x, s, y, p, z): one-hot of the forced token at p = t (z = x) or p = s (z = y)
        forced = (at_t[:, None, None, None, :, None] * eye_v[None, :, None, None, None, :]
                  + at_t[None, None, :, None, :, None] * eye_v[None, None, None, :, None, :]
                  * (1 - at_t)[:, None, :, None, None, None])
        is_forced = forced.sum(dim=-1) > 0  # (t, x, s, y, p)

        def score_atoms(a: int, b: int, A: Tensor) -> Tensor | None:
            """Score q_a(t)ᵀ A k_b(s) = Σ_p α(t, x, s, y; p, x_p) given x_t = x, x_s = y (None: not separable)."""
            ka, kb = comps[a], comps[b]
            Vn = base.V
            if ka.kind == kb.kind == "embed":
                alpha = torch.zeros(T, Vn, T, Vn, T, Vn, **f64)
                val = torch.einsum("txd,de,sye->txsy", base.e, A, base.e)
                for s_ in range(T):
                    alpha[:, :, s_, zv, s_, zv] = val[:, :, s_, :]
                return alpha
            if ka.kind == "embed" and kb.kind == "head" and kb.layer == 0:
                w = torch.einsum("txd,de,pze->txpz", base.e, A, base.val[kb.head])  # e(x, t)ᵀ A v(p, z)
                lam = base.lam[kb.head] * below[:, None, :, None]  # (s, y, p, z), p ≤ s
                return w[:, :, None, None] * lam[None, None]
            if kb.kind == "embed" and ka.kind == "head" and ka.layer == 0:
                w = torch.einsum("pzd,de,sye->sypz", base.val[ka.head], A, base.e)  # v(p, z)ᵀ A e(y, s)
                lam = base.lam[ka.head] * below[:, None, :, None]  # (t, x, p, z), p ≤ t
                return lam[:, :, None, None] * w[None, None]
            return None

        def value_atoms(v: int, W: Tensor) -> Tensor | None:
            """Rows W·v_c(s) as Σ_p β(r, s, y; p, x_p) given x_s = y, or None when not separable."""
            cv = comps[v]
            Vn = base.V
            if cv.kind == "embed":
                beta = torch.zeros(W.shape[0], T, Vn, T, Vn, **f64)
                val = torch.einsum("rd,syd->rsy", W, base.e)
                for s_ in range(T):
                    beta[:, s_, zv, s_, zv] = val[:, s_]
                return beta
            if cv.kind == "head" and cv.layer == 0:
                w = torch.einsum("rd,pzd->rpz", W, base.val[cv.head])
                lam = base.lam[cv.head] * below[:, None, :, None]  # (s, y, p, z)
                return lam[None] * w[:, None, None]
            return None

        def joint_products(a, b, v, A, W, S_hi, S_lo, vh, vl, cache, ts: Tensor):
            """Bounds on sup and inf of score·(W v_c)_r jointly over the shared tokens.

            With A = Σ_p α_p(x_p) the score and B = Σ_p β_p(x_p) a value row (the same tokens), for
            every μ > 0, 4AB = (μA + B/μ)² − (μA − B/μ)², so AB ≤ (μA + B/μ)²/4 and
            −AB ≤ (μA − B/μ)²/4; the sup of (μA ± B/μ)² is the larger square of the exact separable sup
            and inf Σ_p max_z / min_z.

            Args:
                a: the score's query source.
                b: the score's key source.
                v: the value source.
                A: the score's bilinear form.
                W: the readout rows applied to the value.
                S_hi: the score's sup table (t, x, s, y).
                S_lo: the score's inf table (t, x, s, y).
                vh: the value rows' sup table.
                vl: the value rows' inf table.
                cache: per-model memo of the score atoms and their separable sup / inf.
                ts: the query positions to bound (the tables are built for all, the products for these only).

            Returns:
                (up, down), each (r, len(ts), x, s, y), or None when score or value is not separable.
            """
            free = ~is_forced  # (t, x, s, y, p)
            if ("ja", a, b) not in cache:  # per score: atoms, forced part, free sup / inf (when spread)
                alpha = score_atoms(a, b, A)
                if alpha is None:
                    cache["ja", a, b] = None
                else:
                    a_spread = bool((alpha.abs().amax(dim=-1) * free).amax() > 0)  # a free position carries score
                    cache["ja", a, b] = (alpha, (alpha * forced).sum(dim=(-2, -1)), a_spread,
                                         (alpha.amax(dim=-1) * free).sum(dim=-1),
                                         (alpha.amin(dim=-1) * free).sum(dim=-1))
            if ("jb", v, id(W)) not in cache:
                beta = value_atoms(v, W)
                if beta is None:
                    cache["jb", v, id(W)] = None
                else:
                    b_spread = bool((beta.abs().amax(dim=-1)[:, None, None] * free).amax() > 0)
                    cache["jb", v, id(W)] = (beta, torch.einsum("rsypz,txsypz->rtxsy", beta, forced), b_spread,
                                             (beta.amax(dim=-1)[:, None, None] * free).sum(dim=-1),
                                             (beta.amin(dim=-1)[:, None, None] * free).sum(dim=-1))
            if cache["ja", a, b] is None or cache["jb", v, id(W)] is None:
                return None
            alpha, a_f, a_spread, a_hi, a_lo = cache["ja", a, b]  # a_f: (t, x, s, y), the forced tokens' atoms
            beta, b_f, b_spread, b_hi, b_lo = cache["jb", v, id(W)]  # b_f, b_hi, b_lo: (r, t, x, s, y)
            alpha, a_f, a_hi, a_lo, free = alpha[ts], a_f[ts], a_hi[ts], a_lo[ts], free[ts]  # the positions asked
            b_f, b_hi, b_lo = b_f[:, ts], b_hi[:, ts], b_lo[:, ts]
            big_a = torch.maximum(S_hi[ts], -S_lo[ts])  # (t, x, s, y)
            big_b = torch.maximum(vh, -vl)[:, 0, 0]  # (r, s, y)
            ups, downs = [], []
            for r in range(W.shape[0]):
                mu = ((big_b[r][None, None] + 1e-300) / (big_a + 1e-300)).sqrt()  # (t, x, s, y)
                bounds = []
                for sign in (1.0, -1.0):
                    base_f = mu * a_f + sign * b_f[r] / mu  # the forced positions, exact
                    if a_spread and b_spread:
                        X = mu[..., None, None] * alpha + sign * beta[r][None, None] / mu[..., None, None]
                        hi = (X.amax(dim=-1) * free).sum(dim=-1) + base_f
                        lo = (X.amin(dim=-1) * free).sum(dim=-1) + base_f
                    elif a_spread:
                        hi, lo = mu * a_hi + base_f, mu * a_lo + base_f
                    elif b_spread:
                        bh, bl = (b_hi[r], b_lo[r]) if sign > 0 else (-b_lo[r], -b_hi[r])
                        hi, lo = bh / mu + base_f, bl / mu + base_f
                    else:
                        hi = lo = base_f
                    bounds.append(torch.maximum(hi.square(), lo.square()) / 4)
                ups.append(bounds[0])
                downs.append(-bounds[1])
            return torch.stack(ups), torch.stack(downs)  # (r, t, x, s, y); s = t, y ≠ x is masked by the caller

        def head_term(c, a: int, b: int, v: int, M: Tensor | None, cache: dict) -> Tensor:
            """Bound per query position t on ‖M·term‖ for the head term (q=a, k=b, v=c): (T,)."""
            # n(t) max_x Σ_{s≤t} max_y S(t, x, s, y)·N(s, y), with S ≥ sup |q_a(t)ᵀ A k_b(s)| and
            # N(s, y) ≥ sup ‖B v_c(s)‖ given the query token x_t = x and the key token x_s = y (key and value
            # share it; at s = t, y = x); and the same per coordinate in an orthonormal basis of B's range with
            # the signs of score and value kept (interval products), then ‖·‖₂ over the coordinates.
            attn = model.blocks[c.layer].attn
            A = attn.W_Q[c.head].detach().to(**f64).T @ attn.W_K[c.head].detach().to(**f64)  # (d, d)
            B = attn.W_O[c.head].detach().to(**f64) @ attn.W_V[c.head].detach().to(**f64)
            B = B if M is None else M @ B
            n, Vn = base.n, base.V
            key_v = ("N", v, id(M))
            if key_v not in cache:
                cache[key_v] = sup(v, B[None], branch=True)[0]  # (s, y)
            N = cache[key_v]
            scores = cache["scores"]  # the score bounds, shared by the readouts
            if comps[a].kind == "embed":  # enumerate the query token: maps (A^T e(x, t))^T
                key = ("qe", b)
                if key not in scores:
                    hi, lo = support(b, (base.e @ A).reshape(T * Vn, -1))  # rows e(x,t)^T A: ((t, x), s, y)
                    hi, lo = hi.reshape(T, Vn, T, Vn), lo.reshape(T, Vn, T, Vn)  # (t, x, s, y)
                    scores[key] = (torch.maximum(hi, -lo), hi, lo)
            elif comps[b].kind == "embed":  # enumerate the key token
                key = ("ke", a)
                if key not in scores:
                    hi, lo = support(a, (base.e @ A.T).reshape(T * Vn, -1))  # rows (A e(y, s))^T: ((s, y), t, x)
                    hi = hi.reshape(T, Vn, T, Vn).permute(2, 3, 0, 1)  # (t, x, s, y)
                    lo = lo.reshape(T, Vn, T, Vn).permute(2, 3, 0, 1)
                    if comps[a].kind == "head" and comps[a].layer == 0:  # the query's atom at s has the key token y
                        ha = comps[a].head
                        wv = torch.einsum("syd,pzd->sypz", base.e @ A.T, base.val[ha])  # (s, y, s1, y1)
                        atom = base.lam[ha][:, :, None, None] * wv[None, None]  # (t, x, s, y, s1, y1)
                        at_s = atom.diagonal(dim1=2, dim2=4)  # (t, x, y, y1, s): the atom at s1 = s
                        own = at_s.diagonal(dim1=2, dim2=3)  # (t, x, s, y): y1 = y
                        m = base.strict[:, None, :, None]  # s < t (at s = t, y = x is the query's own atom)
                        hi = hi + m * (own - at_s.amax(dim=3).permute(0, 1, 3, 2))
                        lo = lo + m * (own - at_s.amin(dim=3).permute(0, 1, 3, 2))
                    scores[key] = (torch.maximum(hi, -lo), hi, lo)
            else:
                key = ("qq", a, b)
                if key not in scores:
                    qa, qA = sup(a, eye[None], branch=True)[0], sup(a, A.T[None], branch=True)[0]  # (t, x)
                    kb, kA = sup(b, eye[None], branch=True)[0], sup(b, A[None], branch=True)[0]  # (s, y)
                    S = torch.minimum(qA[:, :, None, None] * kb[None, None], qa[:, :, None, None] * kA[None, None])
                    hi, lo = S, -S  # Cauchy–Schwarz, (t, x, s, y)
                    head_a = comps[a].kind == "head" and comps[a].layer == 0
                    head_b = comps[b].kind == "head" and comps[b].layer == 0
                    if head_b:  # atoms of the key; signed supports of the query along A·(key atom), given x_t
                        hb = comps[b].head
                        w = (base.val[hb] @ A.T).reshape(T * Vn, -1)  # rows A v_b(y, s2)
                        shi, slo = support(a, w)  # ((s2, y), t, x)
                        up, down = base.atom_sum(hb, None, (shi.reshape(T, Vn, T, Vn), slo.reshape(T, Vn, T, Vn)),
                                                 parts=True)  # (s, y, t, x) each
                        hi = torch.minimum(hi, up.permute(2, 3, 0, 1))
                        lo = torch.maximum(lo, down.permute(2, 3, 0, 1))
                    elif head_a:  # atoms of the query; signed supports of the key along Aᵀ·(query atom), given x_s
                        ha = comps[a].head
                        w = (base.val[ha] @ A).reshape(T * Vn, -1)  # rows (Aᵀ v_a(y, s1))ᵀ
                        shi, slo = support(b, w)  # ((s1, y1), s, y)
                        up, down = base.atom_sum(ha, None, (shi.reshape(T, Vn, T, Vn), slo.reshape(T, Vn, T, Vn)),
                                                 parts=True)  # (t, x, s, y) each
                        hi, lo = torch.minimum(hi, up), torch.maximum(lo, down)
                    if head_a and head_b:  # the score as a pairwise function of the free tokens
                        phi, plo = base.head_pair_score(comps[a].head, comps[b].head, A)
                        hi, lo = torch.minimum(hi, phi), torch.maximum(lo, plo)
                    # singular directions of A = Σ_r σ_r u_r v_rᵀ: qᵀ A k = Σ_r σ_r (u_rᵀ q)(v_rᵀ k), each
                    # product in the interval of the corners of the two signed supports
                    Ua, sig, Vh = torch.linalg.svd(A)
                    keep = sig > 0
                    (qh, ql), (kh, kl) = support(a, Ua[:, keep].T), support(b, Vh[keep])  # (r, t, x), (r, s, y)
                    qh, ql, kh, kl = qh[..., None, None], ql[..., None, None], kh[:, None, None], kl[:, None, None]
                    corners = torch.stack([qh * kh, qh * kl, ql * kh, ql * kl])  # (4, r, t, x, s, y)
                    sig = sig[keep][:, None, None, None, None]
                    hi = torch.minimum(hi, (sig * corners.amax(dim=0)).sum(dim=0))
                    lo = torch.maximum(lo, (sig * corners.amin(dim=0)).sum(dim=0))
                    S = torch.minimum(S, torch.maximum(hi, -lo))
                    scores[key] = (S, torch.minimum(hi, S), torch.maximum(lo, -S))
            S, S_hi, S_lo = (X * same_token for X in scores[key])
            if cache is not None and "S_sum" in cache and (a, b) not in cache["S_pairs"]:
                cache["S_pairs"].add((a, b))
                cache["S_sum"] = cache["S_sum"] + S.amax(dim=(1, 3))
            pair = (S * N[None, None]).amax(dim=3)  # (t, x, s): the key token shared by score and value
            norm_bound = n * (pair * causal[:, None]).sum(dim=2).amax(dim=1)  # (t,)
            # coordinates in an orthonormal basis of B's range: per row r, the signed products of the score
            # interval and the value interval (attention-score signs kept), summed over s; then ‖·‖₂ over r
            key_r = ("rows", v, id(M))
            if key_r not in cache:
                U = torch.linalg.svd(B, full_matrices=False)[0]  # (out, r), orthonormal columns spanning B's range
                cache[key_r] = (*support(v, U.T @ B), U.T @ B)  # (r, s, y) each, and the rows
            vh, vl = (X[:, None, None] for X in cache[key_r][:2])  # (r, 1, 1, s, y)
            corners = torch.stack([S_hi * vh, S_hi * vl, S_lo * vh, S_lo * vl])  # (4, r, t, x, s, y)
            impossible = same_token == 0  # s = t with a key token other than the query token
            up, down = corners.amax(dim=0), corners.amin(dim=0)  # (r, t, x, s, y)

            def coord(up, down, ts):  # per-coordinate products (r, t', x, s, y) → the bound at positions ts
                up = up.masked_fill(impossible[ts], -torch.inf).amax(dim=-1)  # (r, t', x, s)
                down = down.masked_fill(impossible[ts], torch.inf).amin(dim=-1)
                up = (up * causal[ts, None]).sum(dim=-1)  # (r, t', x): finite, y = x is always possible at s = t
                down = (down * causal[ts, None]).sum(dim=-1)
                return n[ts] * torch.maximum(up, -down).norm(dim=0).amax(dim=1)  # (t',)

            every = torch.arange(T, device=dev)
            out = torch.minimum(norm_bound, coord(up, down, every))
            if not ((M is not None or readout is None) and (T * base.V) ** 3 <= _LIMIT // 4):
                return out
            # the joint per-position bound where it is the output (its tables have (T·V)³ entries). For the
            # readout (only max_t is used) positions are refined in decreasing order of their bound until the
            # largest refined bound is at least every unrefined one: the maximum is then the one of refining all
            order = out.argsort(descending=True) if M is not None else every
            done = -torch.inf
            for i in range(0, T, 2):
                ts = order[i:i + 2]
                if M is not None and done >= float(out[ts].max()):
                    break
                joint = joint_products(a, b, v, A, cache[key_r][2], S_hi, S_lo, vh, vl, cache, ts)
                if joint is None:
                    break
                refined = coord(torch.minimum(up[:, ts], joint[0]), torch.maximum(down[:, ts], joint[1]), ts)
                out[ts] = torch.minimum(out[ts], refined)
                done = max(done, float(out[ts].max()))
            return out

        def mlp_term(c, a: int, b: int, M: Tensor | None, cache: dict) -> Tensor:
            mlp = model.blocks[c.layer].mlp
            W, V = mlp.W.detach().to(**f64), mlp.V.detach().to(**f64)
            MP = mlp.P.detach().to(**f64) if M is None else M @ mlp.P.detach().to(**f64)  # (out, d_mlp)
            ka, kb = comps[a].kind, comps[b].kind
            if ka == kb == "embed":
                return (((base.e @ W.T) * (base.e @ V.T)) @ MP.T).norm(dim=-1).amax(dim=1)  # exact
            if kb == "embed":
                a, b, ka, kb = b, a, kb, ka
            if ka == "embed":  # linear in out_b given e = e(x_t, t): G_x = M P (diag(W e) V + diag(V e) W)
                We, Ve = base.e @ W.T, base.e @ V.T  # (t, x, d_mlp)
                G = torch.einsum("oh,txh,hd->txod", MP, We, V) + torch.einsum("oh,txh,hd->txod", MP, Ve, W)
                cb = comps[b]
                if cb.kind == "head" and cb.layer == 0:  # shares the token at t with z_b's branch
                    return base.head_sup_given_x(cb.head, G).amax(dim=1)
                Gk = G.reshape(-1, *G.shape[2:])  # (t·x, out, d): one map per (t, x), evaluated at its own t
                bound = sup(b, Gk).reshape(T, base.V, T)  # (t, x, t')
                idx = torch.arange(T, device=bound.device)
                return bound[idx, :, idx].amax(dim=1)
            spec = _spec(MP[None])[0]
            W2, V2 = sup(a, W[None])[0], sup(b, V[None])[0]
            Winf, Vinf = sup_inf(a, W), sup_inf(b, V)
            one = torch.minimum(W2 * Vinf, Winf * V2)
            # per hidden unit and output row: |(MP)_r (u ⊙ v)| ≤ Σ_i |(MP)_ri| sup|u_i| sup|v_i|, then ‖·‖₂
            Ua, Vb = sup(a, W[:, None, :]), sup(b, V[:, None, :])  # (d_mlp, t)
            prod = Ua * Vb
            if a != b:
                W2b, V2a = sup(b, W[None])[0], sup(a, V[None])[0]
                one = one + torch.minimum(W2b * sup_inf(a, V), sup_inf(b, W) * V2a)
                prod = prod + sup(b, W[:, None, :]) * sup(a, V[:, None, :])
            coord = (MP.abs() @ prod).norm(dim=0)  # (t,)
            return torch.minimum(spec * one, coord)

        values = torch.zeros(len(expansion), **f64)
        values[0] = float((base.e if readout is None else base.e @ readout.T).norm(dim=-1).max())
        per_pos[0] = base.e.norm(dim=-1).amax(dim=1)
        for ci, c in enumerate(comps[1:], start=1):
            total = torch.zeros(T, **f64)
            scores = {}  # score bounds do not depend on the readout: shared by both passes
            cache_r = {"S_sum": torch.zeros(T, T, **f64), "S_pairs": set(), "scores": scores}
            cache_o = {"scores": scores}
            for ti in c.terms:
                idx = [expansion.component_index(s) for s in expansion.terms[ti].sources]
                fn = head_term if c.kind == "head" else mlp_term
                r = fn(c, *idx, None, cache_r)
                o = r if readout is None else fn(c, *idx, readout, cache_o)
                total = total + r
                values[ti] = o.max()
            per_pos[ci] = total
            if c.kind == "head":
                score_sum[ci] = cache_r["S_sum"]  # Σ over (q, k) sources of the score bounds, (t, s)
        return values
