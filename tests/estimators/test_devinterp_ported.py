"""devinterp's own LLC accuracy tests, ported to our estimator with its defaults.

devinterp checks its SGLD on normal crossings x·w1^p1·w2^p2 (tests/slt/sampler_accuracy_test.py: λ inside
the mean ± 3.5 spreads of 10 chain means) and on reduced-rank regression (tests/slt/rrr_test.py: within
±40% of λ), both at n = 1000. Here the check is |λ̂ − T| ≤ 3·SE with T the exact finite-n target
E_p[nβ(L_n − L_n(w*))] of the localized tempered posterior (docs/theory.md §1): by quadrature of the
empirical loss for a normal crossing, by a full-batch MALA reference (exact stationary law) for RRR, whose
SE is added in quadrature.

Our defaults take 56–350 s per case on the loaded 2-core test machine (results/devinterp_ported.md). The
default suite runs the exact-target and burn-in-floor checks (≈ 3 s); the accuracy check of our defaults on
devinterp's RRR case (5, 3, 5) — every sampler setting at its default, the precision target at 10% relative
SE (3 SE = ±30%, still tighter than devinterp's ±40%) — takes ≈ 85 s there (Adam training, a MALA reference
and our run), too long for the suite, so it runs with SLT_DEVINTERP_PORTED=1. All 14 cases at the full
default targets, with devinterp beside ours, are in experiments/benchmarks/devinterp_ported.py.
"""
import math
import os

import pytest
import torch

from experiments.benchmarks.devinterp_ported import (
    NORMAL_CROSSING_POWERS,
    mse,
    normal_crossing_case,
    normal_crossing_data,
    normal_crossing_target,
    rrr_case,
    rrr_reference,
)
from slt_interp.estimators import ConvergenceTargets, estimate_llc
from slt_interp.estimators._adaptive import burnin_floor

LOOSE = ConvergenceTargets(target_rel_std_err=0.10)  # targets only: step, draws and burn-in stay automatic


def test_normal_crossing_target_is_the_gaussian_closed_form_for_powers_0_1():
    # f = x·w2: L_n(w) − L_n(0) = a(w2 − g*)² − a·g*², a Gaussian posterior in w2 (w1 held by γ alone)
    x, y = normal_crossing_data()
    n = len(x)
    nbeta = n / math.log(n)
    a = float((x ** 2).mean())
    g = float((x * y).mean()) / a
    precision = 2 * nbeta * a + 1.0
    mean = 2 * nbeta * a * g / precision
    exact = nbeta * a * (1 / precision + (mean - g) ** 2) - nbeta * a * g ** 2
    assert normal_crossing_target((0, 1), x, y, 1.0) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("powers", NORMAL_CROSSING_POWERS[1::4])
def test_normal_crossing_targets_lie_below_lambda(powers):
    # finite n and γ = 1 pull T below λ = 1/(2 max p); a larger γ pulls it further
    case = normal_crossing_case(powers)
    x, y = case.data
    assert case.llc == pytest.approx(1 / (2 * max(powers)))
    assert 0 < normal_crossing_target(powers, x, y, 4.0) < case.target < case.llc


@pytest.mark.skipif(not os.environ.get("SLT_DEVINTERP_PORTED"),
                    reason="≈ 85 s on the 2-core machine: set SLT_DEVINTERP_PORTED=1 (results/devinterp_ported.md has all cases)")
def test_reduced_rank_5_3_5_defaults_within_3se_of_mala_reference():
    # devinterp's case 1 (odd): (M, H, N) = (5, 3, 5), noise data, w* trained by Adam, λ(rank 0) = 6.5
    torch.manual_seed(0)
    case = rrr_case(5, 3, 5)
    assert case.llc == 6.5
    # MALA from w*: 2000 burn-in steps ≈ 2.4/(εγ) (8000 gave 6.21 ± 0.11, this 6.17–6.30 in the benchmark's runs)
    target, target_se, acc, eps = rrr_reference(case, num_chains=16, num_burnin=2000, num_draws=300)
    assert acc > 0.9 and 2000 * eps >= 2 and target_se < 0.05 * target
    est = estimate_llc(case.model, mse, case.data, seed=0, targets=LOOSE)
    assert not est.step_size_backoffs, est.step_size_backoffs  # the calibrated step did not diverge
    assert est.converged, est.diagnostics.warnings
    # the gauge directions B·A = (B·g)(g⁻¹·A) are held by γ alone: the burn-in covers their relaxation
    assert est.settings.num_burnin >= burnin_floor(est.settings.step_size, 1.0, LOOSE.max_steps) > 1000
    z = (est.mean - target) / math.sqrt(est.std_err ** 2 + target_se ** 2)
    assert abs(z) <= 3, (est, target, target_se, z)


def test_burnin_floor_is_two_relaxation_times_capped_at_a_quarter_of_the_budget():
    assert burnin_floor(1e-3, 1.0, 20_000) == 2000
    assert burnin_floor(1e-3, 4.0, 20_000) == 500
    assert burnin_floor(1e-5, 1.0, 20_000) == 5000
    assert burnin_floor(1e-3, 0.0, 20_000) == 0
