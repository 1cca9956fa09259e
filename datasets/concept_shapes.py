"""concept_shapes: procedural 3x32x32 scenes of one to three textured shapes, with concept masks.

The label is the (colour, shape) of the largest visible object, e.g. "red circle": 4 shapes x 4
colours = 16 classes that share concepts, so a teacher's soft labels carry class similarity (the
effect Han et al. 2023 study). Every pixel is annotated with the shape, part, colour and texture of
the object that covers it, or with the kind of background it shows, which makes the set its own
network-dissection probe (DESIGN §7; Bau et al. 2017). Generation is vectorised over images with
numpy and seeded by the dataset, never by the run.

Concepts that no class is defined by: textures (on objects), backgrounds, and object parts
(procedural-3): shape-specific regions laid out in each object's own frame (a circle's rim and
centre; a square's or triangle's corners, sides and centre; a cross's tips, arms and hub), the
same part whatever the object's size or rotation, and only where it stays visible.

Why parts, and why this probe dissects at the top 1 % of a unit's activations rather than
NetDissect's 0.5 %: a unit whose binarised maps cover a share a of the probe's pixels reaches IoU
a / c at most with a concept covering c > a. At 0.5 % the students' 4x4 last-block maps, once
upsampled, cover a = 0.26 % (teacher's 8x8: 0.30 %), while procedural-2's 20 concepts each
covered 5.2-9.6 % (median 6.5 %): the median unit's ceiling was 0.04-0.05, the backgrounds' 0.028,
and detector counts were crossings of the threshold by a crowd of units just around it. Measured
on procedural-3's 1 000-image probe with the default profile's seed-0 networks (teacher, scratch,
kd, label smoothing):

- concept areas: parts 1.2-3.3 %, shapes, colours and textures 5.8-6.7 %, backgrounds 9.4 %
  (median over the 31 concepts 6.2 %);
- unit areas at the 1 % quantile: 0.60-0.64 % for students, 0.70 % for the teacher (0.30-0.34 %
  for randomly initialised ones), so the median concept is 9-10 times a unit (parts 2-5 times),
  every concept's IoU ceiling is at least 0.066 (backgrounds) and the median concept's about 0.1;
- the threshold still means selectivity: for a unit that only tells objects from background
  (its pixels spread over objects and background in proportion), the best IoU is 0.016-0.022
  (median), 0.027 at most, so it is no detector at 0.04; at a 2 % quantile it would reach 0.049
  and 37 of the teacher's 64 units would "detect" a concept on figure and ground alone, which
  is why the quantile is not larger.

Mean best IoU over units (1 % quantile): teacher 0.092, kd 0.080, label smoothing 0.068, scratch
0.064; random initialisation 0.010 (student) and 0.024 (teacher).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from bench.data.bundle import (
    SPLIT_SEED,
    DatasetBundle,
    DatasetLoaderOptions,
    Split,
    register_dataset,
)
from bench.data.probes import ConceptProbe

# procedural-3: the same pixels as procedural-2, with object parts annotated and a larger probe
# dissected at its own quantile (the module docstring says why).
VERSION = "procedural-3"
SIZE = 32
N_TRAIN, N_VAL, N_TEST = 3000, 600, 600
# 1 000 images: at 500, the detector count of one student moved by up to 6 of 128 units between
# probes drawn with other seeds; mean best IoU by 0.003.
N_PROBE = 1000
PROBE_VERSION = f"concept_shapes-{VERSION}-probe{N_PROBE}"
# The top quantile of a unit's activations that dissection binarises on this probe (NetDissect
# uses 0.005 on Broden): the largest at which unit and concept areas are commensurate and a unit
# that only tells objects from background stays below IoU 0.04 (module docstring).
PROBE_QUANTILE = 0.01
# The dataset's own seed: the labelled pool and the probe draw from separate streams of it.
DATASET_SEED = 20230
POOL_STREAM, PROBE_STREAM = 0, 1

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow")
TEXTURES = ("plain", "stripes", "checker", "dots")
# Background kind -> scikit-image sample image it is cropped from.
TEXTURE_SOURCES = {
    "brick": "brick",
    "grass": "grass",
    "gravel": "gravel",
    "page": "page",
    "stars": "hubble_deep_field",
    "coins": "coins",
}
# Real textures are crops of scikit-image's bundled sample images (no download). Eight kinds keep
# each kind's share of the probe's pixels near 9.4 %, so that a unit confined to one background
# kind can reach an IoU of 0.066 at the probe's quantile (module docstring).
BACKGROUNDS = ("plain", "noise", *TEXTURE_SOURCES)
PARTS = (
    "circle rim",
    "circle centre",
    "square corner",
    "square side",
    "square centre",
    "triangle corner",
    "triangle side",
    "triangle centre",
    "cross tip",
    "cross arm",
    "cross hub",
)
PART = {name: np.int8(i) for i, name in enumerate(PARTS)}
# Part geometry, relative to the object so that a part is the same region at every size; chosen so
# that each part holds 20-55 % of its shape's pixels (1.2-3.3 % of the probe's).
RIM = 0.15  # depth of a rim or side band, as a share of the object's size (sqrt of its area)
CORNER = 0.28  # radius of a corner, as a share of the shape's side
TIP = 0.75  # length of a cross's tip, as a share of its arm's half-width
CONCEPT_NAMES = {
    "shape": SHAPES,
    "part": PARTS,
    "colour": COLOURS,
    "texture": TEXTURES,
    "background": BACKGROUNDS,
}
CLASS_NAMES = tuple(f"{colour} {shape}" for shape in SHAPES for colour in COLOURS)
PALETTE = np.array(
    [[0.90, 0.12, 0.12], [0.12, 0.78, 0.18], [0.15, 0.30, 0.95], [0.95, 0.88, 0.12]],
    dtype=np.float32,
)
MAX_OBJECTS = 3
# Objects are sized by the square root of their area, so that no shape is "largest" by nature.
MAIN_SIZE = (12.0, 17.0)
DISTRACTOR_SIZE = (6.0, 10.0)
DARK = 0.45  # brightness of the dark part of a texture


@dataclass(frozen=True, eq=False)
class Scenes:
    """Generated images with their per-pixel annotations.

    `label_maps[category]` is (N, 32, 32) int8 holding the category-local concept id of each pixel
    (-1 where the category does not apply: no object there, or for `background`, an object there).
    `object_map` is the visible object's slot (-1: background); `label_masks` the visible pixels of
    each image's label-defining object.
    """

    images: np.ndarray
    label_maps: dict[str, np.ndarray]
    object_map: np.ndarray
    labels: np.ndarray
    label_masks: np.ndarray


CLASS_ATTRIBUTES = np.array(
    [(shape, colour) for shape in range(len(SHAPES)) for colour in range(len(COLOURS))]
)


def class_index(shape: int | np.ndarray, colour: int | np.ndarray) -> int | np.ndarray:
    return shape * len(COLOURS) + colour


@functools.cache
def _texture_sources() -> tuple[np.ndarray, np.ndarray]:
    """The real textures as one zero-padded (k, H, W) float32 stack in [0, 1], and their sizes.

    Crops are drawn within each image's own (height, width), so the padding is never seen.
    """
    import skimage.data

    images = []
    for name in TEXTURE_SOURCES.values():
        image = getattr(skimage.data, name)().astype(np.float32) / np.float32(255)
        if image.ndim == 3:  # colour photographs become grey by luminance
            image = image[..., :3] @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
        images.append(image)
    sizes = np.array([image.shape for image in images])
    stack = np.zeros((len(images), *sizes.max(axis=0)), dtype=np.float32)
    for k, image in enumerate(images):
        stack[k, : image.shape[0], : image.shape[1]] = image
    return stack, sizes


def _backgrounds(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Background images (n, 3, S, S) and their kind (n,), balanced over the kinds.

    Every random draw is made for every image whatever its kind, so that the stream, and thus every
    image, only depends on the seed and n.
    """
    kinds = rng.permutation(np.arange(n) % len(BACKGROUNDS))
    grey = rng.uniform(0.3, 0.7, size=(n, 1, 1, 1)).astype(np.float32)
    tint = rng.uniform(-0.04, 0.04, size=(n, 3, 1, 1)).astype(np.float32)
    noise = rng.uniform(-0.22, 0.22, size=(n, 1, SIZE, SIZE)).astype(np.float32)
    channel_noise = rng.uniform(-0.04, 0.04, size=(n, 3, SIZE, SIZE)).astype(np.float32)
    contrast = rng.uniform(0.12, 0.2, size=(n, 1, 1, 1)).astype(np.float32)
    # Crops of 2S x 2S pixels averaged down to S x S keep a texture's grain visible at 32 px.
    sources, sizes = _texture_sources()
    crop = 2 * SIZE
    first = BACKGROUNDS.index(next(iter(TEXTURE_SOURCES)))
    source = np.clip(kinds - first, 0, len(TEXTURE_SOURCES) - 1)
    where = rng.random((n, 2))
    oy, ox = (np.floor(where[:, i] * (sizes[source, i] - crop + 1)).astype(int) for i in (0, 1))
    steps = np.arange(crop)
    patches = sources[
        source[:, None, None], oy[:, None, None] + steps[None, :, None], ox[:, None, None] + steps
    ]
    patches = patches.reshape(n, SIZE, 2, SIZE, 2).mean(axis=(2, 4))[:, None]
    mean = patches.mean(axis=(2, 3), keepdims=True)
    std = patches.std(axis=(2, 3), keepdims=True) + 1e-6
    textured = grey + contrast * (patches - mean) / std

    kind = kinds[:, None, None, None]
    out = np.where(kind == BACKGROUNDS.index("plain"), grey, textured)
    out = np.where(kind == BACKGROUNDS.index("noise"), grey + noise + channel_noise, out)
    return np.clip(out + tint, 0.0, 1.0), kinds


def _shape_parts(shape: np.ndarray, u: np.ndarray, v: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Index into PARTS of each object-frame point (u, v) of each image's shape, or -1 outside it.

    Shapes have area size**2. Parts are laid out in the object's own frame relative to its size,
    so a part is the same region of a shape whatever its scale or rotation; occlusion is the
    caller's (it keeps only what stays visible). The inside tests are the ones the images were
    painted with since procedural-2, so the pixels are unchanged.
    """
    s = size[:, None, None]
    kind = shape[:, None, None]
    u, v = np.broadcast_arrays(u, v)
    out = np.full(np.broadcast_shapes(u.shape, s.shape), -1, dtype=np.int8)
    au, av = np.abs(u), np.abs(v)

    # Circle of radius R: a rim band RIM·s deep, the centre inside it.
    r_circle = s / np.sqrt(np.pi)
    circle = u**2 + v**2 <= r_circle**2
    circle_part = np.where(
        u**2 + v**2 > (r_circle - RIM * s) ** 2, PART["circle rim"], PART["circle centre"]
    )

    # Square of side s: corners (within CORNER·side of a vertex), sides (the rim band), centre.
    half = s / 2
    square = (au <= half) & (av <= half)
    square_part = np.select(
        [
            (half - au) ** 2 + (half - av) ** 2 < (CORNER * s) ** 2,
            np.maximum(au, av) > half - RIM * s,
        ],
        [PART["square corner"], PART["square side"]],
        PART["square centre"],
    )

    # Equilateral triangle of circumradius R (area 3·sqrt(3)/4·R²): three half-planes at R/2;
    # the vertex opposite each edge lies at distance R against that edge's normal.
    r_tri = s / np.sqrt(3 * np.sqrt(3) / 4)
    triangle = np.ones_like(circle)
    depth = vertex = None
    for k in range(3):
        phi = -np.pi / 2 + 2 * np.pi * k / 3
        along = u * np.cos(phi) + v * np.sin(phi)
        triangle &= along <= r_tri / 2
        to_vertex = (u + r_tri * np.cos(phi)) ** 2 + (v + r_tri * np.sin(phi)) ** 2
        depth = along if depth is None else np.maximum(depth, along)
        vertex = to_vertex if vertex is None else np.minimum(vertex, to_vertex)
    triangle_part = np.select(
        [vertex < (CORNER * np.sqrt(3) * r_tri) ** 2, depth > r_tri / 2 - RIM * s],
        [PART["triangle corner"], PART["triangle side"]],
        PART["triangle centre"],
    )

    # A plus sign of arm length L and width L/3 has area 5/9·L²: tips (each arm's last TIP·L/3),
    # the hub where the arms cross, and the arms between them.
    arm = s / np.sqrt(5 / 9) / 2
    width = arm / 3
    cross = ((au <= arm) & (av <= width)) | ((au <= width) & (av <= arm))
    cross_part = np.select(
        [(au <= width) & (av <= width), np.maximum(au, av) > arm - TIP * width],
        [PART["cross hub"], PART["cross tip"]],
        PART["cross arm"],
    )

    shapes = ((circle, circle_part), (square, square_part), (triangle, triangle_part))
    for index, (inside, part) in enumerate((*shapes, (cross, cross_part))):
        chosen = (kind == index) & inside
        out[chosen] = part[chosen]
    return out


def _texture_factor(texture: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Brightness factor (1 or DARK) of each pixel of a texture drawn in the object's frame."""
    # Integer parity and floor-based remainders: much cheaper than float `%` on every pixel.
    cell_u = np.floor(u / 2).astype(np.int32)
    cell_v = np.floor(v / 2).astype(np.int32)
    stripes = (cell_u & 1).astype(bool)
    checker = ((cell_u + cell_v) & 1).astype(bool)
    du = u - 5 * np.floor(u / 5) - 2.5
    dv = v - 5 * np.floor(v / 5) - 2.5
    dots = du * du + dv * dv <= 1.4**2
    kind = texture[:, None, None]
    dark = np.select([kind == 1, kind == 2, kind == 3], [stripes, checker, dots], False)
    return np.where(dark, np.float32(DARK), np.float32(1.0))


def generate_scenes(n: int, seed: int | Sequence[int]) -> Scenes:
    """Draw n scenes from a seeded numpy Generator; the same seed and n give the same arrays.

    The first object's (shape, colour) cycles through the classes and it is drawn larger than the
    others, so classes are balanced; the label is still read off the painted image (the object with
    the most visible pixels) in case occlusion made another object the largest.
    """
    rng = np.random.default_rng(seed)
    images, background_kind = _backgrounds(rng, n)

    main_class = rng.permutation(np.arange(n) % len(CLASS_NAMES))
    n_objects = rng.integers(1, MAX_OBJECTS + 1, size=n)
    active = np.arange(MAX_OBJECTS)[None, :] < n_objects[:, None]
    shape = rng.integers(0, len(SHAPES), size=(n, MAX_OBJECTS))
    colour = rng.integers(0, len(COLOURS), size=(n, MAX_OBJECTS))
    shape[:, 0], colour[:, 0] = main_class // len(COLOURS), main_class % len(COLOURS)
    texture = rng.integers(0, len(TEXTURES), size=(n, MAX_OBJECTS))
    size = rng.uniform(*DISTRACTOR_SIZE, size=(n, MAX_OBJECTS))
    size[:, 0] = rng.uniform(*MAIN_SIZE, size=n)
    centre = rng.uniform(4, SIZE - 4, size=(n, MAX_OBJECTS, 2))
    centre[:, 0] = rng.uniform(10, SIZE - 10, size=(n, 2))
    angle = rng.uniform(0, 2 * np.pi, size=(n, MAX_OBJECTS))
    rgb = PALETTE[colour] + rng.uniform(-0.06, 0.06, size=(n, MAX_OBJECTS, 3)).astype(np.float32)
    phase = rng.uniform(0, 5, size=(n, MAX_OBJECTS, 2))
    # Painting order is random: later objects cover earlier ones.
    order = np.argsort(rng.random((n, MAX_OBJECTS)), axis=1)

    maps = {
        c: np.full((n, SIZE, SIZE), -1, dtype=np.int8)
        for c in ("shape", "part", "colour", "texture")
    }
    object_map = np.full((n, SIZE, SIZE), -1, dtype=np.int8)
    # float32 geometry: the per-pixel tests below dominate the generation time.
    pixel = np.arange(SIZE, dtype=np.float32) + np.float32(0.5)
    rows = np.arange(n)
    for step in range(MAX_OBJECTS):
        slot = order[:, step]
        cy, cx = centre[rows, slot].T.astype(np.float32)
        cos = np.cos(angle[rows, slot]).astype(np.float32)
        sin = np.sin(angle[rows, slot]).astype(np.float32)
        dx = pixel[None, None, :] - cx[:, None, None]
        dy = pixel[None, :, None] - cy[:, None, None]
        u = dx * cos[:, None, None] + dy * sin[:, None, None]
        v = -dx * sin[:, None, None] + dy * cos[:, None, None]
        part = _shape_parts(shape[rows, slot], u, v, size[rows, slot].astype(np.float32))
        mask = (part >= 0) & active[rows, slot][:, None, None]
        shift = phase[rows, slot].astype(np.float32)
        factor = _texture_factor(
            texture[rows, slot], u + shift[:, 0, None, None], v + shift[:, 1, None, None]
        )
        painted = rgb[rows, slot][:, :, None, None] * factor[:, None]
        images = np.where(mask[:, None], painted, images)
        for category, values in (("shape", shape), ("colour", colour), ("texture", texture)):
            maps[category][mask] = np.broadcast_to(values[rows, slot][:, None, None], mask.shape)[
                mask
            ]
        object_map[mask] = np.broadcast_to(slot[:, None, None], mask.shape)[mask]
        maps["part"][mask] = part[mask]

    maps["background"] = np.where(object_map < 0, background_kind[:, None, None], -1).astype(
        np.int8
    )
    visible = (object_map[:, None] == np.arange(MAX_OBJECTS)[None, :, None, None]).sum((2, 3))
    label_slot = visible.argmax(axis=1)
    labels = class_index(shape[rows, label_slot], colour[rows, label_slot]).astype(np.int64)
    return Scenes(
        images=np.clip(images, 0.0, 1.0).astype(np.float32),
        label_maps={c: maps[c] for c in CONCEPT_NAMES},
        object_map=object_map,
        labels=labels,
        label_masks=object_map == label_slot[:, None, None],
    )


def make_probe(n: int = N_PROBE) -> ConceptProbe:
    """The dissection probe: scenes from the probe's own stream, with every concept annotated."""
    scenes = generate_scenes(n, (DATASET_SEED, PROBE_STREAM))
    version = PROBE_VERSION if n == N_PROBE else f"concept_shapes-{VERSION}-probe{n}"
    return ConceptProbe(
        images=scenes.images,
        label_maps=scenes.label_maps,
        concept_names=dict(CONCEPT_NAMES),
        version=version,
        quantile=PROBE_QUANTILE,
    )


def _stratified_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=N_TEST, stratify=labels, random_state=SPLIT_SEED)
    train, val = train_test_split(
        rest, test_size=N_VAL, stratify=labels[rest], random_state=SPLIT_SEED
    )
    return train, val, test


@register_dataset("concept_shapes", modality="image", version=VERSION)
def load(options: DatasetLoaderOptions) -> DatasetBundle:
    """Procedural 3x32x32 scenes of 1-3 textured shapes, 16 (colour, shape) classes, concept masks."""
    scenes = generate_scenes(N_TRAIN + N_VAL + N_TEST, (DATASET_SEED, POOL_STREAM))
    train, val, test = _stratified_indices(scenes.labels)
    return DatasetBundle(
        name="concept_shapes",
        version=VERSION,
        modality="image",
        train=Split(scenes.images[train], scenes.labels[train]),
        val=Split(scenes.images[val], scenes.labels[val]),
        test=Split(scenes.images[test], scenes.labels[test]),
        class_names=CLASS_NAMES,
        test_masks=scenes.label_masks[test],
        # Each class's (shape, colour): which classes are alike, the structure a teacher's soft
        # labels can carry (kd's manipulation check, `bench.train.soft_labels`).
        extras={"concept_probe": make_probe(), "class_attributes": CLASS_ATTRIBUTES},
    )


def save_sample_grid(path: str | Path, n: int = 12) -> Path:
    """Write a PNG of n probe scenes above the masks of their label objects, titled by class.

    For the README: a reader sees at a glance what the classes, textures and backgrounds look like
    and that the masks follow occlusion.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = generate_scenes(n, (DATASET_SEED, PROBE_STREAM))
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.6), dpi=80)
    for i in range(n):
        axes[0, i].imshow(scenes.images[i].transpose(1, 2, 0), interpolation="nearest")
        axes[0, i].set_title(CLASS_NAMES[scenes.labels[i]].replace(" ", "\n"), fontsize=7)
        background = BACKGROUNDS[scenes.label_maps["background"][i].max()]
        axes[1, i].imshow(scenes.label_masks[i], cmap="gray", interpolation="nearest")
        axes[1, i].set_xlabel(f"bg: {background}", fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
