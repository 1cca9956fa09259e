"""Concept probes: images with pixel-level concept labels, the input of network dissection.

The types live in the data wing, beside the loaders that build them (concept_shapes' in-memory
probe, a Broden folder); `bench.explain.dissection` consumes them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

QUANTILE = 0.005  # NetDissect's top quantile, the default for probes that do not set their own


@dataclass(frozen=True)
class Concept:
    """One human concept of a probe, e.g. ("colour", "red"); names repeat across categories."""

    category: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.category}/{self.name}"


@dataclass(frozen=True, eq=False)
class ProbeBatch:
    """A batch of probe images and their concept labels, the unit of streaming.

    `labels[b, l]` is one layer of labels for image b at mask resolution: each pixel holds a concept
    index (into the probe's `concepts`) or -1. Several layers let a pixel carry several concepts
    (shape, colour and texture of one object; Broden's overlapping object and part masks).
    `annotated[b, c]` says whether image b has annotations of category c at all.
    """

    images: np.ndarray  # (B, C, H, W) float32
    labels: np.ndarray  # (B, L, Hm, Wm) integer
    annotated: np.ndarray  # (B, n_categories) bool
    # True when no two layers can name the same concept at one pixel (e.g. a layer per category),
    # which spares the tally its check for repeats.
    distinct: bool = False


class Probe(Protocol):
    """A probe set that dissection can stream: concept_shapes' in-memory probe or a Broden folder."""

    version: str

    @property
    def concepts(self) -> tuple[Concept, ...]: ...

    @property
    def categories(self) -> tuple[str, ...]: ...

    @property
    def mask_shape(self) -> tuple[int, int]: ...

    def __len__(self) -> int: ...

    def batches(self, batch_size: int) -> Iterator[ProbeBatch]: ...


@dataclass(frozen=True, eq=False)
class ConceptProbe:
    """An in-memory probe whose concepts are given as one integer label map per category.

    `label_maps[category]` is (N, Hm, Wm) with category-local ids (indices into
    `concept_names[category]`) and -1 where no concept of that category is present. A label map
    per category instead of a boolean mask per concept keeps the probe 17 times smaller for
    concept_shapes, and the one-hot masks are only built per batch.

    `quantile` is the top quantile a unit's threshold keeps on this probe: the probe sets it,
    because only the probe knows how large its concepts are (see the module docstring).
    """

    images: np.ndarray
    label_maps: dict[str, np.ndarray]
    concept_names: dict[str, tuple[str, ...]]
    version: str
    quantile: float = QUANTILE

    def __post_init__(self) -> None:
        if set(self.label_maps) != set(self.concept_names):
            raise ValueError(
                f"label maps for {sorted(self.label_maps)} but concept names for "
                f"{sorted(self.concept_names)}"
            )
        for category, maps in self.label_maps.items():
            if maps.shape[0] != len(self.images) or maps.ndim != 3:
                raise ValueError(
                    f"label map {category!r} has shape {maps.shape}; expected "
                    f"({len(self.images)}, H, W)"
                )
            if maps.max(initial=-1) >= len(self.concept_names[category]):
                raise ValueError(f"label map {category!r} holds ids beyond its concept names")
        if not 0 < self.quantile < 1:
            raise ValueError(f"quantile {self.quantile} is not in (0, 1)")

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.concept_names)

    @property
    def concepts(self) -> tuple[Concept, ...]:
        return tuple(Concept(c, name) for c in self.categories for name in self.concept_names[c])

    @property
    def mask_shape(self) -> tuple[int, int]:
        first = next(iter(self.label_maps.values()))
        return int(first.shape[1]), int(first.shape[2])

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch_size: int) -> Iterator[ProbeBatch]:
        labels = self._stacked_labels
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            yield ProbeBatch(
                images=self.images[start:stop],
                labels=labels[start:stop],
                annotated=np.ones((stop - start, len(self.categories)), dtype=bool),
                distinct=True,  # one layer per category, each with its own concept indices
            )

    @functools.cached_property
    def _stacked_labels(self) -> np.ndarray:
        """(N, categories, Hm, Wm) concept indices (into `concepts`) or −1, built once: every
        dissection of the probe streams them."""
        offsets = np.cumsum([0] + [len(self.concept_names[c]) for c in self.categories])
        layers = [
            np.where(self.label_maps[category] >= 0, self.label_maps[category] + offset, -1)
            for offset, category in zip(offsets, self.categories, strict=False)
        ]
        return np.stack(layers, axis=1).astype(np.int64)
