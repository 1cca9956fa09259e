"""Network dissection metrics (DESIGN §7): how many units of the last conv block detect a concept.

All of them read one dissection per scored model, computed on first use: dissection costs a forward
pass over the probe and more, and every number here is a view of the same result.

`concept_detectors` counts units whose best IoU exceeds 0.04 (NetDissect, Bau et al. 2017). One
count at one threshold cannot tell detectors from a crowd of units just above it, so the same
result also gives the count over a sweep of thresholds (`concept_detectors_iou002` ..
`concept_detectors_iou010`; 0.05 is Han et al. 2023's threshold) and the threshold-free mean and
median best IoU over units.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from bench.data.probes import QUANTILE
from bench.explain.dissection import (
    IOU_THRESHOLD,
    SWEEP_THRESHOLDS,
    UPSAMPLE_MODE,
    DissectionResult,
    dissect,
)
from bench.metrics import NON_NEGATIVE, UNIT, Bounds, ScoringContext, register_metric

IMAGE = frozenset({"image"})
SETTINGS = {
    "layer": "last_conv_layer",
    # The probe sets its quantile (concept_shapes: 0.01); probes that do not get NetDissect's.
    "quantile": f"probe's own, else {QUANTILE}",
    "iou_threshold": IOU_THRESHOLD,
    "detector_rule": "best IoU > iou_threshold",
    "upsample": UPSAMPLE_MODE,
}
# concept_shapes' concept categories; a probe without one of them scores 0 for it.
CATEGORIES = ("shape", "part", "colour", "texture", "background")

# One result per live ScoringContext. The context is an unhashable dataclass, so it is keyed by id
# and the entry dropped when the context is collected, which keeps a reused id from ever seeing a
# stale result.
_results: dict[int, DissectionResult] = {}


def _has_probe(ctx: ScoringContext) -> bool:
    return "concept_probe" in ctx.bundle.extras


def dissection_of(ctx: ScoringContext) -> DissectionResult | None:
    """The dissection of the scored model on the dataset's probe (None: not a network)."""
    module = ctx.model.module
    if module is None:
        return None
    key = id(ctx)
    if key not in _results:
        probe = ctx.bundle.extras["concept_probe"]
        _results[key] = dissect(module, probe, device=ctx.model.device)
        weakref.finalize(ctx, _results.pop, key, None)
    return _results[key]


def dissection_summary(ctx: ScoringContext) -> dict[str, Any] | None:
    """The record's `dissection` entry: settings, detectors, the threshold sweep, mean best IoU."""
    result = _results.get(id(ctx))
    return None if result is None else result.summary()


def _register(
    name: str,
    description: str,
    value: Callable[[DissectionResult], float],
    settings: dict[str, Any] | None = None,
    bounds: Bounds = NON_NEGATIVE,
) -> None:
    """A dissection metric: a count of units or concepts (the default bounds), or an IoU."""

    def compute(ctx: ScoringContext) -> float:
        result = dissection_of(ctx)
        return float("nan") if result is None else float(value(result))

    compute.__doc__ = description
    register_metric(
        name,
        category="dissection",
        higher_is_better=True,
        bounds=bounds,
        modalities=IMAGE,
        settings={**SETTINGS, **(settings or {})},
        applies=_has_probe,
    )(compute)


def sweep_metric_name(threshold: float) -> str:
    """`concept_detectors_iou005` for 0.05: the count of detectors at another IoU threshold."""
    return f"concept_detectors_iou{round(threshold * 100):03d}"


_register(
    "concept_detectors",
    "Units of the last conv block whose best concept's IoU on the probe exceeds 0.04 (NetDissect).",
    lambda r: r.detectors,
)
_register(
    "unique_concepts",
    "Distinct concepts detected by at least one unit of the last conv block (NetDissect).",
    lambda r: r.unique_concepts,
)
_register(
    "mean_best_iou",
    "Mean over units of the last conv block of their best concept's IoU: the count without a "
    "threshold.",
    lambda r: r.mean_best_iou,
    bounds=UNIT,
)
_register(
    "median_best_iou",
    "Median over units of the last conv block of their best concept's IoU.",
    lambda r: r.median_best_iou,
    bounds=UNIT,
)
for _threshold in SWEEP_THRESHOLDS:
    if _threshold == IOU_THRESHOLD:  # that count is `concept_detectors`
        continue
    _register(
        sweep_metric_name(_threshold),
        f"Units whose best concept's IoU exceeds {_threshold:.2f} (the threshold sweep"
        + (", Han et al. 2023's threshold)." if _threshold == 0.05 else ")."),
        lambda r, t=_threshold: r.detectors_at(t),
        {"iou_threshold": _threshold},
    )
for _category in CATEGORIES:
    _register(
        f"detectors_{_category}",
        f"Detector units whose best concept is a {_category} concept.",
        lambda r, c=_category: r.detectors_per_category.get(c, 0),
    )
