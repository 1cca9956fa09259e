"""What `cifar10` and `cifar100` share: the python versions' pickled batches, read safely.

Both versions (Krizhevsky 2009) come as one archive holding one folder of pickled batches: dicts
of rows of 3072 channel-major uint8 pixels, integer labels under a key of the version's own, and
a meta file with the class names. A loader describes its version with a `CifarLayout`; this
module finds the folder (the `--data-dir` or its subfolder named as in the archive; else the
archive in that folder, extracted; else the archive downloaded, `bench.data.downloads`) and reads it.

The batches are pickles, and unpickling runs whatever code a pickle names. They are read with an
unpickler that builds only what a batch holds (a dict of lists, strings, numbers and uint8 numpy
arrays) and refuses any other global, so a planted file cannot run code.

This module registers no dataset; `bench.core.registry.load_builtins` imports it like the others.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import BenchError
from bench.data.bundle import DatasetLoaderOptions
from bench.data.downloads import RemoteFile, download_missing, download_root, extract_files, locate

log = logging.getLogger(__name__)

SHAPE = (3, 32, 32)  # a row holds the red plane, then green, then blue, each row-major
PIXELS = 3 * 32 * 32
PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class CifarLayout:
    """One version's python layout: file names, dict keys, and the title its messages use.

    The archive is not part of it: loaders pass theirs at call time, so that tests can point
    the module's `ARCHIVE` at a local server.
    """

    name: str  # the registered dataset, for logs
    title: str  # e.g. "CIFAR-10", for messages
    folder: str  # the folder inside the archive
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    names_key: str

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test, self.meta)


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle named a global that CIFAR batches never need."""


def _latin1(text: str, encoding: str) -> bytes:
    """Python 3 pickles bytes as `_codecs.encode(text, "latin1")` in protocols 0-2; only that."""
    if encoding != "latin1":
        raise ForbiddenGlobal(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# numpy rebuilds an array from these; the module path moved from numpy.core (numpy 1, and the
# Python 2 pickles of the original batches) to numpy._core (numpy 2).
_RECONSTRUCT = np.empty(0).__reduce__()[0]
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
}


class BatchUnpickler(pickle.Unpickler):
    """An unpickler whose only globals are those of `ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(f"{module}.{name}") from None


def unpickle(path: Path, title: str) -> dict[str, Any]:
    """A batch file's dict, keys as str; `title` names the dataset in errors.

    The original batches are Python 2 pickles; `encoding="bytes"` loads their strings as bytes,
    as the dataset's page advises, and the keys are decoded here.
    """
    try:
        with path.open("rb") as handle:
            content = BatchUnpickler(handle, encoding="bytes").load()
    except ForbiddenGlobal as exc:
        raise BenchError(
            f"{path}: refused: the pickle asks for {exc}, which a {title} batch never holds "
            "(it would run code of the file's choosing)"
        ) from exc
    except Exception as exc:  # a damaged pickle fails in many ways; each means the same here
        raise BenchError(f"{path}: not a readable {title} batch ({exc!r}); replace it") from exc
    if not isinstance(content, dict):
        raise BenchError(f"{path}: a {title} batch is a dict, found {type(content).__name__}")
    return {_text(key): value for key, value in content.items()}


def _text(value: object) -> object:
    """Bytes (how the Python 2 batches' strings load) as str; anything else unchanged."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def read_batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of one batch file."""
    content = unpickle(path, layout.title)
    key = layout.label_key
    data, labels = content.get("data"), np.asarray(content.get(key))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (PIXELS,):
        raise BenchError(f"{path}: 'data' must be a uint8 array of rows of {PIXELS} values")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise BenchError(f"{path}: '{key}' must be {len(data)} integers, one per row of 'data'")
    return data.reshape(-1, *SHAPE), labels


def read_class_names(path: Path, layout: CifarLayout) -> tuple[str, ...]:
    """The class names in label order, from the meta file rather than typed in here."""
    names = unpickle(path, layout.title).get(layout.names_key)
    if not isinstance(names, list) or not names:
        raise BenchError(f"{path}: '{layout.names_key}' must be a list of class names")
    return tuple(str(_text(name)) for name in names)


def read_official(
    folder: Path, layout: CifarLayout
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train images, train labels (the training batches in order), test images, test labels."""
    log.info("%s: reading %s", layout.name, folder)
    batches = [read_batch(folder / name, layout) for name in layout.train]
    train_images = np.concatenate([images for images, _ in batches])
    train_labels = np.concatenate([labels for _, labels in batches])
    return train_images, train_labels, *read_batch(folder / layout.test, layout)


def how_to_get(layout: CifarLayout, archive: RemoteFile, root: Path) -> str:
    """What a user can do when no source has the batches; the skipped run's record shows it."""
    return (
        f"{layout.title} was not found. How to get it: put the batches of its python version "
        f"({', '.join(layout.files)}) in --data-dir DIR or DIR/{layout.folder}/, or its archive "
        f"{archive.name} ({PAGE}) in DIR; or run once with network access, which downloads the "
        f"archive into {root}/"
    )


def find_batches(options: DatasetLoaderOptions, layout: CifarLayout, archive: RemoteFile) -> Path:
    """The folder holding every batch, extracted from the archive (downloaded if need be)."""
    root = download_root(options)

    def extract(folder: Path) -> None:
        download_missing([archive], root, how_to_get(layout, archive, root))
        log.info("%s: extracting %s", layout.name, root / archive.name)
        members = [f"{layout.folder}/{name}" for name in layout.files]
        extract_files(root / archive.name, members, folder)

    return locate(
        [root, root / layout.folder],
        lambda folder: all((folder / name).is_file() for name in layout.files),
        root / layout.folder,
        extract,
    )
