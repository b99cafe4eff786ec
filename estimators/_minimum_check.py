"""Is w* a local minimum? The gradient test the estimators run before sampling, and the check after.

SGLD's λ̂ = nβ·(E_w[L] − L(w*)) assumes that w* is a local minimum (docs/theory.md §1). With a
gradient g at w*, the localized tempered posterior along u = g/‖g‖ is, to second order,
exp(−nβ·(‖g‖·t + ½h·t²) − (γ/2)·t²) with h = uᵀ∇²L·u, whose mean t̄ = −nβ‖g‖/a (a = nβh + γ) moves
the chains downhill and lowers λ̂ by

    shift = (nβ‖g‖)²/a · (1 − nβh/(2a))

(exact for a quadratic loss). When the shift exceeds max(0.5, 0.025·d) — 5% of the largest possible
λ = d/2 — the estimate is dominated by the slope, not by the geometry of a minimum, and the user
is told; a λ̂ significantly below 0 after sampling says the same. The behavioral loss has its
minimum at w* at every point of training, so :func:`estimate_behavioral_llc` is the fix to point to.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .llc_bounds_result import NotAMinimumError, NotAMinimumWarning

ON_NONMINIMUM = ("warn", "raise", "ignore")

FIX = ("train w* further to a local minimum, or estimate the behavioral LLC (estimate_behavioral_llc), whose loss "
       "has its minimum at w* at every point of training; on_nonminimum='ignore' silences this")


@dataclass(frozen=True)
class GradientAtCentre:
    """The slope test at w*: ‖∇L(w*)‖ on the sampled coordinates, the curvature along it, and the
    predicted downward shift of λ̂ (module docstring)."""

    grad_norm: float
    curvature: float
    shift: float
    threshold: float

    @property
    def is_minimum(self) -> bool:
        """False when the predicted shift exceeds the tolerance; True when it does not or cannot be
        evaluated (``shift`` nan: a non-finite Hessian-vector product along the slope)."""
        return not self.shift > self.threshold


def _full_loss(problem, w: Tensor) -> Tensor:
    return problem.full_loss(w[None])[0] if problem.vectorised else problem.full_loss(w)


def gradient_at_centre(problem, nbeta: float, localization: float) -> GradientAtCentre:
    """Evaluate the slope test (one full-data gradient and one Hessian-vector product).

    Raises:
        ValueError: the loss does not depend on the parameters through autograd (detached).
    """
    mask = problem.mask
    w = problem.w0.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        L = _full_loss(problem, w)
        if not L.requires_grad:
            raise ValueError(
                "loss_fn's value does not depend on the parameters through autograd (it is detached: .detach(), "
                ".item(), torch.no_grad() or numpy inside loss_fn or the model), so SGLD has no gradient to follow; "
                "compute the loss with differentiable torch operations on the model's output")
        (g,) = torch.autograd.grad(L, w, create_graph=True, allow_unused=True)
        if g is None:
            raise ValueError("loss_fn's value does not depend on the sampled parameters (autograd finds no path from "
                             "them to the loss); check that loss_fn uses the model's output")
        if mask is not None:
            g = g * mask
        gn = float(g.detach().double().norm())
        if not math.isfinite(gn):
            raise ValueError(
                f"the gradient of the loss at w* is not finite (‖∇L(w*)‖ = {gn}) although the loss there is: an "
                "operation in the model or loss_fn has an infinite or undefined derivative at these parameters (e.g. "
                "sqrt or a norm at 0, log at 0, abs/relu kinks are fine); make the loss differentiable at w* (add a "
                "small epsilon inside sqrt/log) before sampling")
        if gn == 0.0:
            return GradientAtCentre(gn, math.nan, 0.0, _threshold(problem))
        u = (g / g.detach().norm()).detach()

        def finite_difference() -> Tensor:  # no (finite) double backward: a difference of gradients
            delta = 1e-4 * max(1.0, float(problem.w0.detach().double().abs().max()))
            w2 = (problem.w0.detach() + delta * u).requires_grad_(True)
            (g2,) = torch.autograd.grad(_full_loss(problem, w2), w2)
            return (g2 - g.detach()) / delta

        try:
            (hv,) = torch.autograd.grad((g * u).sum(), w)
            if not bool(torch.isfinite(hv).all()):
                hv = finite_difference()
        except RuntimeError:
            hv = finite_difference()
        if mask is not None:
            hv = hv * mask
    h = float((u.double() * hv.detach().double()).sum())
    if not math.isfinite(h):
        # the curvature along the slope cannot be evaluated: the test cannot tell (is_minimum stays True,
        # shift nan), and the after-sampling check (λ̂ < 0) still applies; a NaN must not read as a saddle
        return GradientAtCentre(gn, math.nan, math.nan, _threshold(problem))
    a = nbeta * h + localization
    shift = (nbeta * gn) ** 2 / a * (1 - nbeta * h / (2 * a)) if a > 0 else math.inf
    return GradientAtCentre(gn, h, shift, _threshold(problem))


def _threshold(problem) -> float:
    return max(0.5, 0.025 * problem.num_sampled)


def slope_message(test: GradientAtCentre) -> str:
    curv = (f"the curvature along it is {test.curvature:.3g}" if test.curvature > 0
            else f"the curvature along it is {test.curvature:.3g} ≤ 0 (a saddle or a slope)")
    return (f"w* is not a local minimum of the loss: the gradient at w* (‖∇L‖ = {test.grad_norm:.3g}) is large relative "
            f"to the curvature ({curv}), so the chains slide downhill and λ̂ is biased down by about "
            f"{test.shift:.3g} (above the tolerance {test.threshold:.3g}; λ̂ may even turn negative). Fix: " + FIX)


def below_baseline_message(mean: float, std_err: float) -> str:
    return (f"the draws' mean loss lies below L(w*) (λ̂ = {mean:.4g} ± {std_err:.2g} < 0): w* is not a local minimum "
            "of the loss, and λ̂ is not a learning coefficient. Fix: " + FIX)


def report(message: str, on_nonminimum: str) -> None:
    """Warn (NotAMinimumWarning), raise (NotAMinimumError) or do nothing, as ``on_nonminimum`` says."""
    if on_nonminimum == "raise":
        raise NotAMinimumError(message)
    if on_nonminimum == "warn":
        warnings.warn(message, NotAMinimumWarning, stacklevel=5)


def check_on_nonminimum(value: str) -> str:
    if value not in ON_NONMINIMUM:
        raise ValueError(f"on_nonminimum must be one of {ON_NONMINIMUM}, got {value!r}")
    return value
