"""Dense spectrum, Lanczos extreme eigenpairs and SLQ eigenvalue counts against dense eigh."""
import math

import pytest
import torch
from torch import nn

from slt_interp.estimators import (
    GaussNewtonOperator,
    HessianOperator,
    behavioral_loss,
    count_eigenvalues,
    dense_spectrum,
    lanczos,
    stochastic_lanczos_quadrature,
)


def _quadratic(eigenvalues, device, seed=0):
    """½ wᵀ A w with A = U diag(h) Uᵀ for a random orthogonal U: an operator with a known spectrum."""
    d = len(eigenvalues)
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    A = (U * torch.as_tensor(eigenvalues, dtype=torch.float64)) @ U.T
    A = ((A + A.T) / 2).to(device)
    return HessianOperator(lambda w: 0.5 * w @ (A @ w), torch.zeros(d, dtype=torch.float64, device=device)), A


def test_dense_spectrum_matches_eigvalsh(device):
    h = torch.linspace(-1.0, 3.0, 40, dtype=torch.float64)
    op, A = _quadratic(h, device)
    spec = dense_spectrum(op)
    assert torch.allclose(spec.eigenvalues, h, atol=1e-12)
    assert spec.asymmetry < 1e-13 and spec.num_matvecs == 40
    U = spec.eigenvectors
    assert torch.allclose(A @ U, U * spec.eigenvalues.to(device), atol=1e-11)
    assert spec.count_above(1.0) == int((h > 1.0).sum())


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_lanczos_extreme_eigenpairs(device, which):
    h = torch.cat([torch.linspace(0.0, 1.0, 300, dtype=torch.float64), torch.tensor([3.0, 5.0, 8.0], dtype=torch.float64)])
    h = h if which == "largest" else -h
    op, A = _quadratic(h, device, seed=1)
    res = lanczos(op, 3, which=which, tol=1e-10, generator=torch.Generator().manual_seed(2))
    expected = torch.sort(h).values[-3:] if which == "largest" else torch.sort(h).values[:3]
    assert res.converged
    assert torch.allclose(res.eigenvalues, expected, atol=1e-8)
    Y = res.eigenvectors
    resid = (A @ Y - Y * res.eigenvalues.to(device)).norm(dim=0).cpu()
    assert torch.allclose(resid, res.residual_norms, atol=1e-8)  # the reported residuals are the true ones
    assert res.num_matvecs == res.num_steps < 300


def test_slq_count_matches_dense_on_a_spread_spectrum(device):
    # 600 eigenvalues: 250 in [1e-9, 1e-6] (flat directions) and 350 spread over [1e-2, 1]
    g = torch.Generator().manual_seed(3)
    h = torch.cat([10 ** (-9 + 3 * torch.rand(250, generator=g, dtype=torch.float64)),
                   10 ** (-2 + 2 * torch.rand(350, generator=g, dtype=torch.float64))])
    op, _ = _quadratic(h, device, seed=4)
    count = count_eigenvalues(op, 1e-4, num_probes=24, generator=torch.Generator().manual_seed(5))
    assert count.converged and count.num_steps < 600
    assert abs(count.count - 350) <= 4 * count.std_err + 0.5, count
    assert count.ci[0] <= count.count <= count.ci[1] and count.std_err > 0
    # the same quadrature counts other thresholds at no cost
    other = count.quadrature.count(1e-10)
    assert abs(other.count - 600) <= 4 * other.std_err + 1.0


def test_slq_count_on_gauss_newton_of_a_few_thousand_parameter_mlp():
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 48), nn.Tanh(), nn.Linear(48, 24), nn.Tanh(), nn.Linear(24, 3)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / math.sqrt(p.shape[-1]))
    x = torch.randn(20, 16, generator=g, dtype=torch.float64)
    op = GaussNewtonOperator(*behavioral_loss(net, x))
    assert op.dim > 2000
    ev = dense_spectrum(op, eigenvectors=False).eigenvalues
    tau = 1e-6 * float(ev.max())
    truth = int((ev > tau).sum())
    assert 40 < truth <= 60  # rank ≤ n·outputs = 60
    count = count_eigenvalues(op, tau, num_probes=16, generator=torch.Generator().manual_seed(1))
    assert abs(count.count - truth) <= 4 * count.std_err + 0.5, (count, truth)
    assert count.ci[0] - 2 * count.std_err <= truth <= count.ci[1] + 2 * count.std_err


def test_slq_fixed_steps_and_exact_trace():
    h = torch.linspace(0.5, 2.0, 60, dtype=torch.float64)
    op, _ = _quadratic(h, "cpu", seed=6)
    quad = stochastic_lanczos_quadrature(op, num_probes=8, num_steps=60, generator=torch.Generator().manual_seed(0))
    assert quad.num_probes == 8 and quad.num_steps == 60
    assert torch.allclose(quad.weights.sum(-1), torch.ones(8, dtype=torch.float64))
    est, se = quad.trace(lambda x: x)  # Hutchinson: unbiased for tr A, exact quadrature at m = d
    assert abs(est - float(h.sum())) <= 4 * se


def test_slq_errors_and_unsettled_warning():
    op, _ = _quadratic(torch.linspace(0.0, 1.0, 200, dtype=torch.float64), "cpu")
    with pytest.raises(ValueError, match="num_probes must be ≥ 2"):
        count_eigenvalues(op, 0.1, num_probes=1)
    with pytest.raises(ValueError, match="threshold must be finite"):
        count_eigenvalues(op, float("nan"))
    with pytest.raises(TypeError, match="must be a CurvatureOperator"):
        count_eigenvalues(torch.eye(3), 0.1)
    with pytest.raises(ValueError, match="which must be"):
        lanczos(op, which="middle")
    with pytest.raises(ValueError, match="num_eigenvalues must be between"):
        lanczos(op, 0)
    gap, _ = _quadratic(torch.cat([torch.zeros(100), torch.linspace(0.5, 1.0, 100)]).double(), "cpu")
    with pytest.warns(RuntimeWarning, match="had not settled"):
        c = count_eigenvalues(gap, 0.01, num_probes=4, min_steps=2, max_steps=4, generator=torch.Generator().manual_seed(0))
    assert not c.converged and c.steps_history[0] == (2, pytest.approx(200.0))


def test_slq_does_not_stop_while_a_ritz_value_straddles_the_threshold():
    # one eigenvalue 10% below τ at the bottom of a wide spectrum: the count looks stable at small m
    # (every Ritz value is above τ), but the Ritz residuals straddle τ until the small eigenvalue is resolved
    h = torch.cat([torch.tensor([3.0e-6], dtype=torch.float64), torch.logspace(-4, 0.5, 57, dtype=torch.float64)])
    op, _ = _quadratic(h, "cpu", seed=7)
    count = count_eigenvalues(op, 3.34e-6, num_probes=8, generator=torch.Generator().manual_seed(0))
    assert abs(count.count - 57) <= 4 * count.std_err + 0.5, (count, count.steps_history)


@pytest.mark.parametrize("num_steps", [4, 12, 30])
def test_slq_count_bracket_contains_each_probes_exact_count(num_steps):
    # the Chebyshev–Markov–Stieltjes bracket holds for every probe and threshold, at any number of steps
    from slt_interp.estimators.slq import _rademacher

    g = torch.Generator().manual_seed(7)
    h = torch.cat([10 ** (-8 + 4 * torch.rand(120, generator=g, dtype=torch.float64)),
                   10 ** (-2 + 2 * torch.rand(80, generator=g, dtype=torch.float64)),
                   -10 ** (-3 + 2 * torch.rand(20, generator=g, dtype=torch.float64))])
    op, A = _quadratic(h, "cpu", seed=8)
    P = 6
    sq = stochastic_lanczos_quadrature(op, num_probes=P, num_steps=num_steps, block_size=P,
                                       generator=torch.Generator().manual_seed(9))
    z = _rademacher(len(h), P, torch.Generator().manual_seed(9))  # the probes the quadrature used
    evals, U = torch.linalg.eigh(A)
    proj = (U.T @ z) ** 2  # (d, P): each probe's spectral weights, summing to d
    widths = []
    for tau in [-1e-2, -1e-4, 1e-7, 1e-5, 1e-3, 3e-2, 0.2, 0.9]:
        for above in (True, False):
            exact = (proj * ((evals > tau) if above else (evals < tau)).double()[:, None]).sum(0)  # per probe
            # the bracket per probe: evaluate it on one-probe quadratures
            for p in range(P):
                one = type(sq)(sq.nodes[p:p + 1], sq.weights[p:p + 1], sq.dim, sq.num_steps, 0)  # rebuilt Jacobi
                lo, hi = one.count_bracket(tau, above=above)
                kept = type(sq)(sq.nodes[p:p + 1], sq.weights[p:p + 1], sq.dim, sq.num_steps, 0,
                                alpha=sq.alpha[p:p + 1], beta=sq.beta[p:p + 1], exact=sq.exact[p:p + 1])
                assert kept.count_bracket(tau, above=above) == pytest.approx((lo, hi), rel=1e-6, abs=1e-6)
                point = float(one.samples(lambda x: ((x > tau) if above else (x < tau)).double())[0])
                assert lo - 1e-6 <= float(exact[p]) <= hi + 1e-6, (tau, above, p, lo, float(exact[p]), hi)
                assert lo - 1e-9 <= point <= hi + 1e-9
                widths.append(hi - lo)
            lo, hi = sq.count_bracket(tau, above=above)
            assert lo - 1e-6 <= float(exact.mean()) <= hi + 1e-6
    assert max(widths) > 1.0  # the bracket is not trivially tight at these step counts
    assert min(widths) < len(h) / 2  # nor trivially wide
    c = sq.count(1e-3)
    assert c.bracket == sq.count_bracket(1e-3) and "quadrature bracket" in repr(c)


def test_slq_count_bracket_is_the_exact_count_at_full_steps():
    from slt_interp.estimators.slq import _rademacher

    h = torch.linspace(-0.5, 1.0, 30, dtype=torch.float64)
    op, A = _quadratic(h, "cpu", seed=2)
    sq = stochastic_lanczos_quadrature(op, num_probes=4, num_steps=30, generator=torch.Generator().manual_seed(0))
    z = _rademacher(30, 4, torch.Generator().manual_seed(0))
    evals, U = torch.linalg.eigh(A)
    exact = float((((U.T @ z) ** 2) * (evals > 0.25).double()[:, None]).sum(0).mean())
    lo, hi = sq.count_bracket(0.25)
    assert lo == hi and abs(lo - exact) < 1e-8


def test_slq_count_bracket_collapses_when_the_krylov_space_is_invariant():
    # a rank-3 operator: every probe's Krylov space is invariant after 4 steps, so each count is exact
    h = torch.cat([torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), torch.zeros(37, dtype=torch.float64)])
    op, _ = _quadratic(h, "cpu", seed=3)
    sq = stochastic_lanczos_quadrature(op, num_probes=3, num_steps=10, generator=torch.Generator().manual_seed(1))
    assert bool(sq.exact.all())
    lo, hi = sq.count_bracket(0.7)
    assert lo == hi == pytest.approx(float(sq.samples(lambda x: (x > 0.7).double()).mean()))


def test_slq_count_brackets_nest_as_the_steps_grow():
    # a longer Gauss rule matches every moment a shorter one fixes, so its count lies in the shorter
    # rule's bracket, and the brackets shrink (same probes: the first m steps are the same run)
    g = torch.Generator().manual_seed(11)
    h = torch.cat([10 ** (-6 + 5 * torch.rand(300, generator=g, dtype=torch.float64)),
                   -10 ** (-4 + 2 * torch.rand(30, generator=g, dtype=torch.float64))])
    op, _ = _quadratic(h, "cpu", seed=12)
    rules = {m: stochastic_lanczos_quadrature(op, num_probes=4, num_steps=m, generator=torch.Generator().manual_seed(3))
             for m in (8, 16, 32)}
    for tau in (1e-4, 1e-3, 1e-2, 0.1):
        for short, long_ in ((8, 16), (16, 32), (8, 32)):
            lo, hi = rules[short].count_bracket(tau)
            lo2, hi2 = rules[long_].count_bracket(tau)
            assert lo - 1e-6 <= rules[long_].count(tau).count <= hi + 1e-6
            assert lo - 1e-6 <= lo2 <= hi2 <= hi + 1e-6
