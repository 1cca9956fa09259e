"""How the site writes a number: one set of rules, so that no page prints `-0.000`, `+0`, an
exponent or a p-value of six digits.

- A value: four significant digits, positional (`0.005064`, not `5.064e-03`); thousands with
  separators from 1 000 on.
- A difference: signed, three decimals (`+0.081`), but a difference that rounds to zero at three
  decimals keeps one significant digit (`-0.0004`), and an exact zero is `0`, unsigned: a sign on
  nothing reads as a direction.
- A level: three decimals (`0.873`), by the same rules, with no plus.
- A spread (a standard deviation): two significant digits; `0` where it is rounding noise.
- A p-value: two significant digits (`0.0029`), `< 0.0001` below that; a Monte Carlo or exact
  sign-flip p has no more precision than that to offer.
"""

from __future__ import annotations

import math

import numpy as np

MISSING = "–"
P_FLOOR = 1e-4
# Below this a number is floating-point noise, not a value (two means of the same numbers summed
# in another order differ by ~1e-17; a correlation that is 0 by construction comes out 1e-18):
# printed as 0, not "+0.00000000000000004". No metric here has a true value this small.
ROUNDING_NOISE = 1e-12


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _positional(value: float, significant: int) -> str:
    text = np.format_float_positional(
        value, precision=significant, unique=False, fractional=False, trim="-"
    )
    return "0" if float(text) == 0 else text


def format_value(value: float | None) -> str:
    """Four significant digits, positional; a value within rounding noise of 0 is 0."""
    if _missing(value):
        return MISSING
    if abs(value) < ROUNDING_NOISE:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return _positional(float(value), 4)


def format_exact(value: object) -> str:
    """A setting as given, a float in positional notation with every digit it has (a
    hyper-parameter's 1e-05 as 0.00001): settings are read, not rounded."""
    if isinstance(value, float) and math.isfinite(value):
        return np.format_float_positional(value, trim="0")
    return str(value)


def format_signed(value: float | None, decimals: int = 3) -> str:
    if _missing(value):
        return MISSING
    if abs(value) < ROUNDING_NOISE:
        return "0"
    if round(value, decimals) == 0:  # smaller than the last decimal: keep its first digit
        return f"{'+' if value > 0 else '-'}{_positional(abs(float(value)), 1)}"
    return f"{value:+.{decimals}f}"


def format_fixed(value: float | None, decimals: int = 3) -> str:
    """A level with fixed decimals (`0.873`), by the rules of `format_signed` without the plus."""
    signed = format_signed(value, decimals)
    return signed.removeprefix("+")


def format_spread(std: float, mean: float) -> str:
    """A standard deviation to two significant digits; `0` where it is rounding noise (the same
    value on every seed gives 1e-16, not a spread)."""
    if abs(std) <= 1e-9 * max(1.0, abs(mean)):
        return "0"
    return _positional(float(std), 2)


def format_p(value: float | None) -> str:
    if _missing(value):
        return MISSING
    if value < P_FLOOR:
        return f"< {format_value(P_FLOOR)}"
    return _positional(float(value), 2)
