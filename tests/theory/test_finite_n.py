"""finite_n_target against docs/theory.md §1's reference values and closed forms."""
import math

import pytest
import sympy as sp
import torch

from slt_interp.theory import finite_n_target, zoo


@pytest.mark.parametrize(
    "name, n, expected",
    [
        ("½w1²w2⁴", 1e4, 0.221),
        ("½w1²w2⁴", 1e6, 0.240),
        ("½(w1w2)²", 1e4, 0.382),
        ("½(w1w2)²", 1e6, 0.421),
        ("½(w1² + w2⁴)", 1e4, 0.746),
        ("½(w1² + w2⁴)", 1e6, 0.750),
    ],
)
def test_reference_values(name, n, expected):
    t = finite_n_target(zoo.POTENTIALS[name](), n, localization=1.0)
    assert t.value == pytest.approx(expected, abs=6e-4)
    assert t.error < 1e-6
    assert t.nbeta == pytest.approx(n / math.log(n))


def test_large_localization_drags_to_zero():
    t = finite_n_target(zoo.POTENTIALS["½w1²w2⁴"](), 1e4, localization=100.0)
    assert t.value == pytest.approx(0.002, abs=6e-4)


def test_quadratic_closed_form():
    # K = ½w²: posterior Gaussian with precision nβ + γ, so E[nβK] = ½·nβ/(nβ + γ) (docs/theory.md §3)
    n, gamma = 50.0, 3.0
    nb = n / math.log(n)
    t = finite_n_target(zoo.POTENTIALS["½w1²"](), n, localization=gamma)
    assert t.dim == 1
    assert t.value == pytest.approx(0.5 * nb / (nb + gamma), rel=1e-9)


def test_sympy_and_callable_inputs_agree():
    p = zoo.POTENTIALS["½(w1w2)²"]()
    a = finite_n_target(p, 1e3).value
    b = finite_n_target(p.expr, 1e3).value
    c = finite_n_target(lambda w: 0.5 * (w[..., 0] * w[..., 1]) ** 2, 1e3, dim=2).value
    assert a == pytest.approx(b, rel=1e-12) and a == pytest.approx(c, rel=1e-12)


def test_errors():
    p = zoo.POTENTIALS["½(w1w2)²"]()
    with pytest.raises(ValueError, match="num_samples must be > 1"):
        finite_n_target(p, 1.0)
    with pytest.raises(ValueError, match="localization"):
        finite_n_target(p, 100, localization=-1)
    with pytest.raises(ValueError, match="1 or 2 variables"):
        finite_n_target(zoo.POTENTIALS["½(w1² + w2² + w3⁴)"](), 100)
    with pytest.raises(ValueError, match="≥ 0"):
        finite_n_target(lambda w: -(w ** 2).sum(-1), 100, dim=2)
    with pytest.raises(TypeError, match="Potential"):
        finite_n_target(3.0, 100)
