"""Taylor-mode directional derivatives against dense float64 torch.func references."""
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacfwd

from slt_interp.estimators import TaylorMode, directional_derivatives, fourth_derivative, third_derivative_vector
from slt_interp.estimators.flat import flatten
from slt_interp.estimators.taylor import UnsupportedOperation, nested_directional_derivative


def _mlp_problem(act: nn.Module, device, seed: int = 0, log_softmax: bool = True):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 2)).double().to(device)
    params = {k: (torch.randn(v.shape, generator=g, dtype=torch.float64) * 0.7).to(device) for k, v in model.named_parameters()}
    x = torch.randn(6, 3, generator=g, dtype=torch.float64).to(device)
    y = torch.randn(6, 2, generator=g, dtype=torch.float64).to(device)

    def loss(ps):
        out = functional_call(model, ps, (x,))
        value = ((out - y) ** 2).sum(-1).mean()
        if log_softmax:
            value = value - torch.log_softmax(out, -1)[:, 0].mean()
        return value

    return flatten(loss, params)


@pytest.mark.parametrize("act", [nn.Tanh(), nn.ReLU(), nn.Sigmoid(), nn.GELU(), nn.Softplus()], ids=lambda a: type(a).__name__)
def test_derivatives_match_dense_tensors(act, device):
    p = _mlp_problem(act, device)
    tm = TaylorMode(p.fn, p.w0, method="taylor")
    assert tm.uses_taylor
    g = torch.Generator().manual_seed(1)
    V = torch.randn(3, p.dim, generator=g, dtype=torch.float64).to(device)
    H = hessian(p.fn)(p.w0)
    T3 = jacfwd(hessian(p.fn))(p.w0)
    T4 = jacfwd(jacfwd(hessian(p.fn)))(p.w0)
    d = tm.derivatives(V, 4)
    for i, v in enumerate(V):
        ref = [p.fn(p.w0), torch.func.grad(p.fn)(p.w0) @ v, v @ H @ v,
               torch.einsum("ijk,i,j,k->", T3, v, v, v), torch.einsum("ijkl,i,j,k,l->", T4, v, v, v, v)]
        ref = torch.stack(ref)
        torch.testing.assert_close(d[i], ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))
    t3v = tm.third_vector(V)
    ref3 = torch.einsum("ijk,mj,mk->mi", T3, V, V)
    torch.testing.assert_close(t3v, ref3, rtol=1e-10, atol=1e-10 * float(ref3.abs().max()))
    g3, vhv, t4 = tm.quartic_terms(V)
    torch.testing.assert_close(g3, ref3, rtol=1e-10, atol=1e-10 * float(ref3.abs().max()))
    torch.testing.assert_close(vhv, torch.einsum("ij,mi,mj->m", H, V, V), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(t4, d[:, 4], rtol=1e-10, atol=1e-12)


def test_polynomial_closed_forms():
    # f = (w1 − w2²)²: along v from 0, f(tv) = (t v1 − t² v2²)² = t²v1² − 2t³v1v2² + t⁴v2⁴
    f = lambda w: (w[0] - w[1] ** 2) ** 2  # noqa: E731
    w = torch.zeros(2, dtype=torch.float64)
    v = torch.tensor([0.3, -1.7], dtype=torch.float64)
    d = directional_derivatives(f, w, v, order=5)
    v1, v2 = 0.3, -1.7
    expected = torch.tensor([0.0, 0.0, 2 * v1 ** 2, -6 * 2 * v1 * v2 ** 2, 24 * v2 ** 4, 0.0], dtype=torch.float64)
    torch.testing.assert_close(d, expected, rtol=1e-13, atol=1e-13)
    # T₃[·, v, v] = ∇_w (vᵀH(w)v) at 0: H(w) = [[2, −4w2], [−4w2, 12w2² − 4w1]] ⇒ (−4v2², −8v1v2)
    torch.testing.assert_close(third_derivative_vector(f, w, v), torch.tensor([-4 * v2 ** 2, -8 * v1 * v2], dtype=torch.float64))
    torch.testing.assert_close(fourth_derivative(f, w, v), torch.tensor(24 * v2 ** 4, dtype=torch.float64))


def test_batched_shapes_and_order_zero(device):
    p = _mlp_problem(nn.Tanh(), device, log_softmax=False)
    tm = TaylorMode(p.fn, p.w0)
    V = torch.randn(2, 3, p.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(device)
    assert tm.coefficients(V, 4).shape == (2, 3, 5)
    assert tm.fourth(V).shape == (2, 3)
    assert tm.third_vector(V).shape == (2, 3, p.dim)
    torch.testing.assert_close(tm.coefficients(V[0, 0], 0)[0], p.fn(p.w0))
    # batched equals one-by-one
    torch.testing.assert_close(tm.fourth(V)[1, 2], tm.fourth(V[1, 2]))


def test_fallback_to_nested_jvp_and_strict_mode():
    # cumprod has no truncated-polynomial rule
    f = lambda w: torch.cumprod(w, 0).sum() ** 2  # noqa: E731
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    v = torch.tensor([1.0, 0.5, -0.25], dtype=torch.float64)
    tm = TaylorMode(f, w, method="auto")
    assert not tm.uses_taylor and "cumprod" in tm.unsupported
    ref = torch.stack([nested_directional_derivative(f, w, v, k) for k in range(5)])
    torch.testing.assert_close(tm.derivatives(v, 4), ref)
    with pytest.raises(UnsupportedOperation, match="cumprod"):
        TaylorMode(f, w, method="taylor")


def test_taylor_equals_nested_on_a_model(device):
    p = _mlp_problem(nn.Tanh(), device, seed=3)
    v = torch.randn(p.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(device)
    fast = TaylorMode(p.fn, p.w0, method="taylor").derivatives(v, 4)
    slow = TaylorMode(p.fn, p.w0, method="nested").derivatives(v, 4)
    torch.testing.assert_close(fast, slow, rtol=1e-11, atol=1e-11 * float(slow.abs().max()))
    factorials = torch.tensor([math.factorial(k) for k in range(5)], dtype=torch.float64, device=device)
    torch.testing.assert_close(TaylorMode(p.fn, p.w0).coefficients(v, 4) * factorials, fast)


def test_invalid_input_raises():
    f = lambda w: (w ** 2).sum()  # noqa: E731
    w = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="method must be one of"):
        TaylorMode(f, w, method="jet")
    with pytest.raises(ValueError, match="1-D floating-point"):
        TaylorMode(f, torch.zeros(3, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="1-D floating-point"):
        TaylorMode(f, torch.zeros(3, dtype=torch.int64))
    tm = TaylorMode(f, w)
    with pytest.raises(ValueError, match=r"v must have shape \(\.\.\., 3\)"):
        tm.fourth(torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="order must be an integer"):
        tm.coefficients(torch.zeros(3, dtype=torch.float64), order=-1)
    with pytest.raises(ValueError, match="must return a scalar"):
        TaylorMode(lambda w: w * 2, w, method="taylor").fourth(torch.ones(3, dtype=torch.float64))


def test_scalar_ops_comparisons_and_where():
    # rsub (1 − x), scalar mul/div/add, a comparison feeding where: all without the nested fallback
    f = lambda w: (1 - torch.tanh(w)).pow(2).sum() * 3 + torch.where(w > 0, w ** 3, 0.0).sum() - (w * 2.0 + 1.0).sum() / 3.0  # noqa: E731
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    v = torch.tensor([1.0, 0.5, -0.25], dtype=torch.float64)
    tm = TaylorMode(f, w, method="taylor")
    ref = torch.stack([nested_directional_derivative(f, w, v, k) for k in range(5)])
    torch.testing.assert_close(tm.derivatives(v, 4), ref, rtol=1e-12, atol=1e-12)
