"""MetaQuantus's two tests of a metric (Hedström et al. 2023), with models as the ranked set.

A metric that ranks students must not reorder them when nothing that matters changed, and must
react when the models are broken. MetaQuantus states this for explainers; the `metaquantus`
package does not import with Quantus 0.6, so the tests are re-implemented here on what this
benchmark ranks — models: per dataset the teacher of seed 0 and two students of seed 0 (`scratch`
and `kd`, retrained from their records' settings, which on the CPU gives the same networks), each
scored by every Quantus metric of the profile as the suite scores it:

- **minor perturbations** (the noise-resilience test): each network's weights multiplied by
  N(1, 0.001), or the test inputs plus N(0, 0.001) noise, `DRAWS` times each. The metric passes
  when the ranking of the three models by its mean is kept in at least `PASS_SHARE` of the draws,
  and each model's per-sample scores stay indistinguishable from the unperturbed ones (two-sided
  Wilcoxon signed-rank test of the paired scores, p ≥ 0.05) in at least `PASS_SHARE` of (model,
  draw) pairs;
- **disruptive perturbations** (the adversarial-reactivity test): weights × N(1, 2), inputs + N(0,
  5). The metric passes when each model's per-sample scores change (Wilcoxon p < 0.05) in at
  least `PASS_SHARE` of (model, draw) pairs. How often the ranking changed is reported beside it.

A LightGBM teacher has no weights to perturb: it takes the input perturbations only, as the
`note` says. Draws are seeded, so the table is the same on every run on one machine.
`bench.report.reliability` reads the table (`metaquantus.csv` in the results folder) and treats a
metric that fails either test as unreliable on that dataset.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
import torch
from scipy import stats

from bench.core.budgets import ModalityBudget
from bench.data.bundle import DatasetBundle, Split
from bench.metrics import METRICS, SCORING_SEED, Scorable, ScoringContext, aggregate_samples
from bench.plan.planner import Plan
from bench.run.context import RunOptions, SuiteContext
from bench.run.predictors import StudentPredictor
from bench.run.progress import Progress
from bench.run.resume import FinishedRecords
from bench.run.student_stage import training_context
from bench.run.teacher_stage import Unavailable, prepare_dataset
from bench.train.method import METHODS

log = logging.getLogger(__name__)

STUDENTS = ("scratch", "kd")
DRAWS = 3
PASS_SHARE = 0.8
SIGNIFICANCE = 0.05
COLUMNS = [
    "profile", "dataset", "metric", "models", "draws", "nr_rank_kept", "nr_scores_kept",
    "noise_resilient", "ar_scores_changed", "ar_rank_changed", "adversarially_reactive", "note",
]  # fmt: skip


@dataclass(frozen=True)
class Perturbation:
    """What is perturbed, how strongly, and which test it belongs to."""

    target: Literal["model", "input"]
    scale: float
    strength: Literal["minor", "disruptive"]


PERTURBATIONS = (
    Perturbation("model", 0.001, "minor"),
    Perturbation("input", 0.001, "minor"),
    Perturbation("model", 2.0, "disruptive"),
    Perturbation("input", 5.0, "disruptive"),
)


def perturbed_network(model: Scorable, scale: float, seed: int, num_classes: int) -> Scorable:
    """A copy of `model`'s network with every weight multiplied by N(1, scale)."""
    module = copy.deepcopy(model.module)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.mul_(1 + scale * noise.to(parameter.device))
    return StudentPredictor(module, model.device, num_classes)


def perturbed_inputs(bundle: DatasetBundle, scale: float, seed: int) -> DatasetBundle:
    """`bundle` with N(0, scale) noise added to its test inputs."""
    rng = np.random.default_rng(seed)
    x = bundle.test.x
    noisy = (x + scale * rng.standard_normal(x.shape)).astype(x.dtype)
    return replace(bundle, test=Split(noisy, bundle.test.y))


def quantus_scores(
    bundle: DatasetBundle,
    model: Scorable,
    teacher: Scorable,
    budget: ModalityBudget,
    seed: int = SCORING_SEED,
    names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Every applicable Quantus metric's per-sample scores of `model` (or those of `names`), the
    global generators seeded by `seed` before each, as the suite seeds them (`SCORING_SEED`)."""
    ctx = ScoringContext(bundle, model, teacher, 0.0, budget.n_explain, budget.explanation)
    scores = {}
    for name in names if names is not None else METRICS.names():
        metric = METRICS.get(name)
        if metric.category.startswith("quantus_") and metric.applies_to(ctx):
            np.random.seed(seed)
            torch.manual_seed(seed)
            scores[name] = np.asarray(metric.compute(ctx), dtype=np.float64).ravel()
    return scores


@dataclass
class SeedZeroModels:
    """A dataset's teacher of seed 0 and its students of seed 0, trained, with their data."""

    dataset: str
    bundle: DatasetBundle
    teacher: Scorable
    models: dict[str, Scorable]
    budget: ModalityBudget


def seed_zero_models(
    plan: Plan, options: RunOptions, progress: Progress | None = None
) -> Iterator[SeedZeroModels]:
    """Per dataset of `plan` (whose runs are students of seed 0): the teacher, from the results
    folder's cache (trained there if missing), and the students retrained from their specs; on
    the CPU these are the networks the records scored."""
    ctx = SuiteContext(plan.profile, options, progress)
    for stage in FinishedRecords(ctx.folder).stages(plan, list(plan.runs)):
        if not stage.runs:
            continue
        prepared = prepare_dataset(ctx, replace(stage, teacher_done=True))
        if isinstance(prepared, Unavailable):
            log.warning("%s: no data or teacher, no models to test", stage.dataset)
            continue
        bundle, teacher = prepared.bundle, prepared.teacher
        models: dict[str, Scorable] = {"teacher": teacher}
        for spec in stage.runs:
            ctx.progress.stage(spec.label, "training")
            train = training_context(spec, bundle, teacher, options.device)
            student = METHODS.get(spec.method)(dict(spec.params)).fit(train)
            models[spec.variant] = StudentPredictor(student, options.device, bundle.num_classes)
        yield SeedZeroModels(stage.dataset, bundle, teacher, models, stage.runs[0].budget)


def _same_distribution(before: np.ndarray, after: np.ndarray) -> bool | None:
    """Whether a model's scores of the same samples stay the same: a two-sided Wilcoxon
    signed-rank test of the paired differences does not reject at 5 % (MetaQuantus compares the
    scores before and after a perturbation in the same way). None with fewer than two samples
    scored both times."""
    both = np.isfinite(before) & np.isfinite(after)
    differences = after[both] - before[both]
    if len(differences) < 2:
        return None
    if not np.any(differences):
        return True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = stats.wilcoxon(differences).pvalue
    return bool(p >= SIGNIFICANCE)


def _ranking(means: Sequence[float]) -> tuple[int, ...]:
    return tuple(np.argsort(-np.asarray(means, dtype=float), kind="stable"))


def _share(values: Sequence[bool | None]) -> float:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else math.nan


def _defined_mean(scores: np.ndarray) -> float:
    """The mean over the defined samples, as the records keep it (`aggregate_samples`)."""
    return aggregate_samples(scores)[0]


def metric_tests(
    base: dict[str, dict[str, np.ndarray]],
    perturbed: dict[Perturbation, list[dict[str, dict[str, np.ndarray]]]],
    metric: str,
) -> dict[str, float | bool]:
    """The two tests of one metric from per-sample scores: `base[model][metric]` unperturbed,
    `perturbed[p][draw][model][metric]` under each perturbation's draws (a model a perturbation
    does not apply to is absent from its draws)."""
    models = [m for m in base if metric in base[m]]
    reference = _ranking([_defined_mean(base[m][metric]) for m in models])
    kept_rank, kept_scores, changed_rank, changed_scores = [], [], [], []
    for perturbation, draws in perturbed.items():
        minor = perturbation.strength == "minor"
        for draw in draws:
            means = [
                _defined_mean(draw[m][metric]) if m in draw else _defined_mean(base[m][metric])
                for m in models
            ]
            same_order = _ranking(means) == reference
            (kept_rank if minor else changed_rank).append(same_order if minor else not same_order)
            for model in models:
                if model in draw and metric in draw[model]:
                    same = _same_distribution(base[model][metric], draw[model][metric])
                    if minor:
                        kept_scores.append(same)
                    else:
                        changed_scores.append(None if same is None else not same)
    nr_rank, nr_scores = _share(kept_rank), _share(kept_scores)
    ar_scores = _share(changed_scores)
    return {
        "nr_rank_kept": nr_rank,
        "nr_scores_kept": nr_scores,
        "noise_resilient": bool(nr_rank >= PASS_SHARE and nr_scores >= PASS_SHARE),
        "ar_scores_changed": ar_scores,
        "ar_rank_changed": _share(changed_rank),
        "adversarially_reactive": bool(ar_scores >= PASS_SHARE),
    }


def metaquantus_table(
    plan: Plan, options: RunOptions, progress: Progress | None = None
) -> pd.DataFrame:
    """The two tests of every Quantus metric on every dataset of `plan` (whose runs are the
    students of `STUDENTS` at seed 0, with their teacher of seed 0)."""
    rows = []
    for trained in seed_zero_models(plan, options, progress):
        bundle, teacher, models, budget = (
            trained.bundle, trained.teacher, trained.models, trained.budget
        )  # fmt: skip
        base = {name: quantus_scores(bundle, m, teacher, budget) for name, m in models.items()}
        perturbed: dict[Perturbation, list[dict[str, dict[str, np.ndarray]]]] = {}
        for p_index, perturbation in enumerate(PERTURBATIONS):
            perturbed[perturbation] = []
            for draw in range(DRAWS):
                seed = 1000 * (p_index + 1) + draw
                scored = {}
                for name, model in models.items():
                    if perturbation.target == "model":
                        if model.module is None:
                            continue  # a tree teacher: inputs only
                        scored[name] = quantus_scores(
                            bundle,
                            perturbed_network(model, perturbation.scale, seed, bundle.num_classes),
                            teacher,
                            budget,
                        )
                    else:
                        noisy = perturbed_inputs(bundle, perturbation.scale, seed)
                        scored[name] = quantus_scores(noisy, model, teacher, budget)
                perturbed[perturbation].append(scored)
        note = "" if teacher.module is not None else "tree teacher: input perturbations only"
        for metric in sorted({m for scores in base.values() for m in scores}):
            rows.append(
                {
                    "profile": plan.profile.name,
                    "dataset": trained.dataset,
                    "metric": metric,
                    "models": ", ".join(models),
                    "draws": DRAWS,
                    **metric_tests(base, perturbed, metric),
                    "note": note,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)
