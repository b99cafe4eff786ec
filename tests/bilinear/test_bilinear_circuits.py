"""FactoredMatrix parity, QK/OV circuits, composition scores, batched interaction matrices (issue 14 item 4),
each against dense float64 computations."""
import pytest
import torch

from slt_interp.bilinear import FactoredMatrix, circuits, composition_scores, expand
from tests.bilinear._bilinear_helpers import random_model, random_tokens, rel_err


def _rand(*shape, seed, device):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device)


def test_factored_matrix_parity_with_batch_dims(device):
    A, B = _rand(2, 3, 7, 2, seed=0, device=device), _rand(2, 3, 2, 7, seed=1, device=device)
    M, D = FactoredMatrix(A, B), A @ B  # (2, 3, 7, 7), rank 2
    assert M.shape == (2, 3, 7, 7) and M.ndim == 4
    assert rel_err(M.AB, D) < 1e-14 and rel_err(M.BA, B @ A) < 1e-14
    assert rel_err(M.U @ torch.diag_embed(M.S) @ M.Vh, D) < 1e-12
    assert rel_err(M.S, torch.linalg.svdvals(D)[..., :2]) < 1e-12
    assert rel_err(M.U @ M.collapse_l(), D) < 1e-12 and rel_err(M.collapse_r() @ M.Vh, D) < 1e-12
    eye = torch.eye(2, dtype=torch.float64, device=device)
    assert rel_err(M.U.mT @ M.U, eye.expand(2, 3, 2, 2)) < 1e-12  # orthonormal: collapse_l removes it
    assert rel_err(M.Vh @ M.Vh.mT, eye.expand(2, 3, 2, 2)) < 1e-12
    ev = M.eigenvalues()  # from the 2 × 2 side
    assert ev.shape == (2, 3, 2)
    dense_ev = torch.linalg.eigvals(D)
    for i in range(2):
        for j in range(3):
            big = dense_ev[i, j][dense_ev[i, j].abs() > 1e-9]
            assert torch.allclose(torch.sort(ev[i, j].abs()).values, torch.sort(big.abs()).values, rtol=1e-9)
    assert rel_err((2.5 * M).AB, 2.5 * D) < 1e-14 and rel_err((M * torch.tensor(-3.0, dtype=torch.float64)).AB, -3 * D) < 1e-14
    assert rel_err(M.norm(), torch.linalg.matrix_norm(D)) < 1e-12
    assert rel_err(M.spectral_norm(), torch.linalg.matrix_norm(D, 2)) < 1e-12
    assert rel_err(M[1, 2].AB, D[1, 2]) < 1e-14 and rel_err(M.T.AB, D.mT) < 1e-14
    C = FactoredMatrix(_rand(3, 7, 4, seed=2, device=device), _rand(3, 4, 5, seed=3, device=device))
    assert rel_err((M @ C).AB, D @ C.AB) < 1e-12  # batch dims broadcast
    with pytest.raises(ValueError, match="do not broadcast"):
        FactoredMatrix(_rand(2, 7, 2, seed=0, device=device), _rand(3, 2, 7, seed=0, device=device))
    with pytest.raises(ValueError, match="square"):
        FactoredMatrix(_rand(7, 2, seed=0, device=device), _rand(2, 5, seed=0, device=device)).eigenvalues()


def test_circuits_of_every_head_match_dense(device):
    model = random_model(device, n_layers=2, n_heads=3, d_head=2)
    c, tok = circuits(model), circuits(model, token_space=True)
    WE, WU = model.W_E.detach(), model.W_U.detach()
    for l, block in enumerate(model.blocks):
        for h in range(3):
            QK = block.attn.W_Q[h].detach().T @ block.attn.W_K[h].detach()
            OV = block.attn.W_O[h].detach() @ block.attn.W_V[h].detach()
            assert rel_err(c.qk[l, h].AB, QK) < 1e-14 and rel_err(c.ov[l, h].AB, OV) < 1e-14
            assert rel_err(tok.qk[l, h].AB, WE @ QK @ WE.T) < 1e-13
            assert rel_err(tok.ov[l, h].AB, WU @ OV @ WE.T) < 1e-13
    # the layer-0 circuits reproduce the attention scores of the all-embedding term (no positions)
    model = random_model(device, n_layers=1, n_heads=2, positional=False, normaliser="none", d_mlp=0)
    exp = expand(model)
    tokens = random_tokens(model, 2, 0, device)
    t = exp.index("L0.H1(q=emb, k=emb, v=emb)")
    qk, ov = circuits(model, token_space=True).qk[0, 1].AB, circuits(model, token_space=True).ov[0, 1].AB
    scores = qk[tokens[:, :, None], tokens[:, None, :]].tril()  # (B, T, T)
    by_circuit = torch.einsum("bts,bso->bto", scores, ov.T[tokens])
    assert rel_err(by_circuit, exp.evaluate(tokens, [t])[0]) < 1e-12


def _frob(X):
    return torch.linalg.matrix_norm(X)


def test_composition_scores_match_dense(device):
    model = random_model(device, n_layers=3, n_heads=2, d_head=2)
    s = composition_scores(model)
    blocks = model.blocks
    qk = lambda l, h: blocks[l].attn.W_Q[h].detach().T @ blocks[l].attn.W_K[h].detach()
    ov = lambda l, h: blocks[l].attn.W_O[h].detach() @ blocks[l].attn.W_V[h].detach()
    for l2 in range(3):
        for h2 in range(2):
            for l1 in range(3):
                for h1 in range(2):
                    if l1 >= l2:
                        assert torch.isnan(s.q[l2, h2, l1, h1]) and torch.isnan(s.v[l2, h2, l1, h1])
                        continue
                    A, O, O2 = qk(l2, h2), ov(l1, h1), ov(l2, h2)
                    assert abs(float(s.q[l2, h2, l1, h1] - _frob(A.T @ O) / (_frob(A) * _frob(O)))) < 1e-13
                    assert abs(float(s.k[l2, h2, l1, h1] - _frob(A @ O) / (_frob(A) * _frob(O)))) < 1e-13
                    assert abs(float(s.v[l2, h2, l1, h1] - _frob(O2 @ O) / (_frob(O2) * _frob(O)))) < 1e-13
    # a key that reads exactly the earlier head's output subspace composes maximally for a rank-1 pair
    with torch.no_grad():
        u = torch.zeros(model.config.d_model, dtype=torch.float64, device=device)
        u[0] = 1
        for b in model.blocks:
            b.attn.W_O.zero_()
            b.attn.W_O[:, :, 0] = u
            b.attn.W_V.zero_()
            b.attn.W_V[:, 0, 0] = 1
            b.attn.W_K.zero_()
            b.attn.W_K[:, 0, 0] = 1
    assert torch.allclose(composition_scores(model).k[1, 0, 0, 0], torch.tensor(1.0, dtype=torch.float64, device=device))


def test_batched_interaction_matrices_and_truncation(device):
    model = random_model(device, n_layers=1, n_heads=2, d_mlp=7, d_model=6)
    exp = expand(model)
    f = exp.factored(exp.index("L0.mlp(emb, emb)"), readout="residual")
    WU = model.W_U.detach()
    eig = f.interactions(WU)  # one interaction matrix per output logit
    B = f.dense()  # (d, d, d): y_a = Σ_ij B_aij x_i x_j
    Q = torch.einsum("ka,aij->kij", WU, 0.5 * (B + B.transpose(1, 2)))
    assert rel_err(eig.dense(), Q) < 1e-12
    dense_mu = torch.linalg.eigvalsh(Q)
    dense_mu = torch.gather(dense_mu, 1, torch.argsort(dense_mu.abs(), dim=1, descending=True))
    assert eig.values.shape == (model.config.vocab_size, 6) and rel_err(eig.values, dense_mu) < 1e-10
    x = _rand(10, 6, seed=3, device=device)
    assert rel_err(eig(x), f(x) @ WU.T) < 1e-12  # u_kᵀ B(x, x) = Σ_i μ_ki (q_kiᵀ x)²
    for r in (1, 3):  # truncation = the dense rank-r eigen-approximation, per output
        top = torch.linalg.eigh(Q)
        order = torch.argsort(top.eigenvalues.abs(), dim=1, descending=True)[:, :r]
        mu = torch.gather(top.eigenvalues, 1, order)
        vec = torch.gather(top.eigenvectors, 2, order[:, None, :].expand(-1, 6, -1))
        ref = torch.einsum("nd,kdr->nkr", x, vec).square().mul(mu).sum(-1)
        assert rel_err(eig.truncate(r)(x), ref) < 1e-10
    with pytest.raises(ValueError, match="output directions U"):
        f.interactions(torch.ones(2, 3, dtype=torch.float64, device=device))
