"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 70 000 grey 28x28 images of 10 kinds of clothing.

Read from the four official IDX files, raw or gzipped, found in this order: the `--data-dir` (or
its `fashion-mnist/` folder); the folder of Debian's `dataset-fashion-mnist` package; the
download folder (`bench.data.downloads`), where they are downloaded to when missing. The official
10 000 test images are the test split; the 60 000 training images are split train / val 90 / 10
(stratified, `SPLIT_SEED`).

`fashion_mnist:<n>` is the same data cut to what a small machine can train its students on: n
training images (split 80 / 20 train / val) and min(10 000, n // 4) test images, each a
stratified draw. Its teacher learns from every official training image but the subset's
validation ones (`DatasetBundle.teacher_train`), as a teacher is trained on more than its
students see: trained on the subset's own images, the teacher scored below the students it taught.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import logging
import math
import zlib
from pathlib import Path

import numpy as np

from bench.core.errors import BenchError
from bench.data.bundle import (
    DatasetBundle,
    DatasetEntry,
    DatasetLoaderOptions,
    register_dataset,
    register_dataset_family,
)
from bench.data.downloads import (
    RemoteFile,
    as_split,
    download_missing,
    download_root,
    image_bundle,
    locate,
    official_splits,
    stratified_draw,
)

log = logging.getLogger(__name__)

VERSION = "official-1"
NAME = "fashion_mnist"
FOLDER = "fashion-mnist"
# Where Debian's (and Ubuntu's) `dataset-fashion-mnist` package puts the gzipped files.
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
# The label order of the dataset's README.
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SIDE = 28
TRAIN_SIZE = 60_000
# A subset's validation split (n/5) needs each class at least once.
MIN_SUBSET = 5 * len(CLASS_NAMES)
SUBSET_VAL_FRACTION = 0.2
SUBSET_TEST_CAP = 10_000

_GITHUB = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
# S3 website endpoints serve plain HTTP only; the MD5 check is what vouches for the bytes.
_S3 = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# MD5 sums of the .gz files as the dataset's README publishes them.
_MD5 = {
    TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
    TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
    TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
}
REMOTE_FILES = tuple(
    RemoteFile(f"{name}.gz", (f"{_GITHUB}{name}.gz", f"{_S3}{name}.gz"), _MD5[name])
    for name in FILES
)

# IDX element types by their code in the magic number; all values are big-endian.
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """An IDX file's array: magic 0x0000, element-type code, rank; rank big-endian uint32 sizes.

    The data must fill the declared shape exactly: a short file is truncated, a long one is not
    what its header says, and both are refused with the file named.
    """
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise BenchError(f"{source}: not an IDX file (it must start with two zero bytes)")
    code, rank = data[2], data[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise BenchError(f"{source}: unknown IDX element type 0x{code:02X} (known: {known})")
    header = 4 + 4 * rank
    if len(data) < header:
        raise BenchError(f"{source}: truncated IDX header ({len(data)} of {header} bytes)")
    shape = tuple(int(size) for size in np.frombuffer(data, ">u4", count=rank, offset=4))
    dtype = IDX_TYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise BenchError(
            f"{source}: IDX file {state}: shape {shape} of {dtype.name} needs {expected} bytes, "
            f"the file has {len(data)}"
        )
    return (
        np.frombuffer(data, dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="), copy=False)
    )


def idx_path(folder: Path, name: str) -> Path | None:
    """The file `name` in `folder`, raw or gzipped (raw first: it reads faster), or None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read a raw or gzipped IDX file; a damaged gzip stream is reported like a damaged IDX."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BenchError(f"{path}: damaged gzip file ({exc}); replace it") from exc
    return parse_idx(data, str(path))


def how_to_get(target: Path) -> str:
    """What a user can do when no source has the files; the skipped run's record shows it."""
    return (
        "Fashion-MNIST was not found. How to get it: put the four IDX files "
        f"({', '.join(FILES)}; raw or .gz) in --data-dir DIR or DIR/{FOLDER}/; or install Debian's "
        f"package (`apt install dataset-fashion-mnist`, which fills {DEBIAN_FOLDER}/); or run once "
        f"with network access, which downloads them into {target}/"
    )


def find_files(options: DatasetLoaderOptions) -> Path:
    """The folder holding all four files, downloading them into the download folder if needed."""
    target = download_root(options) / FOLDER
    local = [options.data_dir, options.data_dir / FOLDER] if options.data_dir else []
    return locate(
        [*local, DEBIAN_FOLDER, target],
        lambda folder: all(idx_path(folder, name) for name in FILES),
        target,
        lambda folder: download_missing(REMOTE_FILES, folder, how_to_get(target)),
    )


def read_pair(folder: Path, images_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) of one official set, checked against each other."""
    images_path, labels_path = idx_path(folder, images_name), idx_path(folder, labels_name)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise BenchError(
            f"{images_path}: expected uint8 images of {SIDE}x{SIDE}, found {images.dtype} "
            f"of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.shape != (len(images),):
        raise BenchError(
            f"{labels_path}: expected {len(images)} uint8 labels (one per image of "
            f"{images_path.name}), found {labels.dtype} of shape {labels.shape}"
        )
    return images[:, None], labels


def read_official(options: DatasetLoaderOptions) -> tuple[Path, tuple[np.ndarray, ...]]:
    """The source folder, and train images, train labels, test images, test labels (uint8)."""
    folder = find_files(options)
    log.info("%s: reading %s", NAME, folder)
    return folder, (*read_pair(folder, *FILES[:2]), *read_pair(folder, *FILES[2:]))


@register_dataset(NAME, modality="image", version=VERSION)
def load(options: DatasetLoaderOptions) -> DatasetBundle:
    """Fashion-MNIST, 1x28x28 grey in [0, 1], 10 classes; official test set, train split 90/10."""
    source, arrays = read_official(options)
    return image_bundle(NAME, VERSION, official_splits(*arrays), CLASS_NAMES, source)


def subset_version(n: int) -> str:
    """n is part of the version, so runs on different subsets never share a run id; so is the
    teacher's training split (`teacher-all`: every official training image but the validation
    ones), which changed from the subset's own."""
    return f"{VERSION}-subset{n}-teacher-all"


@register_dataset_family(NAME, pattern=f"{NAME}:<n>")
def subset_entry(parameter: str) -> DatasetEntry:
    """The entry of `fashion_mnist:<n>`; n is checked here, before any file is read."""
    if not (parameter.isascii() and parameter.isdigit()) or not (
        MIN_SUBSET <= int(parameter) <= TRAIN_SIZE
    ):
        raise BenchError(
            f"dataset '{NAME}:{parameter}': n is the number of training images, an integer from "
            f"{MIN_SUBSET} to {TRAIN_SIZE}, e.g. {NAME}:2000"
        )
    n = int(parameter)
    return DatasetEntry(
        name=f"{NAME}:{n}",
        modality="image",
        version=subset_version(n),
        loader=functools.partial(load_subset, n),
        description=f"Fashion-MNIST, stratified subset of {n} training images (80/20 train/val)",
    )


def load_subset(n: int, options: DatasetLoaderOptions) -> DatasetBundle:
    """n official training images split 80/20, and min(10 000, n // 4) official test images;
    the teacher's training split is every official training image outside the validation split."""
    source, (train_images, train_labels, test_images, test_labels) = read_official(options)
    if n > len(train_labels):
        raise BenchError(
            f"dataset '{NAME}:{n}': {source} holds only {len(train_labels)} training images"
        )
    drawn, _ = stratified_draw(train_labels, n)
    val, train = (drawn[part] for part in stratified_draw(train_labels[drawn], SUBSET_VAL_FRACTION))
    test, _ = stratified_draw(test_labels, min(SUBSET_TEST_CAP, n // 4))
    splits = (
        as_split(train_images, train_labels, train),
        as_split(train_images, train_labels, val),
        as_split(test_images, test_labels, test),
    )
    teacher_train = np.setdiff1d(np.arange(len(train_labels)), val)
    return dataclasses.replace(
        image_bundle(f"{NAME}:{n}", subset_version(n), splits, CLASS_NAMES, source),
        teacher_train=as_split(train_images, train_labels, teacher_train),
    )
