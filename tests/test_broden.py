"""The Broden loader reads a folder in Broden's layout and dissection runs on it."""

from __future__ import annotations

import csv
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bench.core.errors import BenchError
from bench.data.broden import BrodenProbe
from bench.data.probes import Concept
from bench.explain.dissection import dissect

N_IMAGES, IMAGE, MASK = 25, 16, 8
CATEGORIES = ("color", "object", "part", "material", "scene", "texture")
LABELS = [  # number, name, category cell as in Broden's label.csv
    (1, "red-c", "color(5)"),
    (2, "sky", "object(25)"),
    (3, "wheel", "part(3);object(1)"),
    (300, "car", "object(2)"),  # above 255: its PNG pixels need the green channel
    (400, "street", "scene(10)"),
    (401, "striped", "texture(5)"),
]


def write_png(path: Path, pixels: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), mode="RGB").save(path)
    return path.name


def label_png(numbers: np.ndarray) -> np.ndarray:
    """Broden's encoding of label numbers in a mask PNG: R + 256·G."""
    return np.stack([numbers % 256, numbers // 256, np.zeros_like(numbers)], axis=-1)


def write_broden(root: Path) -> None:
    """25 images: sky on every top half; a 2x2 car in images 0-1; more labels here and there."""
    rng = np.random.default_rng(0)
    images = root / "images"
    rows = []
    for i in range(N_IMAGES):
        car = np.zeros((MASK, MASK), dtype=np.int64)
        if i < 2:
            car[3:5, 3:5] = 1
        pixels = np.zeros((IMAGE, IMAGE, 3))
        pixels[:, :, 0] = 255 * np.kron(car, np.ones((2, 2)))
        pixels[:, :, 1] = rng.integers(0, 256, size=(IMAGE, IMAGE))
        pixels[:, :, 2] = 128
        objects = np.zeros((MASK, MASK), dtype=np.int64)
        objects[: MASK // 2] = 2
        objects[car == 1] = 300
        cells = {c: "" for c in CATEGORIES}
        cells["object"] = write_png(images / f"{i}_object.png", label_png(objects))
        if i == 3:  # two object layers: the second one labels a wheel as an object
            second = np.where(np.arange(MASK)[None, :] < 2, 3, 0).repeat(MASK, 0)
            second_name = write_png(images / f"{i}_object_2.png", label_png(second))
            cells["object"] += ";" + second_name
        if 5 <= i < 10:
            wheel = np.zeros((MASK, MASK), dtype=np.int64)
            wheel[6:, :2] = 3
            cells["part"] = write_png(images / f"{i}_part.png", label_png(wheel))
        if i % 5 == 0:
            cells["color"] = write_png(images / f"{i}_color.png", label_png(np.ones((MASK, MASK))))
        if i < 10:
            cells["scene"] = "400"
        if i >= 20:
            cells["texture"] = "401"
        image = write_png(images / f"{i}.png", pixels)
        split = "train" if i < 20 else "val"
        rows.append(
            {
                "image": image,
                "split": split,
                "ih": IMAGE,
                "iw": IMAGE,
                "sh": MASK,
                "sw": MASK,
                **cells,
            }
        )
    with (root / "index.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["image", "split", "ih", "iw", "sh", "sw", *CATEGORIES])
        writer.writeheader()
        writer.writerows(rows)
    with (root / "category.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "first", "last", "count", "frequency"])
        writer.writerows([c, 0, 0, 0, 0] for c in CATEGORIES)
    with (root / "label.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        writer.writerow([0, "-", "", 0, 0, ""])
        writer.writerows([n, name, cell, 1, 1.0, ""] for n, name, cell in LABELS)


@pytest.fixture(scope="module")
def broden(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("broden")
    write_broden(root)
    return root


def test_labels_are_filed_under_their_main_category(broden):
    probe = BrodenProbe(broden)
    assert probe.categories == CATEGORIES
    assert probe.concepts == (
        Concept("color", "red-c"),
        Concept("object", "sky"),
        Concept("object", "car"),
        Concept("part", "wheel"),
        Concept("scene", "street"),
        Concept("texture", "striped"),
    )
    assert len(probe) == N_IMAGES
    assert probe.mask_shape == (MASK, MASK)
    assert probe.version.startswith("broden:")


def test_batches_decode_masks_and_whole_image_labels(broden):
    probe = BrodenProbe(broden)
    index = {c.name: i for i, c in enumerate(probe.concepts)}
    batches = list(probe.batches(10))
    assert [len(b.images) for b in batches] == [10, 10, 5]
    first = batches[0]
    assert first.images.shape == (10, 3, IMAGE, IMAGE) and first.images.dtype == np.float32
    assert first.images.max() <= 1.0
    image0 = first.labels[0]
    assert (image0 == index["car"]).sum() == 4  # R=44, G=1 decodes to 300
    assert (image0 == index["sky"]).sum() == MASK * MASK // 2 - 2  # the car covers 2 sky pixels
    assert np.all((image0 == index["street"]).any(0))  # a scene labels the whole image
    assert np.all((image0 == index["red-c"]).any(0))
    assert (first.labels[3] == index["wheel"]).sum() == 2 * MASK  # from its 2nd object layer
    assert first.annotated[0].tolist() == [True, True, False, False, True, False]
    assert first.annotated[5, CATEGORIES.index("part")]
    assert batches[2].annotated[:, CATEGORIES.index("texture")].all()


def test_dissection_finds_a_planted_car_unit_in_the_broden_probe(broden):
    probe = BrodenProbe(broden)
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0  # the channel that paints the car
        conv.weight[1, 2] = 1.0  # a constant: a dead unit, all ties at its threshold
    model = nn.Sequential(OrderedDict(pool=nn.AvgPool2d(2), features=conv))
    result = dissect(model, probe, layer="features", batch_size=6)
    car = probe.concepts.index(Concept("object", "car"))
    assert result.best_concept[0] == car
    assert result.iou[0, car] == pytest.approx(1.0)
    assert result.best_iou[1] == 0.0 and not result.is_detector[1]
    assert result.detectors_per_category["object"] == 1
    assert result.settings.probe_version == probe.version


def test_split_size_and_category_selection(broden):
    val = BrodenProbe(broden, split="val", image_size=(8, 8), categories=["object", "texture"])
    assert len(val) == 5
    assert val.categories == ("object", "texture")
    assert Concept("scene", "street") not in val.concepts
    batch = next(val.batches(5))
    assert batch.images.shape == (5, 3, 8, 8)
    assert batch.annotated.all()


def test_bad_folders_say_what_is_wrong(broden, tmp_path):
    with pytest.raises(BenchError, match="no index.csv"):
        BrodenProbe(tmp_path)
    with pytest.raises(BenchError, match="no categories \\['shape'\\]; valid"):
        BrodenProbe(broden, categories=["shape"])
    (tmp_path / "index.csv").write_text("image,split\nx.png,train\n")
    with pytest.raises(BenchError, match="lacks the columns"):
        BrodenProbe(tmp_path)
