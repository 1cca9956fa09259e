"""Datasets published as files: where a loader looks for them, how it downloads them, how it splits.

Fashion-MNIST, CIFAR-10 and CIFAR-100 come as a few files with published MD5 sums and an official
train/test division. Their loaders share one policy, kept here:

- a loader looks in folders of its own (the `--data-dir` first), then downloads into
  `<data-dir>/...` or, without `--data-dir`, into the user cache folder (`$XKD_DATA_DIR`, else
  `datasets/` in `$XDG_CACHE_HOME/xkd-bench` or `~/.cache/xkd-bench`), which later runs find again;
- a download is written to a temporary file, checked against the published MD5, fsynced and
  renamed into place, so a folder never holds a partial or unverified download; a mismatch is a
  `BenchError` and leaves nothing behind. Files a user put in place are not checksummed: a
  repackaged copy (Debian recompresses Fashion-MNIST's .gz files) is as good as the original;
- network failures become `DatasetUnavailable` (the run is recorded as skipped) with the loader's
  instructions, after a short timeout, so an offline machine is not kept waiting;
- the publisher's test set is the test split; the validation split is a stratified tenth of its
  training set, drawn with `SPLIT_SEED` (never the run's seed), so every run sees the same splits.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
from sklearn.model_selection import train_test_split

from bench.core.atomic import write_atomic
from bench.core.confined import refuse_links
from bench.core.errors import BenchError, DatasetUnavailable
from bench.core.locks import hold_lock
from bench.core.paths import user_cache_root
from bench.data.bundle import SPLIT_SEED, DatasetBundle, DatasetLoaderOptions, Split

log = logging.getLogger(__name__)

CACHE_ENV = "XKD_DATA_DIR"
# Seconds to connect, and between two reads: enough for a slow mirror, short enough that a machine
# without network reports the dataset unavailable at once.
TIMEOUT_SECONDS = 10.0
VAL_FRACTION = 0.1
_CHUNK = 1 << 20
# Errors of the network or the server (URLError includes refused connections, unknown hosts and
# HTTP error statuses); a failing disk raises other OSErrors, which are not "unavailable data".
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class RemoteFile:
    """A published file: its name on disk, the URLs to try in order, and the publisher's MD5."""

    name: str
    urls: tuple[str, ...]
    md5: str


def cache_root() -> Path:
    """Where downloads go without `--data-dir`: `$XKD_DATA_DIR`, else `datasets/` in the user's
    cache (`bench.core.paths.user_cache_root`: `$XDG_CACHE_HOME/xkd-bench`, ~/.cache/xkd-bench)."""
    return Path(os.environ.get(CACHE_ENV) or user_cache_root() / "datasets").expanduser()


def download_root(options: DatasetLoaderOptions) -> Path:
    """The folder a loader downloads into: the `--data-dir` when given, else the cache folder."""
    return options.data_dir if options.data_dir is not None else cache_root()


def locate(
    candidates: Iterable[Path],
    complete: Callable[[Path], bool],
    target: Path,
    populate: Callable[[Path], None],
) -> Path:
    """The first candidate folder that `complete` accepts; else `target`, filled by `populate`.

    `populate` runs under a lock in `target`, which is checked again once the lock is held: of
    parallel workers loading the same dataset, one downloads and the others wait and reuse it.
    `target` is a folder of the data folder, and may not be a link: what is downloaded is
    written into the data folder, never through a link out of it (`bench.core.confined`).
    """
    for folder in dict.fromkeys(candidates):
        if complete(folder):
            return folder
    refuse_links(target.parent, target)
    target.mkdir(exist_ok=True)
    with hold_lock(target / ".download.lock", target.parent):
        if not complete(target):
            populate(target)
    return target


def download_missing(remotes: Iterable[RemoteFile], folder: Path, how_to_get: str) -> None:
    """Download each of `remotes` that `folder` lacks; see `download`."""
    for remote in remotes:
        if not (folder / remote.name).exists():
            download(remote, folder / remote.name, how_to_get)


def download(remote: RemoteFile, path: Path, how_to_get: str) -> None:
    """Fetch `remote` to `path` from the first URL that answers, verified, atomically.

    Raises `DatasetUnavailable` (message: `how_to_get` and each URL's error) when no URL answers,
    and `BenchError` when the bytes do not match the published MD5.
    """
    failures = []
    for url in remote.urls:
        log.info("downloading %s to %s", url, path)
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
                write_atomic(path, functools.partial(_copy_verified, response, remote, url))
            return
        except NETWORK_ERRORS as exc:
            failures.append(f"{url}: {exc}")
    raise DatasetUnavailable(f"{how_to_get} (download failed: {'; '.join(failures)})")


def _copy_verified(response: BinaryIO, remote: RemoteFile, url: str, handle: BinaryIO) -> None:
    """Copy the response into `handle`; raising here makes the atomic writer discard the file."""
    digest = hashlib.md5(usedforsecurity=False)
    while chunk := response.read(_CHUNK):
        digest.update(chunk)
        handle.write(chunk)
    if digest.hexdigest() != remote.md5:
        raise BenchError(
            f"{url}: the downloaded {remote.name} has MD5 {digest.hexdigest()}, but its publisher "
            f"gives {remote.md5}; the file was discarded (a damaged or altered download). Try "
            "again, or download it yourself and check it"
        )


def extract_files(archive: Path, wanted: Iterable[str], folder: Path) -> None:
    """Write the members `wanted` (paths inside the gzipped tar `archive`) into `folder`.

    Every member name is checked first: an absolute name or one with `..` could write outside
    `folder`, so such an archive is refused whole. Only the wanted regular files are written (by
    their base names, each atomically), never links or devices, so nothing else can be planted.
    """
    remaining = {PurePosixPath(name): PurePosixPath(name).name for name in wanted}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts:
                    raise BenchError(
                        f"{archive}: refused: member {member.name!r} would be written outside "
                        "the folder it is extracted to"
                    )
            for member in members:
                path = PurePosixPath(member.name)
                if member.isfile() and path in remaining:
                    copy = functools.partial(shutil.copyfileobj, tar.extractfile(member))
                    write_atomic(folder / remaining.pop(path), copy)
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BenchError(f"{archive}: damaged archive ({exc}); delete it and try again") from exc
    if remaining:
        raise BenchError(f"{archive}: the archive lacks {', '.join(map(str, remaining))}")


def stratified_draw(labels: np.ndarray, size: int | float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified draw of `size` rows (a count or a fraction) and of the rest.

    Both are in file order; the draw is seeded by `SPLIT_SEED`, so it is the same on every run.
    """
    everything = np.arange(len(labels))
    if size == len(labels):
        return everything, everything[:0]
    try:
        drawn, rest = train_test_split(
            everything, train_size=size, stratify=labels, random_state=SPLIT_SEED
        )
    except ValueError as exc:  # a class too rare to appear on both sides
        raise BenchError(f"cannot draw a stratified {size} of {len(labels)} labels: {exc}") from exc
    return np.sort(drawn), np.sort(rest)


def as_split(images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> Split:
    """The rows `index` of uint8 images as float32 in [0, 1], with int64 labels.

    Indexing before converting keeps one float32 copy of each split, not two of the whole set.
    """
    return Split(
        np.divide(images[index], np.float32(255), dtype=np.float32),
        labels[index].astype(np.int64),
    )


def official_splits(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
) -> tuple[Split, Split, Split]:
    """Train / val / test from the publisher's division: val is a stratified tenth of training."""
    val, train = stratified_draw(train_labels, VAL_FRACTION)
    return (
        as_split(train_images, train_labels, train),
        as_split(train_images, train_labels, val),
        as_split(test_images, test_labels, np.arange(len(test_labels))),
    )


def image_bundle(
    name: str,
    version: str,
    splits: tuple[Split, Split, Split],
    class_names: tuple[str, ...],
    source: Path | None = None,
    extras: Mapping[str, object] | None = None,
) -> DatasetBundle:
    """An image dataset's bundle; `source` (the folder its files were read from, when they are
    read from one) is provenance.

    `extras` are stored besides it (e.g. `cifar100`'s normalisation statistics).
    """
    train, val, test = splits
    provenance = {"source": str(source)} if source is not None else {}
    return DatasetBundle(
        name=name,
        version=version,
        modality="image",
        train=train,
        val=val,
        test=test,
        class_names=class_names,
        extras={**provenance, **(extras or {})},
    )
