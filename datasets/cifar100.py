"""CIFAR-100 (Krizhevsky 2009): 60 000 colour 32x32 images of 100 classes, the python version.

Read from the files `train`, `test` and `meta`, found in the `--data-dir` or its
`cifar-100-python/` folder; else extracted from `cifar-100-python.tar.gz` in that folder; else
that archive is downloaded (`bench.data.downloads`; without `--data-dir`, the cache folder plays its
part), and read with `cifar_batches`' restricted unpickler. The labels are the 100 fine classes
(`fine_labels`, named by `meta`'s `fine_label_names`); the 20 coarse superclasses are not used.
The official test file is the test split; the 50 000 training images are split train / val
90 / 10 (stratified, `SPLIT_SEED`).

Each channel is standardised by the train split's mean and std, as the CIFAR-100 distillation
recipe that most KD papers compare on does (RepDistiller, HobbitLong/RepDistiller
`dataset/cifar100.py`, commit 107dbfc982645a8c6f0cf317676726a9c33ae951: `transforms.Normalize`
by the whole training set's (0.5071, 0.4867, 0.4408) and (0.2675, 0.2565, 0.2761)). We depart
in one respect: the statistics come from our train split only, never from val or test, as
`bench.data.bundle.standardise` does for tables, so no statistic of the images a run is selected or
scored on leaks into its inputs. They are computed, not typed in, and kept in
`extras["normalisation"]`. `cifar10` stays in [0, 1], so its version and its runs are unchanged.
"""

from __future__ import annotations

import numpy as np

from bench.data.bundle import DatasetBundle, DatasetLoaderOptions, Split, register_dataset
from bench.data.downloads import RemoteFile, image_bundle, official_splits
from bench.datasets.cifar_batches import (
    CifarLayout,
    find_batches,
    read_class_names,
    read_official,
)

VERSION = "official-1"
NAME = "cifar100"
FOLDER = "cifar-100-python"
TRAIN, TEST, META = "train", "test", "meta"
LAYOUT = CifarLayout(
    name=NAME,
    title="CIFAR-100",
    folder=FOLDER,
    train=(TRAIN,),
    test=TEST,
    meta=META,
    label_key="fine_labels",
    names_key="fine_label_names",
)
BATCH_FILES = LAYOUT.files
# MD5 of the python version as torchvision gives it (pytorch/vision torchvision/datasets/cifar.py,
# commit 00ce2d0f416bd3a3ec2aa65a6bb609f24c1b4c0c, `CIFAR100.tgz_md5`).
ARCHIVE = RemoteFile(
    "cifar-100-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
    "eb9058c3a382ffc7106e4002c42a8d85",
)


def channel_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (population) of NCHW images.

    Summed in float64: 45 000 images' sums in float32 would lose digits. One channel's deviations
    at a time, so the float64 temporary is a third of the split, not all of it.
    """
    mean = images.mean(axis=(0, 2, 3), dtype=np.float64)
    std = np.array([images[:, c].std(dtype=np.float64) for c in range(images.shape[1])])
    std[std == 0] = 1.0  # a constant channel is left centred, not divided by zero
    return mean, std


def normalise_channels(
    train: Split, *others: Split
) -> tuple[tuple[Split, ...], dict[str, list[float]]]:
    """Each split standardised per channel by the train split's statistics, and those statistics."""
    mean, std = channel_statistics(train.x)
    shift = mean.astype(np.float32)[:, None, None]
    scale = std.astype(np.float32)[:, None, None]
    splits = []
    for split in (train, *others):
        x = split.x - shift  # dividing this new array in place makes no second temporary
        x /= scale
        splits.append(Split(x, split.y))
    return tuple(splits), {"mean": mean.tolist(), "std": std.tolist()}


@register_dataset(NAME, modality="image", version=VERSION)
def load(options: DatasetLoaderOptions) -> DatasetBundle:
    """CIFAR-100, 3x32x32 colour standardised per channel, 100 classes; official test, train 90/10."""
    folder = find_batches(options, LAYOUT, ARCHIVE)
    splits, statistics = normalise_channels(*official_splits(*read_official(folder, LAYOUT)))
    names = read_class_names(folder / META, LAYOUT)
    return image_bundle(NAME, VERSION, splits, names, folder, {"normalisation": statistics})
