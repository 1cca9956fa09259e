"""concept_shapes: deterministic, stratified, and its masks agree with what the pixels show.

Object parts (procedural-3) are checked on hand-placed shapes, where a corner, a rim or a hub is
known, and on generated scenes, where every visible object pixel has exactly one part of its shape.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.bundle import DATASETS, DatasetLoaderOptions
from bench.datasets.concept_shapes import (
    BACKGROUNDS,
    CLASS_NAMES,
    COLOURS,
    CONCEPT_NAMES,
    DARK,
    N_PROBE,
    PALETTE,
    PARTS,
    PROBE_QUANTILE,
    SHAPES,
    VERSION,
    _shape_parts,
    generate_scenes,
    make_probe,
    save_sample_grid,
)

JITTER = 0.06  # per-channel colour jitter of an object


@pytest.fixture(scope="module")
def bundle():
    return DATASETS.get("concept_shapes").load(DatasetLoaderOptions())


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes(300, 11)


def test_dataset_is_the_same_arrays_every_time(bundle):
    again = DATASETS.get("concept_shapes").load(DatasetLoaderOptions())
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(bundle, name).x, getattr(again, name).x)
        np.testing.assert_array_equal(getattr(bundle, name).y, getattr(again, name).y)
    np.testing.assert_array_equal(bundle.test_masks, again.test_masks)
    probe, probe_again = bundle.extras["concept_probe"], again.extras["concept_probe"]
    np.testing.assert_array_equal(probe.images, probe_again.images)
    for category in CONCEPT_NAMES:
        np.testing.assert_array_equal(probe.label_maps[category], probe_again.label_maps[category])
    other = generate_scenes(20, 12)
    assert not np.array_equal(other.images, generate_scenes(20, 11).images)


def test_bundle_shapes_sizes_and_every_class_in_every_split(bundle):
    assert bundle.version == VERSION
    assert bundle.sizes() == {"train": 3000, "val": 600, "test": 600}
    assert bundle.input_shape == (3, 32, 32)
    assert bundle.class_names == CLASS_NAMES and len(CLASS_NAMES) == 16
    assert "red circle" in CLASS_NAMES
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.dtype == np.float32
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
        counts = np.bincount(split.y, minlength=16)
        assert counts.min() > 0
        # balanced classes, split with stratification: within 10 % of each other in every split
        assert counts.max() <= 1.1 * counts.min()
    assert bundle.test_masks.shape == (600, 32, 32) and bundle.test_masks.dtype == bool
    assert bundle.test_masks.sum(axis=(1, 2)).min() > 0


def test_probe_is_separate_and_fully_annotated(bundle):
    probe = bundle.extras["concept_probe"]
    assert len(probe) == N_PROBE and probe.images.shape == (N_PROBE, 3, 32, 32)
    assert probe.categories == ("shape", "part", "colour", "texture", "background")
    assert len(probe.concepts) == 4 + 11 + 4 + 4 + 8
    assert "probe" in probe.version and VERSION in probe.version
    assert probe.quantile == PROBE_QUANTILE
    assert not any(np.array_equal(probe.images[0], x) for x in bundle.test.x[:50])
    batch = next(probe.batches(8))
    assert batch.labels.shape == (8, 5, 32, 32)
    # every pixel is either an object (shape, part, colour, texture) or background, never both
    has_object = batch.labels[:, :4] >= 0
    assert np.all(has_object.all(1) | ~has_object.any(1))
    assert np.all(has_object[:, 0] != (batch.labels[:, 4] >= 0))
    assert batch.labels.max() < len(probe.concepts)
    # each layer uses its own category's concept indices
    for layer, category in enumerate(probe.categories):
        present = np.unique(batch.labels[:, layer])
        assert {probe.concepts[i].category for i in present if i >= 0} <= {category}


def nearest_colour(pixels: np.ndarray) -> np.ndarray:
    """Palette index of (M, 3) object pixels after undoing a texture's darkening."""
    scaled = pixels / pixels.max(axis=1, keepdims=True)
    reference = PALETTE / PALETTE.max(axis=1, keepdims=True)
    return np.argmin(((scaled[:, None, :] - reference[None]) ** 2).sum(-1), axis=1)


def test_label_object_pixels_have_the_label_colour_and_shape(bundle):
    probe_like = generate_scenes(200, 3)
    for images, labels, masks in (
        (bundle.test.x, bundle.test.y, bundle.test_masks),
        (probe_like.images, probe_like.labels, probe_like.label_masks),
    ):
        pixels = images.transpose(0, 2, 3, 1)[masks]
        label_of_pixel = np.repeat(labels, masks.sum(axis=(1, 2)))
        assert np.all(nearest_colour(pixels) == label_of_pixel % len(COLOURS))
    shape_at = probe_like.label_maps["shape"][probe_like.label_masks]
    colour_at = probe_like.label_maps["colour"][probe_like.label_masks]
    label_of_pixel = np.repeat(probe_like.labels, probe_like.label_masks.sum(axis=(1, 2)))
    assert np.all(shape_at == label_of_pixel // len(COLOURS))
    assert np.all(colour_at == label_of_pixel % len(COLOURS))


def test_masks_show_what_is_visible_after_occlusion(scenes):
    objects = scenes.object_map >= 0
    pixels = scenes.images.transpose(0, 2, 3, 1)
    # every visible object pixel has the colour its (topmost) object's mask says
    assert np.all(nearest_colour(pixels[objects]) == scenes.label_maps["colour"][objects])
    # and it is the palette colour, either plain or darkened by its texture
    colour = PALETTE[scenes.label_maps["colour"][objects]]
    bright = np.abs(pixels[objects] - colour).max(1) <= JITTER + 1e-6
    dark = np.abs(pixels[objects] - DARK * colour).max(1) <= DARK * JITTER + 1e-6
    assert np.all(bright | dark)
    plain = scenes.label_maps["texture"][objects] == CONCEPT_NAMES["texture"].index("plain")
    assert np.all(bright[plain])
    assert dark[~plain].mean() > 0.1  # textures really darken part of an object
    # some objects are partly hidden: in those images, fewer pixels than the others carry a label
    visible = np.stack([(scenes.object_map == j).sum((1, 2)) for j in range(3)], axis=1)
    assert np.all(visible.max(1) == scenes.label_masks.sum((1, 2)))
    assert (visible.min(1) == 0).any() and (visible > 0).sum() > len(scenes.labels)


def test_every_concept_occurs_and_backgrounds_are_textured(scenes):
    for category, names in CONCEPT_NAMES.items():
        present = np.unique(scenes.label_maps[category])
        assert set(range(len(names))) <= set(present.tolist()), category
    background = scenes.label_maps["background"]
    grey = scenes.images.mean(axis=1)
    spread = {}
    for kind, name in enumerate(BACKGROUNDS):
        values = [grey[i][background[i] == kind] for i in range(len(grey))]
        spread[name] = np.mean([v.std() for v in values if v.size > 100])
    assert spread["plain"] < 0.03
    for name in BACKGROUNDS[1:]:
        assert spread[name] > 0.06, name
    assert len(SHAPES) >= 4


def test_sample_grid_is_a_small_png(tmp_path):
    path = save_sample_grid(tmp_path / "grid.png", n=6)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size < 200_000


def test_probe_size_changes_its_version():
    assert make_probe(10).version != make_probe(N_PROBE).version
    assert VERSION == "procedural-3"  # parts and the probe's quantile: new caches and run ids


def frame(side: int = 33) -> tuple[np.ndarray, np.ndarray]:
    """Object-frame coordinates (u, v) of a side x side grid centred on 0, one image."""
    axis = np.arange(side, dtype=np.float32) - side // 2
    return axis[None, None, :], axis[None, :, None]


def part_at(shape: str, size: float, u: float, v: float) -> str | None:
    grid_u, grid_v = frame()
    parts = _shape_parts(
        np.array([SHAPES.index(shape)]), grid_u, grid_v, np.array([size], dtype=np.float32)
    )[0]
    index = parts[int(v) + 16, int(u) + 16]
    return None if index < 0 else PARTS[index]


@pytest.mark.parametrize(
    ("shape", "u", "v", "part"),
    [
        ("circle", 0, 0, "circle centre"),
        ("circle", 8, 0, "circle rim"),  # radius 16/sqrt(pi) = 9.0
        ("circle", 0, -8, "circle rim"),
        ("circle", 10, 0, None),
        ("square", 0, 0, "square centre"),
        ("square", 7, 7, "square corner"),  # half side 8
        ("square", -7, 7, "square corner"),
        ("square", 7, 0, "square side"),
        ("square", 0, -7, "square side"),
        ("square", 9, 0, None),
        ("triangle", 0, 0, "triangle centre"),
        ("triangle", 0, 12, "triangle corner"),  # circumradius 14.0: a vertex at (0, 14.0)
        ("triangle", -11, -6, "triangle corner"),  # another at (-12.2, -7.0)
        ("triangle", 0, -6, "triangle side"),  # the edge opposite the first vertex: v = -7.0
        ("triangle", 0, -8, None),
        ("cross", 0, 0, "cross hub"),
        ("cross", 10, 0, "cross tip"),
        ("cross", 0, -10, "cross tip"),
        ("cross", 0, -6, "cross arm"),
        ("cross", 6, 6, None),  # between two arms
    ],
)
def test_parts_are_where_a_reader_would_put_them(shape, u, v, part):
    # Size 16 (area 256), unrotated. A cross's arms reach 10.7 from its centre and are 3.6 wide
    # on each side; its tips are each arm's last 2.7 pixels, its hub the central 7.2 x 7.2.
    assert part_at(shape, 16.0, u, v) == part


def test_every_visible_object_pixel_has_one_part_of_its_own_shape(scenes):
    parts = scenes.label_maps["part"]
    objects = scenes.object_map >= 0
    assert np.all((parts >= 0) == objects)  # parts follow occlusion exactly as shapes do
    shape_of_part = np.array([SHAPES.index(name.split()[0]) for name in PARTS])
    assert np.all(shape_of_part[parts[objects]] == scenes.label_maps["shape"][objects])
    # every part occurs, and no part is a sliver or most of its shape
    for index, name in enumerate(PARTS):
        shape = SHAPES.index(name.split()[0])
        share = (parts == index).sum() / (scenes.label_maps["shape"] == shape).sum()
        assert 0.15 < share < 0.6, (name, share)


def test_generation_is_deterministic_with_parts():
    first, again = generate_scenes(40, 9), generate_scenes(40, 9)
    for category in CONCEPT_NAMES:
        np.testing.assert_array_equal(first.label_maps[category], again.label_maps[category])
