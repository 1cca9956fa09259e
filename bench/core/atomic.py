"""Files written atomically: the one writer of every record, cache file and report page.

A file is written to a temp file in the same folder, fsynced, then renamed over the old one, so a
crash at any moment leaves either the old file or the new one, never half of one. What a record
holds is `bench.results.record`'s business.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)


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


# The process's umask, read once (reading it means setting it): `mkstemp` creates files 0600, and a
# site or a record set shared with others must get the permissions `open` would have given.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Temp file in the same folder, fsync, rename: readers see the old file or the new one.

    The file gets the permissions a plain `open` would give it (0666 less the umask).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
