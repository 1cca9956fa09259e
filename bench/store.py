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

import numpy as np

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("schema_version", "run_id", "status", "dataset", "method", "seed", "profile")
STATUSES = ("ok", "failed", "diverged", "skipped")


def record_path(results: Path, profile: str, dataset: str, variant: str, seed: int) -> Path:
    return results / "runs" / profile / dataset.replace(":", "_") / variant / f"seed{seed}.json"


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


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at `path`, or None (with a warning) when it is missing, corrupt or foreign."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("skipping unreadable record %s: %s", path, exc)
        return None
    if not isinstance(record, dict) or any(key not in record for key in REQUIRED_KEYS):
        log.warning("skipping %s: not a run record (missing %s)", path, ", ".join(REQUIRED_KEYS))
        return None
    return record


def iter_records(results: Path, profile: str | None = None) -> Iterator[dict[str, Any]]:
    """Every readable record under `results/runs` (of one profile, if given), in path order."""
    root = results / "runs" / profile if profile else results / "runs"
    for path in sorted(root.rglob("*.json")):
        record = read_record(path)
        if record is not None:
            yield record


def write_array_atomic(path: Path, array: np.ndarray) -> None:
    """Save one numeric array as `.npy` the way records are written: temp file, fsync, rename."""
    write_atomic(
        path, lambda handle: np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
    )


def read_array(path: Path) -> np.ndarray | None:
    """The array saved at `path` (never unpickling), or None with a warning when unreadable."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("skipping unreadable array %s: %s", path, exc)
        return None
