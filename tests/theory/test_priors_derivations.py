"""penalty_from_prior / prior_from_penalty against hand derivations (sympy simplification to zero) and
quadrature (scipy), plus properness, separability, coupling signs and the error paths."""
import functools
import math

import pytest
import sympy as sp
from scipy import integrate

from slt_interp.theory import PRIOR_CATALOGUE, l0, penalty_from_prior, prior_from_penalty
from slt_interp.theory.prior_catalogue import ALPHA, LAM, NU, P, PI0, S

A = sp.Symbol("a", real=True)
X = sp.Symbol("a", nonnegative=True)
VALUES = {LAM: 1.3, S: 0.7, NU: 3.0, P: 1.5, ALPHA: 2.5, PI0: 0.8}


@functools.lru_cache(maxsize=None)
def entry(name):
    return PRIOR_CATALOGUE[name]()


def is_zero(expr):
    return sp.simplify(sp.expand_log(expr, force=True)) == 0


def quad_normaliser(r, values):
    """∫ exp(−ρ_slab) over the support by scipy quadrature."""
    rho = sp.lambdify(r.variables, r.slab_penalty.subs(values), "math")
    f = lambda a: math.exp(-rho(a))  # noqa: E731
    if r.support == "nonnegative":
        return integrate.quad(f, 0, math.inf, limit=200)[0]
    return integrate.quad(f, -math.inf, 0, limit=200)[0] + integrate.quad(f, 0, math.inf, limit=200)[0]


# hand derivations: (name, penalty, dropped constant or None, normaliser of exp(−ρ_slab))
HAND = [
    ("laplace", LAM * sp.Abs(A), sp.log(2 / LAM), 2 / LAM),
    ("exponential", LAM * X, -sp.log(LAM), 1 / LAM),
    ("gaussian", A**2 / (2 * S**2), sp.log(sp.sqrt(2 * sp.pi) * S), sp.sqrt(2 * sp.pi) * S),
    ("half_normal", X**2 / (2 * S**2), sp.log(sp.sqrt(sp.pi / 2) * S), sp.sqrt(2 * sp.pi) * S / 2),
    ("cauchy", sp.log(1 + A**2 / S**2), sp.log(sp.pi * S), sp.pi * S),
    ("student_t", (NU + 1) / 2 * sp.log(1 + A**2 / (NU * S**2)), None,
     sp.sqrt(NU * sp.pi) * S * sp.gamma(NU / 2) / sp.gamma((NU + 1) / 2)),
    ("lomax", (ALPHA + 1) * sp.log(1 + X / S), sp.log(S / ALPHA), S / ALPHA),
    ("generalized_gaussian", sp.Abs(A / S) ** P, sp.Integer(0), 2 * S * sp.gamma(1 + 1 / P)),
]


@pytest.mark.parametrize("name, penalty, dropped, normaliser", HAND, ids=[h[0] for h in HAND])
def test_penalty_and_normaliser_match_hand_derivation(name, penalty, dropped, normaliser):
    r = entry(name)
    assert is_zero(r.penalty - penalty), (r.penalty, penalty)
    if dropped is not None:
        assert is_zero(r.dropped_constant - dropped), (r.dropped_constant, dropped)
    assert r.proper is True and r.proper_condition == sp.true
    assert is_zero(sp.gammasimp(r.normaliser - normaliser)), (r.normaliser, normaliser)
    numeric = quad_normaliser(r, VALUES)
    assert math.isclose(float(r.normaliser.subs(VALUES)), numeric, rel_tol=1e-7)


def test_density_times_normaliser_integrates_the_given_density():
    # −log p = ρ + c  ⇒  p = exp(−ρ − c); the given Laplace density is normalised, so Z·exp(−c) = 1
    r = entry("laplace")
    assert is_zero(r.normaliser * sp.exp(-r.dropped_constant) - 1)


def test_log_penalty_prior_is_proper_iff_strength_exceeds_one():
    r = entry("log_penalty")
    assert is_zero(r.density - (1 + sp.Abs(A)) ** (-S))
    assert r.proper is None and r.proper_condition == (S > 1)
    assert is_zero(r.normaliser - 2 / (S - 1))
    assert math.isclose(float(r.normaliser.subs(S, 2.5)), quad_normaliser(r, {S: 2.5}), rel_tol=1e-7)
    exactly_one = prior_from_penalty(sp.log(1 + sp.Abs(A)), [A])  # strength 1: ∫ (1 + |a|)^(−1) = ∞
    assert exactly_one.proper is False and exactly_one.normaliser is None
    below = prior_from_penalty(sp.log(1 + sp.Abs(A)) / 2, [A])
    assert below.proper is False


def test_spike_and_slab_gives_l1_plus_l0():
    r = entry("spike_and_slab")
    assert r.has_point_mass and r.support == "nonnegative"
    assert is_zero(r.l0_weight - sp.log(PI0 / ((1 - PI0) * LAM)))
    assert is_zero(r.slab_penalty - LAM * X)
    assert is_zero(r.zero_probability - PI0)  # the atom's probability is recovered
    assert r.penalty.subs(X, 0) == 0
    # and back: an L1 + L0 penalty gives a point mass of the same weight
    lam0 = sp.Symbol("lambda_0", positive=True)
    back = prior_from_penalty(LAM * X + lam0 * l0(X), [X], parameters=[LAM, lam0])
    assert is_zero(back.l0_weight - lam0)
    assert is_zero(back.zero_probability - 1 / (1 + sp.exp(-lam0) / LAM))


def test_product_and_sum_of_logs_are_different_priors():
    a1, a2 = sp.symbols("a1 a2", real=True)
    product = prior_from_penalty((1 + sp.Abs(a1)) * (1 + sp.Abs(a2)), [a1, a2])
    logs = prior_from_penalty(sp.log(1 + sp.Abs(a1)) + sp.log(1 + sp.Abs(a2)), [a1, a2])
    assert logs.separable is True and logs.coupling == "none"
    assert product.separable is False and product.coupling == "competition" and product.coupling_proven
    assert is_zero(product.coupling_derivative - 1)
    assert logs.proper is False  # ∫ (1 + |a|)^(−1) da diverges on each axis


@pytest.mark.parametrize("name, separable, coupling", [
    ("group_lasso", False, "co-activation"),
    ("exclusive_lasso", False, "competition"),
    ("half_norm", False, "competition"),
    ("product_penalty", False, "competition"),
    ("k_sparse", False, "competition"),
    ("laplace", True, "none"),
])
def test_separability_and_coupling_sign(name, separable, coupling):
    r = entry(name)
    assert r.separable is separable
    assert r.coupling == coupling


def test_group_lasso_coupling_matches_hand_derivative():
    r = entry("group_lasso")
    a1, a2, a3 = r.variables
    assert is_zero(r.coupling_derivative + a1 * a2 / (a1**2 + a2**2 + a3**2) ** sp.Rational(3, 2))


def test_latex_output_contains_penalty_and_condition():
    text = entry("log_penalty").latex()
    assert r"\log" in text and "s > 1" in text and r"\frac{2}{s - 1}" in text


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_unbound_free_symbol_is_an_error():
    with pytest.raises(ValueError, match="unbound free symbol.*s"):
        penalty_from_prior(sp.exp(-S * sp.Abs(A)), [A])


def test_negative_density_is_an_error():
    with pytest.raises(ValueError, match="negative"):
        penalty_from_prior(A * sp.exp(-A**2), [A])


def test_point_mass_must_sit_at_zero_in_one_variable():
    with pytest.raises(ValueError, match="point mass at zero"):
        penalty_from_prior(sp.DiracDelta(X - 1) / 2 + sp.exp(-X) / 2, [X])
    a1, a2 = sp.symbols("a1 a2", nonnegative=True)
    with pytest.raises(ValueError, match="one-variable"):
        penalty_from_prior(sp.DiracDelta(a1) + sp.exp(-a1 - a2), [a1, a2])


def test_flat_penalty_and_bad_variables_are_errors():
    with pytest.raises(ValueError, match="does not depend on the variables"):
        prior_from_penalty(sp.Integer(3) + 0 * A, [A])
    with pytest.raises(ValueError, match="sympy Symbols"):
        prior_from_penalty(A, ["a"])
    with pytest.raises(ValueError, match="support must be one of"):
        prior_from_penalty(sp.Abs(A), [A], support="positive")


def test_undecidable_normaliser_is_reported_not_guessed():
    # ρ/log|a| oscillates between 1 and 2: no tail index, no closed form, so nothing is claimed
    r = prior_from_penalty((1 + sp.sin(A) ** 2) * sp.log(1 + sp.Abs(A)), [A])
    assert r.proper is None and r.proper_condition is None and r.normaliser is None and r.tail_index is None
    assert any("undecided" in note for note in r.notes)


def test_tail_index_proves_properness_without_a_closed_form():
    # no closed form for ∫ exp(−|a|³ − cos²a·log(1 + a²)), but τ = ∞ and ρ is finite: proper
    r = prior_from_penalty(sp.Abs(A) ** 3 + sp.cos(A) ** 2 * sp.log(1 + A**2), [A])
    assert r.proper is True and r.proper_condition == sp.true and r.tail_index == sp.oo
    assert r.normaliser is None and any("closed form" in note for note in r.notes)
    # Bertrand's test at τ = 1: 1/((1 + a)(1 + log(1 + a))²) is integrable, 1/(1 + a) is not
    bertrand = prior_from_penalty(sp.log(1 + X) + 2 * sp.log(1 + sp.log(1 + X)), [X])
    assert bertrand.proper is True and bertrand.tail_index == 1


def test_non_integrable_density_is_reported_improper():
    r = penalty_from_prior(1 / (1 + sp.Abs(A)), [A])  # the log(1 + |a|) penalty at strength exactly 1
    assert r.proper is False and r.proper_condition == sp.false and r.normaliser is None
    assert is_zero(r.penalty - sp.log(1 + sp.Abs(A)))
