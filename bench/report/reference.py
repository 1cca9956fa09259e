"""A user's runs beside a reference result set (`report --reference DIR`).

The reference's records (e.g. the committed `reference/default-v2`) fill the leaderboard; a
user's record of the same (profile, dataset, row, seed) replaces the reference's, so a user who
reruns or adds a method sees it ranked among the reference's methods. Each row says how many of its
seeds are the user's and how many the reference's (`source_label`): a row of seven of the user's
seeds and three of the reference's is neither set's alone. Numbers from two machines are only comparable when their environments
agree (image runs depend on the thread count and the libraries), so every difference between the
two sets' environments is named in a warning.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from bench.results.record import Record

Key = tuple[str, str, str]  # (profile, dataset, row)

# The parts of a record's environment that can change its numbers.
ENVIRONMENT_FIELDS = ("device", "cpu", "gpu", "torch_threads")


def _record_key(record: Record) -> tuple[str, str, str, int]:
    return (record.profile, record.dataset_name, record.row, record.seed)


def merge_with_reference(
    user: Iterable[Record], reference: Iterable[Record]
) -> tuple[list[Record], dict[Key, str]]:
    """The reference's records with the user's laid over them, and each row's source
    (`source_label`)."""
    merged = {_record_key(r): (r, "reference") for r in reference}
    for record in user:
        merged[_record_key(record)] = (record, "yours")
    counts: dict[Key, Counter[str]] = defaultdict(Counter)
    for key, (_, origin) in merged.items():
        counts[key[:3]][origin] += 1
    sources = {key: source_label(c["yours"], c["reference"]) for key, c in counts.items()}
    return [record for record, _ in merged.values()], sources


def source_label(yours: int, theirs: int) -> str:
    """Whose seeds a merged row holds: `yours`, `reference`, or `3 of 10 seeds yours`."""
    if not theirs:
        return "yours"
    if not yours:
        return "reference"
    return f"{yours} of {yours + theirs} seeds yours"


def _signature(record: Record) -> tuple[tuple[str, str], ...]:
    env = record.environment
    fields = [(name, str(env.get(name))) for name in ENVIRONMENT_FIELDS]
    fields += sorted((name, str(v)) for name, v in (env.get("versions") or {}).items())
    return tuple(fields)


def environment_differences(user: Iterable[Record], reference: Iterable[Record]) -> list[str]:
    """One line per environment field whose values differ between the two sets of records."""
    mine = {field for r in user for field in _signature(r)}
    theirs = {field for r in reference for field in _signature(r)}
    names = sorted({name for name, _ in mine ^ theirs})
    lines = []
    for name in names:
        yours = sorted({v for n, v in mine if n == name})
        refs = sorted({v for n, v in theirs if n == name})
        lines.append(f"{name}: yours {', '.join(yours) or '–'}; reference {', '.join(refs) or '–'}")
    return lines
