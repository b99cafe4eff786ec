"""Curvature of a loss as matrix-free linear operators on flat parameter vectors.

* :class:`CurvatureOperator` — the base class: a subclass implements only ``_matmat`` (a d×k block of
  columns to d×k); the base gives ``op @ v`` for vectors and matrices, ``to_dense()``, ``to_scipy()``,
  ``shape``, ``dtype``, ``device`` and a count of the matrix–vector products used.
* :class:`HessianOperator` — H = ∇²L(w*), products H·v = d/dt ∇L(w* + t·v) by forward-over-reverse
  differentiation ``jvp(grad(L))`` (Pearlmutter 1994), vmapped over the columns of a block, with a
  reverse-over-reverse fallback ``vjp(grad(L))`` for models without forward-mode support.
* :class:`GaussNewtonOperator` — the generalized Gauss–Newton matrix G = Σ_b (n_b/n)·J_bᵀ·(∇²_z ℓ)·J_b
  (Schraudolph 2002), computed as jvp → output-space Hessian → vjp without forming J. For the behavioral
  loss (:func:`slt_interp.estimators.behavioral_loss`) at w* it equals the Hessian: (2/n)·Σ_x J_xᵀJ_x for the MSE
  version, the Fisher matrix for the KL version (Bushnaq et al. 2024, arXiv 2405.10927, §2.2).

Operators work on the flat vector of :func:`slt_interp.estimators.flatten` (parameters concatenated in
the order of the params dict). Device and dtype follow the parameters. For a :class:`DataLoss`, products
are summed over its batches with weights n_b/n, so data sets that do not fit one batch are handled
exactly; the DataLoss refuses what would make that wrong (a loss summed over the batch, a model with
dropout or batch norm in train mode, NaN/inf data), and the operators check the loss value once at
w* (a finite scalar that depends on the parameters).

The design follows curvlinops (Dangel, Tatzel, Hennig et al., https://github.com/f-dangel/curvlinops).
"""
from __future__ import annotations

import time

from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.func import grad, jvp, vjp, vmap

from .batch_loss import BatchLoss
from .distributed import ShardedLoss, broadcast_object
from .flat import FlatProblem, Params, check_loss_value, flatten, unflatten
from .model_losses import DataLoss

__all__ = ["CurvatureOperator", "HessianOperator", "GaussNewtonOperator"]

_MODES = ("auto", "forward", "reverse")


def _now(device: torch.device) -> float:
    """A clock for comparing the cost of the two modes' products on ``device``, in seconds.

    On CPU the CPU time of the process (``time.process_time``: all its threads, not the time it spends
    descheduled), so that on a shared machine the choice follows the work of each mode rather than the
    load of other processes (measured, 2 cores at load ≈ 5, MLP HVP with one thread: wall times of one
    mode spread over 30–40 ms and overlap the other's 23–35 ms, CPU times 17–20 ms against 14–15 ms). On an
    accelerator the wall clock after synchronising it (its kernels run asynchronously).

    Args:
        device: where the products run.

    Returns:
        A reading of the clock; differences of two readings are seconds.
    """
    if device.type == "cpu":
        return time.process_time()
    backend = getattr(torch, device.type, None)
    if backend is not None and hasattr(backend, "synchronize"):
        backend.synchronize()
    return time.perf_counter()


class CurvatureOperator:
    """A symmetric d×d linear operator given by its action on blocks of vectors.

    Subclasses implement ``_matmat(V)`` for ``V`` of shape (d, k) with the operator's dtype and device.

    Args:
        dim: d, the number of parameters.
        dtype: the dtype of the parameters.
        device: the device of the parameters.

    Attributes:
        dtype, device: those of the parameters.
        num_matvecs: matrix–vector products computed so far (a block of k columns counts k; the
            timing products of ``mode="auto"`` are not counted).
    """

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device):
        self.dim = int(dim)
        self.dtype = dtype
        self.device = torch.device(device)
        self.num_matvecs = 0

    @property
    def shape(self) -> tuple[int, int]:
        """(d, d)."""
        return (self.dim, self.dim)

    def _matmat(self, V: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement _matmat(V) for V of shape (d, k)")

    def __matmul__(self, x: Tensor) -> Tensor:
        """A·x for x of shape (d,) or (d, k); x is moved to the operator's device and dtype."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} @ x needs a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (1, 2) or x.shape[0] != self.dim:
            raise ValueError(
                f"{type(self).__name__} has shape {self.shape}; the right operand must have shape ({self.dim},) "
                f"or ({self.dim}, k), got {tuple(x.shape)}"
            )
        X = x.to(device=self.device, dtype=self.dtype)
        X = X[:, None] if x.dim() == 1 else X
        self.num_matvecs += X.shape[1]
        out = self._matmat(X)
        return out[:, 0] if x.dim() == 1 else out

    def matvec(self, x: Tensor) -> Tensor:
        """Same as ``self @ x``.

        Args:
            x: a vector (d,) or a block of vectors (d, k).

        Returns:
            A·x, of the shape of ``x``.
        """
        return self @ x

    def to_dense(self, *, chunk_size: int = 128, max_dim: int = 20_000) -> Tensor:
        """The d×d matrix, built from products with blocks of ``chunk_size`` unit vectors (small d only).

        Args:
            chunk_size: unit vectors per block product.
            max_dim: refuse larger operators.

        Returns:
            The dense matrix (the operator's dtype and device).

        Raises:
            ValueError: d > ``max_dim`` (the matrix would not fit in memory; use the matrix-free tools).
        """
        if self.dim > max_dim:
            raise ValueError(
                f"to_dense() would build a {self.dim}×{self.dim} matrix (> max_dim = {max_dim}); use the matrix-free "
                "spectrum tools (slt_interp.estimators.lanczos, slt_interp.estimators.count_eigenvalues) or raise max_dim"
            )
        cols = []
        for start in range(0, self.dim, chunk_size):
            stop = min(start + chunk_size, self.dim)
            E = torch.zeros(self.dim, stop - start, dtype=self.dtype, device=self.device)
            E[torch.arange(start, stop), torch.arange(stop - start)] = 1
            cols.append(self @ E)
        return torch.cat(cols, dim=1)

    def to_scipy(self):
        """A :class:`scipy.sparse.linalg.LinearOperator` (numpy in and out, symmetric: rmatvec = matvec)."""
        from scipy.sparse.linalg import LinearOperator

        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype

        def apply(x):
            X = torch.as_tensor(np.asarray(x), dtype=self.dtype).to(self.device)
            return (self @ X).detach().cpu().numpy()

        return LinearOperator(self.shape, matvec=apply, rmatvec=apply, matmat=apply, rmatmat=apply, dtype=np_dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, dtype={self.dtype}, device={self.device})"

    def _init_loss_operator(self, loss, params: Params, mode: str, chunk_size: int | None) -> None:
        """Shared set-up of an operator of a loss at w* = ``params`` (validated and flattened)."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if not callable(loss):
            raise TypeError(f"loss must be callable as loss(params) -> scalar, got {type(loss).__name__}")
        # data parallel: products are taken on this process's shard and all-reduced (``_reduce``)
        self.sharded = loss if isinstance(loss, ShardedLoss) else None
        if self.sharded is not None:
            loss = self.sharded.shard
        self.problem = flatten(loss, params)
        # once, up front: a scalar, finite, differentiable loss (data were checked by DataLoss)
        self.value = check_loss_value(self.problem)
        if self.sharded is not None:
            self.value = self.sharded.reduce(self.value)
        CurvatureOperator.__init__(self, self.problem.dim, self.problem.w0.dtype, self.problem.w0.device)
        self.loss = loss
        self.mode = mode
        self.chunk_size = chunk_size
        self.mode_by_width: dict[int, str] = {}  # mode="auto": the mode timed fastest per block width

    def _reduce(self, local: Tensor) -> Tensor:
        """The full-data product from this process's (Σ_r (n_r/n)·local_r for a ShardedLoss; else itself)."""
        return local if self.sharded is None else self.sharded.reduce(local)

    def _agree(self, mode: str) -> str:
        """One mode for every process of a sharded loss: rank 0's timing decides.

        The products are exact in either mode, but the processes must make the same collective calls.

        Returns:
            The mode every process uses.
        """
        return mode if self.sharded is None else broadcast_object(mode)


def _vmap_columns(column: Callable[[Tensor], Tensor], V: Tensor, chunk_size: int | None) -> Tensor:
    """``[column(V[:, j]) for j]`` as a (d, k) block, by ``vmap`` over the columns laid out as contiguous rows.

    Mapping over a contiguous (k, d) copy rather than over dim 1 of V (where every column has stride k)
    changed the median CPU time of products with blocks of 16 by −4 to −13% in reverse mode and by −9 to +6%
    in forward mode (measured on the MLP and the transformer LM of ``experiments.benchmarks.hvp``, float32
    and float64, one thread).

    A single column is mapped without ``vmap``: batching rules for a batch of one only add work (the
    reverse-over-reverse product of the 0.1M-parameter LM of ``experiments.benchmarks.hvp``, float64, one
    thread: 1.88 s of CPU time without ``vmap`` against 2.14 s with it).

    Returns:
        The (d, k) block of the columns' images: the transpose of a contiguous (k, d) block (a view).
    """
    if V.shape[1] == 1:
        return column(V[:, 0])[:, None]
    return vmap(column, chunk_size=chunk_size)(V.T.contiguous()).T


def _terms(loss: Callable, problem: FlatProblem) -> list[tuple[float, Callable[[Tensor], Tensor]]]:
    """(weight, flat loss) per batch: a DataLoss or BatchLoss is split into its batches, anything else is one term."""
    if not isinstance(loss, (DataLoss, BatchLoss)):
        return [(1.0, problem.fn)]
    names, shapes, is_dict = problem.names, problem.shapes, problem.is_dict
    terms = []
    for weight, batch in loss.batches():
        batch_fn = loss.on_batch(batch)
        terms.append((weight, lambda w, f=batch_fn: f(unflatten(w, names, shapes, is_dict))))
    return terms


class _ModeChoosingOperator(CurvatureOperator):
    """An operator of a loss whose products can be taken in forward or reverse mode (both exact).

    A subclass implements ``_sum(V, mode)``, the product with a (d, k) block in ``mode`` ("forward" or
    "reverse") on this process's data. ``mode="auto"`` times both modes at the first product with a
    block of each new width k and keeps the faster for that width in ``mode_by_width``.
    """

    def _sum(self, V: Tensor, mode: str) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement _sum(V, mode)")

    def _matmat(self, V: Tensor) -> Tensor:
        if self.mode != "auto":
            return self._reduce(self._sum(V, self.mode))
        width = V.shape[1]
        if width not in self.mode_by_width:
            mode, out = self._choose_mode(V)
            self.mode_by_width[width] = self._agree(mode)
            if self.mode_by_width[width] == mode:  # the timed product of the chosen mode is the answer
                return self._reduce(out)
        return self._reduce(self._sum(V, self.mode_by_width[width]))

    def _choose_mode(self, V: Tensor) -> tuple[str, Tensor]:
        """The faster exact mode for blocks of this width, from timing both modes on ``V``.

        Which mode wins depends on the model, the device and the block width (vmapped forward-over-
        reverse and reverse-over-reverse scale differently with the number of columns), so the
        choice is made once per new width. At the first width both modes are first run on one
        column, so that first-call overheads do not decide; a one-column block is timed twice per
        mode (best of two), a wider one once, on the clock of :func:`_now` (CPU time on CPU, so that
        other processes on a shared machine do not decide). If forward mode fails (an operation
        without forward-mode AD), reverse mode is used at every width (``self.mode = "reverse"``).
        These timing products are not counted in ``num_matvecs``.

        Returns:
            ``(mode, product)``: "forward" or "reverse", and that mode's product with ``V``.
        """
        if not self.mode_by_width:
            try:
                self._sum(V[:, :1], "forward")
            except (NotImplementedError, RuntimeError) as forward_error:
                # forward-mode AD is missing or broken for some operations (fused attention kernels,
                # F.mse_loss with a constant target in torch 2.x: "ZeroTensors are immutable")
                try:
                    out = self._sum(V, "reverse")
                except Exception as reverse_error:
                    raise reverse_error from forward_error
                self.mode = "reverse"  # every process fails alike: _matmat's _agree keeps them together
                return "reverse", out
            self._sum(V[:, :1], "reverse")
        seconds, outs = {"forward": float("inf"), "reverse": float("inf")}, {}
        for mode in ("forward", "reverse") * (2 if V.shape[1] == 1 else 1):  # one column: best of two
            start = _now(self.device)
            outs[mode] = self._sum(V, mode)
            seconds[mode] = min(seconds[mode], _now(self.device) - start)
        best = min(seconds, key=seconds.get)
        return best, outs[best]


class HessianOperator(_ModeChoosingOperator):
    """H = ∇²L(w*) as a linear operator on flat parameter vectors.

    H·v is computed as ``jvp(grad(L), (w*,), (v,))`` (forward-over-reverse; Pearlmutter 1994, "Fast exact
    multiplication by the Hessian"), vmapped over the columns of a block; ``mode="reverse"`` uses
    ``vjp(grad(L))`` instead (reverse-over-reverse, for operations without forward-mode AD, e.g. some fused
    attention kernels). ``mode="auto"`` times both modes at the first product with a block of each new
    width k and keeps the faster one for that width in ``mode_by_width`` (which mode wins depends on the
    model, the device and k; on CPU reverse-over-reverse often wins); it uses reverse mode for good
    (``mode`` becomes "reverse") if forward mode fails (e.g. ``F.mse_loss`` against a constant target
    raises "ZeroTensors are immutable" under forward-over-reverse in torch 2.x; writing the loss as
    ``((p - t) ** 2).mean()`` avoids that). For a :class:`ShardedLoss` rank 0's choice is used by every
    process.

    Args:
        loss: ``loss(params) -> scalar``; a :class:`DataLoss`, or a :class:`BatchLoss` of dict or tuple
            batches (:func:`slt_interp.estimators.batch_loss`), is differentiated batch by batch and the
            products summed with weights n_b/n.
        params: w*, a Tensor or a dict of Tensors (one device and dtype).
        mode: "auto", "forward" or "reverse".
        chunk_size: columns per vmapped call (``None``: the whole block at once).

    Attributes:
        mode_by_width: for ``mode="auto"``, the mode chosen for each block width so far ``{k: mode}``.

    Raises:
        TypeError: ``loss`` not callable, non-floating params, or a loss value that is not a tensor or
            does not depend on the parameters (detached; see :func:`slt_interp.estimators.flat.check_loss_value`).
        ValueError: unknown mode; invalid params (see :func:`slt_interp.estimators.flatten`); a loss that
            is not a finite scalar at w*. A :class:`DataLoss` has refused sum-reduced losses, random
            (train-mode dropout) models and NaN/inf data when it was built.

    Example:
        >>> op = HessianOperator(lambda w: (w ** 2).sum() + w[0] * w[1], torch.zeros(2, dtype=torch.float64))
        >>> op.to_dense()
        tensor([[2., 1.],
                [1., 2.]], dtype=torch.float64)
    """

    def __init__(self, loss: Callable[[Params], Tensor], params: Params, *, mode: str = "auto", chunk_size: int | None = None):
        self._init_loss_operator(loss, params, mode, chunk_size)
        self._terms = _terms(loss, self.problem)

    def _hvp_block(self, fn: Callable[[Tensor], Tensor], V: Tensor, mode: str) -> Tensor:
        w0 = self.problem.w0
        g = grad(fn)
        if mode == "forward":
            def column(v):
                return jvp(g, (w0,), (v,))[1]
        else:
            _, pullback = vjp(g, w0)

            def column(v):
                return pullback(v)[0]
        return _vmap_columns(column, V, self.chunk_size)

    def _sum(self, V: Tensor, mode: str) -> Tensor:
        out = None
        for weight, fn in self._terms:
            term = self._hvp_block(fn, V, mode)
            term = term if weight == 1 else term * weight  # one batch: no pass over the d×k block
            out = term if out is None else out + term
        return out

    def gradient(self) -> Tensor:
        """∇L(w*), flat (summed over batches)."""
        out = None
        for weight, fn in self._terms:
            term = grad(fn)(self.problem.w0) * weight
            out = term if out is None else out + term
        return self._reduce(out.detach())


class GaussNewtonOperator(_ModeChoosingOperator):
    """G = Σ_b (n_b/n)·J_bᵀ·∇²_z ℓ_b(z_b)·J_b, the generalized Gauss–Newton matrix of a :class:`DataLoss`.

    J_b = ∂f(x_b; w)/∂w at w*, z_b = f(x_b; w*), ℓ_b the batch loss as a function of the outputs
    (Schraudolph 2002, "Fast curvature matrix-vector products for second-order gradient descent").
    Each product is J·v by ``jvp`` (or, in reverse mode, by differentiating the linear map u ↦ Jᵀu),
    then the output-space Hessian (a small HVP in output space), then Jᵀ· by ``vjp``; J is never formed.

    For ``behavioral_loss(model, x, kind="mse")`` this is (2/n)·Σ_x J_xᵀJ_x, the Hessian of L_B at w*;
    for ``kind="kl"`` it is the Fisher matrix (Bushnaq et al. 2024, arXiv 2405.10927, §2.2). For a
    training loss it is the positive semi-definite GGN approximation to the Hessian.

    Args:
        loss: a :class:`DataLoss` (from :func:`slt_interp.estimators.training_loss` or
            :func:`slt_interp.estimators.behavioral_loss`).
        params: the params dict w* (as returned with ``loss``).
        mode: "auto", "forward" or "reverse" (how J·v and the output-space Hessian product are
            computed); "auto" times both at the first product with a block of each new width and keeps
            the faster one for that width, as :class:`HessianOperator` does (reverse mode for good if
            forward mode fails).
        chunk_size: columns per vmapped call.

    Attributes:
        mode_by_width: for ``mode="auto"``, the mode chosen for each block width so far ``{k: mode}``.

    Raises:
        TypeError: ``loss`` is not a DataLoss (the GGN needs the model outputs); a loss value that does
            not depend on the parameters.
        ValueError: unknown mode; invalid params; a loss that is not a finite scalar at w*.
    """

    def __init__(self, loss: DataLoss, params: Params, *, mode: str = "auto", chunk_size: int | None = None):
        if not isinstance(loss, (DataLoss, ShardedLoss)):
            raise TypeError(
                "GaussNewtonOperator needs a DataLoss (build it with slt_interp.estimators.behavioral_loss or "
                f"slt_interp.estimators.training_loss), got {type(loss).__name__}; for a plain callable use HessianOperator"
            )
        self._init_loss_operator(loss, params, mode, chunk_size)

    def _ggn_block(self, batch: tuple[Tensor, ...], V: Tensor, mode: str) -> Tensor:
        p = self.problem
        inputs, *rest = batch

        def out_fn(w: Tensor) -> Tensor:
            return self.loss.outputs(unflatten(w, p.names, p.shapes, p.is_dict), inputs)

        def out_loss(z: Tensor) -> Tensor:
            return self.loss.batch_loss(z, *rest)

        z, pullback = vjp(out_fn, p.w0)
        z = z.detach()
        grad_z = grad(out_loss)
        if mode == "reverse":
            _, pushforward_t = vjp(lambda u: pullback(u)[0], torch.zeros_like(z))
            _, output_hessian = vjp(grad_z, z)

        def column(v):
            if mode == "forward":
                Jv = jvp(out_fn, (p.w0,), (v,))[1]
            else:
                Jv = pushforward_t(v)[0]
            MJv = jvp(grad_z, (z,), (Jv,))[1] if mode == "forward" else output_hessian(Jv)[0]
            return pullback(MJv)[0]

        return _vmap_columns(column, V, self.chunk_size)

    def _sum(self, V: Tensor, mode: str) -> Tensor:
        out = None
        for weight, batch in self.loss.batches():
            term = self._ggn_block(batch, V, mode)
            term = term if weight == 1 else term * weight  # one batch: no pass over the d×k block
            out = term if out is None else out + term
        return out
