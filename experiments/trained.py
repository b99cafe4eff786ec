"""Small trained models shared by the studies (no downloads: data is generated here).

* :func:`toy_superposition` — the toy model of superposition (Elhage et al. 2022,
  "Toy Models of Superposition", arXiv 2209.10652): x̂ = ReLU(Wᵀ W x + b), sparse x.
* :func:`mlp_regression` — a small tanh MLP fitted to a teacher MLP on Gaussian inputs.

Each returns a :class:`TrainedModel` with checkpoints along training, so studies can follow a
quantity through training.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm


@dataclass
class TrainedModel:
    """A model at the end of training, its data, its loss and its checkpoints.

    Attributes:
        name: readable name.
        model: the trained ``nn.Module`` (float64).
        loss_fn: ``loss_fn(prediction, target)``, the mean training loss.
        inputs, targets: the training set.
        checkpoints: ``(step, state_dict)`` pairs along training, the last one the final model.
    """

    name: str
    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    inputs: Tensor
    targets: Tensor
    checkpoints: list[tuple[int, dict]] = field(default_factory=list)

    def at(self, index: int) -> nn.Module:
        """A copy of the model loaded with checkpoint ``index``."""
        m = copy.deepcopy(self.model)
        m.load_state_dict(self.checkpoints[index][1])
        return m


class ToySuperposition(nn.Module):
    """x̂ = ReLU(Wᵀ W x + b), W ∈ R^{hidden × features} (Elhage et al. 2022)."""

    def __init__(self, n_features: int, n_hidden: int):
        super().__init__()
        self.W = nn.Parameter(torch.empty(n_hidden, n_features))
        self.b = nn.Parameter(torch.zeros(n_features))
        nn.init.xavier_normal_(self.W)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu((x @ self.W.T) @ self.W + self.b)


def _mse(prediction: Tensor, target: Tensor) -> Tensor:
    return ((prediction - target) ** 2).sum(-1).mean()


def _train(model, inputs, targets, loss_fn, steps, lr, checkpoint_steps, desc) -> list[tuple[int, dict]]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    checkpoints = []
    for step in tqdm(range(1, steps + 1), desc=desc, leave=False):
        opt.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        opt.step()
        if step in checkpoint_steps or step == steps:
            checkpoints.append((step, copy.deepcopy(model.state_dict())))
    return checkpoints


def _checkpoint_steps(steps: int, num_checkpoints: int) -> set[int]:
    # geometric spacing: most change happens early
    import numpy as np

    return set(int(s) for s in np.unique(np.geomspace(1, steps, num_checkpoints).round().astype(int)))


def toy_superposition(
    n_features: int = 5, n_hidden: int = 2, *, sparsity: float = 0.8, num_samples: int = 1024, steps: int = 3000,
    lr: float = 0.01, num_checkpoints: int = 8, seed: int = 0,
) -> TrainedModel:
    """Train the toy model of superposition on ``num_samples`` sparse inputs (each feature 0 with probability
    ``sparsity``, else U[0, 1]); float64, full-batch Adam; target = input."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(num_samples, n_features, generator=g, dtype=torch.float64)
    x = x * (torch.rand(num_samples, n_features, generator=g, dtype=torch.float64) > sparsity)
    torch_state = torch.random.get_rng_state()
    torch.random.manual_seed(seed)  # nn.init draws from the global RNG; restore it afterwards
    model = ToySuperposition(n_features, n_hidden).double()
    torch.random.set_rng_state(torch_state)
    ckpts = _train(model, x, x, _mse, steps, lr, _checkpoint_steps(steps, num_checkpoints), "train TMS")
    return TrainedModel(f"TMS {n_features}→{n_hidden}, sparsity {sparsity}", model, _mse, x, x.clone(), ckpts)


def mlp_regression(
    input_dim: int = 4, hidden: int = 8, output_dim: int = 2, *, teacher_hidden: int = 3, num_samples: int = 512,
    steps: int = 3000, lr: float = 0.01, num_checkpoints: int = 8, seed: int = 0,
) -> TrainedModel:
    """A tanh MLP (input → hidden → output) trained on a smaller tanh teacher; float64, full batch."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, input_dim, generator=g, dtype=torch.float64)
    W1 = torch.randn(teacher_hidden, input_dim, generator=g, dtype=torch.float64)
    W2 = torch.randn(output_dim, teacher_hidden, generator=g, dtype=torch.float64) / teacher_hidden ** 0.5
    y = torch.tanh(x @ W1.T) @ W2.T
    torch_state = torch.random.get_rng_state()
    torch.random.manual_seed(seed)
    model = nn.Sequential(nn.Linear(input_dim, hidden), nn.Tanh(), nn.Linear(hidden, output_dim)).double()
    torch.random.set_rng_state(torch_state)
    ckpts = _train(model, x, y, _mse, steps, lr, _checkpoint_steps(steps, num_checkpoints), "train MLP")
    return TrainedModel(f"MLP {input_dim}-{hidden}-{output_dim} on a {teacher_hidden}-unit teacher", model, _mse, x, y, ckpts)
