"""The stages of a suite, each doing its work and writing its records.

The teacher stage, once per (dataset, teacher seed), loads the data, trains or loads the teacher
and scores its reference rows (the teacher and the control rows); the student stage trains and
scores one run. Failures are isolated: a run that raises is recorded as `failed` (with its
traceback), one whose loss goes non-finite as `diverged`; data that cannot be had makes its runs
`skipped`. The runner calls the stages in this process (`bench.run.runner`), the executors' workers in
theirs (`bench.run.executors`), each with a `Stages` of its own.

Processes may share a results folder: a run's record is written only by the process holding the
run's lock, which checks again, once it holds it, whether the run has meanwhile finished; a
teacher is trained under the teacher's lock, so a second process waits and then loads the first
one's from the cache.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.core.atomic import (
    remove_temporaries,
    write_json_atomic,
)
from bench.core.budgets import Profile
from bench.core.errors import DatasetUnavailable, Diverged
from bench.core.locks import hold_lock, lock_path, try_lock
from bench.core.sealed import write_array_sealed
from bench.core.specs import RunSpec, TeacherSpec, reference_run_id
from bench.core.vocabulary import (
    PERMUTED_CONTROL_ROW,
    RANDOM_CONTROL_ROW,
    REFERENCE_ROWS,
    TEACHER_ROW,
    UNTRAINED_CONTROL_ROW,
    Category,
)
from bench.data.bundle import DATASETS, DatasetBundle, DatasetLoaderOptions
from bench.explain.explainers import ExplainSettings, explain
from bench.metrics import ScoringContext, metric_settings, score
from bench.metrics.dissection import dissection_summary
from bench.models import build_model, count_parameters
from bench.results.records import skeleton
from bench.run.environment import environment
from bench.run.progress import Progress, SilentProgress
from bench.run.resume import DatasetStage, FinishedRecords, stage_label
from bench.train.loop import TrainContext, network_logits, seed_everything
from bench.train.method import METHODS
from bench.train.teachers import Teacher, obtain_teacher, teacher_dir

log = logging.getLogger(__name__)

# The control row has no predictions of its own: only its explanations are scored.
CONTROL_CATEGORIES = frozenset(c for c in Category if c.rates_explanations)


@dataclass(frozen=True)
class RunOptions:
    results: Path
    device: torch.device
    force: bool = False
    data_dir: Path | None = None


@dataclass(frozen=True)
class Ready:
    """A teacher stage that succeeded: the data and the teacher its student stages learn from."""

    bundle: DatasetBundle
    teacher: Teacher


@dataclass(frozen=True)
class Unavailable:
    """A teacher stage whose data or teacher could not be had: the statuses of its runs, whose
    records say why (`skipped` for unavailable data, else `failed`)."""

    statuses: list[str]


@dataclass(frozen=True)
class Control:
    """A control row: the model whose explanations are scored against `teacher`, and what of it
    is scored (`categories`; None: every metric, as for a student)."""

    teacher: Teacher
    row: str
    description: str
    model: Any
    categories: frozenset[str] | None
    explainer_override: str | None = None


class PermutedExplanations:
    """The teacher, except that each explained sample gets the teacher's explanation of another.

    The permutation is a fixed derangement (no sample keeps its own explanation) of however many
    samples are explained, so the row is the same for every run and is cached with the teacher's
    explanations. Only explanation agreement is scored on it: it has no predictions of its own.
    """

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher
        self.module = teacher.module
        self.device = teacher.device

    @property
    def n_params(self) -> int:
        return self.teacher.n_params

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        return self.teacher.predict_logits(x)

    def explain(
        self, explainer: str, x: np.ndarray, targets: np.ndarray, settings: ExplainSettings
    ) -> np.ndarray:
        return self.teacher.explain(explainer, x, targets, settings)[derangement(len(x))]


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A seeded permutation of range(n) with no fixed point (a random order, shifted by one)."""
    order = np.random.default_rng(seed).permutation(n)
    result = np.empty(n, dtype=np.int64)
    result[order] = np.roll(order, 1)
    return result


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


class Stages:
    """The stages of one profile's suite, for one results folder and device."""

    def __init__(
        self,
        profile: Profile,
        options: RunOptions,
        progress: Progress | None = None,
        suite_started: float | None = None,
    ) -> None:
        self.profile = profile
        self.options = options
        self.progress = progress or SilentProgress()
        self.environment = environment(options.device)
        # With --force, a record written since this moment was written by a concurrent process
        # of the same suite: it is not redone. Workers receive the parent's value.
        self.suite_started = time.time() if suite_started is None else suite_started

    # --- what is already done -------------------------------------------------------------
    @property
    def finished(self) -> FinishedRecords:
        redo_before = self.suite_started if self.options.force else None
        return FinishedRecords(self.options.results, redo_before)

    def path_of(self, spec: RunSpec) -> Path:
        return self.finished.run_path(spec)

    def reference_path(self, spec: TeacherSpec, row: str = TEACHER_ROW) -> Path:
        """The record of one of a teacher's reference rows (the teacher or a control row)."""
        return self.finished.reference_path(self.profile.name, spec, row)

    def reference_id(self, spec: TeacherSpec) -> str:
        """The run id of a teacher's reference rows, from the registries of this process: a
        worker has no plan. The parent's plan computes the same id from the catalogue
        (`Plan.reference_ids`, one formula: `specs.reference_run_id`)."""
        budget = self.profile.budget(spec.dataset, spec.modality)
        return reference_run_id(spec, budget, metric_settings(spec.modality))

    # --- the teacher stage ------------------------------------------------------------------
    def prepare_dataset(self, stage: DatasetStage) -> Ready | Unavailable:
        """The teacher stage: load the data and obtain the teacher, scoring its reference rows if
        they are missing; when either cannot be had, record the stage's runs as not run."""
        label = stage_label(stage)
        self.progress.began(label, ("teacher", stage.dataset))
        started = time.perf_counter()
        try:
            return self._prepare_dataset(stage, label)
        finally:
            self.progress.teacher_finished(label, stage.dataset, time.perf_counter() - started)

    def _prepare_dataset(self, stage: DatasetStage, label: str) -> Ready | Unavailable:
        entry = DATASETS.get(stage.dataset)
        try:
            self.progress.stage(label, "loading data")
            bundle = entry.load(DatasetLoaderOptions(data_dir=self.options.data_dir))
        except DatasetUnavailable as exc:
            log.warning("dataset %s unavailable: %s", stage.dataset, exc)
            return Unavailable([self.record_unrun(s, "skipped", exc, None) for s in stage.runs])
        except Exception as exc:
            reason = "loading the dataset"
            return Unavailable([self.record_unrun(s, "failed", exc, reason) for s in stage.runs])

        try:
            self.progress.stage(label, "teacher")
            teacher = self.teacher_stage(stage.teacher, bundle, stage.teacher_done, label)
        except Exception as exc:
            log.error("teacher of %s failed: %s", stage.dataset, exc)
            reason = "the teacher stage"
            return Unavailable([self.record_unrun(s, "failed", exc, reason) for s in stage.runs])
        return Ready(bundle, teacher)

    def teacher_stage(
        self, spec: TeacherSpec, bundle: DatasetBundle, teacher_done: bool, label: str
    ) -> Teacher:
        """The dataset's teacher, trained at most once however many processes need it: under
        the teacher's lock a second process waits, then loads the first one's from the cache."""
        folder = teacher_dir(self.options.results, spec)
        with hold_lock(lock_path(folder)):
            # Staging folders of a training that was killed: no one else is training it now.
            for stale in folder.parent.glob(f".{spec.key}.*"):
                shutil.rmtree(stale, ignore_errors=True)
            teacher = obtain_teacher(
                spec,
                bundle,
                self.options.results,
                self.options.device,
                on_epoch=lambda epoch, epochs: self.progress.epoch(
                    label, "teacher training", epoch, epochs
                ),
            )
            profile = self.profile.name
            if not teacher_done and not self.finished.reference_done(
                profile, spec, self.reference_id(spec)
            ):
                for row in REFERENCE_ROWS:
                    remove_temporaries(self.reference_path(spec, row))
                self.progress.stage(label, "scoring the teacher and its controls")
                self._score_teacher(teacher, bundle)
        return teacher

    # --- the student stage ------------------------------------------------------------------
    def run_student(self, spec: RunSpec, bundle: DatasetBundle, teacher: Teacher) -> str:
        """The student stage: train and score one run and write its record, unless another
        process has it; returns the run's status."""
        return self._locked(spec, lambda: self._run_one(spec, bundle, teacher))

    def record_unrun(
        self,
        spec: RunSpec,
        status: str,
        exc: BaseException,
        stage: str | None,
        lock_wait: float = 0.0,
    ) -> str:
        """Record a run that could not execute (`skipped` or `failed`, with `exc` as the reason).

        `lock_wait`: seconds to wait for the run's lock, when its holder is known to be ending.
        """
        return self._locked(spec, lambda: self._write_unrun(spec, status, exc, stage), lock_wait)

    def _locked(self, spec: RunSpec, work: Callable[[], str], lock_wait: float = 0.0) -> str:
        """Do `work`, which writes the run's record, holding the run's lock.

        A run whose lock another live process holds is left to it (`locked`); one that finished
        while this process was busy with others is not redone (`done`).
        """
        path = self.path_of(spec)
        with try_lock(lock_path(path), wait=lock_wait) as held:
            if held and not self.finished.is_done(path, spec.run_id):
                remove_temporaries(path)
                return work()
        status = "done" if held else "locked"
        self.progress.finished(spec.label, status, 0.0)
        return status

    # --- records ---------------------------------------------------------------------------
    def student_record(self, spec: RunSpec, bundle: DatasetBundle | None) -> dict[str, Any]:
        method = METHODS.get(spec.method)
        return skeleton(
            run_id=spec.run_id,
            role="student",
            dataset=dataset_entry(spec.dataset, spec.dataset_version, spec.modality, bundle),
            method={
                "name": spec.variant,
                "base": spec.method,
                "params": dict(spec.params),
                "citation": method.citation,
                "family": method.family,
                # What the report says of the row: it reads records, never the method's code.
                "description": method.describe(),
            },
            teacher=spec.teacher.as_dict(),
            seed=spec.seed,
            profile=spec.profile,
            budget=spec.budget.as_dict(),
            environment=self.environment,
            started=_now(),
        )

    def _write_unrun(
        self, spec: RunSpec, status: str, exc: BaseException, stage: str | None
    ) -> str:
        record = self.student_record(spec, None)
        record.update(status=status, ended=record["started"], error=_error(exc, stage))
        write_json_atomic(self.path_of(spec), record)
        self.progress.finished(spec.label, status, 0.0)
        return status

    def _run_one(self, spec: RunSpec, bundle: DatasetBundle, teacher: Teacher) -> str:
        record = self.student_record(spec, bundle)
        started = time.perf_counter()
        timings: dict[str, float] = {}
        ctx: TrainContext | None = None
        try:
            self.progress.began(spec.label, ("run", spec.dataset))
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
                on_epoch=lambda epoch, epochs: self.progress.epoch(
                    spec.label, "training", epoch, epochs
                ),
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
            record["dissection"] = dissection_summary(scoring)
            record["attribution_maps"] = save_attribution_maps(self.path_of(spec), scoring)
            timings["score"] = time.perf_counter() - started - timings["train"]
            record["status"] = "ok"
        except Diverged as exc:
            record.update(status="diverged", error=_error(exc, "training"))
        except (Exception, SystemExit) as exc:  # a method's sys.exit() must not end the suite
            record.update(status="failed", error=_error(exc, None))
        if ctx is not None:
            record["training"] = {
                "best_epoch": ctx.best_epoch,
                "last_epoch_test_accuracy": ctx.last_epoch_test_accuracy,
                "history": ctx.history,
            }
        timings["total"] = time.perf_counter() - started
        record.update(timings=timings, ended=_now())
        write_json_atomic(self.path_of(spec), record)
        self.progress.finished(spec.label, record["status"], timings["total"])
        return record["status"]

    def _score_teacher(self, teacher: Teacher, bundle: DatasetBundle) -> None:
        """The teacher's reference row, and the control rows beside it (`CONTROL_ROWS`)."""
        spec = teacher.spec
        budget = self.profile.budget(spec.dataset, spec.modality)
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
        method = {"name": TEACHER_ROW, "base": spec.kind, "params": spec.settings}
        record = self._reference_record(spec, bundle, "teacher", method, metrics, metadata)
        maps = save_attribution_maps(self.reference_path(spec), scoring, with_inputs=True)
        record.update(
            attribution_maps=maps,
            dissection=dissection_summary(scoring),
            teacher={**spec.as_dict(), **info},
            training={
                "last_epoch_test_accuracy": teacher.info.get("last_epoch_test_accuracy"),
                "history": teacher.info.get("history"),
            },
            timings={"train": info["train_seconds"], "score": time.perf_counter() - started},
        )
        write_json_atomic(self.reference_path(spec), record)
        for control in self._controls(teacher, bundle):
            self._score_control(control, bundle, budget)

    def _controls(self, teacher: Teacher, bundle: DatasetBundle) -> list[Control]:
        """The floors of the explanation metrics for this teacher (see `bench.train.method`)."""
        budget = self.profile.budget(teacher.spec.dataset, teacher.spec.modality)
        seed_everything(teacher.spec.seed)
        arch = budget.student
        untrained = build_model(arch.model, bundle.input_shape, bundle.num_classes, **arch.kwargs())
        return [
            Control(
                teacher,
                RANDOM_CONTROL_ROW,
                "Control: uniform random attributions, explaining the teacher.",
                teacher,
                CONTROL_CATEGORIES,
                explainer_override="random",
            ),
            Control(
                teacher,
                PERMUTED_CONTROL_ROW,
                "Control: the teacher's explanation of another test sample (a fixed derangement "
                "of the explained subset), compared with its explanation of this one.",
                PermutedExplanations(teacher),
                frozenset({"explanation"}),
            ),
            Control(
                teacher,
                UNTRAINED_CONTROL_ROW,
                f"Control: a randomly initialised student of the standard architecture "
                f"({arch.model}, {dict(arch.size)}), seeded with the teacher's seed, scored as a "
                "student.",
                StudentPredictor(
                    untrained.to(self.options.device), self.options.device, bundle.num_classes
                ),  # fmt: skip
                None,
            ),
        ]

    def _score_control(self, control: Control, bundle: DatasetBundle, budget: Any) -> None:
        spec = control.teacher.spec
        started = time.perf_counter()
        scoring = ScoringContext(
            bundle,
            control.model,
            control.teacher,
            0.0,
            budget.n_explain,
            budget.explanation,
            explainer_override=control.explainer_override,
        )
        metrics, metadata = score(scoring, categories=control.categories)
        method = {
            "name": control.row,
            "base": control.row,
            "params": {},
            "citation": control.description,
        }
        record = self._reference_record(spec, bundle, "control", method, metrics, metadata)
        record.update(teacher=spec.as_dict(), timings={"score": time.perf_counter() - started})
        if control.categories is None:  # a whole model: dissected and shown like a student
            record["dissection"] = dissection_summary(scoring)
            path = self.reference_path(spec, control.row)
            record["attribution_maps"] = save_attribution_maps(path, scoring)
        write_json_atomic(self.reference_path(spec, control.row), record)

    def _reference_record(
        self,
        spec: TeacherSpec,
        bundle: DatasetBundle,
        role: str,
        method: dict[str, Any],
        metrics: dict[str, float],
        metadata: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        """A teacher's or a control row's record, scored and `ok`."""
        now = _now()
        record = skeleton(
            run_id=self.reference_id(spec),
            role=role,
            dataset=dataset_entry(spec.dataset, spec.dataset_version, spec.modality, bundle),
            method=method,
            seed=spec.seed,
            profile=self.profile.name,
            budget=self.profile.budget(spec.dataset, spec.modality).as_dict(),
            environment=self.environment,
            started=now,
        )
        record.update(status="ok", metrics=metrics, metric_metadata=metadata, ended=now)
        return record


def dataset_entry(
    name: str, version: str, modality: str, bundle: DatasetBundle | None
) -> dict[str, Any]:
    """A record's `dataset`: its identity, and its sizes when the data was loaded."""
    return {
        "name": name,
        "version": version,
        "modality": modality,
        "sizes": bundle.sizes() if bundle else None,
        "num_classes": bundle.num_classes if bundle else None,
    }


GALLERY_SAMPLES = 4


def save_attribution_maps(
    record_file: Path, scoring: ScoringContext, with_inputs: bool = False
) -> dict[str, Any] | None:
    """Keep the first explained test samples' attributions beside an image run's record.

    The report's gallery puts the teacher's and each student's maps of the same test images side
    by side; the scored attributions are already computed (and cached by `scoring`), so this costs
    only a small `.npy` file (`seed<k>.maps.npy`, float32, the explainer's output shape). The
    teacher also keeps the images themselves (`seed<k>.inputs.npy`), so the report needs no data.
    Tables have no picture to show: None.
    """
    if scoring.bundle.modality != "image" or not scoring.explanation:
        return None
    explainer = scoring.explanation.explainers[0]
    index = scoring.explain_index[:GALLERY_SAMPLES]
    maps = np.asarray(scoring.attributions(explainer)[:GALLERY_SAMPLES], dtype=np.float32)
    maps_file = record_file.with_suffix(".maps.npy")
    write_array_sealed(maps_file, maps)
    entry: dict[str, Any] = {
        "explainer": explainer,
        "test_index": [int(i) for i in index],
        "file": maps_file.name,
    }
    if with_inputs:
        inputs_file = record_file.with_suffix(".inputs.npy")
        write_array_sealed(inputs_file, np.asarray(scoring.explain_x[:GALLERY_SAMPLES], np.float32))
        entry["inputs_file"] = inputs_file.name
    return entry


def _error(exc: BaseException, stage: str | None) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "stage": stage,
        "traceback": "".join(traceback.format_exception(exc)),
    }
