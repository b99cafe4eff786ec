"""Langevin samplers of the localized tempered posterior under one pure contract (blackjax style).

Every sampler is a frozen kernel object with

    state = kernel.init(w, batch)                       # w: (C, d) points of C chains
    state, info = kernel.step(state, batch, noise, uniform, monitor)

``step`` is a pure function of its arguments: the randomness comes in as ``noise`` (C, d) standard
normals and ``uniform`` (C,) U(0, 1) draws (used by Metropolis tests), and nothing touches a global
RNG. ``info`` carries the loss of the batch at the state's point (the draw the estimator records),
the MALA acceptance probability when monitored, and whether each chain is finite.

Target (Lau et al. 2023, arXiv 2308.12108; docs/theory.md §1): p(w) ∝ exp(−U(w)),
U(w) = nβ·L_n(w) + (γ/2)·‖w − w*‖².

* :class:`SGLDKernel` — w' = w − (ε/2)·∇U_B(w) + √ε·ξ (Welling & Teh 2011), with the minibatch loss
  L_B; never rejects, O(ε) bias; ``monitor=True`` also computes the Metropolis-adjusted acceptance α
  of the proposal (Roberts & Tweedie 1996, Bernoulli 2(4)) as a diagnostic.
* :class:`MALAKernel` — the same proposal on the full-batch potential, accepted with probability α:
  the stationary law is exact for every ε. The state carries U's gradient at the current point.
* :class:`RMSPropSGLDKernel` — preconditioned SGLD (pSGLD; Li, Chen, Carlson, Carin 2016, AAAI,
  arXiv 1512.07666): V ← αV + (1 − α)·g⊙g with g = ∇L_B, G = 1/(λ + √V), normalised here to mean 1
  over the sampled coordinates (G̃ = G/mean G, so that ε keeps SGLD's meaning and calibration), and
  w' = w − (ε/2)·G̃⊙∇U_B(w) + √(ε·G̃)⊙ξ. The Γ correction term of Li et al. (the divergence of G
  as a function of w) is dropped, as in their experiments; it is zero once V is held fixed
  (``adapt=False``), and the estimator holds it fixed after the first part of the burn-in
  (:mod:`slt_interp.estimators._adaptive`), so that the draws target p with only SGLD's O(ε) step bias. G̃ is
  clipped to [1/κ, κ] (κ = ``max_ratio`` = 10) and normalised again: at a degenerate w* with
  noise-free data the gradient vanishes in the flat directions, V there stays ~1e-13 while it is ~1e-3
  in the stiff ones, and the unclipped G̃ spanned 1.6e-4 to 16 — the stiff coordinates all but stopped
  and λ̂ came out −62% to −84% of λ on the zoo's dln(4,3,2,3) rank 1 at n = 20 000 (SGLD: −18% to
  −24%); clipped at κ = 10, −28% on the seed that gave −82% (κ = 3: −25%). κ = 3 was tried as the default
  and not kept: on 8 random deep linear networks it was within 10% of λ on 3 against 6 for κ = 10
  (experiments/benchmarks/results/llc_accuracy.md). Its diagnostic is the Metropolis-adjusted acceptance of this
  proposal with G̃ held fixed, q(w'|w) = N(w − (ε/2)G̃∇U(w), ε·diag G̃).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from .sgld import localized_potential, mala_acceptance, sgld_step


def _finite(loss: Tensor, g: Tensor) -> Tensor:
    """Whether each chain's loss and gradient are finite.

    One reduction of g per chain (a NaN or inf entry makes its row's sum non-finite), instead of a
    (C, d) boolean tensor.

    Returns:
        (C,) boolean tensor.
    """
    return torch.isfinite(loss) & torch.isfinite(g.sum(-1))

__all__ = ["SamplerState", "StepInfo", "SGLDKernel", "MALAKernel", "RMSPropSGLDKernel"]

ValueAndGrad = Callable[[Tensor, tuple], tuple[Tensor, Tensor]]  # (W (C, d), batch) -> (L (C,), ∇L (C, d))


class SamplerState(NamedTuple):
    """A sampler's state for C chains.

    Attributes:
        w: the points, (C, d).
        loss: the batch loss at ``w`` when the kernel carries it (MALA: full batch), else None.
        grad: its gradient, (C, d), or None.
        precond: the RMSProp running mean of squared gradients, (C, d), or None.
        scale: RMSProp with V held: the preconditioner G̃ computed from it, (C, d), kept so that it
            is not recomputed at every step (derived from ``precond``; not checkpointed), or None.
    """

    w: Tensor
    loss: Tensor | None = None
    grad: Tensor | None = None
    precond: Tensor | None = None
    scale: Tensor | None = None


class StepInfo(NamedTuple):
    """What one step reports.

    Attributes:
        loss: (C,) the batch loss at the point before the step (the recorded draw).
        finite: (C,) whether loss and gradient were finite there.
        acceptance: (C,) the MALA acceptance probability of the proposal when monitored, else None.
    """

    loss: Tensor
    finite: Tensor
    acceptance: Tensor | None = None


@dataclass(frozen=True)
class SGLDKernel:
    """Stochastic-gradient Langevin dynamics for the localized tempered posterior.

    Attributes:
        value_and_grad: ``(W, batch) -> (L (C,), ∇L (C, d))`` of the batch loss.
        w_star: the centre w*, (d,).
        step_size: ε, a float or a (C,) tensor (one per chain).
        nbeta: nβ.
        localization: γ.
        mask: (d,) 0/1 sampled coordinates, or None.
        noise_scale: multiplies ξ (1: SGLD; 0: gradient descent, for tests).
    """

    value_and_grad: ValueAndGrad
    w_star: Tensor
    step_size: float | Tensor
    nbeta: float
    localization: float
    mask: Tensor | None = None
    noise_scale: float = 1.0

    def init(self, w: Tensor, batch: tuple = ()) -> SamplerState:
        """The state at points ``w``; SGLD carries nothing else.

        Args:
            w: (C, d) points.
            batch: unused (the contract's signature).

        Returns:
            The :class:`SamplerState`.
        """
        return SamplerState(w.detach())

    def _grads(self, w: Tensor, batch: tuple) -> tuple[Tensor, Tensor]:
        loss, g = self.value_and_grad(w, batch)
        return loss.detach(), (g * self.mask if self.mask is not None else g).detach()

    def _grad_u(self, w: Tensor, g: Tensor) -> Tensor:
        return self.nbeta * g + self.localization * (w - self.w_star)

    def _acceptance(self, w, loss, g, w_new, batch) -> tuple[Tensor, Tensor, Tensor]:
        loss2, g2 = self._grads(w_new, batch)
        u = localized_potential(loss, w, self.w_star, self.nbeta, self.localization)
        u2 = localized_potential(loss2, w_new, self.w_star, self.nbeta, self.localization)
        alpha = mala_acceptance(w, w_new, u, self._grad_u(w, g), u2, self._grad_u(w_new, g2), self.step_size, self.mask)
        return alpha, loss2, g2

    def step(self, state: SamplerState, batch: tuple, noise: Tensor, uniform: Tensor | None = None,
             monitor: bool = False) -> tuple[SamplerState, StepInfo]:
        """One SGLD step of every chain on its batch.

        Args:
            state: the current :class:`SamplerState`.
            batch: the chains' batch (stacked per chain, or shared).
            noise: (C, d) standard normal draws ξ.
            uniform: unused by SGLD.
            monitor: also compute the MALA acceptance α of the proposal (one extra gradient).

        Returns:
            (new state, :class:`StepInfo`).
        """
        w = state.w
        loss, g = self._grads(w, batch)
        finite = _finite(loss, g)
        xi = noise if self.noise_scale == 1.0 else noise * self.noise_scale
        w_new = sgld_step(w, g, w_star=self.w_star, step_size=self.step_size, nbeta=self.nbeta,
                          localization=self.localization, noise=xi, mask=self.mask)
        alpha = self._acceptance(w, loss, g, w_new, batch)[0] if monitor else None
        return SamplerState(w_new.detach()), StepInfo(loss, finite, alpha)


@dataclass(frozen=True)
class MALAKernel(SGLDKernel):
    """Metropolis-adjusted Langevin on the full batch: SGLD's proposal, accepted with probability α.

    A chain accepts when ``uniform < α``; non-finite proposals have α = 0. The state carries the
    loss and gradient at the current point, so a step costs one gradient.

    Attributes:
        value_and_grad: ``(W, batch) -> (L (C,), ∇L (C, d))`` of the full-batch loss.
        w_star: the centre w*, (d,).
        step_size: ε, a float or a (C,) tensor.
        nbeta: nβ.
        localization: γ.
        mask: (d,) 0/1 sampled coordinates, or None.
        noise_scale: must be 1 for an exact Metropolis test.
    """

    def init(self, w: Tensor, batch: tuple = ()) -> SamplerState:
        """The state at ``w`` with the full-batch loss and gradient there.

        Args:
            w: (C, d) points.
            batch: the full batch.

        Returns:
            The :class:`SamplerState`.
        """
        loss, g = self._grads(w, batch)
        return SamplerState(w.detach(), loss, g)

    def step(self, state: SamplerState, batch: tuple, noise: Tensor, uniform: Tensor | None = None,
             monitor: bool = True) -> tuple[SamplerState, StepInfo]:
        """One Metropolis-adjusted step of every chain.

        Args:
            state: the current :class:`SamplerState` (with loss and gradient, else recomputed).
            batch: the full batch.
            noise: (C, d) standard normal draws ξ.
            uniform: (C,) U(0, 1) draws; a chain accepts when ``uniform < α``.
            monitor: unused (MALA always computes α).

        Returns:
            (new state, :class:`StepInfo`).

        Raises:
            ValueError: ``uniform`` is missing.
        """
        if uniform is None:
            raise ValueError("MALAKernel.step needs `uniform` (C,) U(0, 1) draws for the Metropolis test")
        w, loss, g = state.w, state.loss, state.grad
        if loss is None or g is None:
            loss, g = self._grads(w, batch)
        finite = _finite(loss, g)
        w_prop = sgld_step(w, g, w_star=self.w_star, step_size=self.step_size, nbeta=self.nbeta,
                           localization=self.localization, noise=noise, mask=self.mask)
        alpha, loss2, g2 = self._acceptance(w, loss, g, w_prop, batch)
        accept = uniform < alpha
        new = SamplerState(torch.where(accept[:, None], w_prop, w).detach(), torch.where(accept, loss2, loss).detach(),
                           torch.where(accept[:, None], g2, g).detach())
        return new, StepInfo(loss, finite, alpha)


@dataclass(frozen=True)
class RMSPropSGLDKernel(SGLDKernel):
    """RMSProp-preconditioned SGLD (Li, Chen, Carlson, Carin 2016; module docstring).

    Attributes:
        value_and_grad: ``(W, batch) -> (L (C,), ∇L (C, d))`` of the batch loss.
        w_star: the centre w*, (d,).
        step_size: ε, a float or a (C,) tensor.
        nbeta: nβ.
        localization: γ.
        mask: (d,) 0/1 sampled coordinates, or None.
        noise_scale: multiplies ξ (1: the sampler; 0: preconditioned gradient descent).
        decay: α of the running mean of squared gradients (0.99 as in Li et al.).
        damping: λ added to √V (keeps G finite where the gradient vanishes).
        adapt: update V at each step (True) or hold it fixed (False: a fixed diagonal
            preconditioner, under which the dropped Γ term is zero and the chain targets p up to the O(ε) step bias).
        max_ratio: κ; G̃ is clipped to [1/κ, κ] (then normalised to mean 1 again), so no coordinate
            moves more than ~κ² times slower than another (module docstring).
    """

    decay: float = 0.99
    damping: float = 1e-8
    adapt: bool = True
    max_ratio: float = 10.0

    def init(self, w: Tensor, batch: tuple = ()) -> SamplerState:
        """The state at ``w`` with V = g⊙g at ``w`` (no zero start: the first G is already scaled).

        Args:
            w: (C, d) points.
            batch: the batch the first gradient is taken on.

        Returns:
            The :class:`SamplerState` with ``precond`` set.
        """
        _, g = self._grads(w, batch)
        return SamplerState(w.detach(), precond=(g * g).detach())

    def _mean_one(self, G: Tensor) -> Tensor:
        if self.mask is not None:
            return G / ((G * self.mask).sum(-1, keepdim=True) / self.mask.sum().clamp_min(1))
        return G / G.mean(-1, keepdim=True)

    def _precondition(self, v: Tensor) -> Tensor:
        G = self._mean_one(1.0 / (self.damping + v.sqrt()))
        return self._mean_one(G.clamp(1.0 / self.max_ratio, self.max_ratio))

    def step(self, state: SamplerState, batch: tuple, noise: Tensor, uniform: Tensor | None = None,
             monitor: bool = False) -> tuple[SamplerState, StepInfo]:
        """One preconditioned step of every chain.

        Args:
            state: the current :class:`SamplerState` (``precond`` V; None starts from g⊙g).
            batch: the chains' batch.
            noise: (C, d) standard normal draws ξ.
            uniform: unused.
            monitor: also compute the Metropolis-adjusted acceptance with G̃ held fixed.

        Returns:
            (new state, :class:`StepInfo`).
        """
        w, v = state.w, state.precond
        loss, g = self._grads(w, batch)
        finite = _finite(loss, g)
        if v is None:
            v = g * g
        elif self.adapt:
            v = self.decay * v + (1 - self.decay) * g * g
        G = state.scale if not self.adapt and state.scale is not None else self._precondition(v)
        eps = torch.as_tensor(self.step_size, dtype=w.dtype, device=w.device)
        eps = eps.reshape(-1, 1) if eps.dim() == 1 else eps
        xi = noise if self.noise_scale == 1.0 else noise * self.noise_scale
        delta = -0.5 * eps * G * self._grad_u(w, g) + (eps * G).sqrt() * xi
        if self.mask is not None:
            delta = delta * self.mask
        w_new = w + delta
        alpha = None
        if monitor:
            loss2, g2 = self._grads(w_new, batch)
            u = localized_potential(loss, w, self.w_star, self.nbeta, self.localization)
            u2 = localized_potential(loss2, w_new, self.w_star, self.nbeta, self.localization)

            def log_q(to, frm, gu):
                diff = to - frm + 0.5 * eps * G * gu
                if self.mask is not None:
                    diff = diff * self.mask
                return -(diff ** 2 / (2 * eps * G)).sum(-1)

            log_alpha = u - u2 + log_q(w, w_new, self._grad_u(w_new, g2)) - log_q(w_new, w, self._grad_u(w, g))
            alpha = torch.exp(torch.clamp(log_alpha, max=0.0))
            alpha = torch.where(torch.isfinite(alpha), alpha, torch.zeros_like(alpha))
        held = None if self.adapt else G.detach()  # V no longer changes: neither does G̃
        return SamplerState(w_new.detach(), precond=v.detach(), scale=held), StepInfo(loss, finite, alpha)
