"""CIFAR-10 (Krizhevsky 2009): 60 000 colour 32x32 images of 10 classes, the python version.

Read from the batch files `data_batch_1..5`, `test_batch` and `batches.meta`, found in the
`--data-dir` or its `cifar-10-batches-py/` folder; else extracted from `cifar-10-python.tar.gz`
in that folder; else that archive is downloaded (`bench.data.downloads`; without `--data-dir`, the
cache folder plays its part). The official test batch is the test split; the 50 000 training
images are split train / val 90 / 10 (stratified, `SPLIT_SEED`). Pixels stay in [0, 1]: unlike
`cifar100`, no per-channel normalisation.

The pickled batches are read with `cifar_batches`' restricted unpickler, so a planted file cannot
run code.
"""

from __future__ import annotations

from bench.data.bundle import DatasetBundle, DatasetLoaderOptions, register_dataset
from bench.data.downloads import RemoteFile, image_bundle, official_splits
from bench.datasets.cifar_batches import (
    CifarLayout,
    find_batches,
    read_class_names,
    read_official,
)

VERSION = "official-1"
NAME = "cifar10"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH, META = "test_batch", "batches.meta"
LAYOUT = CifarLayout(
    name=NAME,
    title="CIFAR-10",
    folder=FOLDER,
    train=TRAIN_BATCHES,
    test=TEST_BATCH,
    meta=META,
    label_key="labels",
    names_key="label_names",
)
BATCH_FILES = LAYOUT.files
# MD5 as published on https://www.cs.toronto.edu/~kriz/cifar.html for the python version.
ARCHIVE = RemoteFile(
    "cifar-10-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    "c58f30108f718f92721af3b95e74349a",
)


@register_dataset(NAME, modality="image", version=VERSION)
def load(options: DatasetLoaderOptions) -> DatasetBundle:
    """CIFAR-10, 3x32x32 colour in [0, 1], 10 classes; official test batch, train split 90/10."""
    folder = find_batches(options, LAYOUT, ARCHIVE)
    splits = official_splits(*read_official(folder, LAYOUT))
    return image_bundle(NAME, VERSION, splits, read_class_names(folder / META, LAYOUT), folder)
