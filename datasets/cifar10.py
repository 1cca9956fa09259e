"""CIFAR-10 (Krizhevsky 2009): 60 000 colour 32x32 images of 10 classes, the python version.

Read from the batch files `data_batch_1..5`, `test_batch` and `batches.meta`, found in the
`--data-dir` or its `cifar-10-batches-py/` folder; else extracted from `cifar-10-python.tar.gz`
in that folder; else that archive is downloaded (`bench.downloads`; without `--data-dir`, the
cache folder plays its part). The official test batch is the test split; the 50 000 training
images are split train / val 90 / 10 (stratified, `SPLIT_SEED`).

The batches are pickles, and unpickling runs whatever code a pickle names. They are read with an
unpickler that builds only what a batch holds (a dict of lists, strings, numbers and uint8 numpy
arrays) and refuses any other global, so a planted file cannot run code.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import DatasetBundle, DatasetLoaderOptions, register_dataset
from bench.downloads import (
    RemoteFile,
    download_missing,
    download_root,
    extract_files,
    image_bundle,
    locate,
    official_splits,
)
from bench.errors import BenchError

log = logging.getLogger(__name__)

VERSION = "official-1"
NAME = "cifar10"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH, META = "test_batch", "batches.meta"
BATCH_FILES = (*TRAIN_BATCHES, TEST_BATCH, META)
# MD5 as published on https://www.cs.toronto.edu/~kriz/cifar.html for the python version.
ARCHIVE = RemoteFile(
    "cifar-10-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    "c58f30108f718f92721af3b95e74349a",
)
SHAPE = (3, 32, 32)  # a row holds the red plane, then green, then blue, each row-major
PIXELS = 3 * 32 * 32


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


def unpickle(path: Path) -> dict[str, Any]:
    """A batch file's dict, keys as str.

    The original batches are Python 2 pickles; `encoding="bytes"` loads their strings as bytes,
    as the dataset's page advises, and the keys are decoded here.
    """
    try:
        with path.open("rb") as handle:
            content = BatchUnpickler(handle, encoding="bytes").load()
    except ForbiddenGlobal as exc:
        raise BenchError(
            f"{path}: refused: the pickle asks for {exc}, which a CIFAR-10 batch never holds "
            "(it would run code of the file's choosing)"
        ) from exc
    except Exception as exc:  # a damaged pickle fails in many ways; each means the same here
        raise BenchError(f"{path}: not a readable CIFAR-10 batch ({exc!r}); replace it") from exc
    if not isinstance(content, dict):
        raise BenchError(f"{path}: a CIFAR-10 batch is a dict, found {type(content).__name__}")
    return {_text(key): value for key, value in content.items()}


def _text(value: object) -> object:
    """Bytes (how the Python 2 batches' strings load) as str; anything else unchanged."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of one batch file."""
    content = unpickle(path)
    data, labels = content.get("data"), np.asarray(content.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (PIXELS,):
        raise BenchError(f"{path}: 'data' must be a uint8 array of rows of {PIXELS} values")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise BenchError(f"{path}: 'labels' must be {len(data)} integers, one per row of 'data'")
    return data.reshape(-1, *SHAPE), labels


def read_class_names(path: Path) -> tuple[str, ...]:
    """The class names in label order, from `batches.meta` rather than typed in here."""
    names = unpickle(path).get("label_names")
    if not isinstance(names, list) or not names:
        raise BenchError(f"{path}: 'label_names' must be a list of class names")
    return tuple(str(_text(name)) for name in names)


def how_to_get(root: Path) -> str:
    """What a user can do when no source has the batches; the skipped run's record shows it."""
    return (
        "CIFAR-10 was not found. How to get it: put the batches of its python version "
        f"({', '.join(BATCH_FILES)}) in --data-dir DIR or DIR/{FOLDER}/, or its archive "
        f"{ARCHIVE.name} (https://www.cs.toronto.edu/~kriz/cifar.html) in DIR; or run once with "
        f"network access, which downloads the archive into {root}/"
    )


def find_batches(options: DatasetLoaderOptions) -> Path:
    """The folder holding every batch, extracted from the archive (downloaded if need be)."""
    root = download_root(options)

    def extract(folder: Path) -> None:
        download_missing([ARCHIVE], root, how_to_get(root))
        log.info("%s: extracting %s", NAME, root / ARCHIVE.name)
        extract_files(root / ARCHIVE.name, [f"{FOLDER}/{name}" for name in BATCH_FILES], folder)

    return locate(
        [root, root / FOLDER],
        lambda folder: all((folder / name).is_file() for name in BATCH_FILES),
        root / FOLDER,
        extract,
    )


@register_dataset(NAME, modality="image", version=VERSION)
def load(options: DatasetLoaderOptions) -> DatasetBundle:
    """CIFAR-10, 3x32x32 colour in [0, 1], 10 classes; official test batch, train split 90/10."""
    folder = find_batches(options)
    log.info("%s: reading %s", NAME, folder)
    batches = [read_batch(folder / name) for name in TRAIN_BATCHES]
    train_images = np.concatenate([images for images, _ in batches])
    train_labels = np.concatenate([labels for _, labels in batches])
    splits = official_splits(train_images, train_labels, *read_batch(folder / TEST_BATCH))
    return image_bundle(NAME, VERSION, splits, read_class_names(folder / META), folder)
