"""The teacher stage, once per (dataset, teacher seed): load the data, train or load the teacher,
and score its reference rows (the teacher itself and the control rows) when they are missing.

Data that cannot be had makes the stage's runs `skipped`, and so do published teacher weights that
cannot be had (offline); a teacher that fails otherwise, `failed`.
A teacher is trained under the teacher's lock, so a second process waits and then loads the first
one's from the cache.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from typing import Any

from bench.core.atomic import remove_temporaries
from bench.core.confined import refuse_links
from bench.core.errors import DatasetUnavailable
from bench.core.locks import hold_lock
from bench.core.specs import TeacherSpec
from bench.core.vocabulary import TEACHER_ROW, Role
from bench.data.bundle import DATASETS, DatasetBundle, DatasetLoaderOptions
from bench.metrics import ScoringContext, score
from bench.metrics.dissection import dissection_summary
from bench.results.record import Record, Status
from bench.run.context import SuiteContext, dataset_entry, now
from bench.run.controls import Control, build_controls
from bench.run.resume import DatasetStage, stage_label
from bench.run.student_stage import record_unrun, save_attribution_maps
from bench.train.checkpoints import EpochCheckpoints
from bench.train.teachers import Teacher, obtain_teacher

log = logging.getLogger(__name__)


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


def prepare_dataset(ctx: SuiteContext, stage: DatasetStage) -> Ready | Unavailable:
    """Load the data and obtain the teacher, scoring its reference rows if they are missing; when
    either cannot be had, record the stage's runs as not run."""
    label = stage_label(stage)
    ctx.progress.began(label, stage.work)
    started = time.perf_counter()
    try:
        return _prepare_dataset(ctx, stage, label)
    finally:
        ctx.progress.teacher_finished(label, stage.work, time.perf_counter() - started)


def _prepare_dataset(ctx: SuiteContext, stage: DatasetStage, label: str) -> Ready | Unavailable:
    entry = DATASETS.get(stage.dataset)
    try:
        ctx.progress.stage(label, "loading data")
        bundle = entry.load(DatasetLoaderOptions(data_dir=ctx.options.data_dir))
    except DatasetUnavailable as exc:
        log.warning("dataset %s unavailable: %s", stage.dataset, exc)
        return Unavailable([record_unrun(ctx, s, Status.SKIPPED, exc, None) for s in stage.runs])
    except Exception as exc:
        reason = "loading the dataset"
        return Unavailable([record_unrun(ctx, s, Status.FAILED, exc, reason) for s in stage.runs])
    try:
        ctx.progress.stage(label, "teacher")
        teacher = _teacher(ctx, stage, bundle, label)
    except DatasetUnavailable as exc:  # published weights that cannot be had, like data
        log.warning("the teacher of %s is unavailable: %s", stage.dataset, exc)
        return Unavailable([record_unrun(ctx, s, Status.SKIPPED, exc, None) for s in stage.runs])
    except Exception as exc:
        log.error("%s failed: %s", label, exc)
        reason = "the teacher stage"
        return Unavailable([record_unrun(ctx, s, Status.FAILED, exc, reason) for s in stage.runs])
    return Ready(bundle, teacher)


def _teacher(ctx: SuiteContext, stage: DatasetStage, bundle: DatasetBundle, label: str) -> Teacher:
    """The dataset's teacher, trained at most once however many processes need it: under the
    teacher's lock a second process waits, then loads the first one's from the cache."""
    spec = stage.teacher
    with hold_lock(ctx.folder.lock_of(ctx.folder.teacher_folder(spec)), ctx.folder.root):
        teacher = _obtain(ctx, spec, bundle, label)
        if not stage.teacher_done and not ctx.finished.reference_done(
            ctx.profile.name, spec, stage.reference_id
        ):
            for row in spec.reference_rows:
                remove_temporaries(ctx.reference_path(spec, row))
            other = spec.other_teacher(ctx.profile)
            if other is not None:
                ctx.progress.stage(label, "the teacher of another seed (a reference level)")
                other = _other_teacher(ctx, other, bundle, label)
            ctx.progress.stage(label, "scoring the teacher and its controls")
            _score_references(ctx, teacher, other, bundle, stage.reference_id)
    return teacher


def _obtain(ctx: SuiteContext, spec: TeacherSpec, bundle: DatasetBundle, label: str) -> Teacher:
    """Train or load the teacher of `spec`; the caller holds its lock."""
    folder = ctx.folder.teacher_folder(spec)
    refuse_links(ctx.folder.root, folder)  # before the staging folders are looked for
    # Staging folders of a training that was killed: no one else is training it now.
    for stale in folder.parent.glob(f".{spec.key}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    return obtain_teacher(
        spec,
        bundle,
        folder,
        ctx.options.device,
        on_epoch=lambda epoch, epochs: ctx.progress.epoch(label, "teacher training", epoch, epochs),
        root=ctx.folder.root,
        checkpoints=EpochCheckpoints(
            ctx.folder.teacher_checkpoints(spec), spec.key, ctx.folder.root
        ),
        data_dir=ctx.options.data_dir,
    )


def _other_teacher(
    ctx: SuiteContext, other: TeacherSpec, bundle: DatasetBundle, label: str
) -> Teacher:
    """The teacher of the `other_teacher` level (`TeacherSpec.other_teacher`), trained here unless
    its own training-only stage (`FinishedRecords.stages`) did or is doing it. Its lock is taken
    inside a listed teacher's and never the other way round, and it scores no reference rows of
    its own, so no two processes can wait on each other."""
    with hold_lock(ctx.folder.lock_of(ctx.folder.teacher_folder(other)), ctx.folder.root):
        return _obtain(ctx, other, bundle, label)


def _score_references(
    ctx: SuiteContext,
    teacher: Teacher,
    other: Teacher | None,
    bundle: DatasetBundle,
    reference_id: str,
) -> None:
    """The teacher's reference row, and the control rows beside it (`CONTROLS`); `other` is the
    teacher of another seed (None for a pretrained teacher)."""
    spec = teacher.spec
    budget = ctx.budget(spec)
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
    record = _reference_record(ctx, teacher, bundle, reference_id, Role.TEACHER, method)
    record.metrics, record.metric_metadata = metrics, metadata
    record.attribution_maps = save_attribution_maps(
        ctx.reference_path(spec), scoring, ctx.folder.root, with_inputs=True
    )
    record.dissection = dissection_summary(scoring)
    record.teacher = {**spec.as_dict(), **info}
    record.training = {
        "last_epoch_test_accuracy": teacher.info.get("last_epoch_test_accuracy"),
        "history": teacher.info.get("history"),
    }
    record.timings = {"train": info["train_seconds"], "score": time.perf_counter() - started}
    ctx.folder.write(record)
    for control in build_controls(teacher, bundle, budget, ctx.options.device, other):
        _score_control(ctx, teacher, control, bundle, reference_id)


def _score_control(
    ctx: SuiteContext, teacher: Teacher, control: Control, bundle: DatasetBundle, reference_id: str
) -> None:
    spec, row = teacher.spec, control.row
    budget = ctx.budget(spec)
    started = time.perf_counter()
    scoring = ScoringContext(
        bundle,
        control.model,
        teacher,
        0.0,
        budget.n_explain,
        budget.explanation,
        explainer_override=row.explainer,
    )
    metrics, metadata = score(scoring, categories=row.categories)
    method = {"name": row.name, "base": row.name, "params": {}, "citation": control.description}
    record = _reference_record(ctx, teacher, bundle, reference_id, Role.CONTROL, method)
    record.metrics, record.metric_metadata = metrics, metadata
    record.teacher = spec.as_dict()
    record.timings = {"score": time.perf_counter() - started}
    if row.categories is None:  # a whole model: dissected and shown like a student
        record.dissection = dissection_summary(scoring)
        record.attribution_maps = save_attribution_maps(
            ctx.reference_path(spec, row.name), scoring, ctx.folder.root
        )
    ctx.folder.write(record)


def _reference_record(
    ctx: SuiteContext,
    teacher: Teacher,
    bundle: DatasetBundle,
    reference_id: str,
    role: Role,
    method: dict[str, Any],
) -> Record:
    """A teacher's or a control row's record, `ok`; the caller adds what was scored."""
    spec = teacher.spec
    started = now()
    record = Record(
        run_id=reference_id,
        role=role,
        dataset=dataset_entry(spec.dataset, spec.dataset_version, spec.modality, bundle),
        method=method,
        seed=spec.seed,
        profile=ctx.profile.name,
        budget=ctx.budget(spec).as_dict(),
        environment=ctx.environment,
        started=started,
    )
    record.status, record.ended = Status.OK, started
    return record
