"""The metric registry and the scoring context every metric reads from.

As in Quantus, every metric declares its category, its direction and the data it applies to, so
the report never hard-codes which way is better.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from bench.core.budgets import ExplanationBudget
from bench.core.errors import BenchError
from bench.core.registry import Registry, first_paragraph
from bench.core.vocabulary import MODALITIES, Category
from bench.data.augment import black_fill
from bench.data.bundle import DatasetBundle
from bench.explain.explainers import EXPLAINERS, ExplainSettings, explainer_for
from bench.explain.shapley import background_sample

# Fixed, not the run's seed: every run of a dataset is scored on the same test rows, and with the
# same perturbations.
EXPLAIN_SUBSET_SEED = 0
SCORING_SEED = 0


class Scorable(Protocol):
    """What the harness scores: a teacher or a trained student."""

    # The network behind the model (None for tree ensembles) and where it runs: explainers,
    # Quantus and dissection need them.
    module: nn.Module | None
    device: torch.device

    @property
    def n_params(self) -> int: ...

    def predict_logits(self, x: np.ndarray) -> np.ndarray: ...

    def explain(
        self, explainer: str, x: np.ndarray, targets: np.ndarray, settings: ExplainSettings
    ) -> np.ndarray: ...


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
    explanation: ExplanationBudget | None = None
    # The control row: every explainer replaced by this one (the random explainer).
    explainer_override: str | None = None
    _attributions: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

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
    def explain_settings(self) -> ExplainSettings:
        """Baseline: the training mean for tables (DESIGN §5), a black image for images (in a
        bundle stored standardised, the value black takes after standardisation). Tables also
        get a seeded background sample of training rows (`bench.explain.shapley`), the same
        for the teacher and every student."""
        train = self.bundle.train.x
        background = None
        if self.bundle.modality == "tabular":
            baseline = train.mean(axis=0)
            background = background_sample(train, seed=EXPLAIN_SUBSET_SEED)
        else:
            baseline = np.zeros(train.shape[1:], dtype=np.float32)
            black = black_fill(self.bundle.extras)
            if black is not None:
                baseline += black.numpy()[:, None, None]
        steps = self.explanation.ig_steps if self.explanation else 32
        return ExplainSettings(
            baseline.astype(np.float32),
            steps,
            seed=EXPLAIN_SUBSET_SEED,
            background=background,
            groups=np.asarray(self.bundle.feature_of_column) if self.is_grouped else None,
        )

    @property
    def is_grouped(self) -> bool:
        """Whether the table's columns encode fewer original features (one-hot categories)."""
        return bool(self.bundle.feature_of_column)

    @cached_property
    def _membership(self) -> np.ndarray:
        """(columns, features): 1 where a column encodes an original feature."""
        features = np.asarray(self.bundle.feature_of_column)
        return (features[:, None] == np.arange(features.max() + 1)[None]).astype(np.float32)

    def per_feature(self, attributions: np.ndarray) -> np.ndarray:
        """Attributions per original feature, which agreement metrics compare: a one-hot
        feature's columns summed (signed, before any absolute value is taken); unchanged for a
        table without groups and for images."""
        if not self.is_grouped:
            return attributions
        return attributions @ self._membership

    @cached_property
    def explain_x(self) -> np.ndarray:
        return self.bundle.test.x[self.explain_index]

    @cached_property
    def at_baseline(self) -> np.ndarray:
        """Where each explained input equals the explainer's baseline, in the shape agreement
        metrics compare (`per_feature`; an image pixel when every channel does, an original
        feature when all its columns do): there IG and gradient × input are exactly 0 for every
        model, so agreement metrics leave these features out."""
        equal = self.explain_x == self.explain_settings.baseline
        if equal.ndim == 4:
            return equal.all(axis=1, keepdims=True)
        if self.is_grouped:
            return self.per_feature(equal.astype(np.float32)) == self._membership.sum(axis=0)
        return equal

    @cached_property
    def explain_targets(self) -> np.ndarray:
        """Explanations are of the true class, the same target for teacher and students."""
        return self.bundle.test.y[self.explain_index]

    def can_explain(self, explainer: str) -> bool:
        """Whether `explainer` applies to this model and its teacher on this dataset (Grad-CAM
        needs a fine enough layer in both); the control rows' override explains the model."""
        shape = tuple(self.bundle.input_shape)
        used = EXPLAINERS.get(self.explainer_override or explainer)
        return used.available(self.model.module, shape) and EXPLAINERS.get(explainer).available(
            self.teacher.module, shape
        )

    def attributions(self, explainer: str) -> np.ndarray:
        """The scored model's attributions on the explained subset (computed once per explainer:
        `own` of a network without an explainer of its own is its Grad-CAM, computed once)."""
        name = self.explainer_override or explainer_for(explainer, self.model.module)
        if name not in self._attributions:
            self._attributions[name] = self.model.explain(
                name, self.explain_x, self.explain_targets, self.explain_settings
            )
        return self._attributions[name]

    def teacher_attributions(self, explainer: str) -> np.ndarray:
        """The reference explanation: TreeSHAP for tree teachers (but for the random control and
        interventional Shapley values, which they play like networks), else the same explainer."""
        return self.teacher.explain(
            explainer_for(explainer, self.teacher.module),
            self.explain_x,
            self.explain_targets,
            self.explain_settings,
        )

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


# A metric returns one number, or one score per sample (NaN where the sample has none), which
# `score` averages over the defined samples and reports with its coverage.
Compute = Callable[[ScoringContext], "float | np.ndarray"]


# The closed range of values a metric can take, declared with it (`register_metric`): a record
# whose value lies outside is damaged and refused where it is read (`bench.results.record`).
Bounds = tuple[float, float]
UNIT: Bounds = (0.0, 1.0)
CORRELATION: Bounds = (-1.0, 1.0)
NON_NEGATIVE: Bounds = (0.0, math.inf)


@dataclass(frozen=True)
class Metric:
    name: str
    category: Category
    higher_is_better: bool
    modalities: frozenset[str]
    compute: Compute
    description: str
    bounds: Bounds
    settings: dict[str, Any] = field(default_factory=dict, hash=False)
    # None: applies to every run of its modalities; else a test such as "binary only".
    applies: Callable[[ScoringContext], bool] | None = None
    # Wall-clock measurements differ between identical runs; determinism checks skip them.
    measures_time: bool = False

    def applies_to(self, ctx: ScoringContext) -> bool:
        modality = ctx.bundle.modality
        return modality in self.modalities and (self.applies is None or self.applies(ctx))

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
    bounds: Bounds,
    modalities: frozenset[str] = BOTH,
    settings: dict[str, Any] | None = None,
    applies: Callable[[ScoringContext], bool] | None = None,
    measures_time: bool = False,
    version: int = 1,
) -> Callable[[Compute], Compute]:
    """Register `compute(ctx) -> float`; its docstring's first paragraph is the metric's description.

    `bounds`: the closed range its values lie in (`UNIT`, `CORRELATION`, `NON_NEGATIVE`, or its
    own); a record holding a value outside is refused as damaged. Not a setting: declaring a
    bound does not change what the metric computes, nor any run id.

    `version`: raised whenever the metric's definition changes. It is one of the metric's
    settings, which the run id of everything the metric scores hashes (`metric_settings`), so a
    value computed under an old definition is never reused under the new one.
    """
    low, high = bounds
    if not low < high:
        raise BenchError(f"metric {name!r}: bounds {bounds} are not a range (low < high)")

    if category not in set(Category) - {Category.EXPLANATION_EXCESS}:
        valid = ", ".join(c for c in Category if c is not Category.EXPLANATION_EXCESS)
        raise BenchError(f"metric {name!r}: category {category!r} is not one of {valid}")
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise BenchError(f"metric {name!r}: unknown modalities {sorted(unknown)}")

    def add(compute: Compute) -> Compute:
        description = first_paragraph(compute.__doc__)
        metric = Metric(
            name=name,
            category=Category(category),
            higher_is_better=higher_is_better,
            modalities=modalities,
            compute=compute,
            description=description,
            bounds=(float(low), float(high)),
            settings={**(settings or {}), "version": version},
            applies=applies,
            measures_time=measures_time,
        )
        METRICS.register(name)(metric)
        return compute

    return add


def metrics_for(modality: str) -> list[Metric]:
    return [METRICS.get(n) for n in METRICS.names() if modality in METRICS.get(n).modalities]


def declared_bounds() -> dict[str, Bounds]:
    """Every registered metric's bounds, by name: what a record's values are checked against."""
    return {name: METRICS.get(name).bounds for name in METRICS.names()}


def metric_settings(modality: str) -> dict[str, Any]:
    """What the run id hashes of the metrics: each metric's name and settings."""
    return {m.name: m.settings for m in metrics_for(modality)}


def aggregate_samples(scores: float | np.ndarray) -> tuple[float, dict[str, Any]]:
    """The mean over a metric's defined (finite) per-sample scores, and its coverage.

    Coverage is the share of the samples asked for that got a score: a NaN sample (a constant
    explanation, a failed perturbation) is left out of the mean but never out of the record, and
    one NaN no longer turns the whole run into null, as Quantus' own `np.mean` aggregation does.
    A plain number counts as one sample.
    """
    values = np.asarray(scores, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    value = float(finite.mean()) if len(finite) else math.nan
    return value, {
        "coverage": len(finite) / len(values) if len(values) else 0.0,
        "n_scored": len(finite),
        "n_asked": len(values),
        # The spread over samples: with n_scored, the standard error of `value`, which the
        # separation check (`bench.report.separation`) compares with the distance to a control row.
        "sample_sd": float(finite.std(ddof=1)) if len(finite) > 1 else None,
        # The means over the even and the odd samples asked (the same samples for every model,
        # undefined ones left out of their half): two parallel measurements of the same model,
        # whose agreement across models is the metric's split-half reliability
        # (`bench.report.reliability`).
        "split_halves": _halves(values),
    }


def _halves(values: np.ndarray) -> list[float] | None:
    """[mean of the even samples, mean of the odd ones] over their defined scores, or None when
    a half has none. Split by position among the samples asked, not among the defined ones: one
    undefined sample would otherwise shift every later sample into the other half, and two
    models' halves would hold different samples (a referee's catch)."""
    halves = []
    for half in (values[0::2], values[1::2]):
        defined = half[np.isfinite(half)]
        if not len(defined):
            return None
        halves.append(float(defined.mean()))
    return halves


def score(
    ctx: ScoringContext, categories: frozenset[str] | None = None
) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Every applicable metric's value (a float; NaN becomes None in JSON) and its metadata,
    including the coverage of its per-sample scores (`aggregate_samples`).

    `categories` limits scoring to some categories (the random-explainer control row has no
    predictions of its own).
    """
    values: dict[str, float] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for metric in metrics_for(ctx.bundle.modality):
        if categories is not None and metric.category not in categories:
            continue
        if metric.applies_to(ctx):
            # Quantus draws perturbations from the global generators: seeding before each metric
            # makes every value reproducible and independent of which metrics ran before it.
            np.random.seed(SCORING_SEED)
            torch.manual_seed(SCORING_SEED)
            values[metric.name], coverage = aggregate_samples(metric.compute(ctx))
            metadata[metric.name] = {**metric.metadata(), **coverage}
    return values, metadata
