"""Closed-form expansion of a bilinear / linear-attention transformer into named polynomial terms.

The model (:mod:`slt_interp.bilinear.model`) is a polynomial in its embeddings (docs/theory.md §5; Sharkey 2023,
arXiv 2305.03452; Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits", for the
path-expansion view, here without frozen attention patterns). Each head and MLP reads the residual
stream, which is the sum of the outputs of the components before it:

* head (l, h): z_t = n(t) Σ_{s≤t} (r_tᵀ QK r_s) OV r_s with r = Σ_c out_c, so it splits into one term
  per (query source, key source, value source) triple of earlier components;
* MLP l: P((W r) ⊙ (V r)) splits into one term per unordered pair {a, b} of earlier components,
  P((W out_a) ⊙ (V out_b)) + P((W out_b) ⊙ (V out_a)) for a ≠ b.

:class:`ComponentExpansion` applies this once to every component (number of terms polynomial in
depth); the sources stay whole component outputs. :class:`PathExpansion` applies it recursively down to
the embedding (every term a monomial of one degree); the path count explodes (5 and 8,645 paths for
one and two layers with one head and an MLP, ~10²³ at three), so paths are indexed, counted and
evaluated on demand from a shared DAG, never listed.

Both are exact: the sum of all terms is the forward pass.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn

from .factored import FactoredBilinear, FactoredMatrix
from .layers import position_normaliser
from .layers import BilinearMLP, LinearAttention
from .model import BilinearTransformer, Block

__all__ = [
    "expand",
    "ComponentExpansion",
    "PathExpansion",
    "Term",
    "PathTerm",
    "HeadFactors",
    "NotExpandableError",
]

# module types that make a transformer non-polynomial: softmax and every normalisation layer
_FORBIDDEN = (
    nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.MultiheadAttention, nn.LayerNorm, nn.GroupNorm,
    nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm,
    nn.Transformer, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


class NotExpandableError(TypeError):
    """The model is not a polynomial in its embeddings, so it has no exact finite expansion."""


def _check_expandable(model) -> None:
    if not isinstance(model, BilinearTransformer):
        raise NotExpandableError(
            f"expand() needs a slt_interp.bilinear.BilinearTransformer, got {type(model).__name__}. Only a transformer "
            "with linear (softmax-free) attention, bilinear MLPs and no normalisation layer is a polynomial in "
            "its embeddings; build one with slt_interp.bilinear.BilinearTransformer(BilinearConfig(...)) and train it."
        )
    for name, module in model.named_modules():
        if isinstance(module, _FORBIDDEN):
            raise NotExpandableError(
                f"module {name!r} is a {type(module).__name__}: softmax and normalisation layers divide by a "
                "data-dependent quantity, so the model is not a polynomial and no finite sum of terms equals "
                "its forward pass. Remove it (use the fixed normaliser BilinearConfig.normaliser='position')."
            )
    for method in ("forward", "residual", "embed", "component_outputs"):
        if getattr(type(model), method) is not getattr(BilinearTransformer, method):
            raise NotExpandableError(
                f"{type(model).__name__} overrides {method}(); the expansion is derived for the reference "
                "BilinearTransformer computation only (a changed forward may add softmax or normalisation). "
                "Expand a plain BilinearTransformer with the same weights instead."
            )
    reference = ((Block, ("forward",)), (LinearAttention, ("forward", "pattern", "head_outputs")),
                 (BilinearMLP, ("forward",)))
    for l, block in enumerate(model.blocks):
        for module, (base, methods) in zip((block, block.attn, block.mlp), reference):
            if module is None:
                continue
            if not isinstance(module, base) or any(getattr(type(module), m) is not getattr(base, m) for m in methods):
                raise NotExpandableError(
                    f"block {l} holds a {type(module).__name__} where the expansion expects the reference "
                    f"{base.__name__}; a replaced or overridden layer may not be polynomial. Use the "
                    "bilinear layers as built by BilinearTransformer(config)."
                )


def _readout(model: BilinearTransformer, readout, dtype, device) -> Tensor | None:
    """Readout matrix (o, d_model): "logits" -> W_U, "residual" -> None (identity), or a tensor."""
    if isinstance(readout, str):
        if readout == "logits":
            return model.W_U.detach().to(dtype=dtype, device=device)
        if readout == "residual":
            return None
        raise ValueError(f"readout must be 'logits', 'residual' or a (k, d_model) tensor, got {readout!r}")
    if not isinstance(readout, Tensor) or readout.dim() != 2 or readout.shape[1] != model.config.d_model:
        raise ValueError(f"a readout tensor must have shape (k, {model.config.d_model}), got "
                         f"{getattr(readout, 'shape', type(readout).__name__)}")
    return readout.to(dtype=dtype, device=device)


def _apply(readout: Tensor | None, M: Tensor) -> Tensor:
    """readout @ M (identity readout: M itself)."""
    return M if readout is None else readout @ M


@dataclass(frozen=True)
class _Component:
    name: str
    kind: str  # "embed" | "head" | "mlp"
    layer: int | None
    head: int | None
    sources: tuple[int, ...]  # indices of the components it reads


def _components(config) -> list[_Component]:
    comps = [_Component("emb", "embed", None, None, ())]
    for l in range(config.n_layers):
        before = tuple(range(len(comps)))
        for h in range(config.n_heads):
            comps.append(_Component(f"L{l}.H{h}", "head", l, h, before))
        if config.d_mlp > 0:
            comps.append(_Component(f"L{l}.mlp", "mlp", l, None, tuple(range(len(comps)))))
    return comps


@dataclass(frozen=True)
class Term:
    """One term of a :class:`ComponentExpansion`.

    Attributes:
        index: position in the expansion.
        name: e.g. "L1.H0(q=emb, k=L0.H1, v=emb)" or "L0.mlp(emb, L0.H1)" or "emb".
        kind: "embed", "head" or "mlp".
        component: the component that writes the term ("emb", "L1.H0", "L0.mlp").
        sources: the components filling its slots: (q, k, v) for a head, an unordered pair for an MLP.
        layer, head: where the component sits (None where not applicable).
        degrees: the degrees in the embeddings of the monomials it contains (sorted).
    """

    index: int
    name: str
    kind: str
    component: str
    sources: tuple[str, ...]
    layer: int | None
    head: int | None
    degrees: tuple[int, ...]

    @property
    def degree(self) -> int | None:
        """The polynomial degree when the term is homogeneous, else None (see ``degrees``)."""
        return self.degrees[0] if len(self.degrees) == 1 else None

    def contains(self, component: str) -> bool:
        """Whether ``component`` writes this term or fills one of its slots."""
        return component == self.component or component in self.sources


@dataclass(frozen=True)
class HeadFactors:
    """Factored circuits of a head term: score x_qᵀ·QK·x_k and written vector OV·x_v.

    Attributes:
        qk: W_Qᵀ W_K, (d_q_in, d_k_in) — in token space (V, V) when the slots are the embedding.
        ov: readout·W_O·W_V, (out, d_v_in).
    """

    qk: FactoredMatrix
    ov: FactoredMatrix


def _degree_sets(comps: list[_Component]) -> list[frozenset[int]]:
    degs: list[frozenset[int]] = []
    for c in comps:
        if c.kind == "embed":
            degs.append(frozenset({1}))
        else:
            arity = 3 if c.kind == "head" else 2
            sums = set()
            for combo in itertools.product(*(set().union(*(degs[s] for s in c.sources)) for _ in range(arity))):
                sums.add(sum(combo))
            degs.append(frozenset(sums))
    return degs


class ComponentExpansion:
    """logits = Σ_terms term, one term per (component, source tuple); see the module docstring.

    Build with :func:`expand`. Terms are evaluated from one cached forward pass (the component outputs)
    plus, per head, the score tensors of all source pairs.

    Example:
        >>> model = BilinearTransformer(BilinearConfig(vocab_size=5, n_ctx=4, d_model=8)).double()
        >>> exp = expand(model)
        >>> tokens = torch.tensor([[0, 1, 2, 3]])
        >>> bool(torch.allclose(exp.evaluate_sum(tokens), model(tokens)))
        True
    """

    def __init__(self, model: BilinearTransformer):
        _check_expandable(model)
        self.model = model
        self.config = model.config
        self._comps = _components(model.config)
        self._comp_index = {c.name: i for i, c in enumerate(self._comps)}
        degs = _degree_sets(self._comps)
        terms: list[Term] = [Term(0, "emb", "embed", "emb", (), None, None, (1,))]
        self._groups: list[tuple[int, int, int]] = [(0, 0, 1)]  # (component index, first term, end)
        for ci, c in enumerate(self._comps):
            if c.kind == "embed":
                continue
            start = len(terms)
            names = [self._comps[s].name for s in c.sources]
            if c.kind == "head":
                for q, k, v in itertools.product(range(len(c.sources)), repeat=3):
                    d = sorted({a + b + e for a in degs[c.sources[q]] for b in degs[c.sources[k]]
                                for e in degs[c.sources[v]]})
                    terms.append(Term(len(terms), f"{c.name}(q={names[q]}, k={names[k]}, v={names[v]})", "head",
                                      c.name, (names[q], names[k], names[v]), c.layer, c.head, tuple(d)))
            else:
                n = len(c.sources)
                rows, cols = torch.triu_indices(n, n).tolist()
                for i, j in zip(rows, cols):
                    d = sorted({a + b for a in degs[c.sources[i]] for b in degs[c.sources[j]]})
                    terms.append(Term(len(terms), f"{c.name}({names[i]}, {names[j]})", "mlp", c.name,
                                      (names[i], names[j]), c.layer, None, tuple(d)))
            self._groups.append((ci, start, len(terms)))
        self.terms: tuple[Term, ...] = tuple(terms)

    # -- container protocol -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.terms)

    def __getitem__(self, index: int) -> Term:
        return self.terms[index]

    def __iter__(self) -> Iterator[Term]:
        return iter(self.terms)

    @property
    def component_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self._comps)

    def index(self, name: str) -> int:
        """Index of the term called ``name``."""
        for t in self.terms:
            if t.name == name:
                return t.index
        raise KeyError(f"no term named {name!r}; names look like {self.terms[min(1, len(self) - 1)].name!r}")

    def containing(self, component: str) -> Tensor:
        """Boolean mask (num_terms,) of the terms that ``component`` writes or feeds."""
        if component not in self._comp_index:
            raise KeyError(f"unknown component {component!r}; known: {self.component_names}")
        return torch.tensor([t.contains(component) for t in self.terms])

    # -- evaluation -----------------------------------------------------------------------------------
    def evaluate(self, tokens: Tensor, terms=None, *, readout="logits") -> Tensor:
        """Values of the terms on ``tokens`` (B, T): shape (num_selected, B, T, out).

        Args:
            tokens: integer tensor (B, T), T ≤ n_ctx.
            terms: indices (or a boolean mask) of the terms to return; all when None.
            readout: "logits" (W_U, out = vocab), "residual" (out = d_model) or a (k, d_model) matrix
                such as SAE encoder directions.
        """
        model = self.model
        with torch.no_grad():
            outs = model.component_outputs(tokens)
            X = torch.stack(list(outs.values()))  # (num_components, B, T, d_model)
            R = _readout(model, readout, X.dtype, X.device)
            T = tokens.shape[1]
            nvec = position_normaliser(T, self.config.normaliser, dtype=X.dtype, device=X.device)
            mask = torch.tril(torch.ones(T, T, dtype=X.dtype, device=X.device)) * nvec[:, None]  # (T, T)
            values = []
            for ci, start, end in self._groups:
                c = self._comps[ci]
                if c.kind == "embed":
                    values.append(_apply_out(R, X[0])[None])  # (1, B, T, out)
                    continue
                S = X[list(c.sources)]  # (N, B, T, d_model)
                N = S.shape[0]
                if c.kind == "head":
                    attn = model.blocks[c.layer].attn
                    q = S @ attn.W_Q[c.head].T  # (N, B, T, d_head)
                    k = S @ attn.W_K[c.head].T  # (N, B, T, d_head)
                    ov = _apply(R, attn.W_O[c.head]) @ attn.W_V[c.head]  # (out, d_model)
                    vo = S @ ov.T  # (N, B, T, out)
                    scores = torch.einsum("nbtk,mbsk->nmbts", q, k) * mask  # (N, N, B, T, T)
                    vals = torch.einsum("nmbts,pbso->nmpbto", scores, vo)  # (N, N, N, B, T, out)
                    values.append(vals.reshape(N ** 3, *vals.shape[3:]))  # (N³, B, T, out)
                else:
                    mlp = model.blocks[c.layer].mlp
                    a = S @ mlp.W.T  # (N, B, T, d_mlp)
                    b = S @ mlp.V.T  # (N, B, T, d_mlp)
                    prod = a[:, None] * b[None, :]  # (N, N, B, T, d_mlp)
                    i, j = torch.triu_indices(N, N, device=X.device)
                    off = (i != j).to(X.dtype)[:, None, None, None]
                    pair = prod[i, j] + off * prod[j, i]  # (pairs, B, T, d_mlp)
                    values.append(pair @ _apply(R, mlp.P).T)  # (pairs, B, T, out)
            allv = torch.cat(values)  # (num_terms, B, T, out)
        if terms is None:
            return allv
        return allv[_as_index(terms, len(self))]

    def evaluate_sum(self, tokens: Tensor, keep=None, *, readout="logits") -> Tensor:
        """Σ of the kept terms (all when ``keep`` is None), shape (B, T, out)."""
        values = self.evaluate(tokens, readout=readout)
        if keep is None:
            return values.sum(0)
        return values[_as_index(keep, len(self))].sum(0)

    # -- factored representation ------------------------------------------------------------------------
    def factored(self, term: int | Term, *, readout="logits", token_space: bool = False):
        """The term's weights, factored: :class:`HeadFactors` for a head term, a
        :class:`~slt_interp.bilinear.factored.FactoredBilinear` for an MLP term (its interaction matrices
        ``.interaction(u)``), a :class:`FactoredMatrix` readout·W_E for the embedding term.

        With ``token_space=True`` every slot filled by the embedding is composed with the token
        embedding W_E (positional part left out), so QK/OV circuits and interaction matrices are
        (vocab × vocab); a slot filled by another component raises.
        """
        t = self.terms[term] if isinstance(term, int) else term
        m = self.model
        R = _readout(m, readout, m.W_E.dtype, m.W_E.device)
        WE = m.W_E.detach()
        eye = torch.eye(self.config.d_model, dtype=WE.dtype, device=WE.device)

        def slot(source: str) -> Tensor:  # (d_model, d_in) map from the slot's space into the stream
            if not token_space:
                return eye
            if source != "emb":
                raise ValueError(f"token_space=True needs every slot filled by the embedding; {t.name} has "
                                 f"{source!r}. Use token_space=False for residual-stream circuits.")
            return WE.T

        with torch.no_grad():
            if t.kind == "embed":
                return FactoredMatrix(_apply(R, eye), slot("emb"))
            if t.kind == "head":
                attn = m.blocks[t.layer].attn
                qk = FactoredMatrix(slot(t.sources[0]).T @ attn.W_Q[t.head].T, attn.W_K[t.head] @ slot(t.sources[1]))
                ov = FactoredMatrix(_apply(R, attn.W_O[t.head]), attn.W_V[t.head] @ slot(t.sources[2]))
                return HeadFactors(qk=qk, ov=ov)
            mlp = m.blocks[t.layer].mlp
            sa, sb = slot(t.sources[0]), slot(t.sources[1])
            if t.sources[0] != t.sources[1]:  # the term is B(x_a, x_b) + B(x_b, x_a) = 2·B_sym(x_a, x_b)
                return FactoredBilinear(_apply(R, mlp.P), mlp.W @ sa, mlp.V @ sb)
            return FactoredBilinear(_apply(R, mlp.P), mlp.W @ sa, mlp.V @ sa)

    # -- pruning ------------------------------------------------------------------------------------------
    def bounds(self, *, readout="logits"):
        """Certified per-term bounds; see :func:`slt_interp.bilinear.prune.term_bounds`."""
        from .prune import term_bounds

        return term_bounds(self, readout=readout)

    def prune(self, eps: float | None = None, *, num_keep: int | None = None, tokens: Tensor | None = None,
              rank_by: str = "bound", exhaustive: bool = False):
        """Keep the largest terms; see :func:`slt_interp.bilinear.prune.prune`."""
        from .prune import prune

        return prune(self, eps, num_keep=num_keep, tokens=tokens, rank_by=rank_by, exhaustive=exhaustive)

    def __repr__(self) -> str:
        return f"ComponentExpansion({len(self)} terms, {len(self._comps)} components)"


def _apply_out(R: Tensor | None, X: Tensor) -> Tensor:
    return X if R is None else X @ R.T


def _as_index(sel, n: int) -> Tensor:
    sel = torch.as_tensor(sel)
    if sel.dtype == torch.bool:
        if sel.shape != (n,):
            raise ValueError(f"a boolean term mask must have shape ({n},), got {tuple(sel.shape)}")
        return sel.nonzero().flatten()
    return sel.long().flatten()


# ------------------------------------------------------------------------------------------------------
# full-path expansion
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PathTerm:
    """One monomial of a :class:`PathExpansion`.

    Attributes:
        index: path index (a Python int; may exceed 2⁶³).
        kind: "embed", "head" or "mlp" (the last component on the path).
        component: the component that writes it.
        children: indices of the paths filling its slots ((q, k, v) or an unordered pair a ≤ b).
        degree: its degree in the embeddings.
    """

    index: int
    kind: str
    component: str
    children: tuple[int, ...]
    degree: int


@dataclass(frozen=True)
class _Stage:
    kind: str  # "head" | "mlp"
    layer: int
    n_before: int
    n_after: int


class PathExpansion:
    """logits = Σ_paths path: the recursive expansion down to the embedding, kept as a lazy DAG.

    The residual stream after stage k (one attention layer, or one MLP) is the sum of N_k paths; an
    attention layer with H heads maps N paths to N + H·N³ (a new path per head and (q, k, v) triple),
    a bilinear MLP maps N to N + N(N + 1)/2 (unordered pairs) (docs/theory.md §5). Path i is decoded from
    its index in O(1) per level; nothing is enumerated unless asked.

    Example:
        >>> cfg = BilinearConfig(vocab_size=5, n_ctx=4, d_model=8, n_layers=2, n_heads=1)
        >>> expand(BilinearTransformer(cfg), level="path").num_paths
        8645
    """

    def __init__(self, model: BilinearTransformer):
        _check_expandable(model)
        self.model = model
        self.config = c = model.config
        stages, n = [], 1
        for l in range(c.n_layers):
            stages.append(_Stage("head", l, n, n + c.n_heads * n ** 3))
            n = stages[-1].n_after
            if c.d_mlp > 0:
                stages.append(_Stage("mlp", l, n, n + n * (n + 1) // 2))
                n = stages[-1].n_after
        self._stages = tuple(stages)
        self.num_paths: int = n

    def __len__(self) -> int:
        if self.num_paths > 2 ** 62:
            raise OverflowError(f"{self.num_paths:.3e} paths do not fit len(); use .num_paths")
        return self.num_paths

    def count_by_degree(self) -> dict[int, int]:
        """Number of paths of each degree, from generating functions (nothing enumerated).

        With p(x) = Σ_paths x^degree: attention maps p to p + H·p³, an MLP maps p to
        p + (p² + p(x²))/2 (unordered pairs, Pólya's count), starting from p = x.
        """
        p = {1: 1}
        for st in self._stages:
            new = dict(p)
            if st.kind == "head":
                cube = _poly_mul(_poly_mul(p, p), p)
                for d, k in cube.items():
                    new[d] = new.get(d, 0) + self.config.n_heads * k
            else:
                pairs = _poly_mul(p, p)  # ordered pairs
                for d, k in p.items():
                    pairs[2 * d] = pairs.get(2 * d, 0) + k  # + diagonal: (p² + p(x²)) / 2 unordered
                for d, k in pairs.items():
                    new[d] = new.get(d, 0) + k // 2
            p = new
        return dict(sorted(p.items()))

    def _decode(self, i: int) -> tuple[str, str, tuple[int, ...]]:
        if not 0 <= i < self.num_paths:
            raise IndexError(f"path index {i} out of range [0, {self.num_paths})")
        if i == 0:
            return "embed", "emb", ()
        for st in self._stages:
            if i < st.n_after:
                break
        j, n = i - st.n_before, st.n_before
        if st.kind == "head":
            h, rem = divmod(j, n ** 3)
            q, rem = divmod(rem, n * n)
            k, v = divmod(rem, n)
            return "head", f"L{st.layer}.H{h}", (q, k, v)
        b = (math.isqrt(8 * j + 1) - 1) // 2  # pairs ordered (a ≤ b) by b, then a: j = b(b+1)/2 + a
        a = j - b * (b + 1) // 2
        return "mlp", f"L{st.layer}.mlp", (a, b)

    def path(self, i: int) -> PathTerm:
        """The path with index ``i`` (degree computed by walking its tree)."""
        kind, comp, children = self._decode(i)
        return PathTerm(i, kind, comp, children, self.degree(i))

    def degree(self, i: int) -> int:
        kind, _, children = self._decode(i)
        return 1 if kind == "embed" else sum(self.degree(c) for c in children)

    def name(self, i: int) -> str:
        """Readable nested name, e.g. "L1.H0(q=emb, k=L0.H0(q=emb, k=emb, v=emb), v=emb)"."""
        kind, comp, ch = self._decode(i)
        if kind == "embed":
            return "emb"
        if kind == "head":
            return f"{comp}(q={self.name(ch[0])}, k={self.name(ch[1])}, v={self.name(ch[2])})"
        return f"{comp}({self.name(ch[0])}, {self.name(ch[1])})"

    def components(self, i: int) -> frozenset[str]:
        """All components appearing anywhere on path ``i``."""
        kind, comp, ch = self._decode(i)
        out = {comp}
        for c in ch:
            out |= self.components(c)
        return frozenset(out)

    def __iter__(self) -> Iterator[PathTerm]:
        """Lazily yields every path (beware: there may be ~10²³)."""
        for i in itertools.count():
            if i >= self.num_paths:
                return
            yield self.path(i)

    def evaluate(self, indices, tokens: Tensor, *, readout="logits") -> Tensor:
        """Values of the given paths on ``tokens``: (len(indices), B, T, out), computed lazily with
        sharing (each sub-path evaluated once per call)."""
        model = self.model
        memo: dict[int, Tensor] = {}
        with torch.no_grad():
            x0 = model.embed(tokens)  # (B, T, d_model)
            R = _readout(model, readout, x0.dtype, x0.device)
            T = tokens.shape[1]
            nvec = position_normaliser(T, self.config.normaliser, dtype=x0.dtype, device=x0.device)
            mask = torch.tril(torch.ones(T, T, dtype=x0.dtype, device=x0.device)) * nvec[:, None]  # (T, T)

            def value(i: int) -> Tensor:  # residual-stream value of path i, (B, T, d_model)
                if i in memo:
                    return memo[i]
                kind, comp, ch = self._decode(i)
                if kind == "embed":
                    out = x0
                elif kind == "head":
                    l, h = int(comp[1:comp.index(".")]), int(comp.split(".H")[1])
                    attn = model.blocks[l].attn
                    q = value(ch[0]) @ attn.W_Q[h].T  # (B, T, d_head)
                    k = value(ch[1]) @ attn.W_K[h].T  # (B, T, d_head)
                    v = value(ch[2]) @ attn.W_V[h].T  # (B, T, d_head)
                    out = ((q @ k.transpose(-1, -2)) * mask) @ v @ attn.W_O[h].T  # (B, T, d_model)
                else:
                    mlp = model.blocks[int(comp[1:comp.index(".")])].mlp
                    xa, xb = value(ch[0]), value(ch[1])
                    out = ((xa @ mlp.W.T) * (xb @ mlp.V.T)) @ mlp.P.T
                    if ch[0] != ch[1]:
                        out = out + ((xb @ mlp.W.T) * (xa @ mlp.V.T)) @ mlp.P.T
                memo[i] = out
                return out

            return torch.stack([_apply_out(R, value(int(i))) for i in indices])

    def materialise(self, tokens: Tensor, *, readout="logits", max_paths: int = 200_000) -> Tensor:
        """Every path's value, shape (num_paths, B, T, out), computed stage by stage (vectorised).

        Raises:
            ValueError: when num_paths > max_paths (the full expansion explodes; use ``evaluate`` on
                selected paths or the :class:`ComponentExpansion`).
        """
        if self.num_paths > max_paths:
            raise ValueError(f"the full path expansion has {self.num_paths:.4g} paths > max_paths = {max_paths}; "
                             "evaluate selected paths with .evaluate(indices, tokens) or use the component "
                             "expansion (expand(model, level='component'))")
        model = self.model
        with torch.no_grad():
            x0 = model.embed(tokens)
            R = _readout(model, readout, x0.dtype, x0.device)
            T = tokens.shape[1]
            nvec = position_normaliser(T, self.config.normaliser, dtype=x0.dtype, device=x0.device)
            mask = torch.tril(torch.ones(T, T, dtype=x0.dtype, device=x0.device)) * nvec[:, None]  # (T, T)
            X = x0[None]  # (N, B, T, d_model)
            for st in self._stages:
                N = X.shape[0]
                if st.kind == "head":
                    attn = model.blocks[st.layer].attn
                    new = []
                    for h in range(self.config.n_heads):
                        q = X @ attn.W_Q[h].T  # (N, B, T, d_head)
                        k = X @ attn.W_K[h].T  # (N, B, T, d_head)
                        vo = X @ (attn.W_O[h] @ attn.W_V[h]).T  # (N, B, T, d_model)
                        scores = torch.einsum("nbtk,mbsk->nmbts", q, k) * mask  # (N, N, B, T, T)
                        vals = torch.einsum("nmbts,pbso->nmpbto", scores, vo)  # (N, N, N, B, T, d_model)
                        new.append(vals.reshape(N ** 3, *vals.shape[3:]))  # (N³, B, T, d_model)
                    X = torch.cat([X] + new)
                else:
                    mlp = model.blocks[st.layer].mlp
                    a, b = X @ mlp.W.T, X @ mlp.V.T  # (N, B, T, d_mlp)
                    rows, cols = _pairs_by_b(N, X.device)
                    off = (rows != cols).to(X.dtype)[:, None, None, None]
                    pair = a[rows] * b[cols] + off * a[cols] * b[rows]  # (pairs, B, T, d_mlp)
                    X = torch.cat([X, pair @ mlp.P.T])
            return _apply_out(R, X)

    def __repr__(self) -> str:
        return f"PathExpansion({self.num_paths} paths, {len(self._stages)} stages)"


def _pairs_by_b(n: int, device) -> tuple[Tensor, Tensor]:
    """Unordered pairs (a ≤ b) in the path-index order: by b, then a."""
    b = torch.repeat_interleave(torch.arange(n, device=device), torch.arange(1, n + 1, device=device))
    start = torch.repeat_interleave(torch.cumsum(torch.arange(n, device=device), 0), torch.arange(1, n + 1, device=device))
    a = torch.arange(len(b), device=device) - start
    return a, b


def _poly_mul(p: dict[int, int], q: dict[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for d1, k1 in p.items():
        for d2, k2 in q.items():
            out[d1 + d2] = out.get(d1 + d2, 0) + k1 * k2
    return out


def expand(model: BilinearTransformer, level: str = "component"):
    """Expand a bilinear / linear-attention transformer into named terms that sum to its logits.

    logits_t = Σ_terms term_t exactly (float64: relative error ~1e-15), with
    head term(q=a, k=b, v=c)_t = n(t) Σ_{s≤t} (out_a(t)ᵀ W_Qᵀ W_K out_b(s)) · W_U W_O W_V out_c(s)
    and MLP term(a, b) = W_U P((W out_a) ⊙ (V out_b)) (+ the swapped product when a ≠ b).
    docs/theory.md §5; bilinear layers: Sharkey 2023 (arXiv 2305.03452); interaction matrices:
    Pearce et al. 2024 (arXiv 2410.08417).

    Args:
        model: a :class:`~slt_interp.bilinear.model.BilinearTransformer` (float64 recommended for exactness).
        level: "component" (:class:`ComponentExpansion`, sources are whole component outputs, term count
            polynomial in depth) or "path" (:class:`PathExpansion`, monomials down to the embedding,
            lazy).

    Raises:
        NotExpandableError: the model has softmax attention or a normalisation layer, overrides the
            reference forward, or is not a BilinearTransformer.
        ValueError: unknown ``level``.
    """
    if level == "component":
        return ComponentExpansion(model)
    if level == "path":
        return PathExpansion(model)
    _check_expandable(model)
    raise ValueError(f"level must be 'component' or 'path', got {level!r}")
