"""Curvature operators against dense torch.func references in float64."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

from slt_interp.estimators import (
    CurvatureOperator,
    GaussNewtonOperator,
    HessianOperator,
    behavioral_loss,
    training_loss,
)
from slt_interp.estimators.flat import flatten


def _mse(p, t):
    return ((p - t) ** 2).sum(-1).mean()


def _mlp(device, seed=0, n=24):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    net = net.double().to(device)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64).to(device)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64).to(device)
    return net, x, y


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_hessian_matches_dense_torch_func(device, mode):
    net, x, y = _mlp(device)
    loss, params = training_loss(net, _mse, x, y)
    p = flatten(loss, params)
    H_ref = hessian(p.fn)(p.w0)
    op = HessianOperator(loss, params, mode=mode)
    assert _rel(op.to_dense(chunk_size=7), H_ref) < 1e-10
    V = torch.randn(p.dim, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)
    assert _rel(op @ V, H_ref @ V) < 1e-10
    assert _rel(op @ V[:, 0], H_ref @ V[:, 0]) < 1e-10
    assert op.device.type == device.type and op.dtype == torch.float64


def test_hessian_of_plain_callable_and_tensor_params(device):
    A = torch.tensor([[2.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 1.0]], dtype=torch.float64, device=device)
    w0 = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64, device=device)

    def loss(w):
        return 0.5 * w @ A @ w + (w ** 4).sum()

    H_ref = A + torch.diag(12 * w0 ** 2)
    assert _rel(HessianOperator(loss, w0).to_dense(), H_ref) < 1e-12
    g = HessianOperator(loss, w0).gradient()
    assert _rel(g, A @ w0 + 4 * w0 ** 3) < 1e-12


def test_batched_equals_full_batch(device):
    net, x, y = _mlp(device, n=23)
    full = HessianOperator(*training_loss(net, _mse, x, y)).to_dense()
    batched = HessianOperator(*training_loss(net, _mse, x, y, batch_size=5)).to_dense()
    assert _rel(batched, full) < 1e-12
    g_full = GaussNewtonOperator(*behavioral_loss(net, x)).to_dense()
    g_batched = GaussNewtonOperator(*behavioral_loss(net, x, batch_size=4)).to_dense()
    assert _rel(g_batched, g_full) < 1e-12


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_gauss_newton_is_jacobian_gram_and_behavioral_hessian(device, mode):
    net, x, _ = _mlp(device)
    loss, params = behavioral_loss(net, x)
    p = flatten(loss, params)

    def outputs(w):
        return functional_call(net, p.unflatten(w), (x,))

    J = jacrev(outputs)(p.w0).reshape(-1, p.dim)  # (n·out, d)
    G_ref = 2 / x.shape[0] * J.T @ J
    G = GaussNewtonOperator(loss, params, mode=mode).to_dense()
    assert _rel(G, G_ref) < 1e-10
    assert _rel(G, hessian(p.fn)(p.w0)) < 1e-10  # w* is a minimum of L_B: GN = Hessian there


def test_gauss_newton_kl_is_fisher(device):
    net, x, _ = _mlp(device)
    loss, params = behavioral_loss(net, x, kind="kl")
    p = flatten(loss, params)
    J = jacrev(lambda w: functional_call(net, p.unflatten(w), (x,)))(p.w0)  # (n, C, d)
    probs = torch.softmax(net(x), -1)
    M = torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]  # (n, C, C)
    F = torch.einsum("ncd,nce,nek->dk", J, M, J) / x.shape[0]
    assert _rel(GaussNewtonOperator(loss, params).to_dense(), F) < 1e-10
    assert _rel(HessianOperator(loss, params).to_dense(), F) < 1e-10


def test_scipy_export_and_counter():
    net, x, y = _mlp("cpu")
    op = HessianOperator(*training_loss(net, _mse, x, y))
    H = op.to_dense().numpy()
    sp = op.to_scipy()
    v = np.random.default_rng(0).standard_normal((op.dim, 2))
    assert sp.shape == (op.dim, op.dim) and sp.dtype == np.float64
    assert np.allclose(sp.matvec(v[:, 0]), H @ v[:, 0], rtol=1e-12, atol=1e-14)
    assert np.allclose(sp.matmat(v), H @ v, rtol=1e-12, atol=1e-14)
    assert np.allclose(sp.rmatvec(v[:, 1]), H @ v[:, 1], rtol=1e-12, atol=1e-14)
    before = op.num_matvecs
    op @ torch.zeros(op.dim, 4, dtype=torch.float64)
    assert op.num_matvecs == before + 4


def test_float32_follows_model():
    net, x, y = _mlp("cpu")
    net = net.float()
    op = HessianOperator(*training_loss(net, _mse, x.float(), y.float()))
    assert op.dtype == torch.float32 and (op @ torch.ones(op.dim)).dtype == torch.float32


def test_auto_mode_falls_back_to_reverse_without_forward_ad():
    class NoForward(torch.autograd.Function):  # a backward but no jvp: no forward-mode AD
        generate_vmap_rule = True

        @staticmethod
        def forward(x):
            return torch.sin(x)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * torch.cos(x)

    w0 = torch.tensor([0.2, -0.4], dtype=torch.float64)
    op = HessianOperator(lambda w: NoForward.apply(w).sum() + (w ** 2).sum(), w0)
    with pytest.raises(RuntimeError):
        HessianOperator(lambda w: NoForward.apply(w).sum(), w0, mode="forward") @ torch.ones(2, dtype=torch.float64)
    H = op.to_dense()
    assert op.mode == "reverse"
    assert _rel(H, torch.diag(-torch.sin(w0)) + 2 * torch.eye(2, dtype=torch.float64)) < 1e-12


def test_operator_errors():
    net, x, y = _mlp("cpu")
    loss, params = training_loss(net, _mse, x, y)
    op = HessianOperator(loss, params)
    with pytest.raises(ValueError, match="right operand must have shape"):
        op @ torch.zeros(op.dim + 1)
    with pytest.raises(TypeError, match="needs a torch.Tensor"):
        op @ np.zeros(op.dim)
    with pytest.raises(ValueError, match="max_dim"):
        op.to_dense(max_dim=10)
    with pytest.raises(ValueError, match="mode must be one of"):
        HessianOperator(loss, params, mode="sideways")
    with pytest.raises(TypeError, match="needs a DataLoss"):
        GaussNewtonOperator(lambda w: (w ** 2).sum(), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(NotImplementedError, match="must implement _matmat"):
        CurvatureOperator(2, torch.float64, "cpu") @ torch.zeros(2, dtype=torch.float64)


def test_loss_builder_errors():
    net, x, y = _mlp("cpu")
    with pytest.raises(ValueError, match="rows but the inputs have"):
        training_loss(net, _mse, x, y[:-1])
    with pytest.raises(ValueError, match="kind must be one of"):
        behavioral_loss(net, x, kind="l1")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        behavioral_loss(net, x, batch_size=0)
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        training_loss(lambda z: z, _mse, x, y)
    with pytest.raises(ValueError, match="no parameters"):
        behavioral_loss(nn.Tanh(), x)


def test_auto_mode_handles_torch_mse_loss():
    # F.mse_loss against a constant target fails under forward-over-reverse in torch 2.x
    # ("ZeroTensors are immutable"); auto mode must still return the exact Hessian and GGN
    net, x, y = _mlp("cpu")
    loss, params = training_loss(net, nn.MSELoss(), x, y)
    p = flatten(loss, params)
    H_ref = hessian(p.fn)(p.w0)
    op = HessianOperator(loss, params)
    assert _rel(op.to_dense(), H_ref) < 1e-10
    ggn = GaussNewtonOperator(loss, params).to_dense()
    J = jacrev(lambda w: functional_call(net, p.unflatten(w), (x,)))(p.w0).reshape(-1, p.dim)
    assert _rel(ggn, 2 / y.numel() * J.T @ J) < 1e-10  # mean over n·outputs elements
