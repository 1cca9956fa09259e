"""Handwritten digits as 1x8x8 images (1797 of them, 10 classes), from scikit-learn's bundled files."""

import numpy as np
from sklearn.datasets import load_digits

from bench.data.bundle import (
    DatasetBundle,
    DatasetLoaderOptions,
    register_dataset,
    stratified_splits,
)

VERSION = "sklearn-1"


@register_dataset("digits", modality="image", version=VERSION)
def load(options: DatasetLoaderOptions) -> DatasetBundle:
    """Optical digits, 1x8x8 grey images scaled to [0, 1], 10 classes, no network needed."""
    raw = load_digits()
    # Pixels count the set bits (0..16) of a 4x4 block of the original bitmap.
    images = (raw.images / 16.0).astype(np.float32)[:, None, :, :]
    train, val, test = stratified_splits(images, raw.target)
    return DatasetBundle(
        name="digits",
        version=VERSION,
        modality="image",
        train=train,
        val=val,
        test=test,
        class_names=tuple(str(c) for c in raw.target_names),
    )
