"""A zoo of potentials and torch models whose learning coefficient is known exactly.

Tests and experiments validate the estimators and bounds of this package against these ground
truths. Two kinds of entries:

* :class:`Potential` — an explicit K(w) ≥ 0 with K(0) = 0 (sympy expression and torch function);
* :class:`KnownModel` — an ``nn.Module`` placed at a true parameter w*, a data generator and a loss,
  whose λ at w* is given by a theorem (reduced-rank regression, deep linear networks).

Extending the zoo: write a factory returning one of these two dataclasses and add it to
:data:`POTENTIALS` or :data:`MODELS` (name → zero-argument factory).

Example:
    >>> from slt_interp.theory import zoo
    >>> m = zoo.reduced_rank_model(4, 3, 4, 1)
    >>> x, y = m.sample(100, seed=0)
    >>> float(m.llc.value)
    6.0
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Callable, Sequence

import sympy as sp
import torch
from torch import Tensor, nn

from .learning_coefficient import LearningCoefficient
from .normal_crossing import normal_crossing
from .reduced_rank import reduced_rank_regression

__all__ = [
    "Potential",
    "KnownModel",
    "normal_crossing_potential",
    "sum_potential",
    "rotate_potential",
    "reduced_rank_model",
    "deep_linear_model",
    "DeepLinearNetwork",
    "POTENTIALS",
    "MODELS",
]


# --------------------------------------------------------------------------------------------
# Potentials
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Potential:
    """K(w) ≥ 0 with K(0) = 0 and known λ at w* = 0.

    Attributes:
        name: readable name, e.g. ``"½(w1² + w2⁴)"``.
        expr: the sympy expression of K in ``variables``.
        variables: the sympy symbols w1, ..., wd.
        llc: exact learning coefficient at 0 (prior positive at 0).
        fn: torch function, ``fn(w)`` with ``w`` of shape ``(..., d)`` returns K of shape ``(...)``.
    """

    name: str
    expr: sp.Expr
    variables: tuple[sp.Symbol, ...]
    llc: LearningCoefficient
    fn: Callable[[Tensor], Tensor] = field(repr=False)

    @property
    def dim(self) -> int:
        """The number d of variables."""
        return len(self.variables)

    def __call__(self, w: Tensor) -> Tensor:
        """K(w) for ``w`` of shape (..., d); returns shape (...).

        Args:
            w: points of shape (..., d).

        Returns:
            K at each point, shape (...), on the device and dtype of ``w``.

        Raises:
            ValueError: the last dimension of ``w`` is not d.
        """
        if w.shape[-1] != self.dim:
            raise ValueError(f"{self.name} takes {self.dim} coordinates, got shape {tuple(w.shape)}")
        return self.fn(w)


def _symbols(d: int, offset: int = 0) -> tuple[sp.Symbol, ...]:
    return tuple(sp.Symbol(f"w{i + 1 + offset}", real=True) for i in range(d))


def normal_crossing_potential(exponents: Sequence[int], coefficient: Fraction = Fraction(1, 2)) -> Potential:
    """K(w) = c·Π_i w_i^(2k_i), λ from :func:`slt_interp.theory.normal_crossing` (docs/theory.md §2).

    Args:
        exponents: the k_i ≥ 0, one per variable, at least one > 0.
        coefficient: c > 0 (default ½).

    Returns:
        The :class:`Potential`, with exact λ and m.
    """
    ks = [int(k) for k in exponents]
    llc = normal_crossing(ks)
    ws = _symbols(len(ks))
    expr = sp.Rational(coefficient.numerator, coefficient.denominator) * sp.Mul(*[w ** (2 * k) for w, k in zip(ws, ks)])
    c = float(coefficient)
    kt = torch.tensor([2 * k for k in ks])

    def fn(w: Tensor) -> Tensor:
        return c * torch.prod(w ** kt.to(w.device), dim=-1)

    return Potential(sp.sstr(expr), expr, ws, llc, fn)


def sum_potential(*parts: Potential) -> Potential:
    """K(w) = Σ_j K_j(w_(j)) in disjoint blocks of variables: λ = Σ λ_j, m = Σ m_j − (J − 1).

    The sum rule of docs/theory.md §1; the variables of the j-th part are renumbered after those of
    the parts before it.

    Args:
        *parts: J ≥ 2 potentials.

    Returns:
        The :class:`Potential` of the sum, with exact λ and m.

    Raises:
        ValueError: fewer than two parts.
    """
    if len(parts) < 2:
        raise ValueError("sum_potential needs at least two potentials")
    exprs, ws, llc, sizes, offset = [], [], None, [], 0
    for p in parts:
        new = _symbols(p.dim, offset)
        exprs.append(p.expr.subs(dict(zip(p.variables, new)), simultaneous=True))
        ws.extend(new)
        sizes.append(p.dim)
        offset += p.dim
        llc = p.llc if llc is None else llc + p.llc
    fns = [p.fn for p in parts]

    def fn(w: Tensor) -> Tensor:
        blocks = torch.split(w, sizes, dim=-1)
        return sum(f(b) for f, b in zip(fns, blocks))

    expr = sp.Add(*exprs)
    return Potential(sp.sstr(expr), expr, tuple(ws), llc, fn)


def rotate_potential(potential: Potential, rotation: Tensor) -> Potential:
    """K_R(w) = K(R·w) for an orthogonal R: λ and m are unchanged (analytic change of coordinates).

    The sympy expression is rotated too (with float entries), the torch function exactly.

    Args:
        potential: the potential K in d variables.
        rotation: an orthogonal d×d matrix R (tensor or nested lists).

    Returns:
        The rotated :class:`Potential`, with the λ and m of ``potential``.

    Raises:
        ValueError: R is not d×d or not orthogonal (R Rᵀ = I to 1e-10).
    """
    R = torch.as_tensor(rotation, dtype=torch.float64)
    d = potential.dim
    if R.shape != (d, d):
        raise ValueError(f"rotation must be {d}×{d}, got {tuple(R.shape)}")
    if not torch.allclose(R @ R.T, torch.eye(d, dtype=R.dtype), atol=1e-10):
        raise ValueError("rotation must be orthogonal (R Rᵀ = I)")
    Rs = sp.Matrix(R.tolist())
    ws = potential.variables
    rotated = Rs * sp.Matrix(ws)
    expr = potential.expr.subs(dict(zip(ws, list(rotated))), simultaneous=True)
    base = potential.fn

    def fn(w: Tensor) -> Tensor:
        return base(w @ R.to(device=w.device, dtype=w.dtype).T)

    return Potential(f"{potential.name} ∘ R", expr, ws, potential.llc, fn)


# --------------------------------------------------------------------------------------------
# Models with a data generator
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KnownModel:
    """A torch model at a true parameter w*, with a data generator and an exactly known λ.

    Attributes:
        name: readable name.
        model: the ``nn.Module`` whose parameters are w* (the realisable truth).
        loss_fn: ``loss_fn(prediction, target)`` returning the mean loss.
        llc: exact learning coefficient of the population loss at w*.
        input_dim: dimension of one input.
        noise_std: standard deviation of the Gaussian noise added to the targets.
    """

    name: str
    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor] = field(repr=False)
    llc: LearningCoefficient
    input_dim: int
    noise_std: float = 0.0

    @property
    def num_params(self) -> int:
        """The number d of parameters of ``model``."""
        return sum(p.numel() for p in self.model.parameters())

    def sample(self, num_samples: int, seed: int = 0, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw n = ``num_samples`` pairs (x, y) with x ~ N(0, I) and y = f(x; w*) + noise_std·ε (seeded).

        Args:
            num_samples: n, the number of pairs.
            seed: seeds a fresh CPU generator (ignored when ``generator`` is given).
            generator: a ``torch.Generator`` to draw from instead.

        Returns:
            ``(x, y)`` of shapes (n, input_dim) and (n, output_dim), on the model's device and dtype.

        Raises:
            ValueError: ``num_samples`` < 1.
        """
        n = num_samples
        if n < 1:
            raise ValueError(f"num_samples must be ≥ 1, got {n}")
        p = next(self.model.parameters())
        g = generator if generator is not None else torch.Generator(device="cpu").manual_seed(seed)
        x = torch.randn(n, self.input_dim, generator=g, dtype=p.dtype).to(p.device)
        with torch.no_grad():
            y = self.model(x)
        if self.noise_std > 0:
            y = y + self.noise_std * torch.randn(y.shape, generator=g, dtype=p.dtype).to(p.device)
        return x, y


class DeepLinearNetwork(nn.Module):
    """f(x) = W_L ⋯ W_1 x, no biases.

    Args:
        widths: ``[H_0 (input), ..., H_L (output)]``; layer j is an ``nn.Linear(H_{j−1}, H_j)``.
    """

    def __init__(self, widths: Sequence[int]):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=False) for a, b in zip(self.widths[:-1], self.widths[1:])
        )

    def forward(self, x: Tensor) -> Tensor:
        """W_L ⋯ W_1 x.

        Args:
            x: inputs of shape (..., H_0).

        Returns:
            Outputs of shape (..., H_L).
        """
        for layer in self.layers:
            x = layer(x)
        return x


def _mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean over samples of the squared error summed over outputs (½ of the Gaussian NLL·2)."""
    return ((prediction - target) ** 2).sum(-1).mean()


def _place_teacher(model: DeepLinearNetwork, rank: int, generator: torch.Generator) -> None:
    """Set w* to a rank-r product whose factors all have rank exactly r.

    These are the most singular points of the set of true parameters: only the leading r
    rows/columns of each factor are non-zero.
    """
    with torch.no_grad():
        n_layers = len(model.layers)
        for j, layer in enumerate(model.layers):
            W = torch.zeros_like(layer.weight)
            if rank > 0:
                rows = slice(None) if j == n_layers - 1 else slice(0, rank)
                cols = slice(None) if j == 0 else slice(0, rank)
                block = W[rows, cols]
                W[rows, cols] = torch.randn(block.shape, generator=generator, dtype=W.dtype)
            layer.weight.copy_(W)


def deep_linear_model(
    widths: Sequence[int], true_rank: int, *, seed: int = 0, noise_std: float = 0.0, dtype: torch.dtype = torch.float64
) -> KnownModel:
    """A deep linear network at a rank-``true_rank`` truth, with its exact λ (docs/theory.md §2).

    λ comes from :func:`slt_interp.theory.deep_linear_network` (Aoyagi 2024), or from the
    reduced-rank formula for one hidden layer.

    Args:
        widths: ``[H_0 (input), H_1, …, H_L (output)]``, at least one hidden layer.
        true_rank: r, the rank of the true product.
        seed: seeds the random factors of w*.
        noise_std: standard deviation of the Gaussian noise that ``sample`` adds to the targets.
        dtype: dtype of the model.

    Returns:
        The :class:`KnownModel` (MSE loss summed over outputs, averaged over samples).

    Raises:
        ValueError: fewer than three widths (the exact formulas raise for invalid widths or ranks).
    """
    widths = [int(w) for w in widths]
    if len(widths) < 3:
        raise ValueError("widths must list input, at least one hidden and the output width")
    if len(widths) == 3:
        llc = reduced_rank_regression(widths[0], widths[1], widths[2], true_rank)
    else:
        from .deep_linear import deep_linear_network

        llc = deep_linear_network(widths, true_rank)
    model = DeepLinearNetwork(widths).to(dtype)
    _place_teacher(model, true_rank, torch.Generator().manual_seed(seed))
    name = f"deep linear {tuple(widths)}, rank {true_rank}"
    return KnownModel(name, model, _mse, llc, widths[0], noise_std)


def reduced_rank_model(
    input_dim: int, hidden_dim: int, output_dim: int, true_rank: int, *, seed: int = 0, noise_std: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> KnownModel:
    """y = B·A·x at a rank-r truth (Aoyagi & Watanabe 2005); a two-layer :class:`DeepLinearNetwork`.

    Args:
        input_dim: M, the input dimension.
        hidden_dim: H, the hidden dimension.
        output_dim: N, the output dimension.
        true_rank: r ≤ H, the rank of the true product BA.
        seed: seeds the random factors of w*.
        noise_std: standard deviation of the Gaussian noise that ``sample`` adds to the targets.
        dtype: dtype of the model.

    Returns:
        The :class:`KnownModel`, λ from :func:`slt_interp.theory.reduced_rank_regression`.
    """
    km = deep_linear_model([input_dim, hidden_dim, output_dim], true_rank, seed=seed, noise_std=noise_std, dtype=dtype)
    name = f"reduced-rank (M, H, N, r) = ({input_dim}, {hidden_dim}, {output_dim}, {true_rank})"
    return KnownModel(name, km.model, km.loss_fn, km.llc, km.input_dim, noise_std)


# Named entries: name → zero-argument factory. Add new ground truths here.
def _named(name: str, factory: Callable[[], Potential]) -> Callable[[], Potential]:
    return lambda: replace(factory(), name=name)


#: The potentials with exactly known λ: name → zero-argument factory of a :class:`Potential`.
POTENTIALS: dict[str, Callable[[], Potential]] = {
    name: _named(name, factory)
    for name, factory in {
        "½w1²w2⁴": lambda: normal_crossing_potential([1, 2]),
        "½(w1w2)²": lambda: normal_crossing_potential([1, 1]),
        "½(w1² + w2⁴)": lambda: sum_potential(normal_crossing_potential([1]), normal_crossing_potential([2])),
        "½w1²": lambda: normal_crossing_potential([1]),
        "½(w1² + w2² + w3⁴)": lambda: sum_potential(
            normal_crossing_potential([1]), normal_crossing_potential([1]), normal_crossing_potential([2])
        ),
    }.items()
}

#: The torch models with exactly known λ: name → zero-argument factory of a :class:`KnownModel`.
MODELS: dict[str, Callable[[], KnownModel]] = {
    "rrr(4,3,4,1)": lambda: reduced_rank_model(4, 3, 4, 1),
    "rrr(5,3,5,0)": lambda: reduced_rank_model(5, 3, 5, 0),
    "rrr(3,2,3,2)": lambda: reduced_rank_model(3, 2, 3, 2),
    "rrr(6,2,3,1)": lambda: reduced_rank_model(6, 2, 3, 1),
    "dln(3,3,3,3)r1": lambda: deep_linear_model([3, 3, 3, 3], 1),
    "dln(4,3,2,3)r1": lambda: deep_linear_model([4, 3, 2, 3], 1),
}
