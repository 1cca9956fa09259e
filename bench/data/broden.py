"""A local Broden folder as a dissection probe: the real-image probe for natural-image models.

Broden (Bau et al. 2017) merges ADE20K, Pascal-Context, Pascal-Part, OpenSurfaces, DTD and a colour
set into one densely labelled image set. Its folder layout, as NetDissect reads it:

- `index.csv`: one row per image with columns `image, split, ih, iw, sh, sw` (image path under
  `images/`, split, image size, segmentation size) and one column per category (`color, object,
  part, material, scene, texture`). A category cell lists ';'-separated entries: a relative path
  (under `images/`) of a PNG whose pixels encode label numbers as R + 256·G (0: unlabelled), or a
  plain integer, a label for the whole image (scenes, textures).
- `label.csv`: `number, name, category, ...`; `category` reads like `color(12);object(3)`, the
  categories a label occurs in with their counts.
- `category.csv`: `name, ...`, the categories in order.

Each label becomes one concept, filed under the category it occurs in most (NetDissect files it
by pixel coverage; the counts in label.csv are what the index offers without reading every mask).
A concept's mask is every pixel that any of the image's mask layers labels with it, as NetDissect
tallies. Images and masks are read batch by batch, so memory does not grow with the folder.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.core.errors import BenchError
from bench.data.probes import Concept, ProbeBatch

META_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")
_CATEGORY_COUNT = re.compile(r"^\s*([^(]+)\((\d+)\)\s*$")


@dataclass(frozen=True)
class BrodenRow:
    """One image of the index: where it is, its sizes, and its annotations per category."""

    image: str
    split: str
    image_size: tuple[int, int]
    mask_size: tuple[int, int]
    # Category -> entries: mask PNG paths (relative to images/) or whole-image label numbers.
    annotations: dict[str, tuple[str | int, ...]]


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise BenchError(f"Broden folder {str(path.parent)!r} has no {path.name}")
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _entries(cell: str) -> tuple[str | int, ...]:
    items = [item.strip() for item in (cell or "").split(";") if item.strip()]
    return tuple(int(item) if item.isdigit() else item for item in items)


def _label_categories(cell: str) -> dict[str, int]:
    """`color(12);object(3)` -> {"color": 12, "object": 3}."""
    counts: dict[str, int] = {}
    for part in (cell or "").split(";"):
        match = _CATEGORY_COUNT.match(part)
        if match:
            counts[match.group(1).strip()] = int(match.group(2))
    return counts


class BrodenProbe:
    """Streams a Broden-style folder as `ProbeBatch`es for `bench.explain.dissection.dissect`.

    `image_size` resizes every image (bilinear) for models of a fixed input size; otherwise all
    selected images must share one size. Masks are brought to the first row's segmentation size
    (nearest neighbour) when a row's differs. `transform` maps a batch of [0, 1] images (B, 3, H, W)
    to the model's input convention (e.g. ImageNet normalisation).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str | None = None,
        categories: Sequence[str] | None = None,
        image_size: tuple[int, int] | None = None,
        limit: int | None = None,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.root = Path(root)
        self.image_size = image_size
        self.transform = transform
        index_path = self.root / "index.csv"
        index = _read_csv(index_path)
        columns = set(index[0]) if index else set()
        missing = [c for c in META_COLUMNS if c not in columns]
        if missing:
            raise BenchError(f"{index_path} lacks the columns {missing}; it has {sorted(columns)}")

        known = [row["name"] for row in _read_csv(self.root / "category.csv")]
        wanted = list(categories) if categories is not None else known
        unknown = [c for c in wanted if c not in known or c not in columns]
        if unknown:
            raise BenchError(
                f"Broden folder {str(self.root)!r} has no categories {unknown}; "
                f"valid: {[c for c in known if c in columns]}"
            )
        self._categories = tuple(wanted)

        self.rows = [
            row
            for row in map(self._decode_row, index)
            if (split is None or row.split == split) and row.annotations
        ][:limit]
        if not self.rows:
            raise BenchError(
                f"Broden folder {str(self.root)!r} has no annotated images for split {split!r} "
                f"and categories {list(self._categories)}"
            )
        self._concepts, self._lookup = self._read_labels()
        digest = hashlib.sha1(index_path.read_bytes()).hexdigest()[:12]
        self.version = (
            f"broden:{self.root.name}:{digest}:{split or 'all'}:{len(self.rows)}"
            f":{','.join(self._categories)}"
        )

    def _decode_row(self, raw: dict[str, str]) -> BrodenRow:
        annotations = {c: _entries(raw.get(c, "")) for c in self._categories}
        return BrodenRow(
            image=raw["image"],
            split=raw["split"],
            image_size=(int(raw["ih"]), int(raw["iw"])),
            mask_size=(int(raw["sh"]), int(raw["sw"])),
            annotations={c: e for c, e in annotations.items() if e},
        )

    def _read_labels(self) -> tuple[tuple[Concept, ...], np.ndarray]:
        """Concepts in category order, and a label-number -> concept-index lookup (-1: none)."""
        by_category: dict[str, list[tuple[int, str]]] = {c: [] for c in self._categories}
        for row in _read_csv(self.root / "label.csv"):
            number = int(row["number"])
            counts = {
                c: n
                for c, n in _label_categories(row.get("category", "")).items()
                if c in by_category
            }
            if number <= 0 or not counts:
                continue
            primary = max(counts, key=lambda c: (counts[c], -self._categories.index(c)))
            by_category[primary].append((number, row["name"]))
        concepts: list[Concept] = []
        numbers: list[int] = []
        for category in self._categories:
            for number, name in sorted(by_category[category]):
                concepts.append(Concept(category, name))
                numbers.append(number)
        lookup = np.full(max(numbers, default=0) + 1, -1, dtype=np.int64)
        lookup[numbers] = np.arange(len(numbers))
        return tuple(concepts), lookup

    # --- the Probe protocol ------------------------------------------------------------------
    @property
    def concepts(self) -> tuple[Concept, ...]:
        return self._concepts

    @property
    def categories(self) -> tuple[str, ...]:
        return self._categories

    @property
    def mask_shape(self) -> tuple[int, int]:
        return self.rows[0].mask_size

    def __len__(self) -> int:
        return len(self.rows)

    def batches(self, batch_size: int) -> Iterator[ProbeBatch]:
        for start in range(0, len(self.rows), batch_size):
            rows = self.rows[start : start + batch_size]
            images = np.stack([self._image(row) for row in rows])
            if self.transform is not None:
                images = self.transform(images).astype(np.float32)
            layers = [self._layers(row) for row in rows]
            depth = max(len(layer) for layer in layers)
            labels = np.full((len(rows), depth, *self.mask_shape), -1, dtype=np.int64)
            for b, layer in enumerate(layers):
                labels[b, : len(layer)] = layer
            annotated = np.array(
                [[c in row.annotations for c in self._categories] for row in rows], dtype=bool
            )
            yield ProbeBatch(images=images, labels=labels, annotated=annotated)

    # --- reading files -----------------------------------------------------------------------
    def _image(self, row: BrodenRow) -> np.ndarray:
        from PIL import Image

        with Image.open(self.root / "images" / row.image) as opened:
            image = opened.convert("RGB")
            if self.image_size is not None:
                height, width = self.image_size
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
        expected = self.image_size or self.rows[0].image_size
        if pixels.shape[:2] != tuple(expected):
            raise BenchError(
                f"Broden image {row.image} is {pixels.shape[0]}x{pixels.shape[1]}, the probe's "
                f"images {expected[0]}x{expected[1]}; pass image_size= to resize them"
            )
        return pixels.transpose(2, 0, 1)

    def _layers(self, row: BrodenRow) -> np.ndarray:
        """(L, Hm, Wm) concept indices of every mask layer of the row (-1: no concept)."""
        layers = []
        for category in self._categories:
            for entry in row.annotations.get(category, ()):
                numbers = (
                    np.full(self.mask_shape, entry, dtype=np.int64)
                    if isinstance(entry, int)
                    else self._mask_numbers(entry)
                )
                inside = numbers < len(self._lookup)
                layers.append(np.where(inside, self._lookup[np.where(inside, numbers, 0)], -1))
        return np.stack(layers)

    def _mask_numbers(self, relative: str) -> np.ndarray:
        """Label numbers of a mask PNG (R + 256·G), at the probe's mask size."""
        from PIL import Image

        with Image.open(self.root / "images" / relative) as opened:
            rgb = opened.convert("RGB")
            if rgb.size != (self.mask_shape[1], self.mask_shape[0]):
                rgb = rgb.resize((self.mask_shape[1], self.mask_shape[0]), Image.Resampling.NEAREST)
            pixels = np.asarray(rgb, dtype=np.int64)
        return pixels[:, :, 0] + 256 * pixels[:, :, 1]
