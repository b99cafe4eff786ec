"""Hessian-rank bounds on the LLC: exact cases, the zoo, the non-minimum check and the finite-data view."""
import warnings
from fractions import Fraction

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from slt_interp.estimators import (  # noqa: E402
    LLCBounds,
    NotAMinimumError,
    NotAMinimumWarning,
    behavioral_loss,
    count_eigenvalues,
    llc_bounds,
    plot_rank_curve,
    plot_spectrum,
    rank_curve,
    rank_curve_vs_n,
    stochastic_lanczos_quadrature,
    threshold_for_sample_size,
    training_loss,
)
from slt_interp.theory import zoo  # noqa: E402


def _mse(p, t):
    return ((p - t) ** 2).sum(-1).mean()


def test_regular_model_is_exact(device):
    # linear regression at its own noise-free targets: a regular minimum, λ = d/2
    g = torch.Generator().manual_seed(0)
    net = nn.Linear(4, 3).double().to(device)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64).to(device)
    with torch.no_grad():
        y = net(x)
    b = llc_bounds(*training_loss(net, _mse, x, y))
    assert isinstance(b, LLCBounds)
    assert b.exact and b.rank == b.dim == 15 and b.lower == b.upper == Fraction(15, 2)
    assert b.is_minimum and b.method == "dense" and b.rtol == pytest.approx(15 * 2.220446049250313e-16)


@pytest.mark.parametrize("M,H,N", [(3, 2, 5), (4, 3, 4), (5, 2, 3)])
def test_reduced_rank_full_rank_teacher_lower_bound_is_exact(M, H, N):
    m = zoo.reduced_rank_model(M, H, N, H)
    x, y = m.sample(200, seed=1)
    b = llc_bounds(*training_loss(m.model, m.loss_fn, x, y))
    assert b.rank == H * (M + N - H)
    assert b.lower == Fraction(H * (M + N - H), 2) == m.llc.value
    assert b.upper == Fraction(H * (M + N), 2) and not b.exact


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_zoo_models_bracket_lambda(name):
    m = zoo.MODELS[name]()
    x, y = m.sample(200, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotAMinimumWarning)  # w* is the truth: a minimum
        b = llc_bounds(*training_loss(m.model, m.loss_fn, x, y))
    assert b.lower <= m.llc.value <= b.upper
    assert b.dim == m.num_params


@pytest.mark.parametrize("name", sorted(zoo.POTENTIALS))
def test_zoo_potentials_bracket_lambda(name):
    p = zoo.POTENTIALS[name]()
    b = llc_bounds(p, torch.zeros(p.dim, dtype=torch.float64))
    assert b.lower <= p.llc.value <= b.upper
    assert b.exact == (p.llc.value == Fraction(p.dim, 2))


def test_rotated_potential_rank():
    base = zoo.sum_potential(zoo.normal_crossing_potential([1]), zoo.normal_crossing_potential([1]),
                             zoo.normal_crossing_potential([2]))
    R, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    b = llc_bounds(zoo.rotate_potential(base, R), torch.zeros(3, dtype=torch.float64))
    assert b.rank == 2 and b.lower == 1 and b.upper == Fraction(3, 2)


def test_non_minimum_warns_and_points_to_behavioral_loss():
    g = torch.Generator().manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(30, 3, generator=g, dtype=torch.float64)
    y = torch.randn(30, 2, generator=g, dtype=torch.float64)  # untrained: far from a minimum
    with pytest.warns(NotAMinimumWarning, match="behavioral_loss"):
        b = llc_bounds(*training_loss(net, _mse, x, y))
    assert b.is_minimum is False and b.grad_norm > 1e-3 and not b.exact
    with pytest.raises(NotAMinimumError, match="not a local minimum"):
        llc_bounds(*training_loss(net, _mse, x, y), on_nonminimum="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotAMinimumWarning)
        bb = llc_bounds(*behavioral_loss(net, x))  # w* is a minimum of L_B at any point
    assert bb.is_minimum and bb.rank <= 30 * 2


def test_saddle_detected_by_negative_eigenvalue():
    with pytest.warns(NotAMinimumWarning, match="smallest Hessian eigenvalue"):
        b = llc_bounds(lambda w: w[0] ** 2 - w[1] ** 2, torch.zeros(2, dtype=torch.float64))
    assert b.min_eigenvalue == pytest.approx(-2.0) and b.grad_norm == 0.0


def test_slq_method_agrees_with_dense():
    m = zoo.reduced_rank_model(8, 6, 8, 6)  # rank 6·10 = 60 of d = 96
    x, y = m.sample(100, seed=3)
    loss, params = training_loss(m.model, m.loss_fn, x, y)
    dense = llc_bounds(loss, params)
    slq = llc_bounds(loss, params, method="slq", threshold=1e-8 * dense.max_eigenvalue, num_probes=16,
                     generator=torch.Generator().manual_seed(0))
    assert dense.rank == 60 and slq.method == "slq" and slq.eigenvalues is None
    lo, hi = slq.rank_ci
    se = (hi - lo) / 4
    assert lo - se <= 60 <= hi + se
    assert slq.upper == dense.upper == 48 and slq.is_minimum


def test_threshold_changes_rank():
    loss = lambda w: 0.5 * (w[0] ** 2 + 1e-6 * w[1] ** 2)  # noqa: E731
    w0 = torch.zeros(2, dtype=torch.float64)
    assert llc_bounds(loss, w0).rank == 2
    b = llc_bounds(loss, w0, threshold=1e-4)
    assert b.rank == 1 and b.threshold == 1e-4 and b.rtol is None
    assert llc_bounds(loss, w0, rtol=1e-3).threshold == pytest.approx(1e-3)


def test_order_4_dispatch_and_order_errors():
    b = llc_bounds(lambda w: w[0] ** 2 + w[1] ** 4, torch.zeros(2, dtype=torch.float64), order=4)
    assert b.order == 4 and b.exact and b.lower == Fraction(3, 4)
    with pytest.raises(ValueError, match="order must be 2"):
        llc_bounds(lambda w: (w ** 2).sum(), torch.zeros(2, dtype=torch.float64), order=3)
    with pytest.raises(ValueError, match="method must be"):
        llc_bounds(lambda w: (w ** 2).sum(), torch.zeros(2, dtype=torch.float64), method="svd")
    with pytest.raises(ValueError, match="threshold must be"):
        llc_bounds(lambda w: (w ** 2).sum(), torch.zeros(2, dtype=torch.float64), threshold=-1.0)
    with pytest.raises(ValueError, match="on_nonminimum must be"):
        llc_bounds(lambda w: (w ** 2).sum(), torch.zeros(2, dtype=torch.float64), on_nonminimum="shrug")
    with pytest.raises(ValueError, match="NaN or inf"):
        llc_bounds(lambda w: (w ** 2).sum(), torch.tensor([float("nan"), 0.0], dtype=torch.float64))


def test_rank_curve_dense_and_vs_n():
    h = torch.tensor([0.0, 1e-8, 1e-4, 1e-1, 1.0, 2.0], dtype=torch.float64)
    curve = rank_curve(h, [1e-10, 1e-6, 1e-2, 1.5])
    assert curve.ranks.tolist() == [5.0, 4.0, 3.0, 1.0]
    assert curve.lower.tolist() == [2.5, 2.0, 1.5, 0.5] and curve.upper == 3.0
    tau = 1e-2
    assert float(curve.soft_ranks[2]) == pytest.approx(float((h / (h + tau)).sum()))
    n = torch.tensor([1e2, 1e4, 1e6], dtype=torch.float64)
    vs_n = rank_curve_vs_n(h, n, localization=2.0)
    assert torch.allclose(vs_n.thresholds, 2.0 * torch.log(n) / n)
    assert torch.allclose(threshold_for_sample_size(n, localization=2.0), vs_n.thresholds)
    assert vs_n.ranks.tolist() == sorted(vs_n.ranks.tolist())  # more data resolves more directions
    with pytest.raises(ValueError, match="must be > 1"):
        threshold_for_sample_size(1)
    with pytest.raises(ValueError, match="finite and > 0"):
        rank_curve(h, [0.0, 1.0])
    with pytest.raises(TypeError, match="spectrum must be"):
        rank_curve([1.0, 2.0])


def test_rank_curve_from_slq_matches_dense():
    g = torch.Generator().manual_seed(0)
    h = torch.cat([torch.zeros(40, dtype=torch.float64), torch.rand(60, generator=g, dtype=torch.float64) + 0.5])
    U, _ = torch.linalg.qr(torch.randn(100, 100, generator=g, dtype=torch.float64))
    A = (U * h) @ U.T
    from slt_interp.estimators import HessianOperator

    op = HessianOperator(lambda w: 0.5 * w @ (A @ w), torch.zeros(100, dtype=torch.float64))
    count = count_eigenvalues(op, 0.1, num_probes=16, generator=torch.Generator().manual_seed(1))
    curve = rank_curve(count, [1e-3, 0.1, 0.4])
    assert curve.method == "slq"
    for r, se in zip(curve.ranks.tolist(), curve.std_err.tolist()):
        assert abs(r - 60) <= 4 * se + 0.5
    # the quadrature bracket per τ: the count's own, around the curve's rank; the exact probe count inside
    low, high = curve.bracket
    for k, tau in enumerate([1e-3, 0.1, 0.4]):
        assert (float(low[k]), float(high[k])) == count.quadrature.count_bracket(tau)
        assert float(low[k]) <= float(curve.ranks[k]) <= float(high[k])
    from slt_interp.estimators.slq import _rademacher

    gen = torch.Generator().manual_seed(1)
    z = torch.cat([_rademacher(100, 8, gen), _rademacher(100, 8, gen)], dim=1)  # count_eigenvalues' two blocks
    exact = float(((U.T @ z) ** 2)[h > 0.1].sum(0).mean())  # the probes' count of the 60 eigenvalues ≥ 0.5
    assert float(low[1]) - 1e-6 <= exact <= float(high[1]) + 1e-6
    assert torch.equal(curve.lower_bracket[1], high / 2)
    assert rank_curve(h, [0.1]).bracket is None  # dense: exact, no bracket


def test_plots_draw_what_they_are_given():
    import matplotlib.pyplot as plt

    h = torch.tensor([-1e-3, 0.0, 1e-6, 1.0, 3.0], dtype=torch.float64)
    ax = plot_spectrum(h, threshold=1e-4)
    assert len(ax.collections) == 2 and ax.get_yscale() == "log"  # positives, negatives
    assert len(ax.collections[0].get_offsets()) + len(ax.collections[1].get_offsets()) == 5
    curve = rank_curve_vs_n(h, [10, 100, 1000])
    ax2 = plot_rank_curve(curve, llc=1.0, against="n")
    assert ax2.get_xscale() == "log" and len(ax2.lines) >= 3
    with pytest.raises(ValueError, match="no sample sizes"):
        plot_rank_curve(rank_curve(h), against="n")
    labels = [t.get_text() for t in ax2.get_legend().get_texts()]
    assert not any("bracket" in t for t in labels)  # dense: nothing to bracket
    from slt_interp.estimators import HessianOperator

    op = HessianOperator(lambda w: 0.5 * (torch.linspace(0, 1, 40, dtype=w.dtype) * w ** 2).sum(),
                         torch.zeros(40, dtype=torch.float64))
    ax3 = plot_rank_curve(rank_curve(stochastic_lanczos_quadrature(op, num_probes=4, num_steps=5), [0.1, 0.5]))
    assert any("quadrature bracket" in t.get_text() for t in ax3.get_legend().get_texts())
    plt.close("all")
