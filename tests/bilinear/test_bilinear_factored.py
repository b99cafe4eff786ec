import pytest
import torch

from slt_interp.bilinear import FactoredBilinear, FactoredMatrix, FactoredSymmetric, HeadFactors, expand
from tests.bilinear._bilinear_helpers import random_model, random_tokens, rel_err


def _rand(*shape, seed, device):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device)


def test_factored_matrix_against_dense(device):
    A, B = _rand(7, 3, seed=0, device=device), _rand(3, 7, seed=1, device=device)
    M, D = FactoredMatrix(A, B), A @ B
    assert rel_err(M.dense(), D) < 1e-14
    assert rel_err(M.singular_values(), torch.linalg.svdvals(D)[:3]) < 1e-12
    U, S, V = M.svd()
    assert rel_err(U @ torch.diag(S) @ V.T, D) < 1e-12
    assert abs(float(M.frobenius_norm() / torch.linalg.norm(D)) - 1) < 1e-12
    assert abs(float(M.spectral_norm() / torch.linalg.matrix_norm(D, 2)) - 1) < 1e-12
    ev = M.eigenvalues()
    dense_ev = torch.linalg.eigvals(D)
    big = dense_ev[dense_ev.abs() > 1e-8]
    assert torch.allclose(torch.sort(ev.abs()).values, torch.sort(big.abs()).values, rtol=1e-9)
    C = FactoredMatrix(_rand(7, 2, seed=2, device=device), _rand(2, 5, seed=3, device=device))
    assert rel_err((M @ C).dense(), D @ C.dense()) < 1e-12
    x = _rand(7, seed=4, device=device)
    assert rel_err(M @ x, D @ x) < 1e-12 and rel_err(x @ M, x @ D) < 1e-12
    assert rel_err(M.symmetric().dense(), 0.5 * (D + D.T)) < 1e-12


def test_factored_symmetric_eigh(device):
    L = _rand(6, 4, seed=5, device=device)
    C = _rand(4, 4, seed=6, device=device)
    S = FactoredSymmetric(L, 0.5 * (C + C.T))
    D = S.dense()
    eig = S.eigh()
    dense = torch.linalg.eigvalsh(D)
    dense = dense[torch.argsort(dense.abs(), descending=True)][:4]
    assert rel_err(eig.values, dense) < 1e-10
    assert rel_err(eig.vectors @ torch.diag(eig.values) @ eig.vectors.T, D) < 1e-10
    assert abs(float(S.frobenius_norm() / torch.linalg.norm(D)) - 1) < 1e-12
    x = _rand(3, 6, seed=7, device=device)
    assert rel_err(S.quadratic(x), torch.einsum("ni,ij,nj->n", x, D, x)) < 1e-12
    with pytest.raises(ValueError, match="symmetric"):
        FactoredSymmetric(L, C)
    with pytest.raises(ValueError, match="core C must be"):
        FactoredSymmetric(L, torch.eye(3, dtype=torch.float64, device=device))


def test_factored_bilinear_interaction_and_norms(device):
    P, W, V = _rand(4, 9, seed=8, device=device), _rand(9, 5, seed=9, device=device), _rand(9, 5, seed=10, device=device)
    B = FactoredBilinear(P, W, V)
    dense = B.dense()  # (4, 5, 5)
    x = _rand(3, 5, seed=11, device=device)
    assert rel_err(B(x), torch.einsum("aij,ni,nj->na", dense, x, x)) < 1e-12
    u = _rand(4, seed=12, device=device)
    Q = B.interaction(u)
    Qd = torch.einsum("a,aij->ij", u, dense)
    assert rel_err(Q.dense(), 0.5 * (Qd + Qd.T)) < 1e-12
    eig = Q.eigh()  # u·B(x, x) = Σ_i μ_i (q_iᵀ x)²
    assert rel_err(((x @ eig.vectors) ** 2 * eig.values).sum(-1), B(x) @ u) < 1e-10
    assert abs(float(B.frobenius_norm(symmetric=False) / torch.linalg.norm(dense)) - 1) < 1e-12
    sym = 0.5 * (dense + dense.transpose(1, 2))
    assert abs(float(B.frobenius_norm() / torch.linalg.norm(sym)) - 1) < 1e-12
    with pytest.raises(ValueError, match="output direction u"):
        B.interaction(torch.ones(3, dtype=torch.float64, device=device))
    with pytest.raises(ValueError, match="shapes must be"):
        FactoredBilinear(P, W, V[:3])
    with pytest.raises(ValueError, match="inner dimensions"):
        FactoredMatrix(P, P)


def test_term_factors_reproduce_the_term(device):
    model = random_model(device, positional=False, normaliser="none", n_layers=1)
    exp = expand(model)
    tokens = random_tokens(model, 2, 8, device)
    i = exp.index("L0.H1(q=emb, k=emb, v=emb)")
    f = exp.factored(i, token_space=True)
    assert isinstance(f, HeadFactors) and f.qk.shape == (5, 5) and f.ov.shape == (5, 5)
    qk, ov = f.qk.dense(), f.ov.dense()  # token-space QK and W_U·OV circuits
    ref = torch.zeros(2, 4, 5, dtype=torch.float64, device=device)
    for t in range(4):
        for s in range(t + 1):
            ref[:, t] += qk[tokens[:, t], tokens[:, s]][:, None] * ov[:, tokens[:, s]].T
    assert rel_err(exp.evaluate(tokens, [i])[0], ref) < 1e-12
    j = exp.index("L0.mlp(emb, emb)")
    bil = exp.factored(j, token_space=True)  # token x alone: logits = B(e_x, e_x)
    onehot = torch.eye(5, dtype=torch.float64, device=device)[tokens]
    assert rel_err(exp.evaluate(tokens, [j])[0], bil(onehot)) < 1e-12
    with pytest.raises(ValueError, match="token_space=True needs every slot"):
        exp.factored(exp.index("L0.mlp(emb, L0.H0)"), token_space=True)
