"""Text for a terminal from fields nobody checked: records, reference sets and plugins are
untrusted (README, "Threat model"), and an escape sequence in an error message could clear the
screen, retitle the terminal or print a fake line."""

from __future__ import annotations

import re

# C0 controls but newline and tab, DEL, and the C1 controls (0x80-0x9f: a terminal may read
# 0x9b as ESC [); and the backslash, so an escape shown is never confused with one typed.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\\]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return "\\\\" if char == "\\" else f"\\x{ord(char):02x}"


def printable(text: object) -> str:
    """`text` with every control character but newline and tab shown as its escape (`\\x1b`),
    and a backslash doubled: the four characters `\\x1b` typed into a record read `\\\\x1b`,
    not like an escaped ESC."""
    return _CONTROL.sub(_escape, str(text))


def exception_message(exc: BaseException) -> str:
    """`str(exc)`, or a note saying it failed: a plugin's exception may break anything, its own
    `__str__` included."""
    try:
        return str(exc)
    except Exception:
        return "(its message could not be turned into text)"


def describe_exception(exc: BaseException) -> str:
    """`Type: message`, as text; whatever shows it on a terminal makes it `printable` (once:
    escaping twice would double the backslashes of the first escapes)."""
    message = exception_message(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
