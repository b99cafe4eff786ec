"""The LM study's measurements (issue 13): SLQ rank at τ(n) against the dense spectrum, and the SGLD step
calibrated once per checkpoint with its fallback when a chain diverges at it."""
from __future__ import annotations

import math

import pytest
import torch

from experiments.lm import measure
from experiments.lm.problem import next_token_loss, num_tokens, token_nbeta
from slt_interp.estimators import HessianOperator, threshold_for_sample_size, training_loss


def test_slq_rank_at_tau_n_matches_the_dense_count(trained_tiny):
    """SLQ (8 probes × 40 Lanczos steps, d = 184) against the exact count of |h| > τ(n) of the dense Hessian."""
    model, x = trained_tiny
    gamma = 100.0
    out = measure.curvature(model, x, num_probes=8, num_steps=40, batch_size=64, localization=gamma)
    loss, params = training_loss(model, next_token_loss, x, x, batch_size=64)
    h = torch.linalg.eigvalsh(HessianOperator(loss, params).to_dense())
    tau = float(threshold_for_sample_size(num_tokens(x), localization=gamma, nbeta=token_nbeta(x)))
    assert out["tau_n"] == pytest.approx(tau)
    exact = int((h.abs() > tau).sum())
    got, se = out["hessian"]["rank_at_tau_n"], out["hessian"]["rank_se"]
    assert 0 < exact < h.numel()  # the threshold splits the spectrum: the count is a real test
    print(f"d = {h.numel()}, τ(n) = {tau:.3g}: exact {exact}, SLQ {got:.1f} ± {se:.1f}")
    assert abs(got - exact) <= 3 * se + 1, (got, se, exact)
    assert out["dim"] == h.numel() and out["hessian"]["lower"] == pytest.approx(got / 2)


def test_llc_at_a_diverging_step_recalibrates(trained_tiny):
    """A step far above the stability limit (ε·γ > 2) diverges; the measurement reruns with the estimator's own
    calibration (and says so) instead of failing the study."""
    model, x = trained_tiny
    cal = measure.calibrate(model, x, batch_size=32, localization=100.0, pilot_steps=40)
    assert 0 < cal["step_size"] <= cal["acceptance_step"] and cal["seconds"] > 0
    ok = measure.llc(model, x, batch_size=32, localization=100.0, max_steps=200, step_size=cal["step_size"])
    assert not ok["recalibrated"] and ok["step_size"] == pytest.approx(cal["step_size"])
    # ε·γ/2 = 50: the localization alone multiplies w − w* by 1 − εγ/2 = −49 a step
    bad = measure.llc(model, x, batch_size=32, localization=100.0, max_steps=200, step_size=1.0)
    assert bad["recalibrated"] and math.isfinite(bad["mean"]) and bad["step_size"] < 0.01
