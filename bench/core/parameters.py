"""What a method's hyper-parameter may be, read from its name: a temperature is positive, a loss
weight is not negative, a fraction lies in [0, 1], a size is a positive integer.

Methods share a vocabulary of parameter names (`kd.temperature`, `dkd.beta`, `crd.nce_k`), so the
ranges are declared once here, by name, rather than in each of the methods; a value outside its
range is refused with the range when a suite is planned (`--set kd.temperature=-1` used to train a
run and record it `ok`), and a registered method's own defaults are checked the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from bench.core.errors import BenchError

# (name pattern, low, low inclusive, high, high inclusive, what it is); the first match decides.
RANGES: tuple[tuple[str, float, bool, float, bool, str], ...] = (
    (r"temperature|t_start|t_end|nce_t", 0, False, math.inf, False, "a temperature"),
    (r"eps|embedding_lr|init_variance", 0, False, math.inf, False, "a positive number"),
    (r"imitation_rows", 0, True, math.inf, False, "a row count (0: every row)"),
    (r".*_fraction|correct_prob|nce_m|r_start|r_end|epsilon", 0, True, 1, True, "a fraction"),
    (
        r"alpha|beta|gamma|lambda(_min|_max)?|weight|.*_weight|multiplier|theta_init",
        0, True, math.inf, False, "a weight",
    ),
    (
        r"ae_width|cam_resolution|depth|embedding_dim|embedding_steps|feat_dim|"
        r"features_per_group|groups|nce_k|width",
        1, True, math.inf, False, "a size",
    ),
)  # fmt: skip


def _range_of(name: str) -> tuple[float, bool, float, bool, str] | None:
    for pattern, *bounds in RANGES:
        if re.fullmatch(pattern, name):
            return tuple(bounds)  # type: ignore[return-value]
    return None


def _interval(low: float, low_in: bool, high: float, high_in: bool) -> str:
    return f"{'[' if low_in else '('}{low:g}, {'∞' if math.isinf(high) else f'{high:g}'}" + (
        "]" if high_in else ")"
    )


# A method whose `alpha` mixes two terms, α·CE + (1 − α)·KD (Hinton et al.'s, `hinton_terms`):
# beyond 1 the KD weight turns negative and training maximises the divergence.
MIXING_FRACTION = {"alpha": (0.0, 1.0)}


def check_ranges(
    method: str, params: Mapping[str, Any], own: Mapping[str, tuple[float, float]] | None = None
) -> None:
    """Refuse a numeric parameter outside its range, or not finite: the method's `own` closed
    range where it declares one (`Method.ranges`), else the one its name declares (`RANGES`)."""
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            raise BenchError(f"{method}.{name}={value!r}: must be a finite number")
        if own and name in own:
            low, high = own[name]
            bounds: tuple[float, bool, float, bool, str] | None = (
                low, True, high, True, "this method's value",
            )  # fmt: skip
        else:
            bounds = _range_of(name)
        if bounds is None:
            continue
        low, low_in, high, high_in, what = bounds
        inside = (low <= value if low_in else low < value) and (
            value <= high if high_in else value < high
        )
        if not inside:
            raise BenchError(
                f"{method}.{name}={value!r}: {what} must lie in "
                f"{_interval(low, low_in, high, high_in)}"
            )
