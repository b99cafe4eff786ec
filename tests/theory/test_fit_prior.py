"""fit_prior recovers the generating family on seeded synthetic samples, with the point mass at zero."""
import warnings

import numpy as np
import pytest
import sympy as sp
import torch
from scipy import stats

from slt_interp.theory import fit_prior
from slt_interp.theory.fit_prior import FAMILIES, _A, _X, _family_prior


def test_recovers_cauchy_among_non_nested_families():
    x = np.random.default_rng(0).standard_cauchy(20000) * 0.5
    fit = fit_prior(x, families=("laplace", "gaussian", "cauchy"), seed=0)
    assert fit.best.family == "cauchy"
    assert [f.family for f in fit.ranking][1:] == ["laplace", "gaussian"]
    # Cauchy tails make the per-sample gaps heavy-tailed, so their SE is loose: require only a positive gap
    assert all(f.gap > 0 for f in fit.ranking[1:])
    assert fit.best.values["s"] == pytest.approx(0.5, rel=0.05)  # MLE scale, ~1 % SE at this n
    assert sp.simplify(fit.penalty - sp.log(1 + sp.Symbol("a", real=True) ** 2 / fit.best.values["s"] ** 2)) == 0


def test_recovers_heavy_tail_and_point_mass():
    rng = np.random.default_rng(1)
    n, p_active, alpha, s = 40000, 0.3, 5.0, 4.0
    slab = s * (rng.random(n) ** (-1 / alpha) - 1)  # Lomax by inversion
    x = np.where(rng.random(n) < p_active, slab, 0.0)
    fit = fit_prior(x, families=("exponential", "half_normal", "lomax"), seed=0)
    assert fit.best.family == "lomax"
    for other in fit.ranking[1:]:  # α > 4: the log-likelihood gaps have finite variance
        assert other.gap > 3 * other.gap_std_err
    se = np.sqrt(p_active * (1 - p_active) / fit.num_train_samples)
    assert abs(fit.zero_fraction - (1 - p_active)) < 4 * se
    assert fit.best.values["alpha"] == pytest.approx(alpha, rel=0.1)
    prior = fit.prior
    assert prior.has_point_mass
    fn = fit.to_torch()
    a = torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64)
    lam0 = float(prior.l0_weight.subs({q: fit.best.values[str(q)] for q in prior.parameters}))
    expected = lam0 + (fit.best.values["alpha"] + 1) * np.log1p(2.0 / fit.best.values["s"])
    assert float(fn(a)) == pytest.approx(expected, rel=1e-10)


def test_recovers_exponential_over_half_normal():
    x = np.random.default_rng(2).exponential(2.0, size=20000)
    fit = fit_prior(x, families=("exponential", "half_normal"), seed=3)
    assert fit.best.family == "exponential"
    assert fit.ranking[1].gap > 5 * fit.ranking[1].gap_std_err
    assert fit.best.values["s"] == pytest.approx(2.0, rel=0.05)


def test_fit_prior_errors():
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_prior(np.array([1.0, np.nan] * 50))
    with pytest.raises(ValueError, match="unknown famil"):
        fit_prior(np.ones(100), families=("laplace", "weibull"))
    with pytest.raises(ValueError, match="at least 20 non-zero"):
        fit_prior(np.r_[np.zeros(100), np.ones(5)])
    with pytest.raises(ValueError, match="test_fraction"):
        fit_prior(np.ones(100), test_fraction=1.5)
    # before issue 11: "no family could be fitted: []" and "unknown famil(ies) ['l', 'a', ...]"
    with pytest.raises(ValueError, match=r"families is empty: pass at least one of .*or families=None"):
        fit_prior(np.ones(100), families=[])
    with pytest.raises(ValueError, match=r"sequence of names.*families=\('laplace',\)"):
        fit_prior(np.ones(100), families="laplace")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_densities_are_scipys_and_the_point_mass_keeps_its_weight(name):
    """The L0 weight of the fitted penalty is log(π₀ / ((1 − π₀)·f(0⁺)·Z)) only with f normalised: before
    issue 11 four families' densities were unnormalised, so P(a = 0) of the derived prior was not π₀."""
    fam = FAMILIES[name]
    var = _A if fam.support == "real" else _X
    values = {"s": 0.8, "nu": 3.5, "p": 1.4, "alpha": 2.2, "pi_0": 0.3}
    subs = {q: values[str(q)] for q in fam.parameters}
    shape = [values[str(q)] for q in fam.parameters[:-1]]
    for t in (0.3, 1.7):
        point = t if fam.support == "nonnegative" else -t
        ours = float(sp.log(fam.density.subs(subs).subs(var, point)))
        assert ours == pytest.approx(float(fam.dist.logpdf(point, *shape, loc=0, scale=subs[fam.parameters[-1]])),
                                     rel=1e-12)
    prior = _family_prior(name, True)
    assert prior.zero_probability is not None
    assert float(prior.zero_probability.subs({q: values[str(q)] for q in prior.parameters})) == pytest.approx(0.3)


# ------------------------------------------------------------------------------------------------
# issue 15: the parsimony rule, the half-Cauchy family, warnings on degenerate fits
# ------------------------------------------------------------------------------------------------
def test_parsimony_chooses_the_nested_family_within_one_std_err():
    """Exponential data: the half generalised Gaussian (p̂ ≈ 1) is most likely on held-out data by a gap
    below its standard error, so its special case p = 1 is chosen (before issue 15: the two-parameter one)."""
    x = np.random.default_rng(2).exponential(2.0, 5000)
    fit = fit_prior(x, families=("exponential", "half_generalized_gaussian"), seed=2)
    assert fit.most_likely.family == "half_generalized_gaussian"
    runner = fit.ranking[1]
    assert runner.family == "exponential" and 0 < runner.gap <= runner.gap_std_err
    assert fit.best.family == "exponential" and "parsimony" in fit.choice_reason
    assert sp.simplify(fit.penalty - _X / fit.best.values["s"]) == 0


def test_parsimony_keeps_the_richer_family_when_it_is_clearly_better():
    x = stats.halfgennorm.rvs(0.5, scale=1.0, size=5000, random_state=np.random.default_rng(3))
    fit = fit_prior(x, families=("exponential", "half_generalized_gaussian"), seed=0)
    assert fit.ranking[1].gap > 3 * fit.ranking[1].gap_std_err
    assert fit.best.family == "half_generalized_gaussian" and fit.best.values["p"] == pytest.approx(0.5, rel=0.1)


def test_recovers_half_cauchy_with_a_point_mass():
    rng = np.random.default_rng(4)
    n, scale = 40000, 0.7
    x = np.where(rng.random(n) < 0.5, np.abs(rng.standard_cauchy(n)) * scale, 0.0)
    fit = fit_prior(x, families=("exponential", "half_normal", "lomax", "half_cauchy"), seed=0)
    assert fit.best.family == "half_cauchy"
    lomax = next(f for f in fit.ranking if f.family == "lomax")  # the closest rival: the same tail index 2
    assert lomax.gap > 3 * lomax.gap_std_err
    assert fit.best.values["s"] == pytest.approx(scale, rel=0.05)
    assert fit.prior.has_point_mass
    a = torch.tensor([[0.0, 1.3]], dtype=torch.float64)
    s, pi0 = fit.best.values["s"], fit.best.values["pi_0"]
    lam0 = np.log(pi0 / ((1 - pi0) * 2 / (np.pi * s)))  # −log of the slab density at 0⁺, relative to the atom
    assert float(fit.to_torch()(a)) == pytest.approx(lam0 + np.log1p(1.3**2 / s**2), rel=1e-10)


def test_constant_samples_warn_with_cause_and_fix():
    with pytest.warns(UserWarning, match=r"all non-zero training samples equal 1\.5.*fit only latents whose values vary"):
        fit = fit_prior(np.r_[np.zeros(50), np.full(200, 1.5)], seed=0)
    assert len(fit.warnings) == 1 and "warning: all non-zero" in str(fit)


def test_lomax_running_to_infinite_alpha_warns_and_true_lomax_does_not():
    x = np.random.default_rng(1).exponential(2.0, 5000)  # Lomax MLE: α → ∞ (scipy stops at ~5e11)
    with pytest.warns(UserWarning, match=r"Lomax fit degenerates: α = .* → ∞.*use the 'exponential' family"):
        fit = fit_prior(x, families=("exponential", "lomax"), seed=1)
    assert fit.best.family == "exponential"
    lomax = np.random.default_rng(5).pareto(3.0, size=5000)  # numpy's "pareto" is the Lomax, s = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_prior(lomax, families=("exponential", "lomax"), seed=0)
    assert fit.best.family == "lomax" and fit.warnings == ()
