"""Files written atomically: the one writer of every record, cache file and report page.

A file is written to a temp file in the same folder, fsynced, then renamed over the old one, so a
crash at any moment leaves either the old file or the new one, never half of one. What a record
holds is `bench.results.record`'s business.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from bench.core.confined import open_file, open_folder, relative_parts

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


def write_json_atomic(path: Path, payload: dict[str, Any], root: Path | None = None) -> None:
    text = json.dumps(_json_safe(payload), indent=2, sort_keys=False, allow_nan=False)
    write_atomic(path, lambda handle: handle.write(text.encode() + b"\n"), root)


def write_atomic(path: Path, write: Callable[[BinaryIO], object], root: Path | None = None) -> None:
    """Temp file in the same folder, fsync, rename: readers see the old file or the new one.

    Below `root` (default: the file's own folder, made if missing) no link is followed
    (`bench.core.confined`): a linked folder is refused, and a link in the file's place is
    replaced, never written through. The file gets the permissions a plain `open` would give it
    (0666 less the umask).
    """
    root = root if root is not None else path.parent
    parts = relative_parts(root, path)
    with open_folder(root, parts[:-1], create=True) as folder:
        tmp = f".{path.name}.{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        fd = open_file(folder, tmp, flags, path.with_name(tmp), root)  # 0666 less the umask
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except OSError as exc:  # a full disk, a file-size limit: say which file
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=folder)
            if exc.filename is None and exc.errno is not None:
                raise OSError(exc.errno, exc.strerror, str(path)) from exc
            raise
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=folder)
            raise
