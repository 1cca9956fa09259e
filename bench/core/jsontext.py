"""JSON read from disk, where a file may be anything (README, "Threat model").

Python refuses to turn an integer of more than 4 300 digits into an `int`, and says so with advice
for a programmer (`sys.set_int_max_str_digits()`), not for a user whose record is damaged. No
field of a record, catalogue or manifest comes near `MAX_INTEGER_DIGITS` (seeds are below 2**32,
parameter counts below 10**12), so a longer integer is refused here with a message that says what
is wrong with the file.
"""

from __future__ import annotations

import json
from typing import Any

MAX_INTEGER_DIGITS = 40


def _integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise ValueError(
            f"an integer of {digits} digits, longer than any field may hold "
            f"({MAX_INTEGER_DIGITS}): not a file this program wrote"
        )
    return int(text)


def parse_json(data: bytes | str) -> Any:
    """`json.loads(data)`, refusing integers longer than `MAX_INTEGER_DIGITS` (ValueError)."""
    return json.loads(data, parse_int=_integer)
