"""The metric registry and the scoring context every metric reads from.

As in Quantus, every metric declares its category, its direction and the data it applies to, so
the report never hard-codes which way is better.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from bench.data import DatasetBundle
from bench.registry import Registry

# Fixed, not the run's seed: every run of a dataset is scored on the same test rows.
EXPLAIN_SUBSET_SEED = 0


class Scorable(Protocol):
    """What the harness scores: a teacher or a trained student."""

    # The network behind the model (None for tree ensembles) and where it runs: explainers,
    # Quantus and dissection need them.
    module: nn.Module | None
    device: torch.device

    @property
    def n_params(self) -> int: ...

    def predict_logits(self, x: np.ndarray) -> np.ndarray: ...


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass
class ScoringContext:
    """One model to score against its teacher on a dataset's test split.

    Expensive quantities (logits, later attributions) are computed once, on first use, and shared
    by every metric that needs them.
    """

    bundle: DatasetBundle
    model: Scorable
    teacher: Scorable
    train_seconds: float
    # Size of the seeded test subset on which explanations are scored (the profile's n_explain).
    n_explain: int

    @property
    def is_teacher(self) -> bool:
        return self.model is self.teacher

    @cached_property
    def explain_index(self) -> np.ndarray:
        """Test rows on which explanations are scored: the same for the teacher and every student."""
        n_test = len(self.bundle.test)
        if self.n_explain >= n_test:
            return np.arange(n_test)
        rng = np.random.default_rng(EXPLAIN_SUBSET_SEED)
        return np.sort(rng.choice(n_test, size=self.n_explain, replace=False))

    @cached_property
    def labels(self) -> np.ndarray:
        return self.bundle.test.y

    @cached_property
    def logits(self) -> np.ndarray:
        return self.model.predict_logits(self.bundle.test.x)

    @cached_property
    def probs(self) -> np.ndarray:
        return softmax(self.logits.astype(np.float64))

    @cached_property
    def teacher_probs(self) -> np.ndarray:
        if self.is_teacher:
            return self.probs
        return softmax(self.teacher.predict_logits(self.bundle.test.x).astype(np.float64))


Compute = Callable[[ScoringContext], float]


@dataclass(frozen=True)
class Metric:
    name: str
    category: str
    higher_is_better: bool
    modalities: frozenset[str]
    compute: Compute
    description: str
    settings: dict[str, Any] = field(default_factory=dict, hash=False)
    # None: applies to every dataset of its modalities; else a test such as "binary only".
    applies: Callable[[DatasetBundle], bool] | None = None
    # Wall-clock measurements differ between identical runs; determinism checks skip them.
    measures_time: bool = False

    def applies_to(self, bundle: DatasetBundle) -> bool:
        return bundle.modality in self.modalities and (self.applies is None or self.applies(bundle))

    def metadata(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "higher_is_better": self.higher_is_better,
            "description": self.description,
            "settings": self.settings,
            "measures_time": self.measures_time,
        }


METRICS: Registry[Metric] = Registry("metric")
BOTH = frozenset({"tabular", "image"})


def register_metric(
    name: str,
    *,
    category: str,
    higher_is_better: bool,
    modalities: frozenset[str] = BOTH,
    settings: dict[str, Any] | None = None,
    applies: Callable[[DatasetBundle], bool] | None = None,
    measures_time: bool = False,
) -> Callable[[Compute], Compute]:
    """Register `compute(ctx) -> float`; its docstring's first line is the metric's description."""

    def add(compute: Compute) -> Compute:
        description = " ".join((compute.__doc__ or "").strip().split("\n\n")[0].split())
        metric = Metric(
            name=name,
            category=category,
            higher_is_better=higher_is_better,
            modalities=modalities,
            compute=compute,
            description=description,
            settings=settings or {},
            applies=applies,
            measures_time=measures_time,
        )
        METRICS.register(name)(metric)
        return compute

    return add


def metrics_for(modality: str) -> list[Metric]:
    return [METRICS.get(n) for n in METRICS.names() if modality in METRICS.get(n).modalities]


def metric_settings(modality: str) -> dict[str, Any]:
    """What the run id hashes of the metrics: each metric's name and settings."""
    return {m.name: m.settings for m in metrics_for(modality)}


def score(ctx: ScoringContext) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Every applicable metric's value (a float; NaN becomes None in JSON) and its metadata."""
    values: dict[str, float] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for metric in metrics_for(ctx.bundle.modality):
        if metric.applies_to(ctx.bundle):
            values[metric.name] = float(metric.compute(ctx))
            metadata[metric.name] = metric.metadata()
    return values, metadata
