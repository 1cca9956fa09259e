"""Network dissection metrics (DESIGN §7): how many units of the last conv block detect a concept.

All of them read one dissection per scored model, computed on first use: dissection costs two
passes over the probe, and the six numbers are views of the same result.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from bench.dissection import IOU_THRESHOLD, QUANTILE, UPSAMPLE_MODE, DissectionResult, dissect
from bench.metrics import ScoringContext, register_metric

IMAGE = frozenset({"image"})
SETTINGS = {
    "layer": "last_conv_layer",
    "quantile": QUANTILE,
    "iou_threshold": IOU_THRESHOLD,
    "upsample": UPSAMPLE_MODE,
}
# concept_shapes' concept categories; a probe without one of them scores 0 for it.
CATEGORIES = ("shape", "colour", "texture", "background")

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
    """The record's `dissection` entry: settings and detectors, if scoring dissected the model."""
    result = _results.get(id(ctx))
    return None if result is None else result.summary()


def _register(name: str, description: str, value: Callable[[DissectionResult], int]) -> None:
    def compute(ctx: ScoringContext) -> float:
        result = dissection_of(ctx)
        return float("nan") if result is None else float(value(result))

    compute.__doc__ = description
    register_metric(
        name,
        category="dissection",
        higher_is_better=True,
        modalities=IMAGE,
        settings=SETTINGS,
        applies=_has_probe,
    )(compute)


_register(
    "concept_detectors",
    "Units of the last conv block whose best concept reaches IoU 0.04 on the probe (NetDissect).",
    lambda r: r.detectors,
)
_register(
    "unique_concepts",
    "Distinct concepts detected by at least one unit of the last conv block (NetDissect).",
    lambda r: r.unique_concepts,
)
for _category in CATEGORIES:
    _register(
        f"detectors_{_category}",
        f"Detector units whose best concept is a {_category} concept.",
        lambda r, c=_category: r.detectors_per_category.get(c, 0),
    )
