"""Cache entries that are verified before anything parses them.

A cache entry (a teacher's model and info, its cached explanations, a run's attribution maps) is
written with its SHA-256 digest, and read back only through `read_sealed` / `read_sealed_folder`,
which hash the bytes and compare before handing them on. The parsers (LightGBM, `torch.load`,
`np.load`) then read those same verified bytes from memory, never the file again, so a byte that
changed on disk can neither crash native code (one deleted byte of a LightGBM `model.txt` aborts
the process) nor load silently as other weights.

- A single file has a sidecar `<name>.sha256` holding its digest, written after the file.
- A folder (a teacher) has `MANIFEST.json` mapping each file to its digest, written last.

Either way the digest is written after what it covers, so an entry whose writer was killed has no
digest and counts as missing. Every function takes the `root` the entry lies under (the results
folder): below it no link is followed, for reading as for writing (`bench.core.confined`);
without one, only a link in the file's own place is refused. A missing entry is `None`; a damaged one (no digest, a mismatch, an
unreadable manifest) raises `DamagedCache`, whose callers rebuild the entry with one warning.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from bench.core.atomic import write_atomic
from bench.core.confined import RefusedPath, read_regular
from bench.core.jsontext import parse_json

log = logging.getLogger(__name__)

DIGEST_SUFFIX = ".sha256"
MANIFEST = "MANIFEST.json"


class DamagedCache(Exception):
    """A cache entry whose bytes do not match its recorded digest, or that has none: rebuilt, never
    shown to the user as an error."""


# The largest cache entry read (a teacher's weights, an explanation cache) and the largest digest
# file: a FIFO or a link to /dev/zero in an entry's place is refused, never read.
DATA_CAP = 4 << 30
DIGEST_CAP = 1 << 10


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digest_file(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def write_sealed(path: Path, data: bytes, root: Path | None = None) -> None:
    """Write `data` to `path` atomically, then its digest beside it."""
    write_atomic(path, lambda handle: handle.write(data), root)
    digest = sha256(data).encode() + b"\n"
    write_atomic(_digest_file(path), lambda handle: handle.write(digest), root)


def _read(path: Path, cap: int, root: Path | None) -> bytes:
    """A cache file's bytes: a regular file of at most `cap` bytes, not through a link below
    `root` (`bench.core.confined`); anything else is a damaged entry, rebuilt."""
    try:
        return read_regular(path, cap, root)
    except RefusedPath as exc:
        raise DamagedCache(str(exc)) from exc


def read_sealed(path: Path, root: Path | None = None) -> bytes | None:
    """The verified bytes of `path`; None when there is no such entry."""
    try:
        data = _read(path, DATA_CAP, root)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DamagedCache(f"{path} cannot be read: {exc}") from exc
    try:
        expected = _read(_digest_file(path), DIGEST_CAP, root).decode().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedCache(f"{path} has no readable digest ({exc})") from exc
    if sha256(data) != expected:
        raise DamagedCache(f"{path} does not match its SHA-256 digest")
    return data


def seal_folder(folder: Path, names: Mapping[str, bytes], root: Path | None = None) -> None:
    """Write each named file into `folder`, then `MANIFEST.json` with their digests, last."""
    for name, data in names.items():
        write_atomic(folder / name, lambda handle, data=data: handle.write(data), root)
    manifest = json.dumps({name: sha256(data) for name, data in names.items()}, indent=2)
    write_atomic(folder / MANIFEST, lambda handle: handle.write(manifest.encode() + b"\n"), root)


def read_sealed_folder(folder: Path, root: Path | None = None) -> dict[str, bytes]:
    """Every file `folder`'s manifest lists, verified; `DamagedCache` when any is not."""
    try:
        manifest = parse_json(_read(folder / MANIFEST, DIGEST_CAP * 1024, root))
    except (OSError, ValueError) as exc:
        raise DamagedCache(f"{folder} has no readable {MANIFEST} ({exc})") from exc
    if not isinstance(manifest, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in manifest.items()
    ):
        raise DamagedCache(f"{folder / MANIFEST} is not a map of file names to digests")
    files: dict[str, bytes] = {}
    for name, expected in manifest.items():
        path = folder / name
        if path.parent != folder:
            raise DamagedCache(f"{folder / MANIFEST} names a file outside its folder: {name!r}")
        try:
            data = _read(path, DATA_CAP, root)
        except OSError as exc:
            raise DamagedCache(f"{path} cannot be read: {exc}") from exc
        if sha256(data) != expected:
            raise DamagedCache(f"{path} does not match its SHA-256 digest")
        files[name] = data
    return files


def write_array_sealed(path: Path, array: np.ndarray, root: Path | None = None) -> None:
    """Save one numeric array as `.npy` (never pickled), with its digest."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    write_sealed(path, buffer.getvalue(), root)


def read_array_sealed(path: Path, root: Path | None = None) -> np.ndarray | None:
    """The verified array at `path`, or None (with a warning when it exists but is damaged)."""
    try:
        data = read_sealed(path, root)
        return None if data is None else np.load(io.BytesIO(data), allow_pickle=False)
    except (DamagedCache, ValueError, OSError) as exc:
        log.warning("skipping damaged array %s: %s", path, exc)
        return None
