"""Where a run's time goes: a per-stage cost breakdown of one kd run of each default dataset.

Run: python -m pytest benchmarks/bench_stages.py --benchmark-only -q -s
For breast_cancer (tabular), digits and concept_shapes (images), in the `default` profile's
budgets, on this process's torch threads, the stages of a student run and of its dataset's teacher
stage are timed one by one, as the runner performs them:
- `data`: loading the dataset;
- `teacher_epoch`, `student_epoch`: one training epoch (forward and backward of every batch; for
  the student, its teacher's outputs too), measured over `EPOCHS` epochs, not the profile's;
- `selection_epoch`: the per-epoch model selection (validation accuracy and the best weights'
  copy), part of each `student_epoch`;
- `explain/<explainer>`: the student's attributions on the scored subset, `teacher_explain/...`
  the teacher's (computed once per teacher and cached beside it);
- `metric/<name>`: each metric once its explanations are computed (Quantus metrics explain
  again inside), `dissection` the concept probe's, `gallery` the saved maps.
`student_total` scales the epochs up to the profile's and adds the scoring, as one run of the
suite spends them; `teacher_total` likewise adds the teacher's explanations (its reference and
control rows are not included). Figures land in `extra_info`, in seconds; issue 14's changes are judged against them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.core.specs import teacher_spec_for
from bench.data.bundle import DATASETS, DatasetLoaderOptions
from bench.metrics import SCORING_SEED, ScoringContext, metrics_for
from bench.metrics.dissection import dissection_of
from bench.plan.profiles import PROFILES
from bench.results.folder import ResultsFolder
from bench.run.predictors import StudentPredictor
from bench.run.student_stage import save_attribution_maps
from bench.train.loop import TrainContext, seed_everything
from bench.train.method import METHODS
from bench.train.teachers import obtain_teacher

CPU = torch.device("cpu")
EPOCHS = 2
PROFILE = PROFILES.get("default")


def timed(times: dict[str, float], name: str, work: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = work()
    times[name] = round(time.perf_counter() - started, 3)
    return result


def breakdown(dataset: str, results: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    entry = DATASETS.get(dataset)
    bundle = timed(times, "data", lambda: entry.load(DatasetLoaderOptions()))
    budget = PROFILE.budget(dataset, entry.modality)

    spec = teacher_spec_for(PROFILE, dataset, entry.version, entry.modality)
    if entry.modality == "image":  # a short teacher: per-epoch cost, then scaled
        # No step decay: the profile's milestones lie beyond the short run's epochs.
        training = {**spec.settings["training"], "epochs": EPOCHS, "lr_milestones": []}
        short = {**spec.settings, "training": training}
        spec = replace(spec, settings=short)
    teacher = timed(
        times,
        "teacher_train",
        lambda: obtain_teacher(spec, bundle, ResultsFolder(results).teacher_folder(spec), CPU),
    )
    teacher_epochs = budget.teacher_training.epochs if budget.teacher_training else None
    if teacher_epochs:
        times["teacher_epoch"] = round(times.pop("teacher_train") / EPOCHS, 3)

    seed_everything(0)
    short_budget = replace(budget.student_training, epochs=EPOCHS, lr_milestones=())
    ctx = TrainContext(bundle, teacher, short_budget, budget.student, CPU, seed=0)
    student = timed(times, "student_train", lambda: METHODS.get("kd")().fit(ctx))
    times["student_epoch"] = round(times.pop("student_train") / EPOCHS, 3)
    timed(times, "selection_epoch", lambda: ctx.validation_accuracy(student))
    # The best-weights copy, at most once per epoch.
    timed(times, "best_copy", lambda: {k: v.clone() for k, v in student.state_dict().items()})
    times["selection_epoch"] = round(times["selection_epoch"] + times.pop("best_copy"), 3)

    predictor = StudentPredictor(student, CPU, bundle.num_classes)
    scoring = ScoringContext(bundle, predictor, teacher, 0.0, budget.n_explain, budget.explanation)
    timed(times, "predict", lambda: scoring.logits)
    for explainer in budget.explanation.explainers:
        if scoring.can_explain(explainer):
            timed(times, f"explain/{explainer}", lambda e=explainer: scoring.attributions(e))
            # Once per teacher: cached beside it for every later run.
            timed(
                times,
                f"teacher_explain/{explainer}",
                lambda e=explainer: scoring.teacher_attributions(e),
            )
    if "concept_probe" in bundle.extras:
        timed(times, "dissection", lambda: dissection_of(scoring))
    for metric in metrics_for(entry.modality):
        if metric.applies_to(scoring):
            np.random.seed(SCORING_SEED)
            torch.manual_seed(SCORING_SEED)
            timed(times, f"metric/{metric.name}", lambda m=metric: m.compute(scoring))
    record = results / "runs" / "gallery.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    timed(times, "gallery", lambda: save_attribution_maps(record, scoring, results))

    scored = ("predict", "dissection", "gallery")
    scoring_total = sum(
        v for k, v in times.items() if k.startswith(("explain/", "metric/")) or k in scored
    )
    teacher_explain = sum(v for k, v in times.items() if k.startswith("teacher_explain/"))
    times["scoring_total"] = round(scoring_total, 3)
    epochs = budget.student_training.epochs
    times["student_total"] = round(times["student_epoch"] * epochs + scoring_total, 3)
    if teacher_epochs:
        times["teacher_total"] = round(times["teacher_epoch"] * teacher_epochs + teacher_explain, 3)
    return times


@pytest.mark.benchmark(group="stages")
@pytest.mark.parametrize("dataset", ["breast_cancer", "digits", "concept_shapes"])
def test_stage_breakdown(benchmark, dataset: str, tmp_path: Path) -> None:
    times = benchmark.pedantic(breakdown, args=(dataset, tmp_path), rounds=1, iterations=1)
    assert times["student_epoch"] > 0 and times["scoring_total"] > 0
    benchmark.extra_info.update(times)
    width = max(map(len, times))
    print(f"\n{dataset} (threads {torch.get_num_threads()}):")
    for name, seconds in sorted(times.items(), key=lambda item: -item[1]):
        print(f"  {name:<{width}} {seconds:8.3f} s")
