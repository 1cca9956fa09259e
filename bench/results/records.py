"""Run records: the one module that knows their format.

A record is a JSON object, one per (profile, dataset, row, seed), under
`<results>/runs/<profile>/<dataset>/<row>/seed<k>.json`. A row is a method variant (`kd`,
`kd[temperature=2]`) or one of a teacher's reference rows: the teacher itself and the control rows
that show each explanation metric's floor. This module names those rows, builds every record
from one skeleton (`skeleton`: a student run, a teacher, a control, a run that could not execute),
checks a record (`record_problems`) and reads records back (`read_record`, `iter_records`);
`bench.core.atomic` writes them atomically. README's "Results" section documents the fields.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bench import SCHEMA_VERSION
from bench.core.paths import SAFE_NAME, inside
from bench.core.specs import MAX_SEED
from bench.core.vocabulary import Role

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("schema_version", "run_id", "status", "dataset", "method", "seed", "profile")
STATUSES = ("ok", "failed", "diverged", "skipped")


def record_path(results: Path, profile: str, dataset: str, row: str, seed: int) -> Path:
    """`<results>/runs/<profile>/<dataset>/<row>/seed<k>.json`; every name checked safe."""
    return inside(results, "runs", profile, dataset, row, f"seed{seed}.json")


def skeleton(
    *,
    run_id: str,
    role: Role,
    dataset: Mapping[str, Any],
    method: Mapping[str, Any],
    seed: int,
    profile: str,
    budget: Mapping[str, Any],
    environment: Mapping[str, Any],
    started: str,
    teacher: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A record with every field present, before its run fills in status, metrics and timings.

    Every row starts here: a student run (`role` "student"), a teacher or a control row, and a
    run that could not execute (which sets status and error and is written as it is).
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": None,
        "role": Role(role),
        "dataset": dict(dataset),
        "method": dict(method),
        "teacher": dict(teacher) if teacher is not None else None,
        "student": None,
        "seed": seed,
        "profile": profile,
        "budget": dict(budget),
        "metrics": {},
        "metric_metadata": {},
        "dissection": None,
        "training": None,
        "timings": {},
        "environment": dict(environment),
        "started": started,
        "ended": None,
        "error": None,
    }


def _is_number(value: Any) -> bool:
    """A finite JSON number (not a bool; `10**400` is an int that no float can hold)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED


def record_problems(record: Any) -> list[str]:
    """What makes `record` unusable as a run record; empty when it is a valid one.

    Checked: the required keys and their types, a known status and role, metrics that are finite
    numbers or null, an error that is null or a mapping of strings, timings that are numbers.
    Everything the report, the statistics and `status` read is among them, so a record that
    passes cannot crash them, and one that fails is treated as not done.
    """
    if not isinstance(record, dict):
        return ["not a JSON object"]
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        return [f"missing {', '.join(missing)}"]
    problems = []
    if not isinstance(record["schema_version"], int) or isinstance(record["schema_version"], bool):
        problems.append("schema_version is not an integer")
    for key in ("run_id", "profile"):
        if not isinstance(record[key], str) or not record[key]:
            problems.append(f"{key} is not a non-empty string")
    if record["status"] not in STATUSES:
        problems.append(f"status {record['status']!r} is not one of {', '.join(STATUSES)}")
    if record.get("role") not in (*Role, None):
        problems.append(f"role {record.get('role')!r} is not one of {', '.join(Role)}")
    if not _is_seed(record["seed"]):
        problems.append(f"seed {record['seed']!r} is not an integer in 0 ... {MAX_SEED}")
    for key in ("dataset", "method"):
        entry = record[key]
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            problems.append(f"{key} has no name")
    # The report files pages and figures under these names: they must be safe as file names.
    names = {"profile": record["profile"]} | {
        key: record[key].get("name")
        for key in ("dataset", "method")
        if isinstance(record[key], dict)
    }
    problems += [f"{key} name {name!r} is not a safe name" for key, name in names.items()
                 if isinstance(name, str) and not SAFE_NAME.fullmatch(name)]  # fmt: skip
    metrics = record.get("metrics")
    if metrics is not None and not isinstance(metrics, dict):
        problems.append("metrics is not a mapping")
    elif metrics:
        bad = [
            name for name, value in metrics.items() if value is not None and not _is_number(value)
        ]
        if bad:
            problems.append(f"metrics not a finite number or null: {', '.join(map(str, bad))}")
    for key in ("metric_metadata", "timings"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            problems.append(f"{key} is not a mapping")
    timings = record.get("timings")
    if isinstance(timings, dict) and not all(v is None or _is_number(v) for v in timings.values()):
        problems.append("timings are not all finite numbers or null")
    error = record.get("error")
    if error is not None and not (
        isinstance(error, dict) and all(v is None or isinstance(v, str) for v in error.values())
    ):
        problems.append("error is not null or a mapping of strings")
    return problems


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at `path`, or None (with a warning) when it is missing, unreadable or corrupt.

    A corrupt record counts as not done: `run` redoes it, `report` and `status` skip it.
    """
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("skipping unreadable record %s: %s", path, exc)
        return None
    problems = record_problems(record)
    if problems:
        log.warning("skipping corrupt record %s: %s", path, "; ".join(problems))
        return None
    return record


def iter_records(results: Path, profile: str | None = None) -> Iterator[dict[str, Any]]:
    """Every readable record under `results/runs` (of one profile, if given), in path order."""
    root = results / "runs" / profile if profile else results / "runs"
    for path in sorted(root.rglob("*.json")):
        record = read_record(path)
        if record is not None:
            yield record
