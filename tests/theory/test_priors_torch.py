"""Every catalogue penalty's ``.to_torch()`` against sympy's own evaluation in float64, gradients
against sympy's derivative; the lambdify pitfalls of docs/theory.md §4; the prox against brute force."""
import functools

import numpy as np
import pytest
import sympy as sp
import torch
from scipy.optimize import minimize, minimize_scalar

from slt_interp.theory import PRIOR_CATALOGUE
from slt_interp.theory._lambdify import torch_function
from slt_interp.theory.prior_catalogue import ALPHA, LAM, NU, P, PI0, S

NUMBERS = {"lambda": 1.3, "s": 0.7, "nu": 3.0, "p": 1.5, "alpha": 2.5, "pi_0": 0.8}
SYMBOLS = {LAM: 1.3, S: 0.7, NU: 3.0, P: 1.5, ALPHA: 2.5, PI0: 0.8}


@functools.lru_cache(maxsize=None)
def entry(name):
    return PRIOR_CATALOGUE[name]()


def bound(r):
    return {str(p): NUMBERS[str(p)] for p in r.parameters}


def points(r, n=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 3.0, size=(n, r.dim))
    if r.support == "real":
        x *= rng.choice([-1.0, 1.0], size=x.shape)
    return x


SMOOTH = [n for n in PRIOR_CATALOGUE if n != "k_sparse"]


@pytest.mark.parametrize("name", SMOOTH)
def test_to_torch_value_and_gradient_match_sympy(name, device):
    r = entry(name)
    expr = r.penalty.subs(SYMBOLS)
    value = sp.lambdify(r.variables, expr, "mpmath")
    grads = [sp.lambdify(r.variables, sp.diff(expr, v), "mpmath") for v in r.variables]
    fn = r.to_torch(**bound(r))
    x = torch.tensor(points(r), dtype=torch.float64, device=device, requires_grad=True)
    out = fn(x)  # one group per row
    (g,) = torch.autograd.grad(out.sum(), x)
    out = out.detach()
    assert out.device == x.device and out.dtype == torch.float64
    for row in range(x.shape[0]):
        pt = [float(c) for c in x[row].detach().cpu()]
        assert float(out[row]) == pytest.approx(float(value(*pt)), rel=1e-12, abs=1e-12)
        expected = [float(gf(*pt)) for gf in grads]
        assert g[row].cpu().tolist() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_one_variable_penalty_applies_to_every_latent_and_point_mass_is_nan_free(device):
    r = entry("spike_and_slab")
    fn = r.to_torch(**bound(r))
    x = torch.tensor([[0.0, 0.5, 0.0, 2.0]], dtype=torch.float64, device=device, requires_grad=True)
    out = fn(x)
    lam0 = float(r.l0_weight.subs(SYMBOLS))
    (g,) = torch.autograd.grad(out.sum(), x)
    assert float(out.detach()) == pytest.approx(2 * lam0 + 1.3 * 2.5, rel=1e-12)
    assert torch.isfinite(g).all()
    assert g.cpu().tolist() == [[0.0, 1.3, 0.0, 1.3]]


def test_k_sparse_penalty_is_zero_on_k_sparse_groups_and_infinite_elsewhere(device):
    fn = entry("k_sparse").to_torch()
    x = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 2.0], [0.0, 0.0, 0.0]], device=device)
    assert fn(x).cpu().tolist() == [0.0, float("inf"), 0.0]


def test_translator_handles_the_lambdify_pitfalls(device):
    a, b = sp.symbols("a b", real=True)
    cases = [
        sp.Max(a, b) + sp.Min(a, 2 * b),
        sp.Heaviside(a) * b,
        sp.Piecewise((sp.sqrt(a), a > 0), (a**2, True)),
        sp.Piecewise((sp.log(a), a > 0), (0, True)) + sp.erf(b) + sp.loggamma(1 + b**2),
    ]
    x = torch.tensor([[-1.0, 0.3], [0.0, 0.7], [2.0, -0.4], [0.5, 1.5]], dtype=torch.float64, device=device,
                     requires_grad=True)
    for expr in cases:
        f = torch_function(expr, (a, b), reduce=False)
        out = f(x)
        (g,) = torch.autograd.grad(out.sum(), x)
        out = out.detach()
        assert torch.isfinite(g).all(), expr
        value = sp.lambdify((a, b), expr, [{"Heaviside": lambda z, h=0.5: 1.0 if z > 0 else (h if z == 0 else 0.0)}, "mpmath"])
        for row, (p, q) in enumerate(x.detach().cpu().tolist()):
            assert float(out[row]) == pytest.approx(float(value(p, q)), rel=1e-12, abs=1e-12), (expr, p, q)
    with pytest.raises(NotImplementedError, match="gamma"):
        torch_function(sp.gamma(a), (a,))(x[:, :1])


def test_to_torch_parameter_errors():
    r = entry("log_penalty")
    with pytest.raises(ValueError, match=r"unbound parameter.*'s'.*to_torch\(s=1.0\)"):
        r.to_torch()
    with pytest.raises(ValueError, match="unknown parameter"):
        r.to_torch(scale=1.0)
    with pytest.raises(ValueError, match="multiple of 3"):
        entry("group_lasso").to_torch()(torch.ones(4))


@pytest.mark.parametrize("value, match", [
    (-2.0, r"s = -2.0, but s is declared positive.*pass s > 0"),
    (0.0, r"declared positive.*pass s > 0"),
    (float("nan"), r"s = nan is not finite; pass a finite number"),
    (float("inf"), "not finite"),
    ("2", "must be a real number"),
])
def test_to_torch_refuses_invalid_parameter_values(value, match):
    """Before issue 11, s = −2 and s = nan were accepted and gave a penalty rewarding activity / NaN."""
    with pytest.raises(ValueError, match=match):
        entry("log_penalty").to_torch(s=value)


def test_spike_and_slab_refuses_a_point_mass_weight_above_one():
    """π₀ = 1.5 makes the slab weight 1 − π₀ negative: the L0 weight is the log of a negative number."""
    r = entry("spike_and_slab")
    v = torch.tensor([0.5, 2.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"pi_0 = 1.5.*not real.*pi_0 must lie in \(0, 1\)"):
        r.prox(v, step=0.5, pi_0=1.5, **{"lambda": 1.0})
    with pytest.raises(ValueError, match=r"pi_0 = 1.5.*not real"):
        r.to_torch(pi_0=1.5, **{"lambda": 1.0})
    with pytest.raises(ValueError, match="declared positive"):
        r.prox(v, step=0.5, pi_0=-0.5, **{"lambda": 1.0})
    assert torch.isfinite(r.prox(v, step=0.5, pi_0=0.5, **{"lambda": 1.0})).all()


@pytest.mark.parametrize("name, length", [("group_lasso", 4), ("exclusive_lasso", 5), ("k_sparse", 2)])
def test_group_prox_refuses_a_length_that_is_not_a_multiple_of_the_group(name, length):
    """Before issue 11 the group lasso's prox failed deep in a reshape (RuntimeError)."""
    with pytest.raises(ValueError, match=r"groups of 3 coordinates.*multiple of 3; got \(%d,\)" % length):
        entry(name).prox(torch.ones(length, dtype=torch.float64), step=0.5)


def test_prox_refuses_a_bad_step():
    for step in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="step t must be a finite positive number"):
            entry("laplace").prox(torch.ones(2), step=step, **{"lambda": 1.0})


@pytest.mark.parametrize("name, kwargs", [
    ("generalized_gaussian", {"s": 1.0, "p": 0.5}),
    ("generalized_gaussian", {"s": 0.7, "p": 0.3}),
    ("half_norm", {}),
])
def test_cusp_penalties_have_a_finite_subgradient_at_zero(name, kwargs, device):
    """|a|^p with p < 1 and (Σ√|a_i|)² have slope ±∞ at a_i = 0; torch's gradient there was NaN (inf · 0).
    The gradient is now the valid subgradient 0 at exact zeros and unchanged elsewhere."""
    r = entry(name)
    x = torch.tensor([[0.0, 0.8, -1.5], [0.0, 0.0, 0.0]], dtype=torch.float64, device=device, requires_grad=True)
    (g,) = torch.autograd.grad(r.to_torch(**kwargs)(x).sum(), x)
    assert torch.isfinite(g).all()
    assert g[:, 0].tolist() == [0.0, 0.0] and g[1].tolist() == [0.0, 0.0, 0.0]
    expr = r.penalty.subs({sp.Symbol(k, positive=True): sp.Float(v) for k, v in kwargs.items()})
    if r.dim == 1:
        ref = [float(sp.diff(expr, r.variables[0]).subs(r.variables[0], t)) for t in (0.8, -1.5)]
    else:
        pt = dict(zip(r.variables, (0.0, 0.8, -1.5)))
        ref = [float(sp.diff(expr, v).subs(pt)) for v in r.variables[1:]]
    assert g[0, 1:].tolist() == pytest.approx(ref, rel=1e-12)
    a = sp.Symbol("a", real=True)
    f = torch_function(sp.Abs(a) ** sp.Rational(1, 3), (a,))  # a fixed exponent takes the same path
    y = torch.zeros(3, dtype=torch.float64, device=device, requires_grad=True)
    (gy,) = torch.autograd.grad(f(y), y)
    assert gy.tolist() == [0.0, 0.0, 0.0]


# ------------------------------------------------------------------------------------------------
# prox against brute force
# ------------------------------------------------------------------------------------------------
def brute_prox_1d(rho, v, t, support):
    lo = 0.0 if support == "nonnegative" else -12.0
    grid = np.linspace(lo, 12.0, 240001)
    obj = 0.5 * (grid - v) ** 2 + t * rho(grid)
    obj = np.where(np.isfinite(obj), obj, np.inf)
    k = int(np.argmin(obj))
    best_a, best = grid[k], obj[k]
    res = minimize_scalar(lambda a: 0.5 * (a - v) ** 2 + t * rho(np.array([a]))[0],
                          bounds=(max(lo, best_a - 1e-3), best_a + 1e-3), method="bounded", options={"xatol": 1e-12})
    if res.fun < best:
        best_a, best = res.x, res.fun
    return best_a, best


@pytest.mark.parametrize("name", ["laplace", "exponential", "gaussian", "cauchy", "log_penalty", "lomax",
                                  "spike_and_slab", "generalized_gaussian", "student_t"])
def test_prox_matches_brute_force_minimisation(name):
    r = entry(name)
    expr = r.penalty.subs(SYMBOLS)
    a = r.variables[0]
    f = sp.lambdify(a, expr, "numpy")
    rho = lambda z: np.broadcast_to(np.asarray(f(z), dtype=float), np.shape(z)).copy()  # noqa: E731
    if r.has_point_mass:
        rho = lambda z: np.where(z == 0, 0.0, np.asarray(f(np.where(z == 0, 1.0, z)), dtype=float))  # noqa: E731
    v = torch.tensor([-2.7, -0.9, -0.2, 0.15, 0.6, 1.1, 1.9, 3.3, 5.2], dtype=torch.float64)
    for t in (0.4, 1.7):
        got = r.prox(v, step=t, **bound(r))
        for vi, gi in zip(v.tolist(), got.tolist()):
            ref_a, ref_obj = brute_prox_1d(rho, vi, t, r.support)
            obj = 0.5 * (gi - vi) ** 2 + t * float(rho(np.array([gi]))[0])
            assert obj <= ref_obj + 1e-9, (name, r.prox.method, vi, t, gi, ref_a)
            assert obj == pytest.approx(ref_obj, abs=1e-8)


def test_closed_form_prox_where_expected():
    for name in ("laplace", "exponential", "gaussian", "log_penalty", "lomax", "spike_and_slab"):
        assert entry(name).prox.method == "closed form", name
    assert entry("cauchy").prox.method == "numerical"  # cubic stationarity: no closed form used


def test_spike_and_slab_prox_is_the_l1_l0_threshold():
    r = entry("spike_and_slab")
    lam, lam0, t = 1.3, float(r.l0_weight.subs(SYMBOLS)), 0.5
    threshold = t * lam + np.sqrt(2 * t * lam0)
    v = torch.tensor([threshold - 1e-6, threshold + 1e-6, threshold + 1.0], dtype=torch.float64)
    out = r.prox(v, step=t, **bound(r)).tolist()
    assert out[0] == 0.0
    assert out[1] == pytest.approx(threshold + 1e-6 - t * lam, abs=1e-12)
    assert out[2] == pytest.approx(threshold + 1.0 - t * lam, abs=1e-12)


def test_group_prox_and_topk_match_brute_force():
    r = entry("group_lasso")
    v = torch.tensor([0.3, -1.2, 2.0, 0.1, 0.2, -0.1], dtype=torch.float64)
    t = 0.8
    got = r.prox(v, step=t).numpy()
    for g in range(2):
        vg = v.numpy()[3 * g: 3 * g + 3]
        obj = lambda z: 0.5 * np.sum((z - vg) ** 2) + t * np.linalg.norm(z)  # noqa: E731
        ref = min((minimize(obj, s0, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14})
                   for s0 in (vg, np.zeros(3) + 1e-3)), key=lambda res: res.fun)
        assert obj(got[3 * g: 3 * g + 3]) <= ref.fun + 1e-9
    k = PRIOR_CATALOGUE["k_sparse"](4, 2)
    w = torch.tensor([0.5, -3.0, 1.0, 2.5], dtype=torch.float64)
    assert k.prox(w).tolist() == [0.0, -3.0, 0.0, 2.5]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25)
@given(strength=st.floats(0.2, 4.0), step=st.floats(0.1, 3.0), v=st.floats(-6.0, 6.0))
def test_log_penalty_closed_form_prox_is_optimal_property(strength, step, v):
    """prox of s·log(1 + |a|): the closed-form argmin beats a dense grid for random (s, t, v)."""
    r = entry("log_penalty")
    got = float(r.prox(torch.tensor([v], dtype=torch.float64), step=step, s=strength))
    rho = lambda z: strength * np.log1p(np.abs(z))  # noqa: E731
    _, ref = brute_prox_1d(rho, v, step, "real")
    assert 0.5 * (got - v) ** 2 + step * rho(got) <= ref + 1e-9
