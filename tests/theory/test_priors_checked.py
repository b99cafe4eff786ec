"""Issue 11: every normaliser, properness verdict and tail index of penalty_from_prior / prior_from_penalty
is cross-checked numerically, the symbolic work reads no clock, and the coupling looks at every pair.

The references are independent of the library: mpmath / scipy quadrature split at the kinks."""
import math
import sys

import mpmath
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from slt_interp.theory import penalty_from_prior, prior_from_penalty
from slt_interp.theory import _normaliser

A = sp.Symbol("a", real=True)
X = sp.Symbol("x", nonnegative=True)
PI0 = sp.Symbol("pi_0", positive=True)


def reference_normaliser(rho, a, support, breaks=()):
    """∫ exp(−ρ) over the support by mpmath's tanh-sinh quadrature, split at ``breaks``."""
    f = sp.lambdify(a, sp.exp(-rho), "mpmath")
    lo = 0 if support == "nonnegative" else -mpmath.inf
    pts = sorted({float(b) for b in breaks if support == "real" or b > 0} | ({0.0} if support == "real" else set()))
    with mpmath.workdps(30):
        return float(mpmath.quad(f, [lo, *pts, mpmath.inf]))


# ------------------------------------------------------------------------------------------------
# item 1: the wrong closed forms of today's sympy, and the point mass that inherited them
# ------------------------------------------------------------------------------------------------
def test_shifted_laplace_normaliser_is_two():
    """Before issue 11: Z = 2·cosh(1) (sympy's ∫ e^{−|a−1|} trusted as is)."""
    r = penalty_from_prior(sp.exp(-sp.Abs(A - 1)) / 2, [A])
    assert r.proper is True and r.normaliser == 2
    assert r.normaliser * sp.exp(-r.dropped_constant) == 1  # the given density was normalised


def test_shifted_l1_on_the_half_line_normaliser():
    """Before issue 11: Z = e for ∫₀^∞ e^{−|x−1|} dx = 2 − 1/e."""
    r = prior_from_penalty(sp.Abs(X - 1), [X])
    assert r.support == "nonnegative" and sp.simplify(r.normaliser - (2 - sp.exp(-1))) == 0
    assert float(r.normaliser) == pytest.approx(reference_normaliser(sp.Abs(X - 1), X, "nonnegative", [1]), rel=1e-12)


def test_spike_and_slab_with_a_shifted_slab_recovers_its_atom():
    """The zero probability is 1/Z with Z = 1 + e^{−λ₀}·Z_slab; with Z_slab = e (before) it was not π₀."""
    slab = sp.exp(-sp.Abs(X - 1)) / (2 - sp.exp(-1))
    r = penalty_from_prior(PI0 * sp.DiracDelta(X) + (1 - PI0) * slab, [X], parameters=[PI0])
    assert sp.simplify(r.zero_probability - PI0) == 0


def test_a_wrong_closed_form_is_rejected_by_quadrature(monkeypatch):
    """Whatever sympy returns is compared with quadrature: a wrong value becomes None with a note."""
    monkeypatch.setattr(_normaliser, "_symbolic_half", lambda rho, x, notes: (sp.E, sp.true))
    _normaliser.analyse_1d.cache_clear()
    try:
        r = prior_from_penalty(sp.Abs(X - 2) + X**2 / 7, [X])
    finally:
        _normaliser.analyse_1d.cache_clear()
    assert r.normaliser is None and any("disagrees with quadrature" in n for n in r.notes)
    assert r.proper is True  # properness is proven from the tail index, not from the integral


def test_separable_normaliser_includes_the_value_at_the_base_point():
    """ρ = 3·log((2 + |a1|)(2 + |a2|)) is separable with ρ(0) = 3·log 4: Z = (∫ (2 + |a|)^{-3})² = 1/16
    (before issue 11 the factor exp(−ρ(0)) was dropped: Z = 4)."""
    a1, a2 = sp.symbols("a1 a2", real=True)
    rho = 3 * sp.log((2 + sp.Abs(a1)) * (2 + sp.Abs(a2)))
    r = prior_from_penalty(rho, [a1, a2])
    assert r.separable is True and r.normaliser == sp.Rational(1, 16)
    f = sp.lambdify((a1, a2), sp.exp(-rho), "math")
    quad = 4 * integrate.dblquad(lambda y, x: f(x, y), 0, math.inf, 0, math.inf)[0]
    assert float(r.normaliser) == pytest.approx(quad, rel=1e-8)


def test_support_real_on_a_nonnegative_symbol_is_refused():
    """Before issue 11 the prior on ℝ was derived with |x| → x, i.e. for e^{−x} on the whole line."""
    with pytest.raises(ValueError, match=r"support='real' but x is declared nonnegative.*real=True.*'nonnegative'"):
        prior_from_penalty(sp.Abs(X), [X], support="real")
    assert prior_from_penalty(sp.Abs(A), [A], support="nonnegative").normaliser == 1


# ------------------------------------------------------------------------------------------------
# item 2: no clock; an operation budget; the tail index proves properness and impropriety
# ------------------------------------------------------------------------------------------------
def test_verdicts_do_not_read_the_clock(monkeypatch):
    """The symbolic work must not depend on the machine's speed: with every clock and timer disabled the
    same verdicts come out (before issue 11 each sympy call ran under a 3 s SIGALRM)."""
    import signal
    import time

    def no_clock(*args, **kwargs):
        raise AssertionError("the symbolic analysis read a clock or set a timer")

    _normaliser.analyse_1d.cache_clear()
    for name in ("time", "monotonic", "perf_counter", "process_time"):
        monkeypatch.setattr(time, name, no_clock)
    for name in ("setitimer", "alarm", "signal"):
        if hasattr(signal, name):
            monkeypatch.setattr(signal, name, no_clock)
    s = sp.Symbol("s", positive=True)
    r = prior_from_penalty(sp.log(1 + sp.Abs(A - 1)), [A], strength=s)
    assert r.proper_condition == (s > 1) and r.tail_index == s
    assert sp.simplify(r.normaliser - 2 / (s - 1)) == 0


def test_operation_budget_is_deterministic_and_restores_tracing(monkeypatch):
    """An exhausted budget gives 'undecided' with a note, the same each time, and leaves no tracer behind."""
    monkeypatch.setattr(_normaliser, "OPERATION_BUDGET", 2000)
    before = sys.gettrace()
    verdicts = []
    for _ in range(2):
        _normaliser.analyse_1d.cache_clear()
        r = prior_from_penalty(sp.Abs(A) ** 3 + sp.log(1 + A**2), [A])
        verdicts.append((r.normaliser, r.proper, r.tail_index))
        assert any("operation budget (2000 calls)" in n for n in r.notes)
    _normaliser.analyse_1d.cache_clear()
    assert verdicts[0] == verdicts[1] == (None, None, None)
    assert sys.gettrace() is before


@pytest.mark.parametrize("rho, proper, tail", [
    (sp.log(1 + sp.Abs(A)), False, 1),                          # Bertrand: κ = 0 < 1
    (sp.log(1 + sp.Abs(A)) / 2, False, sp.Rational(1, 2)),     # τ < 1
    (sp.Rational(3, 2) * sp.log(1 + sp.Abs(A - 3)), True, sp.Rational(3, 2)),
    (sp.log(sp.Abs(A)) * 2 + sp.Abs(A), False, sp.oo),         # |a|^{-2} at 0: index −2 < −1
    (sp.log(sp.Abs(A)) / 2 + sp.Abs(A), True, sp.oo),          # |a|^{-1/2} at 0: integrable
])
def test_properness_from_the_indices_matches_quadrature(rho, proper, tail):
    r = prior_from_penalty(rho, [A])
    assert r.proper is proper and r.tail_index == tail
    if proper:
        assert float(r.normaliser) == pytest.approx(reference_normaliser(rho, A, "real", [0, 3]), rel=1e-9)
    else:
        assert r.normaliser is None


# ------------------------------------------------------------------------------------------------
# item 6 of the issue: coupling over all pairs
# ------------------------------------------------------------------------------------------------
def test_coupling_is_classified_over_all_pairs():
    """a1² + a2² + a3² + a1a2 − a2a3: pair (1, 2) competes, (2, 3) co-activates (before: 'competition')."""
    a1, a2, a3 = sp.symbols("a1 a2 a3", real=True)
    r = prior_from_penalty(a1**2 + a2**2 + a3**2 + a1 * a2 - a2 * a3, [a1, a2, a3])
    assert r.coupling == "mixed" and r.coupling_proven
    assert r.coupling_by_pair == ((0, 1, "competition"), (0, 2, "none"), (1, 2, "co-activation"))
    only_13 = prior_from_penalty(a1**2 + a2**2 + a3**2 - a1 * a3, [a1, a2, a3])  # (1, 2) is flat
    assert only_13.coupling == "co-activation"


# ------------------------------------------------------------------------------------------------
# "done when": random one-variable penalties against quadrature
# ------------------------------------------------------------------------------------------------
SHIFTS = st.sampled_from([sp.Integer(0), sp.Rational(1, 2), sp.Integer(1), sp.Rational(-3, 2), sp.Integer(2)])
TERMS = st.one_of(
    st.tuples(st.just("pow"), SHIFTS, st.sampled_from([sp.Rational(1, 2), sp.Integer(1), sp.Integer(2), sp.Integer(3)])),
    st.tuples(st.just("log"), SHIFTS, st.sampled_from([sp.Rational(1, 2), sp.Integer(1), sp.Integer(2), sp.Integer(3)])),
)


@settings(max_examples=6)
@given(terms=st.lists(TERMS, min_size=1, max_size=2), nonnegative=st.booleans())
def test_random_penalties_normaliser_against_quadrature(terms, nonnegative):
    """Σ |a − c|^p and k·log(1 + |a − c|) with random shifts: a reported normaliser equals quadrature, a
    "proper" prior integrates to a finite value, an "improper" one has tail index ≤ 1."""
    a = X if nonnegative else A
    support = "nonnegative" if nonnegative else "real"
    rho = sp.Add(*[sp.Abs(a - c) ** k if kind == "pow" else k * sp.log(1 + sp.Abs(a - c)) for kind, c, k in terms])
    r = prior_from_penalty(rho, [a])
    breaks = [c for _, c, _ in terms]
    integrable = any(kind == "pow" for kind, _, _ in terms) or bool(sum(k for _, _, k in terms) > 1)
    if r.proper is not None:
        assert r.proper is integrable, (rho, r.notes)
    if r.normaliser is not None:
        assert float(r.normaliser) == pytest.approx(reference_normaliser(rho, a, support, breaks), rel=1e-8), rho
    if r.proper is False:
        assert r.tail_index is not None and r.tail_index <= 1
