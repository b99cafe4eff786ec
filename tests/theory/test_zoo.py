"""The zoo of ground truths: every potential's λ is what its Newton polyhedron says, every model sits at
a zero-loss truth of the claimed rank with the claimed parameter count, and rotations preserve K."""
import pytest
import sympy as sp
import torch

from slt_interp.theory import deep_linear_network, newton_polyhedron, reduced_rank_regression, zoo


@pytest.mark.parametrize("name", sorted(zoo.POTENTIALS))
def test_potential_llc_matches_newton_polyhedron(name):
    p = zoo.POTENTIALS[name]()
    r = newton_polyhedron(p.expr, p.variables)
    assert (r.value, r.multiplicity) == (p.llc.value, p.llc.multiplicity), name


@pytest.mark.parametrize("name", sorted(zoo.POTENTIALS))
def test_potential_torch_function_matches_sympy(name, device):
    p = zoo.POTENTIALS[name]()
    g = torch.Generator().manual_seed(0)
    w = (2 * torch.rand(16, p.dim, generator=g, dtype=torch.float64) - 1).to(device)
    f = sp.lambdify(p.variables, p.expr, "math")
    expected = torch.tensor([float(f(*row)) for row in w.cpu().tolist()], dtype=torch.float64)
    got = p(w)
    assert got.device.type == device.type and got.shape == (16,)
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-12, atol=1e-15)
    assert float(p(torch.zeros(1, p.dim, dtype=torch.float64, device=device))) == 0.0


def _product(model) -> torch.Tensor:
    W = None
    for layer in model.layers:
        W = layer.weight if W is None else layer.weight @ W
    return W.detach()


def _formula(widths, rank):
    return reduced_rank_regression(*widths, rank) if len(widths) == 3 else deep_linear_network(widths, rank)


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_model_entries(name, device):
    km = zoo.MODELS[name]()
    widths = km.model.widths
    km.model.to(device)
    assert km.num_params == sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    assert km.input_dim == widths[0]
    x, y = km.sample(64, seed=1)
    assert x.device.type == device.type and x.shape == (64, widths[0]) and y.shape == (64, widths[-1])
    assert float(km.loss_fn(km.model(x), y)) == 0.0  # noise-free data: w* has zero loss
    rank = int(torch.linalg.matrix_rank(_product(km.model).cpu()))
    expected = _formula(widths, rank)
    assert (km.llc.value, km.llc.multiplicity) == (expected.value, expected.multiplicity), (name, rank)


@pytest.mark.parametrize(
    "widths, rank", [((4, 3, 4), 1), ((5, 3, 5), 0), ((3, 2, 3), 2), ((3, 3, 3, 3), 1), ((4, 3, 2, 3), 2), ((2, 5, 4, 6, 3), 2)]
)
def test_teacher_has_the_requested_rank(widths, rank):
    km = zoo.deep_linear_model(list(widths), rank, seed=3)
    assert int(torch.linalg.matrix_rank(_product(km.model))) == rank
    expected = _formula(widths, rank)
    assert (km.llc.value, km.llc.multiplicity) == (expected.value, expected.multiplicity)
    if len(widths) == 3:
        rr = zoo.reduced_rank_model(*widths, rank, seed=3)
        assert int(torch.linalg.matrix_rank(_product(rr.model))) == rank


def test_noisy_samples_are_seeded():
    km = zoo.reduced_rank_model(4, 3, 4, 1, noise_std=0.5)
    x1, y1 = km.sample(32, seed=7)
    x2, y2 = km.sample(32, seed=7)
    _, y3 = km.sample(32, seed=8)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(y1, y3)
    residual = y1 - km.model(x1).detach()
    assert float(km.loss_fn(km.model(x1), y1)) > 0 and residual.abs().max() > 0


@pytest.mark.parametrize("name", ["½(w1² + w2⁴)", "½w1²w2⁴", "½(w1² + w2² + w3⁴)"])
def test_rotation_preserves_values(name, device):
    """K_R(w) = K(R w), so K_R(Rᵀ w) = K(w), for the torch function and the sympy expression."""
    p = zoo.POTENTIALS[name]()
    g = torch.Generator().manual_seed(1)
    R, _ = torch.linalg.qr(torch.randn(p.dim, p.dim, generator=g, dtype=torch.float64))
    rotated = zoo.rotate_potential(p, R)
    assert rotated.llc == p.llc
    w = (2 * torch.rand(20, p.dim, generator=g, dtype=torch.float64) - 1).to(device)
    torch.testing.assert_close(rotated(w @ R.to(device)), p(w), rtol=1e-10, atol=1e-14)  # rows: (Rᵀ w)ᵀ = wᵀ R
    f = sp.lambdify(rotated.variables, rotated.expr, "math")
    back = (w @ R.to(device)).cpu().tolist()
    sym = torch.tensor([float(f(*row)) for row in back], dtype=torch.float64)
    torch.testing.assert_close(sym, p(w).cpu(), rtol=1e-9, atol=1e-13)


def test_invalid_zoo_inputs():
    p = zoo.POTENTIALS["½w1²w2⁴"]()
    with pytest.raises(ValueError, match="rotation must be 2×2"):
        zoo.rotate_potential(p, torch.eye(3))
    with pytest.raises(ValueError, match="orthogonal"):
        zoo.rotate_potential(p, 2 * torch.eye(2))
    with pytest.raises(ValueError, match="at least two potentials"):
        zoo.sum_potential(p)
    with pytest.raises(ValueError, match="takes 2 coordinates"):
        p(torch.zeros(3))
    with pytest.raises(ValueError, match="at least one hidden"):
        zoo.deep_linear_model([3, 3], 0)
    with pytest.raises(ValueError, match="exceeds the smallest width"):
        zoo.deep_linear_model([3, 2, 3, 3], 3)
    with pytest.raises(ValueError, match="num_samples must be ≥ 1"):
        zoo.reduced_rank_model(2, 2, 2, 1).sample(0)
