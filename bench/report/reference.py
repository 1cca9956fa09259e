"""A user's runs beside a reference result set (`report --reference DIR`).

The reference's records (e.g. the committed `reference/default-v2`) fill the leaderboard; a
user's record of the same (profile, dataset, row, seed) replaces the reference's, so a user who
reruns or adds a method sees it ranked among the reference's methods. The rows the user produced
are marked in the report. Numbers from two machines are only comparable when their environments
agree (image runs depend on the thread count and the libraries), so every difference between the
two sets' environments is named in a warning.
"""

from __future__ import annotations

from collections.abc import Iterable

from bench.results.record import Record

Key = tuple[str, str, str]  # (profile, dataset, row)

# The parts of a record's environment that can change its numbers.
ENVIRONMENT_FIELDS = ("device", "cpu", "gpu", "torch_threads")


def _record_key(record: Record) -> tuple[str, str, str, int]:
    return (record.profile, record.dataset_name, record.row, record.seed)


def merge_with_reference(
    user: Iterable[Record], reference: Iterable[Record]
) -> tuple[list[Record], set[Key]]:
    """The reference's records with the user's laid over them, and the rows the user produced."""
    merged = {_record_key(r): r for r in reference}
    yours: set[Key] = set()
    for record in user:
        merged[_record_key(record)] = record
        yours.add(_record_key(record)[:3])
    return list(merged.values()), yours


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
