"""The pure SGLD kernel, the MALA acceptance and the chain diagnostics."""
import math

import pytest
import torch
from scipy.signal import lfilter
from torch.func import grad

from slt_interp.estimators.diagnostics import effective_sample_size, mean_std_err, split_rhat
from slt_interp.estimators.sgld import localized_potential, mala_acceptance, sgld_step


def test_zero_noise_is_gradient_descent_on_localized_loss(device):
    g = torch.Generator().manual_seed(0)
    w_star = torch.randn(5, generator=g, dtype=torch.float64).to(device)
    w = torch.randn(3, 5, generator=g, dtype=torch.float64).to(device)
    nbeta, gamma, eps = 7.0, 2.5, 0.01
    loss = lambda v: (v ** 4).sum() + v.sum()  # noqa: E731
    grads = torch.stack([grad(loss)(wc) for wc in w])
    new = sgld_step(w, grads, w_star=w_star, step_size=eps, nbeta=nbeta, localization=gamma, noise=torch.zeros_like(w))
    U = lambda v: nbeta * loss(v) + 0.5 * gamma * ((v - w_star) ** 2).sum()  # noqa: E731
    expected = torch.stack([wc - (eps / 2) * grad(U)(wc) for wc in w])
    torch.testing.assert_close(new, expected, rtol=0, atol=1e-14)


def test_noise_scales_with_sqrt_step_and_mask_freezes(device):
    w = torch.zeros(2, 4, dtype=torch.float64, device=device)
    xi = torch.ones_like(w)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64, device=device)
    eps = torch.tensor([0.04, 0.25], dtype=torch.float64, device=device)  # one step size per chain
    new = sgld_step(w, torch.zeros_like(w), w_star=w[0], step_size=eps, nbeta=1.0, localization=0.0, noise=xi, mask=mask)
    assert new[0].tolist() == [0.2, 0.0, 0.2, 0.0]
    assert new[1].tolist() == [0.5, 0.0, 0.5, 0.0]


def test_mala_acceptance_against_direct_formula():
    g = torch.Generator().manual_seed(1)
    nbeta, gamma, eps = 3.0, 1.0, 0.05
    w_star = torch.zeros(2, dtype=torch.float64)
    L = lambda v: (v[0] * v[1]) ** 2 + v[0] ** 4  # noqa: E731
    U = lambda v: nbeta * L(v) + 0.5 * gamma * (v ** 2).sum()  # noqa: E731
    w = torch.randn(4, 2, generator=g, dtype=torch.float64)
    xi = torch.randn(4, 2, generator=g, dtype=torch.float64)
    gl = torch.stack([grad(L)(v) for v in w])
    w2 = sgld_step(w, gl, w_star=w_star, step_size=eps, nbeta=nbeta, localization=gamma, noise=xi)
    u = localized_potential(torch.stack([L(v) for v in w]), w, w_star, nbeta, gamma)
    u2 = localized_potential(torch.stack([L(v) for v in w2]), w2, w_star, nbeta, gamma)
    gu = torch.stack([grad(U)(v) for v in w])
    gu2 = torch.stack([grad(U)(v) for v in w2])
    alpha = mala_acceptance(w, w2, u, gu, u2, gu2, eps)
    for c in range(4):
        fwd = -((w2[c] - w[c] + eps / 2 * gu[c]) ** 2).sum() / (2 * eps)
        bwd = -((w[c] - w2[c] + eps / 2 * gu2[c]) ** 2).sum() / (2 * eps)
        expected = min(1.0, math.exp(float(U(w[c]) - U(w2[c]) + bwd - fwd)))
        assert float(alpha[c]) == pytest.approx(expected, rel=1e-12)
    # a tiny step on a smooth target is almost always accepted, a huge one rarely
    assert float(mala_acceptance(w, w, u, gu, u, gu, 1e-12).min()) == pytest.approx(1.0)


def _ar1(phi, n, chains, seed):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(chains, n, generator=g, dtype=torch.float64)
    e[:, 0] /= math.sqrt(1 - phi ** 2)  # start in the stationary distribution
    return torch.from_numpy(lfilter([1.0], [1.0, -phi], e.numpy(), axis=1))


def test_ess_of_ar1_matches_theory():
    # AR(1): τ = (1 + φ)/(1 − φ); ESS = N/τ
    phi, n = 0.8, 20000
    x = _ar1(phi, n, 4, 0)
    ess = effective_sample_size(x)
    expected = n * (1 - phi) / (1 + phi)
    assert torch.all((ess > 0.8 * expected) & (ess < 1.25 * expected))


def test_std_err_accounts_for_autocorrelation():
    # the SE of an AR(1) mean must be ≈ √(τ/N)·sd, not sd/√N; and it must cover the truth 0
    phi, n = 0.9, 4000
    se_naive, se_ours, z = [], [], []
    for s in range(20):
        x = _ar1(phi, n, 2, 100 + s)
        mean, se, _, _ = mean_std_err(x)
        se_ours.append(se)
        se_naive.append(float(x.std()) / math.sqrt(x.numel()))
        z.append(mean / se)
    ratio = sum(se_ours) / sum(se_naive)
    assert 3.0 < ratio < 6.0  # √τ = √19 ≈ 4.4
    assert sum(abs(v) < 3 for v in z) >= 18


def test_rhat_flags_disagreeing_chains():
    g = torch.Generator().manual_seed(0)
    same = torch.randn(4, 500, generator=g, dtype=torch.float64)
    assert split_rhat(same) < 1.02
    shifted = same + torch.tensor([0.0, 0.0, 0.0, 3.0], dtype=torch.float64)[:, None]
    assert split_rhat(shifted) > 1.2


def test_diagnostics_errors():
    with pytest.raises(ValueError, match="at least 4 draws"):
        effective_sample_size(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="num_chains, num_draws"):
        split_rhat(torch.zeros(2, 3, 4))
