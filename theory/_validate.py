"""Input checks shared by the exact formulas (they raise ValueError naming the problem)."""
from __future__ import annotations

import math
import numbers


def positive_int(value, name: str) -> int:
    """``value`` as an int ≥ 1.

    Args:
        value: the user's value.
        name: its argument name, for the message.

    Returns:
        int(value).

    Raises:
        ValueError: not an integer (bools refused) or < 1.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer (≥ 1), got {value}")
    return int(value)


def nonnegative_int(value, name: str) -> int:
    """``value`` as an int ≥ 0.

    Args:
        value: the user's value.
        name: its argument name, for the message.

    Returns:
        int(value).

    Raises:
        ValueError: not an integer (bools refused) or < 0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer (≥ 0), got {value}")
    return int(value)


def parameter_values(parameters, params: dict, *, where: str) -> dict:
    """Bind keyword values to the sympy ``parameters`` of a penalty, checking each value.

    Every parameter needs a value; each value must be a real, finite number within its symbol's
    assumptions (``positive=True`` → > 0, ``nonnegative=True`` → ≥ 0).

    Args:
        parameters: the sympy symbols.
        params: {name: value} as passed by keyword.
        where: the calling method's name, for the messages.

    Returns:
        {symbol: float}.

    Raises:
        ValueError: an unknown or missing name; a value that is not a real number, not finite, or
            outside its symbol's assumptions.
    """
    names = {str(p): p for p in parameters}
    unknown = set(params) - set(names)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} in {where}(); this penalty takes {sorted(names)}")
    missing = sorted(set(names) - set(params))
    if missing:
        raise ValueError(f"unbound parameter(s) {missing}: pass each by keyword, e.g. {where}({missing[0]}=1.0)")
    values = {}
    for name, value in params.items():
        symbol = names[name]
        if isinstance(value, (bool, str, bytes)) or not isinstance(value, numbers.Real):
            try:  # 0-d tensors and numpy scalars
                if isinstance(value, (bool, str, bytes)):
                    raise TypeError
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a real number, got {value!r}") from None
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} = {value} is not finite; pass a finite number")
        if symbol.is_positive and not value > 0:
            raise ValueError(f"{name} = {value}, but {name} is declared positive (e.g. a scale or strength); "
                             f"pass {name} > 0")
        if symbol.is_nonnegative and not value >= 0:
            raise ValueError(f"{name} = {value}, but {name} is declared nonnegative; pass {name} ≥ 0")
        values[symbol] = value
    return values


def real_penalty_values(penalty, variables, support: str, values: dict) -> None:
    """Raise unless ``penalty`` with the parameter ``values`` is real at a few points of the support.

    Catches values outside the range where the prior's density is a density (a point-mass weight
    π₀ > 1 makes the slab weight 1 − π₀ negative and the L0 weight the log of a negative number).

    Args:
        penalty: ρ, a sympy expression.
        variables: its variables.
        support: ``"real"`` or ``"nonnegative"`` (where the points are taken).
        values: {parameter symbol: float}.

    Raises:
        ValueError: ρ is complex or NaN at a point of the support.
    """
    import sympy as sp

    expr = penalty.subs(values)
    points = (0.5, 1.0, 2.0) if support == "nonnegative" else (0.5, -1.0, 2.0)
    for x in points:
        at = {v: x for v in variables}
        try:
            value = complex(sp.N(expr.subs(at), 15))
        except (TypeError, ValueError):
            continue  # not a number here (e.g. an infinite constraint penalty); nothing to check
        if value.imag != 0 or math.isnan(value.real):
            shown = ", ".join(f"{k} = {v:g}" for k, v in values.items())
            raise ValueError(
                f"with {shown} the penalty {penalty} is not real (value {value} at {at}): a parameter is "
                "outside the range where the prior's density is non-negative (a point-mass weight pi_0 "
                "must lie in (0, 1)); pass values inside it"
            )
