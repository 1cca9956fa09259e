"""Network dissection: which units of a layer detect which human concepts of a probe set.

Bau, Zhou, Khosla, Oliva and Torralba, "Network Dissection: Quantifying Interpretability of Deep
Visual Representations", CVPR 2017. For one layer and a probe set with pixel-level concept masks:
a unit's threshold is the activation value that the top q (0.5 % in NetDissect) of all its
(image, position) activations exceed; each activation map is upsampled bilinearly to mask size and
binarised at that threshold; intersection and union with every concept are summed over the whole
probe, and IoU = Σ∩ / Σ∪. A unit detects its best concept when that IoU exceeds 0.04 (strictly:
NetDissect's detectors are units with IoU > 0.04; Han et al. 2023's released code uses 0.05).

A count at one threshold is a count of threshold crossings unless most units sit far from it, so a
result also reports the count over a sweep of thresholds (`SWEEP_THRESHOLDS`, 0.02-0.10), the mean
and median best IoU over units, and the two areas that bound every IoU: the share of probe pixels in
a unit's binarised maps and each concept's share. A unit of area a can reach IoU a/c at most with a
concept of area c > a, so a probe whose concepts are much larger than its units' top-quantile
areas caps every IoU near the threshold. The quantile is therefore the probe's to set
(`ConceptProbe.quantile`): NetDissect's 0.005 was set for Broden, most of whose ~1 200 concepts
cover well under a percent of its pixels, and stays the default (Broden folders included);
concept_shapes sets its own (see its module docstring).

Where we depart from the reference code (NetDissect-Lite): it stores every activation of the probe
to compute quantiles and loops over units in Python. Here both passes stream the probe in batches:
pass 1 keeps only each unit's top `ceil(q·n) + 1` activations (n = probe size × positions, known
once the first batch shows the map size), which is all an exact quantile at level 1 − q needs;
pass 2 tallies intersections for all units and concepts of a batch in one matrix product. Memory
is therefore independent of the probe size except for that top-k buffer, which is 1/q times smaller
than the activations (200 at NetDissect's 0.5 %, 100 at concept_shapes' 1 %). As in NetDissect, a union only counts images annotated in the concept's
category (for Broden, where many images lack e.g. part labels); on fully annotated probes such as
concept_shapes this is the plain union over the whole probe.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from bench.hooks import FeatureHooks
from bench.models import eval_mode

QUANTILE = 0.005  # NetDissect's top quantile, the default for probes that do not set their own
IOU_THRESHOLD = 0.04  # NetDissect; a detector's best IoU must exceed it
# Detector counts are also reported at these thresholds: 0.05 is Han et al. 2023's.
SWEEP_THRESHOLDS = (0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10)
UPSAMPLE_MODE = "bilinear"
BATCH_SIZE = 100


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
        offsets = np.cumsum([0] + [len(self.concept_names[c]) for c in self.categories])
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            layers = []
            for offset, category in zip(offsets, self.categories, strict=False):
                local = self.label_maps[category][start:stop].astype(np.int64)
                layers.append(np.where(local >= 0, local + offset, -1))
            yield ProbeBatch(
                images=self.images[start:stop],
                labels=np.stack(layers, axis=1),
                annotated=np.ones((stop - start, len(self.categories)), dtype=bool),
            )


@dataclass(frozen=True)
class DissectionSettings:
    """Everything that fixes a dissection's outcome besides the model: recorded with the result."""

    layer: str
    quantile: float = QUANTILE
    iou_threshold: float = IOU_THRESHOLD
    probe_version: str = ""
    probe_size: int = 0
    mask_shape: tuple[int, int] = (0, 0)
    upsample: str = UPSAMPLE_MODE
    sweep_thresholds: tuple[float, ...] = SWEEP_THRESHOLDS

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "quantile": self.quantile,
            "iou_threshold": self.iou_threshold,
            "detector_rule": "best IoU > iou_threshold",
            "sweep_thresholds": list(self.sweep_thresholds),
            "probe_version": self.probe_version,
            "probe_size": self.probe_size,
            "mask_shape": list(self.mask_shape),
            "upsample": self.upsample,
        }


@dataclass(frozen=True, eq=False)
class DissectionResult:
    """Per-unit thresholds, IoU with every concept, best concept; and the counts NetDissect reports."""

    settings: DissectionSettings
    concepts: tuple[Concept, ...]
    categories: tuple[str, ...]
    thresholds: np.ndarray  # (U,)
    iou: np.ndarray  # (U, K)
    # Share of the probe's pixels in each unit's binarised, upsampled maps, and in each concept's
    # masks: what bounds the IoUs (a unit of area a reaches at most a / c with a concept of c > a).
    unit_area: np.ndarray | None = None  # (U,)
    concept_area: np.ndarray | None = None  # (K,)
    best_concept: np.ndarray = field(init=False)  # (U,) index into `concepts`
    best_iou: np.ndarray = field(init=False)  # (U,)

    def __post_init__(self) -> None:
        # Ties go to the first concept, so the labelling is deterministic.
        best = self.iou.argmax(axis=1) if self.iou.shape[1] else np.zeros(len(self.iou), int)
        best_iou = (
            self.iou[np.arange(len(self.iou)), best] if self.iou.shape[1] else np.zeros(len(best))
        )
        object.__setattr__(self, "best_concept", best)
        object.__setattr__(self, "best_iou", best_iou)

    @property
    def n_units(self) -> int:
        return len(self.thresholds)

    @property
    def is_detector(self) -> np.ndarray:
        """Units whose best IoU exceeds the threshold: strictly, as NetDissect's `iou > 0.04`."""
        return self.best_iou > self.settings.iou_threshold

    @property
    def detectors(self) -> int:
        """Units whose best concept's IoU exceeds the IoU threshold."""
        return int(self.is_detector.sum())

    def detectors_at(self, threshold: float) -> int:
        """Units whose best IoU exceeds `threshold`: the count had the threshold been that."""
        return int((self.best_iou > threshold).sum())

    def sweep(self) -> dict[float, int]:
        """Detector count at each of the settings' sweep thresholds (never increasing).

        A count that halves between 0.04 and 0.05 counts threshold crossings of a crowd of units
        near the threshold, not detectors; the sweep shows which it is.
        """
        return {t: self.detectors_at(t) for t in self.settings.sweep_thresholds}

    @property
    def mean_best_iou(self) -> float:
        """Mean over units of the best concept's IoU: a threshold-free summary of the layer."""
        return float(self.best_iou.mean()) if self.n_units else float("nan")

    @property
    def median_best_iou(self) -> float:
        return float(np.median(self.best_iou)) if self.n_units else float("nan")

    @property
    def unit_area_median(self) -> float:
        """Median over units of the share of probe pixels in a unit's binarised maps."""
        if self.unit_area is None or not self.n_units:
            return float("nan")
        return float(np.median(self.unit_area))

    @property
    def concept_area_median(self) -> float:
        """Median over concepts of the share of probe pixels a concept covers."""
        if self.concept_area is None or not len(self.concept_area):
            return float("nan")
        return float(np.median(self.concept_area))

    @property
    def unique_concepts(self) -> int:
        """Distinct concepts that at least one unit detects."""
        return len(set(self.best_concept[self.is_detector].tolist()))

    @property
    def detectors_per_category(self) -> dict[str, int]:
        """Detectors by the category of their best concept (every category listed, zeros too)."""
        counts = dict.fromkeys(self.categories, 0)
        for index in self.best_concept[self.is_detector]:
            counts[self.concepts[index].category] += 1
        return counts

    def summary(self) -> dict[str, Any]:
        """What a run record keeps: the settings, the unit count and every detector's concept,
        the detector counts over the threshold sweep, the mean and median best IoU, and the
        median unit and concept areas that bound the IoUs.

        The counts alone cannot be checked or compared across layers; with the layer, probe
        version and per-unit labels a reader can. `best_iou` (every unit's, by unit) lets a
        reader recount at any threshold.
        """
        return {
            **self.settings.as_dict(),
            "units": self.n_units,
            "detectors": [
                {"unit": unit, "concept": concept, "iou": round(iou, 4)}
                for unit, concept, iou in self.unit_labels()
            ],
            "iou_sweep": {f"{t:.2f}": n for t, n in self.sweep().items()},
            "mean_best_iou": _rounded(self.mean_best_iou),
            "median_best_iou": _rounded(self.median_best_iou),
            "unit_area_median": _rounded(self.unit_area_median, 5),
            "concept_area_median": _rounded(self.concept_area_median, 5),
            "best_iou": [round(float(v), 4) for v in self.best_iou],
        }

    def unit_labels(self) -> list[tuple[int, str, float]]:
        """(unit, best concept label, IoU) of every detector, best first: for reports."""
        rows = [
            (int(u), self.concepts[self.best_concept[u]].label, float(self.best_iou[u]))
            for u in np.flatnonzero(self.is_detector)
        ]
        return sorted(rows, key=lambda row: -row[2])


def _rounded(value: float, digits: int = 4) -> float | None:
    """A number for JSON: rounded, None when undefined (JSON has no NaN)."""
    return round(value, digits) if np.isfinite(value) else None


def default_layer(module: nn.Module) -> str:
    """The layer dissected when none is named: the model's `last_conv_layer`, else its last conv."""
    named = getattr(module, "last_conv_layer", None)
    if isinstance(named, str):
        return named
    convs = [name for name, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise BenchError(f"{type(module).__name__} has no convolutional layer to dissect")
    return convs[-1]


class _LayerReader:
    """Runs the model on probe batches and returns the hooked layer's output as (B, U, h, w)."""

    def __init__(self, module: nn.Module, layer: str, device: torch.device) -> None:
        self.module, self.layer, self.device = module, layer, device

    def __call__(self, hooks: FeatureHooks, images: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(images, dtype=torch.float32, device=self.device)
        self.module(x)
        acts = hooks.features[self.layer]
        if acts.ndim != 4:
            raise BenchError(
                f"layer {self.layer!r} outputs shape {tuple(acts.shape)}; dissection needs "
                "convolutional maps (batch, units, height, width)"
            )
        return acts.float()


def _quantile_from_top(top: torch.Tensor, n: int, level: float) -> torch.Tensor:
    """np.quantile(values, level) (linear) per row, from each row's largest values, descending.

    The ascending order statistic at position (n − 1)·level lies among the kept values as long as
    at least n − floor((n − 1)·level) of them are kept, which `_top_count` guarantees.
    """
    position = (n - 1) * level
    lower = math.floor(position)
    fraction = position - lower
    top = top.double()
    low_value = top[:, n - 1 - lower]
    if lower + 1 >= n:
        return low_value
    high_value = top[:, n - 2 - lower]
    return low_value + fraction * (high_value - low_value)


def _top_count(n: int, level: float) -> int:
    return n - math.floor((n - 1) * level)


@torch.no_grad()
def unit_thresholds(
    module: nn.Module,
    probe: Probe,
    layer: str,
    *,
    quantile: float = QUANTILE,
    batch_size: int = BATCH_SIZE,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Pass 1: each unit's activation value exceeded by its top `quantile` share of activations.

    Streams the probe and keeps per unit only the largest values seen so far, merged batch by batch
    with `torch.topk`; the result equals `np.quantile(all activations of the unit, 1 − quantile)`.
    """
    device = device or _device_of(module)
    read = _LayerReader(module, layer, device)
    level = 1.0 - quantile
    top: torch.Tensor | None = None
    n = keep = 0
    with FeatureHooks(module, [layer]) as hooks:
        for batch in probe.batches(batch_size):
            acts = read(hooks, batch.images)
            if top is None:
                n = len(probe) * acts.shape[2] * acts.shape[3]
                keep = _top_count(n, level)
                top = acts.new_empty((acts.shape[1], 0))
            flat = acts.transpose(0, 1).reshape(acts.shape[1], -1)
            merged = torch.cat([top, flat], dim=1)
            top = merged.topk(min(keep, merged.shape[1]), dim=1, sorted=True).values
    if top is None:
        raise BenchError("the probe set is empty")
    if top.shape[1] < keep:
        raise BenchError(f"the probe yielded fewer images than its length {len(probe)}")
    return _quantile_from_top(top, n, level).float()


@dataclass(frozen=True, eq=False)
class Tally:
    """What pass 2 sums over the probe: IoUs and the areas that bound them (shares of pixels)."""

    iou: np.ndarray  # (U, K)
    unit_area: np.ndarray  # (U,) share of all probe pixels in the unit's binarised maps
    concept_area: np.ndarray  # (K,) share of all probe pixels in the concept's masks


@torch.no_grad()
def tally_iou(
    module: nn.Module,
    probe: Probe,
    layer: str,
    thresholds: torch.Tensor,
    *,
    batch_size: int = BATCH_SIZE,
    device: torch.device | None = None,
) -> np.ndarray:
    """Pass 2: IoU (U, K) of every unit's binarised, upsampled maps with every concept's masks."""
    return tally(module, probe, layer, thresholds, batch_size=batch_size, device=device).iou


@torch.no_grad()
def tally(
    module: nn.Module,
    probe: Probe,
    layer: str,
    thresholds: torch.Tensor,
    *,
    batch_size: int = BATCH_SIZE,
    device: torch.device | None = None,
) -> Tally:
    """Pass 2: IoUs of every unit with every concept, and unit and concept areas.

    Per batch, binarised unit maps (B, U, P) and one-hot masks of the concepts present (B, k, P)
    meet in one matrix product; unit areas are summed per category, over the images annotated in
    that category, so that Σ∪ = Σ|unit| + Σ|concept| − Σ∩ needs no pass over absent concepts.
    Memory is one batch's maps and masks plus (U, K) sums, whatever the probe's size.
    """
    device = device or _device_of(module)
    read = _LayerReader(module, layer, device)
    concepts = probe.concepts
    category_index = {c: i for i, c in enumerate(probe.categories)}
    concept_category = torch.tensor(
        [category_index[c.category] for c in concepts], dtype=torch.long, device=device
    )
    n_units = len(thresholds)
    intersection = torch.zeros((n_units, len(concepts)), dtype=torch.float64, device=device)
    concept_area = torch.zeros(len(concepts), dtype=torch.float64, device=device)
    unit_area = torch.zeros((n_units, len(category_index)), dtype=torch.float64, device=device)
    unit_pixels = torch.zeros(n_units, dtype=torch.float64, device=device)
    pixels = 0
    limits = thresholds.to(device)[None, :, None]
    with FeatureHooks(module, [layer]) as hooks:
        for batch in probe.batches(batch_size):
            acts = read(hooks, batch.images)
            maps = F.interpolate(acts, size=probe.mask_shape, mode=UPSAMPLE_MODE)
            binary = (maps.flatten(2) > limits).float()  # (B, U, P)
            annotated = torch.as_tensor(batch.annotated, device=device)
            labels = torch.as_tensor(batch.labels, device=device).flatten(2)  # (B, L, P)
            # Concepts present in the batch (a count, cheaper than sorting for torch.unique).
            counts = torch.bincount(labels[labels >= 0], minlength=len(concepts))
            present = torch.nonzero(counts).flatten()
            if len(present):
                # A pixel belongs to a concept if any of its label layers names it; layer by
                # layer keeps memory at one (B, k, P) mask however many layers a probe has.
                onehot = labels[:, 0, None, :] == present[None, :, None]
                for layer_labels in labels[:, 1:].unbind(1):
                    onehot |= layer_labels[:, None, :] == present[None, :, None]
                # An image showing a concept counts as annotated in its category, so that every
                # intersection is matched by the unit's area in the union (IoU <= 1).
                shown = torch.zeros(annotated.shape, dtype=torch.float32, device=device)
                shown.index_add_(1, concept_category[present], onehot.any(2).float())
                annotated = annotated | (shown > 0)
                onehot = onehot.float()
                concept_area[present] += onehot.sum((0, 2)).double()
                # Σ_b binary_b · onehot_bᵀ: a batched product, faster here than the equivalent einsum.
                per_image = torch.bmm(binary, onehot.transpose(1, 2))  # (B, U, k)
                intersection[:, present] += per_image.sum(0).double()
            per_unit = binary.sum(2).double()  # (B, U)
            unit_area += per_unit.T @ annotated.double()
            unit_pixels += per_unit.sum(0)
            pixels += binary.shape[0] * binary.shape[2]
    union = unit_area[:, concept_category] + concept_area[None, :] - intersection
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))
    pixels = max(pixels, 1)
    return Tally(
        iou=iou.cpu().numpy(),
        unit_area=(unit_pixels / pixels).cpu().numpy(),
        concept_area=(concept_area / pixels).cpu().numpy(),
    )


def dissect(
    module: nn.Module,
    probe: Probe,
    *,
    layer: str | None = None,
    quantile: float | None = None,
    iou_threshold: float = IOU_THRESHOLD,
    batch_size: int = BATCH_SIZE,
    device: torch.device | None = None,
) -> DissectionResult:
    """Dissect one layer (default: `default_layer`) of a network on a probe: two streamed passes.

    `quantile` defaults to the probe's own (`quantile` attribute), else NetDissect's 0.005. The
    module is run in eval mode (BatchNorm statistics must not move) and restored afterwards.
    """
    layer = layer or default_layer(module)
    if quantile is None:
        quantile = float(getattr(probe, "quantile", QUANTILE))
    with eval_mode(module):
        thresholds = unit_thresholds(
            module, probe, layer, quantile=quantile, batch_size=batch_size, device=device
        )
        sums = tally(module, probe, layer, thresholds, batch_size=batch_size, device=device)
    settings = DissectionSettings(
        layer=layer,
        quantile=quantile,
        iou_threshold=iou_threshold,
        probe_version=probe.version,
        probe_size=len(probe),
        mask_shape=tuple(probe.mask_shape),
    )
    return DissectionResult(
        settings=settings,
        concepts=probe.concepts,
        categories=probe.categories,
        thresholds=thresholds.cpu().numpy(),
        iou=sums.iou,
        unit_area=sums.unit_area,
        concept_area=sums.concept_area,
    )


def _device_of(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
