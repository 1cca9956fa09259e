"""The runner: teacher stage once per dataset, then every run's student stage, each to a record.

Failures are isolated: a run that raises is recorded as `failed` (with its traceback), one whose
loss goes non-finite as `diverged`, and the suite goes on. Finished runs whose id still matches
the plan are skipped, so an interrupted suite resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from bench import SCHEMA_VERSION
from bench.data import DATASETS, DatasetBundle, DatasetLoaderOptions
from bench.environment import environment
from bench.errors import DatasetUnavailable, Diverged
from bench.explainers import ExplainSettings, explain
from bench.method import METHODS, RANDOM_CONTROL_ROW, TEACHER_ROW
from bench.metrics import ScoringContext, metric_settings, score
from bench.models import count_parameters
from bench.planner import Plan
from bench.profiles import Profile
from bench.specs import RunSpec, TeacherSpec, stable_hash
from bench.store import read_record, record_path, write_json_atomic
from bench.teachers import Teacher, obtain_teacher
from bench.training import TrainContext, network_logits, seed_everything

log = logging.getLogger(__name__)

# The control row has no predictions of its own: only its explanations are scored.
CONTROL_CATEGORIES = frozenset(
    {
        "explanation",
        "quantus_faithfulness",
        "quantus_robustness",
        "quantus_complexity",
        "quantus_randomisation",
        "quantus_localisation",
    }
)


class Progress(Protocol):
    """What the runner reports as it goes; the CLI draws it, tests may record it."""

    def start(self, total: int, already_done: int) -> None: ...

    def stage(self, label: str, stage: str) -> None: ...

    def finished(self, label: str, status: str, seconds: float) -> None: ...


class SilentProgress:
    def start(self, total: int, already_done: int) -> None:
        pass

    def stage(self, label: str, stage: str) -> None:
        pass

    def finished(self, label: str, status: str, seconds: float) -> None:
        pass


@dataclass(frozen=True)
class RunOptions:
    results: Path
    device: torch.device
    force: bool = False
    data_dir: Path | None = None


@dataclass
class Summary:
    """Status counts of a suite; `done` counts runs skipped because they had finished before."""

    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def exit_status(self) -> int:
        return 1 if self.counts["failed"] or self.counts["diverged"] else 0


class StudentPredictor:
    """A trained student seen through the same interface as a teacher, for scoring."""

    def __init__(self, module: nn.Module, device: torch.device, num_classes: int) -> None:
        self.module = module.eval()
        self.device = device
        self.num_classes = num_classes

    @property
    def n_params(self) -> int:
        return count_parameters(self.module)

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        return network_logits(self.module, x, self.device)

    def explain(
        self, explainer: str, x: np.ndarray, targets: np.ndarray, settings: ExplainSettings
    ) -> np.ndarray:
        return explain(explainer, self.module, x, targets, self.num_classes, settings, self.device)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def teacher_run_id(spec: TeacherSpec, profile: Profile) -> str:
    """The id of a dataset's reference rows (teacher and random control): what scoring them needs."""
    return stable_hash(
        {
            "schema_version": SCHEMA_VERSION,
            "teacher": spec.key,
            "budget": profile.budget(spec.modality).as_dict(),
            "metrics": metric_settings(spec.modality),
        }
    )


class SuiteRunner:
    """Executes a plan in this process, one run after another (the `local` executor)."""

    def __init__(self, plan: Plan, options: RunOptions, progress: Progress | None = None) -> None:
        self.plan = plan
        self.options = options
        self.progress = progress or SilentProgress()
        self.environment = environment(options.device)

    # --- what is already done -------------------------------------------------------------
    def path_of(self, spec: RunSpec) -> Path:
        return record_path(
            self.options.results, spec.profile, spec.dataset, spec.variant, spec.seed
        )

    def teacher_path(self, spec: TeacherSpec) -> Path:
        return record_path(
            self.options.results, self.plan.profile.name, spec.dataset, TEACHER_ROW, spec.seed
        )

    def control_path(self, spec: TeacherSpec) -> Path:
        return record_path(
            self.options.results,
            self.plan.profile.name,
            spec.dataset,
            RANDOM_CONTROL_ROW,
            spec.seed,
        )

    def _is_done(self, path: Path, run_id: str) -> bool:
        if self.options.force:
            return False
        record = read_record(path)
        return record is not None and record["status"] == "ok" and record["run_id"] == run_id

    # --- the suite -------------------------------------------------------------------------
    def run(self) -> Summary:
        started = time.perf_counter()
        summary = Summary()
        todo = [
            spec for spec in self.plan.runs if not self._is_done(self.path_of(spec), spec.run_id)
        ]
        summary.counts["done"] = len(self.plan.runs) - len(todo)
        self.progress.start(len(self.plan.runs), summary.counts["done"])
        for dataset in self.plan.datasets():
            runs = [spec for spec in todo if spec.dataset == dataset]
            teacher_spec = self.plan.teachers[dataset]
            reference_id = teacher_run_id(teacher_spec, self.plan.profile)
            teacher_done = all(
                self._is_done(path, reference_id)
                for path in (self.teacher_path(teacher_spec), self.control_path(teacher_spec))
            )
            if runs or not teacher_done:
                for status in self._run_dataset(dataset, teacher_spec, runs, teacher_done):
                    summary.counts[status] += 1
        summary.seconds = time.perf_counter() - started
        return summary

    def _run_dataset(
        self, dataset: str, teacher_spec: TeacherSpec, runs: list[RunSpec], teacher_done: bool
    ) -> list[str]:
        entry = DATASETS.get(dataset)
        try:
            self.progress.stage(dataset, "loading data")
            bundle = entry.load(DatasetLoaderOptions(data_dir=self.options.data_dir))
        except DatasetUnavailable as exc:
            log.warning("dataset %s unavailable: %s", dataset, exc)
            return [self._write_unrun(spec, "skipped", exc, None) for spec in runs]
        except Exception as exc:
            return [self._write_unrun(spec, "failed", exc, "loading the dataset") for spec in runs]

        try:
            self.progress.stage(dataset, "teacher")
            teacher = obtain_teacher(
                teacher_spec, bundle, self.options.results, self.options.device
            )
            if not teacher_done:
                self._score_teacher(teacher, bundle)
        except Exception as exc:
            log.error("teacher of %s failed: %s", dataset, exc)
            return [self._write_unrun(spec, "failed", exc, "the teacher stage") for spec in runs]
        return [self._run_one(spec, bundle, teacher) for spec in runs]

    # --- records ---------------------------------------------------------------------------
    def _base_record(self, spec: RunSpec, bundle: DatasetBundle | None) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": spec.run_id,
            "status": None,
            "role": "student",
            "dataset": {
                "name": spec.dataset,
                "version": spec.dataset_version,
                "modality": spec.modality,
                "sizes": bundle.sizes() if bundle else None,
                "num_classes": bundle.num_classes if bundle else None,
            },
            "method": {
                "name": spec.variant,
                "base": spec.method,
                "params": dict(spec.params),
                "citation": METHODS.get(spec.method).citation,
            },
            "teacher": spec.teacher.as_dict(),
            "student": None,
            "seed": spec.seed,
            "profile": spec.profile,
            "budget": spec.budget.as_dict(),
            "metrics": {},
            "metric_metadata": {},
            "training": None,
            "timings": {},
            "environment": self.environment,
            "started": _now(),
            "ended": None,
            "error": None,
        }

    def _write_unrun(
        self, spec: RunSpec, status: str, exc: BaseException, stage: str | None
    ) -> str:
        record = self._base_record(spec, None)
        record.update(status=status, ended=record["started"], error=_error(exc, stage))
        write_json_atomic(self.path_of(spec), record)
        self.progress.finished(spec.label, status, 0.0)
        return status

    def _run_one(self, spec: RunSpec, bundle: DatasetBundle, teacher: Teacher) -> str:
        record = self._base_record(spec, bundle)
        started = time.perf_counter()
        timings: dict[str, float] = {}
        ctx: TrainContext | None = None
        try:
            self.progress.stage(spec.label, "training")
            seed_everything(spec.seed)
            method = METHODS.get(spec.method)(dict(spec.params))
            ctx = TrainContext(
                bundle=bundle,
                teacher=teacher,
                budget=spec.budget.student_training,
                student_architecture=spec.budget.student,
                device=self.options.device,
                seed=spec.seed,
            )
            student = method.fit(ctx)
            timings["train"] = time.perf_counter() - started
            record["student"] = {
                "architecture": type(student).__name__,
                "parameters": count_parameters(student),
            }
            self.progress.stage(spec.label, "scoring")
            predictor = StudentPredictor(student, self.options.device, bundle.num_classes)
            scoring = ScoringContext(
                bundle,
                predictor,
                teacher,
                timings["train"],
                spec.budget.n_explain,
                spec.budget.explanation,
            )
            if not np.isfinite(scoring.logits).all():
                raise Diverged("the trained student outputs non-finite logits")
            record["metrics"], record["metric_metadata"] = score(scoring)
            timings["score"] = time.perf_counter() - started - timings["train"]
            record["status"] = "ok"
        except Diverged as exc:
            record.update(status="diverged", error=_error(exc, "training"))
        except Exception as exc:
            record.update(status="failed", error=_error(exc, None))
        if ctx is not None:
            record["training"] = {"best_epoch": ctx.best_epoch, "history": ctx.history}
        timings["total"] = time.perf_counter() - started
        record.update(timings=timings, ended=_now())
        write_json_atomic(self.path_of(spec), record)
        self.progress.finished(spec.label, record["status"], timings["total"])
        return record["status"]

    def _score_teacher(self, teacher: Teacher, bundle: DatasetBundle) -> None:
        """The teacher's reference row, and the random-explainer control row beside it."""
        spec = teacher.spec
        budget = self.plan.profile.budget(spec.modality)
        started = time.perf_counter()
        scoring = ScoringContext(
            bundle,
            teacher,
            teacher,
            teacher.info["train_seconds"],
            budget.n_explain,
            budget.explanation,
        )
        metrics, metadata = score(scoring)
        info = {k: v for k, v in teacher.info.items() if k != "history"}
        record = self._reference_record(spec, bundle, TEACHER_ROW, metrics, metadata)
        record.update(
            role="teacher",
            method={"name": TEACHER_ROW, "base": spec.kind, "params": spec.settings},
            teacher={**spec.as_dict(), **info},
            training={"history": teacher.info.get("history")},
            timings={"train": info["train_seconds"], "score": time.perf_counter() - started},
        )
        write_json_atomic(self.teacher_path(spec), record)

        started = time.perf_counter()
        control = ScoringContext(
            bundle,
            teacher,
            teacher,
            0.0,
            budget.n_explain,
            budget.explanation,
            explainer_override="random",
        )
        metrics, metadata = score(control, categories=CONTROL_CATEGORIES)
        record = self._reference_record(spec, bundle, RANDOM_CONTROL_ROW, metrics, metadata)
        record.update(
            role="control",
            method={
                "name": RANDOM_CONTROL_ROW,
                "base": "random",
                "params": {},
                "citation": "Control: uniform random attributions, explaining the teacher.",
            },
            teacher=spec.as_dict(),
            timings={"score": time.perf_counter() - started},
        )
        write_json_atomic(self.control_path(spec), record)

    def _reference_record(
        self,
        spec: TeacherSpec,
        bundle: DatasetBundle,
        row: str,
        metrics: dict[str, float],
        metadata: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        now = _now()
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": teacher_run_id(spec, self.plan.profile),
            "status": "ok",
            "role": None,
            "dataset": {
                "name": spec.dataset,
                "version": spec.dataset_version,
                "modality": spec.modality,
                "sizes": bundle.sizes(),
                "num_classes": bundle.num_classes,
            },
            "method": None,
            "teacher": None,
            "student": None,
            "seed": spec.seed,
            "profile": self.plan.profile.name,
            "budget": self.plan.profile.budget(spec.modality).as_dict(),
            "metrics": metrics,
            "metric_metadata": metadata,
            "training": None,
            "timings": {},
            "environment": self.environment,
            "started": now,
            "ended": now,
            "error": None,
        }


def _error(exc: BaseException, stage: str | None) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "stage": stage,
        "traceback": "".join(traceback.format_exception(exc)),
    }
