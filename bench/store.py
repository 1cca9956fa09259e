"""The result store: one JSON record per run, written atomically, read back defensively.

Path: `<results>/runs/<profile>/<dataset>/<variant>/seed<k>.json`. A record is written to a temp
file in the same folder, fsynced, then renamed over the old one, so a crash at any moment leaves
either the old record or the new one, never half of one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from bench.paths import SAFE_NAME, inside

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("schema_version", "run_id", "status", "dataset", "method", "seed", "profile")
STATUSES = ("ok", "failed", "diverged", "skipped")
ROLES = ("student", "teacher", "control")
MAX_SEED = 2**32 - 1  # numpy's and LightGBM's seeds are unsigned 32-bit


def record_path(results: Path, profile: str, dataset: str, variant: str, seed: int) -> Path:
    return inside(results, "runs", profile, dataset, variant, f"seed{seed}.json")


def _json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def remove_temporaries(path: Path) -> None:
    """Delete the temporary files a killed writer left for `path`'s run (record, maps).

    Only the holder of the run's lock may call this: it is then the only writer of those files.
    `seed1.json` owns `.seed1.*.tmp`, not `.seed10.*.tmp`.
    """
    stem = path.name.split(".")[0]
    for stale in path.parent.glob(f".{stem}.*.tmp"):
        stale.unlink(missing_ok=True)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_json_safe(payload), indent=2, sort_keys=False, allow_nan=False)
    write_atomic(path, lambda handle: handle.write(text.encode() + b"\n"))


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Temp file in the same folder, fsync, rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    if record.get("role") not in (*ROLES, None):
        problems.append(f"role {record.get('role')!r} is not one of {', '.join(ROLES)}")
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
