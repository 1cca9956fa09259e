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
to compute quantiles, upsamples every unit's map and loops over units in Python. Here:
- one forward pass: the layer's low-resolution activations are kept (up to `KEEP_BYTES`; beyond
  it, each pass runs the model again) and read by both passes;
- pass 1 keeps per unit only its top `ceil(q·n) + 1` activations (n = probe size × positions),
  which is all an exact quantile at level 1 − q needs;
- pass 2 upsamples only the maps whose peak can cross the unit's threshold (a bilinear pixel
  never exceeds its four low-resolution neighbours) and counts each lit pixel into (unit,
  concept) sums. The binary maps are those of upsampling every map (to the interpolation's last
  bit; the IoUs of the default networks are identical), at a fraction of the cost:
  on concept_shapes' probe a dissection costs 1.2-1.4 forward passes where upsampling every
  map cost 3.4-7.6 (`benchmarks/bench_dissection.py`).
As in NetDissect, a union only counts images annotated in the concept's
category (for Broden, where many images lack e.g. part labels); on fully annotated probes such as
concept_shapes this is the plain union over the whole probe.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.errors import BenchError
from bench.data.probes import QUANTILE, Concept, Probe, ProbeBatch
from bench.models import eval_mode
from bench.models.hooks import FeatureHooks

IOU_THRESHOLD = 0.04  # NetDissect; a detector's best IoU must exceed it
# Detector counts are also reported at these thresholds: 0.05 is Han et al. 2023's.
SWEEP_THRESHOLDS = (0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10)
UPSAMPLE_MODE = "bilinear"
BATCH_SIZE = 100
# Low-resolution activations a dissection keeps between its two passes (`ProbeActivations`).
KEEP_BYTES = 256 * 2**20
# A map is upsampled when its peak exceeds threshold − CANDIDATE_MARGIN·|threshold| (`_tally`):
# far above float32's rounding of a four-term convex combination (~1e-7 relative).
CANDIDATE_MARGIN = 1e-4


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


class ProbeActivations:
    """The dissected layer's (B, U, h, w) activations over the probe, with their probe batches.

    The first pass runs the model and keeps the low-resolution activations while they fit in
    `keep_bytes`; a later pass reads them back instead of running the model again, so a
    dissection costs one forward pass (concept_shapes: 1 000 images through a 128-unit 4x4 layer
    keep 8 MB). A probe whose activations exceed the bound (a large Broden probe through a wide
    layer) is run again for each pass, and memory stays one batch's.
    """

    def __init__(
        self,
        module: nn.Module,
        probe: Probe,
        layer: str,
        batch_size: int,
        device: torch.device,
        keep_bytes: int | None = None,
    ) -> None:
        self.module, self.probe, self.layer = module, probe, layer
        self.batch_size, self.device = batch_size, device
        self.keep_bytes = KEEP_BYTES if keep_bytes is None else keep_bytes
        self._kept: list[torch.Tensor] | None = None

    def __iter__(self) -> Iterator[tuple[ProbeBatch, torch.Tensor]]:
        batches = self.probe.batches(self.batch_size)
        if self._kept is not None:
            yield from zip(batches, self._kept, strict=True)
            return
        kept: list[torch.Tensor] | None = []
        size = 0
        with FeatureHooks(self.module, [self.layer]) as hooks:
            for batch in batches:
                acts = self._read(hooks, batch.images)
                size += acts.numel() * acts.element_size()
                kept = kept if kept is not None and size <= self.keep_bytes else None
                if kept is not None:
                    kept.append(acts)
                yield batch, acts
        self._kept = kept

    def _read(self, hooks: FeatureHooks, images: np.ndarray) -> torch.Tensor:
        self.module(torch.as_tensor(images, dtype=torch.float32, device=self.device))
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
    """Pass 1: each unit's activation value exceeded by its top `quantile` share of activations."""
    device = device or _device_of(module)
    return _thresholds(ProbeActivations(module, probe, layer, batch_size, device), quantile)


def _thresholds(activations: ProbeActivations, quantile: float) -> torch.Tensor:
    """Streams the activations and keeps per unit only the largest values seen so far, merged
    batch by batch with `torch.topk`; the result equals `np.quantile(all activations of the
    unit, 1 − quantile)`."""
    n_images = len(activations.probe)
    level = 1.0 - quantile
    top: torch.Tensor | None = None
    n = keep = 0
    for _, acts in activations:
        if top is None:
            n = n_images * acts.shape[2] * acts.shape[3]
            keep = _top_count(n, level)
            top = acts.new_empty((acts.shape[1], 0))
        flat = acts.transpose(0, 1).reshape(acts.shape[1], -1)
        merged = torch.cat([top, flat], dim=1)
        top = merged.topk(min(keep, merged.shape[1]), dim=1, sorted=True).values
    if top is None:
        raise BenchError("the probe set is empty")
    if top.shape[1] < keep:
        raise BenchError(f"the probe yielded fewer images than its length {n_images}")
    return _quantile_from_top(top, n, level).float()


@dataclass(frozen=True, eq=False)
class Tally:
    """What pass 2 sums over the probe: IoUs and the areas that bound them (shares of pixels)."""

    iou: np.ndarray  # (U, K)
    unit_area: np.ndarray  # (U,) share of all probe pixels in the unit's binarised maps
    concept_area: np.ndarray  # (K,) share of all probe pixels in the concept's masks


def _tally(activations: ProbeActivations, thresholds: torch.Tensor) -> Tally:
    """Σ∩, Σ|unit| and Σ|concept| over the probe, batch by batch; Σ∪ = Σ|unit| + Σ|concept| − Σ∩.

    Only the maps that can cross their unit's threshold are upsampled. Bilinear upsampling makes
    each pixel a convex combination of (at most four) low-resolution values, so a map whose
    largest value lies below the threshold binarises to zeros; at the 1 % quantile that is most
    maps. `CANDIDATE_MARGIN` keeps maps whose peak lies a hair below the threshold, which
    float32 rounding of that combination could lift above it, so the binary maps are those of
    upsampling every map (a test compares the IoUs with that, exactly). Each lit pixel then adds one to
    (its unit, each concept labelled there): a count over the lit pixels (~1 % of them), where
    a product of every unit's map with every concept's mask would touch all.

    Unit areas are summed per category, over the images annotated in that category (NetDissect
    counts a union only on images annotated in the concept's category). Memory is one batch's
    candidate maps plus (U, K) sums, whatever the probe's size.
    """
    probe, device = activations.probe, activations.device
    concepts = probe.concepts
    n_concepts = len(concepts)
    category_index = {c: i for i, c in enumerate(probe.categories)}
    concept_category = torch.tensor(
        [category_index[c.category] for c in concepts], dtype=torch.long, device=device
    )
    n_units = len(thresholds)
    intersection = torch.zeros(n_units * (n_concepts + 1), dtype=torch.float64, device=device)
    concept_area = torch.zeros(n_concepts, dtype=torch.float64, device=device)
    unit_area = torch.zeros((n_units, len(category_index)), dtype=torch.float64, device=device)
    unit_pixels = torch.zeros(n_units, dtype=torch.float64, device=device)
    pixels = 0
    limits = thresholds.to(device)
    floor = limits - CANDIDATE_MARGIN * limits.abs()
    for batch, acts in activations:
        n_images = len(acts)
        labels = torch.as_tensor(batch.labels, device=device).flatten(2).long()
        if not batch.distinct:
            labels = _distinct_labels(labels)
        # Counted with −1 (no concept) shifted to bin 0 and dropped: no mask to build.
        concept_area += torch.bincount(labels.flatten() + 1, minlength=n_concepts + 1)[1:].double()
        annotated = torch.as_tensor(batch.annotated, device=device)
        if not bool(annotated.all()):
            annotated = annotated | _shown(labels, concept_category, n_concepts, annotated.shape)

        pixels += n_images * labels.shape[2]
        b, u = torch.nonzero(acts.amax(dim=(2, 3)) > floor[None, :], as_tuple=True)
        if not len(u):  # no map of the batch reaches its unit's threshold
            continue
        # The candidates as the channels of one image, laid out channels-last: upsampled in one
        # vectorised sweep, 13 times faster than as separate images (same values up to the
        # last bit, which F.interpolate itself rounds differently for different shapes).
        planes = acts[b, u][None].contiguous(memory_format=torch.channels_last)
        maps = F.interpolate(planes, size=probe.mask_shape, mode=UPSAMPLE_MODE)
        binary = maps[0].permute(1, 2, 0).reshape(-1, len(u)) > limits[u]  # (P, candidates)
        pixel, lit = torch.nonzero(binary, as_tuple=True)
        per_unit = torch.zeros((n_images, n_units), dtype=torch.float64, device=device)
        per_unit[b, u] = torch.bincount(lit, minlength=len(u)).double()
        lit_labels = labels[b[lit], :, pixel]  # (lit pixels, L)
        unit_of_lit = u[lit][:, None].expand_as(lit_labels)
        # −1 labels land in a spare bin per unit: (U, K + 1), its first column dropped below.
        intersection += torch.bincount(
            (unit_of_lit * (n_concepts + 1) + lit_labels + 1).flatten(),
            minlength=n_units * (n_concepts + 1),
        ).double()
        unit_area += per_unit.T @ annotated.double()
        unit_pixels += per_unit.sum(0)
    intersection = intersection.view(n_units, n_concepts + 1)[:, 1:]
    union = unit_area[:, concept_category] + concept_area[None, :] - intersection
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))
    pixels = max(pixels, 1)
    return Tally(
        iou=iou.cpu().numpy(),
        unit_area=(unit_pixels / pixels).cpu().numpy(),
        concept_area=(concept_area / pixels).cpu().numpy(),
    )


def _shown(
    labels: torch.Tensor,
    concept_category: torch.Tensor,
    n_concepts: int,
    shape: tuple[int, ...],
) -> torch.Tensor:
    """(B, categories): whether each image shows a concept of each category. An image showing a
    concept counts as annotated in its category, so that every intersection is matched by the
    unit's area in the union (IoU <= 1)."""
    n_images = labels.shape[0]
    image = torch.arange(n_images, device=labels.device)[:, None, None].expand_as(labels)
    labelled = labels >= 0
    present = torch.bincount(
        image[labelled] * n_concepts + labels[labelled], minlength=n_images * n_concepts
    ).view(n_images, n_concepts)
    shown = torch.zeros(shape, device=labels.device)
    shown.index_add_(1, concept_category, (present > 0).float())
    return shown > 0


def _distinct_labels(labels: torch.Tensor) -> torch.Tensor:
    """(B, L, P) labels with a concept that an earlier layer already names at a pixel set to −1,
    so that each pixel counts once per concept however many of its layers name it."""
    labels = labels.clone()
    for layer in range(1, labels.shape[1]):
        repeated = (labels[:, layer : layer + 1] == labels[:, :layer]).any(1)
        labels[:, layer][repeated] = -1
    return labels


@torch.no_grad()
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
    """Dissect one layer (default: `default_layer`) of a network on a probe: thresholds, then the
    tally, from one forward pass whose activations are kept (`ProbeActivations`).

    `quantile` defaults to the probe's own (`quantile` attribute), else NetDissect's 0.005. The
    module is run in eval mode (BatchNorm statistics must not move) and restored afterwards.
    """
    layer = layer or default_layer(module)
    if quantile is None:
        quantile = float(getattr(probe, "quantile", QUANTILE))
    with eval_mode(module):
        activations = ProbeActivations(
            module, probe, layer, batch_size, device or _device_of(module)
        )
        thresholds = _thresholds(activations, quantile)
        sums = _tally(activations, thresholds)
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
