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

Both are exact: the sum of all terms is the forward pass. That holds for the reference computation
only, so a model with anything else (a hook, a patched forward, an attribute that differs from its
config) is refused, and the sum is checked against one forward pass before an expansion is returned
(:mod:`~slt_interp.bilinear.expandable`). Pruning the terms with proven bounds: :mod:`~slt_interp.bilinear.prune`.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Iterator

import torch
from torch import Tensor

from .components import Component, component_graph, readout_matrix, term_index
from .expandable import check_expandable, verify_sum, warn_low_precision
from .factored import FactoredBilinear, FactoredMatrix
from .layers import causal_weights
from .model import BilinearTransformer

__all__ = [
    "expand",
    "ComponentExpansion",
    "PathExpansion",
    "Term",
    "PathTerm",
    "HeadFactors",
]


def _apply(readout: Tensor | None, M: Tensor) -> Tensor:
    """Product readout @ M (identity readout: M itself)."""
    return M if readout is None else readout @ M


@dataclass(frozen=True)
class Term:
    """One term of a :class:`ComponentExpansion`.

    Attributes:
        index: position in the expansion.
        name: e.g. "L1.H0(q=emb, k=L0.H1, v=emb)" or "L0.mlp(emb, L0.H1)" or "emb".
        kind: "embed", "head" or "mlp".
        component: the component that writes the term ("emb", "L1.H0", "L0.mlp").
        sources: the components filling its slots: (q, k, v) for a head, an unordered pair for an MLP.
        layer: the block the component sits in (None for the embedding).
        head: the head index (None unless a head term).
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
        """Whether ``component`` writes this term or fills one of its slots.

        Args:
            component: a component name such as "L0.H1".

        Returns:
            True when it is the writer or one of the sources.
        """
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


def _degree_sets(comps: tuple[Component, ...]) -> list[frozenset[int]]:
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


def _prepare(model) -> None:
    """The structural checks and the low-precision warning every expansion starts with."""
    check_expandable(model)
    warn_low_precision(model)


class ComponentExpansion:
    """logits = Σ_terms term, one term per (component, source tuple); see the module docstring.

    Build with :func:`expand`. Terms are evaluated from one cached forward pass (the component outputs)
    plus, per head, the score tensors of all source pairs. Before it is returned, the sum of the terms
    is checked against one forward pass on a few token sequences
    (:func:`~slt_interp.bilinear.expandable.verify_sum`).

    Args:
        model: the :class:`~slt_interp.bilinear.model.BilinearTransformer` to expand.

    Attributes:
        model: the model (held, not copied: later weight changes show in the terms; a hook or patch added
            later is refused at evaluation).
        config: its config.
        components: the :class:`~slt_interp.bilinear.components.Component` writers in forward order, each
            with the range of term indices it writes (``components[i].terms``).
        terms: the :class:`Term` objects, in order.

    Raises:
        NotExpandableError: see :func:`expand`.

    Example:
        >>> model = BilinearTransformer(BilinearConfig(vocab_size=5, n_ctx=4, d_model=8), seed=0).double()
        >>> exp = expand(model)
        >>> tokens = torch.tensor([[0, 1, 2, 3]])
        >>> bool(torch.allclose(exp.evaluate_sum(tokens), model(tokens)))
        True
    """

    def __init__(self, model: BilinearTransformer):
        """Check the model, build the terms and check their sum (see the class docstring)."""
        _prepare(model)
        self._build(model)
        verify_sum(model, lambda tokens: self.evaluate(tokens, readout="residual"))

    def _build(self, model: BilinearTransformer) -> None:
        self.model = model
        self.config = model.config
        graph = component_graph(model.config)
        self._comp_index = {c.name: c.index for c in graph}
        degs = _degree_sets(graph)
        terms: list[Term] = [Term(0, "emb", "embed", "emb", (), None, None, (1,))]
        comps = [replace(graph[0], terms=range(0, 1))]
        for c in graph[1:]:
            start = len(terms)
            names = [graph[s].name for s in c.sources]
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
            comps.append(replace(c, terms=range(start, len(terms))))
        self.components: tuple[Component, ...] = tuple(comps)
        self.terms: tuple[Term, ...] = tuple(terms)

    # -- container protocol -------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of terms."""
        return len(self.terms)

    def __getitem__(self, index: int) -> Term:
        """The term with this index."""
        return self.terms[index]

    def __iter__(self) -> Iterator[Term]:
        """The terms, in order."""
        return iter(self.terms)

    @property
    def component_names(self) -> tuple[str, ...]:
        """Names of the components ("emb", "L0.H0", ..., "L0.mlp", ...), in forward order."""
        return tuple(c.name for c in self.components)

    def component_index(self, name: str) -> int:
        """Index in :attr:`components` of the component called ``name``.

        Args:
            name: e.g. "emb", "L0.H1", "L1.mlp".

        Returns:
            The index.

        Raises:
            KeyError: no such component.
        """
        if name not in self._comp_index:
            raise KeyError(f"unknown component {name!r}; known: {self.component_names}")
        return self._comp_index[name]

    def index(self, name: str) -> int:
        """Index of the term called ``name``.

        Args:
            name: a term name such as "L1.H0(q=emb, k=L0.H1, v=emb)".

        Returns:
            The term's index.

        Raises:
            KeyError: no term has that name.
        """
        for t in self.terms:
            if t.name == name:
                return t.index
        raise KeyError(f"no term named {name!r}; names look like {self.terms[min(1, len(self) - 1)].name!r}")

    def containing(self, component: str) -> Tensor:
        """The terms that ``component`` writes or feeds.

        Args:
            component: a component name (see :attr:`component_names`).

        Returns:
            Boolean mask of shape (num_terms,).

        Raises:
            KeyError: unknown component.
        """
        self.component_index(component)
        return torch.tensor([t.contains(component) for t in self.terms])

    # -- evaluation -----------------------------------------------------------------------------------
    def evaluate(self, tokens: Tensor, terms=None, *, readout="logits") -> Tensor:
        """Values of the terms on ``tokens``.

        Cost: one forward pass (the component outputs) plus the selected terms only: with ``terms=[i]``
        it is about one term's work (the projections of the sources it reads and one score tensor), not
        all terms'; with ``terms=None`` every term, vectorised per component.

        Args:
            tokens: integer tensor (B, T), T ≤ n_ctx, or a nested list of ints.
            terms: indices (or a boolean mask) of the terms to return, in that order (repeats allowed);
                all when None.
            readout: "logits" (W_U, out = vocab), "residual" (out = d_model) or a (k, d_model) matrix
                such as SAE encoder directions.

        Returns:
            Shape (num_selected, B, T, out).

        Raises:
            NotExpandableError: the model was changed after the expansion was built (a hook, a patched
                method, an attribute that no longer matches the config).
            TypeError, ValueError: invalid tokens, terms or readout.
        """
        model = self.model
        check_expandable(model)  # the model may have changed since the expansion was built
        tokens = model.as_tokens(tokens)
        chosen = None if terms is None else term_index(terms, len(self))
        with torch.no_grad():
            outs = model.component_outputs(tokens)
            X = torch.stack(list(outs.values()))  # (num_components, B, T, d_model)
            R = readout_matrix(model, readout, X.dtype, X.device)
            if chosen is None:
                return self._evaluate_all(X, R, tokens.shape[1])
            unique, inverse = torch.unique(chosen.cpu(), return_inverse=True)  # sorted
            wanted = set(unique.tolist())
            values = []
            for c in self.components:
                local = [i - c.terms.start for i in c.terms if i in wanted]
                if local:
                    values.append(self._evaluate_component(c, X, R, tokens.shape[1], local))
            if not values:
                B, T = tokens.shape
                out = X.shape[-1] if R is None else R.shape[0]
                return X.new_zeros(0, B, T, out)
            return torch.cat(values)[inverse.to(X.device)]  # (num_selected, B, T, out), in the order asked

    def _evaluate_all(self, X: Tensor, R: Tensor | None, T: int) -> Tensor:
        """Every term at once (vectorised over all source tuples of each component)."""
        model = self.model
        mask = causal_weights(T, self.config.normaliser, dtype=X.dtype, device=X.device)  # (T, T)
        values = []
        for c in self.components:
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
        return torch.cat(values)  # (num_terms, B, T, out)

    def _evaluate_component(self, c: Component, X: Tensor, R: Tensor | None, T: int, local: list[int]) -> Tensor:
        """The terms number ``local`` (sorted, within component c's range) only: cost ∝ len(local).

        Projections are computed for the sources those terms use, scores for their (q, k) pairs only.

        Returns:
            Shape (len(local), B, T, out).
        """
        model = self.model
        if c.kind == "embed":
            return _apply_out(R, X[0])[None]  # (1, B, T, out)
        N = len(c.sources)
        src = torch.tensor(c.sources, device=X.device)
        idx = torch.tensor(local, device=X.device)
        if c.kind == "head":
            qi, rem = idx // (N * N), idx % (N * N)  # term order: q, k, v (itertools.product)
            ki, vi = rem // N, rem % N
            attn = model.blocks[c.layer].attn
            mask = causal_weights(T, self.config.normaliser, dtype=X.dtype, device=X.device)  # (T, T)
            q = X[src[qi]] @ attn.W_Q[c.head].T  # (n, B, T, d_head)
            k = X[src[ki]] @ attn.W_K[c.head].T  # (n, B, T, d_head)
            ov = _apply(R, attn.W_O[c.head]) @ attn.W_V[c.head]  # (out, d_model)
            vo = X[src[vi]] @ ov.T  # (n, B, T, out)
            return ((q @ k.transpose(-1, -2)) * mask) @ vo  # (n, B, T, out)
        rows, cols = torch.triu_indices(N, N, device=X.device)
        i, j = rows[idx], cols[idx]
        mlp = model.blocks[c.layer].mlp
        xa, xb = X[src[i]], X[src[j]]  # (n, B, T, d_model)
        pair = (xa @ mlp.W.T) * (xb @ mlp.V.T)  # (n, B, T, d_mlp)
        off = i != j
        if bool(off.any()):
            swapped = (xb[off] @ mlp.W.T) * (xa[off] @ mlp.V.T)
            pair = pair.index_add(0, off.nonzero().flatten(), swapped)
        return pair @ _apply(R, mlp.P).T  # (n, B, T, out)

    def evaluate_sum(self, tokens: Tensor, keep=None, *, readout="logits") -> Tensor:
        """Σ of the kept terms.

        Args:
            tokens: integer tensor (B, T) or a nested list of ints.
            keep: indices (or a boolean mask) of the terms to sum; all when None.
            readout: as in :meth:`evaluate`.

        Returns:
            Shape (B, T, out).

        Raises:
            NotExpandableError, TypeError, ValueError: as in :meth:`evaluate`.
        """
        if keep is None:
            return self.evaluate(tokens, readout=readout).sum(0)
        idx = term_index(keep, len(self))
        if idx.numel() == 0:
            return self.evaluate(tokens, [0], readout=readout)[0] * 0
        return self.evaluate(tokens, idx, readout=readout).sum(0)

    # -- factored representation ------------------------------------------------------------------------
    def factored(self, term: int | Term, *, readout="logits", token_space: bool = False):
        """The term's weights, factored.

        :class:`HeadFactors` for a head term, a :class:`~slt_interp.bilinear.factored.FactoredBilinear`
        for an MLP term (its interaction matrices ``.interaction(u)``), a :class:`FactoredMatrix`
        readout·W_E for the embedding term.

        Args:
            term: a term or its index.
            readout: as in :meth:`evaluate`.
            token_space: compose every slot filled by the embedding with the token embedding W_E
                (positional part left out), so QK/OV circuits and interaction matrices are
                (vocab × vocab).

        Returns:
            HeadFactors, FactoredBilinear or FactoredMatrix (see above).

        Raises:
            ValueError: ``token_space=True`` for a term with a slot filled by another component.
        """
        t = self.terms[term] if isinstance(term, int) else term
        m = self.model
        R = readout_matrix(m, readout, m.W_E.dtype, m.W_E.device)
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

    def __repr__(self) -> str:
        """Size summary."""
        return f"ComponentExpansion({len(self)} terms, {len(self.components)} components)"


def _apply_out(R: Tensor | None, X: Tensor) -> Tensor:
    return X if R is None else X @ R.T


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

    The path expansion and the component expansion expand the same polynomial, so before it is returned
    the model is checked as for :class:`ComponentExpansion` (structure, then the sum of the component
    terms against one forward pass; the sum of all paths equals that sum identically).

    Args:
        model: the :class:`~slt_interp.bilinear.model.BilinearTransformer` to expand.

    Raises:
        NotExpandableError: see :func:`expand`.

    Example:
        >>> cfg = BilinearConfig(vocab_size=5, n_ctx=4, d_model=8, n_layers=2, n_heads=1)
        >>> expand(BilinearTransformer(cfg, seed=0).double(), level="path").num_paths
        8645
    """

    def __init__(self, model: BilinearTransformer):
        """Check the model and set up the path index (see the class docstring)."""
        _prepare(model)
        components = ComponentExpansion.__new__(ComponentExpansion)  # already checked and warned
        components._build(model)
        verify_sum(model, lambda tokens: components.evaluate(tokens, readout="residual"))
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
        """Number of paths (OverflowError beyond 2⁶²: use :attr:`num_paths`)."""
        if self.num_paths > 2 ** 62:
            raise OverflowError(f"{self.num_paths:.3e} paths do not fit len(); use .num_paths")
        return self.num_paths

    def count_by_degree(self) -> dict[int, int]:
        """Number of paths of each degree, from generating functions (nothing enumerated).

        With p(x) = Σ_paths x^degree: attention maps p to p + H·p³, an MLP maps p to
        p + (p² + p(x²))/2 (unordered pairs, Pólya's count), starting from p = x.

        Returns:
            ``{degree: number of paths}``, sorted by degree; the counts sum to :attr:`num_paths`.
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
        """The path with index ``i`` (degree computed by walking its tree).

        Args:
            i: path index in [0, num_paths).

        Returns:
            A :class:`PathTerm`.

        Raises:
            IndexError: ``i`` out of range.
        """
        kind, comp, children = self._decode(i)
        return PathTerm(i, kind, comp, children, self.degree(i))

    def degree(self, i: int) -> int:
        """Degree in the embeddings of path ``i``.

        Args:
            i: path index in [0, num_paths).

        Returns:
            The degree.

        Raises:
            IndexError: ``i`` out of range.
        """
        kind, _, children = self._decode(i)
        return 1 if kind == "embed" else sum(self.degree(c) for c in children)

    def name(self, i: int) -> str:
        """Readable nested name, e.g. "L1.H0(q=emb, k=L0.H0(q=emb, k=emb, v=emb), v=emb)".

        Args:
            i: path index in [0, num_paths).

        Returns:
            The name.

        Raises:
            IndexError: ``i`` out of range.
        """
        kind, comp, ch = self._decode(i)
        if kind == "embed":
            return "emb"
        if kind == "head":
            return f"{comp}(q={self.name(ch[0])}, k={self.name(ch[1])}, v={self.name(ch[2])})"
        return f"{comp}({self.name(ch[0])}, {self.name(ch[1])})"

    def components(self, i: int) -> frozenset[str]:
        """All components appearing anywhere on path ``i``.

        Args:
            i: path index in [0, num_paths).

        Returns:
            Their names.

        Raises:
            IndexError: ``i`` out of range.
        """
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
        """Values of the given paths, computed lazily with sharing (each sub-path once per call).

        Args:
            indices: path indices (Python ints; they may exceed 2⁶³).
            tokens: integer tensor (B, T) or a nested list of ints.
            readout: as in :meth:`ComponentExpansion.evaluate`.

        Returns:
            Shape (len(indices), B, T, out).

        Raises:
            NotExpandableError: the model was changed after the expansion was built.
            IndexError: an index out of range.
        """
        model = self.model
        check_expandable(model)  # the model may have changed since the expansion was built
        tokens = model.as_tokens(tokens)
        memo: dict[int, Tensor] = {}
        with torch.no_grad():
            x0 = model.embed(tokens)  # (B, T, d_model)
            R = readout_matrix(model, readout, x0.dtype, x0.device)
            mask = causal_weights(tokens.shape[1], self.config.normaliser, dtype=x0.dtype, device=x0.device)

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
        """Every path's value, computed stage by stage (vectorised).

        Args:
            tokens: integer tensor (B, T) or a nested list of ints.
            readout: as in :meth:`ComponentExpansion.evaluate`.
            max_paths: refuse beyond this many paths.

        Returns:
            Shape (num_paths, B, T, out).

        Raises:
            ValueError: when num_paths > max_paths (the full expansion explodes; use ``evaluate`` on
                selected paths or the :class:`ComponentExpansion`).
            NotExpandableError: the model was changed after the expansion was built.
        """
        if self.num_paths > max_paths:
            raise ValueError(f"the full path expansion has {self.num_paths:.4g} paths > max_paths = {max_paths}; "
                             "evaluate selected paths with .evaluate(indices, tokens) or use the component "
                             "expansion (expand(model, level='component'))")
        model = self.model
        check_expandable(model)  # the model may have changed since the expansion was built
        tokens = model.as_tokens(tokens)
        with torch.no_grad():
            x0 = model.embed(tokens)
            R = readout_matrix(model, readout, x0.dtype, x0.device)
            mask = causal_weights(tokens.shape[1], self.config.normaliser, dtype=x0.dtype, device=x0.device)
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
        """Size summary."""
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

    The expansion is exact only for the reference computation, so everything else is refused
    (:mod:`~slt_interp.bilinear.expandable`), and before returning, the sum of the terms is checked against
    one forward pass on a few fixed random sequences (:func:`~slt_interp.bilinear.expandable.verify_sum`).

    Args:
        model: a :class:`~slt_interp.bilinear.model.BilinearTransformer` (float64 recommended for exactness;
            float16 / bfloat16 give a warning).
        level: "component" (:class:`ComponentExpansion`, sources are whole component outputs, term count
            polynomial in depth) or "path" (:class:`PathExpansion`, monomials down to the embedding,
            lazy).

    Returns:
        A :class:`ComponentExpansion` or a :class:`PathExpansion`.

    Raises:
        NotExpandableError: the model is not a BilinearTransformer, has softmax attention or a
            normalisation layer, a forward hook (its own, a submodule's or a global one), a method
            overridden on its class or instance, a layer attribute that differs from its config, or a
            forward pass that the sum of the terms does not reproduce.
        ValueError: unknown ``level``.

    Warns:
        UserWarning: the model is float16 or bfloat16 (the sum is then exact only to a few digits).
    """
    if level == "component":
        return ComponentExpansion(model)
    if level == "path":
        return PathExpansion(model)
    check_expandable(model)
    raise ValueError(f"level must be 'component' or 'path', got {level!r}")
