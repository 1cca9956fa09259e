"""The student stage: train and score one run and write its record, or record why it could not run.

Failures are isolated: a run that raises is recorded as `failed` (with its traceback), one whose
loss goes non-finite as `diverged`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.core.errors import BenchError, Diverged
from bench.core.plugin_code import code_identity
from bench.core.sealed import write_array_sealed
from bench.core.specs import RunSpec
from bench.core.vocabulary import Role
from bench.data.bundle import DatasetBundle
from bench.metrics import ScoringContext, score
from bench.metrics.dissection import dissection_summary
from bench.models import count_parameters
from bench.results.folder import ResultsFolder
from bench.results.record import Record, Status
from bench.run.context import SuiteContext, dataset_entry, error_entry, now
from bench.run.predictors import StudentPredictor
from bench.train.checkpoints import EpochCheckpoints
from bench.train.loop import TrainContext, seed_everything
from bench.train.method import METHODS
from bench.train.teachers import Teacher


def run_student(ctx: SuiteContext, spec: RunSpec, bundle: DatasetBundle, teacher: Teacher) -> str:
    """Train and score one run and write its record, unless another process has it; returns the
    run's status."""
    return ctx.locked(spec, lambda: _run_one(ctx, spec, bundle, teacher))


def record_unrun(
    ctx: SuiteContext,
    spec: RunSpec,
    status: Status,
    exc: BaseException,
    stage: str | None,
    lock_wait: float = 0.0,
) -> str:
    """Record a run that could not execute (`skipped` or `failed`, with `exc` as the reason).

    `lock_wait`: seconds to wait for the run's lock, when its holder is known to be ending.
    """
    return ctx.locked(spec, lambda: _write_unrun(ctx, spec, status, exc, stage), lock_wait)


def student_record(ctx: SuiteContext, spec: RunSpec, bundle: DatasetBundle | None) -> Record:
    method = METHODS.get(spec.method)
    # A plugin's file and code hash: the method page shows them, and a run id holds the hash.
    code = code_identity(METHODS.source(spec.method))
    return Record(
        run_id=spec.run_id,
        role=Role.STUDENT,
        dataset=dataset_entry(spec.dataset, spec.dataset_version, spec.modality, bundle),
        method={
            "name": spec.variant,
            "base": spec.method,
            "params": dict(spec.params),
            "citation": method.citation,
            "family": method.family,
            # What the report says of the row: it reads records, never the method's code.
            "description": method.describe(),
            **({"code": code} if code else {}),
        },
        teacher=spec.teacher.as_dict(),
        seed=spec.seed,
        profile=spec.profile,
        budget=spec.budget.as_dict(),
        environment=ctx.environment,
        started=now(),
    )


def _write_unrun(
    ctx: SuiteContext, spec: RunSpec, status: Status, exc: BaseException, stage: str | None
) -> str:
    record = student_record(ctx, spec, None)
    record.status, record.ended = Status(status), record.started
    record.error = error_entry(exc, stage)
    ctx.folder.write(record)
    ctx.progress.finished(spec.label, status, 0.0)
    return status


def training_context(
    spec: RunSpec,
    bundle: DatasetBundle,
    teacher: Teacher,
    device: torch.device,
    on_epoch: Callable[[int, int], None] | None = None,
    checkpoints: EpochCheckpoints | None = None,
) -> TrainContext:
    """What `spec`'s method trains its student with, the global generators seeded by the run's
    seed first: the same student on every call (on the CPU), resumed or not."""
    seed_everything(spec.seed)
    return TrainContext(
        bundle=bundle,
        teacher=teacher,
        budget=spec.budget.student_training,
        student_architecture=spec.budget.student,
        device=device,
        seed=spec.seed,
        on_epoch=on_epoch,
        checkpoints=checkpoints,
    )


def _run_one(ctx: SuiteContext, spec: RunSpec, bundle: DatasetBundle, teacher: Teacher) -> str:
    record = student_record(ctx, spec, bundle)
    progress, device = ctx.progress, ctx.options.device
    started = time.perf_counter()
    timings: dict[str, float] = {}
    train: TrainContext | None = None
    checkpoints = EpochCheckpoints(ctx.folder.run_checkpoints(spec), spec.run_id, ctx.folder.root)
    try:
        progress.began(spec.label, ("run", spec.dataset))
        code = record.method.get("code") or {}
        if code.get("sha256", "") != spec.code:
            raise BenchError(
                f"the code of plugin {code.get('file', spec.method)} changed after this suite "
                "was planned: its run id names other code; run again"
            )
        progress.stage(spec.label, "training")
        train = training_context(
            spec,
            bundle,
            teacher,
            device,
            lambda epoch, epochs: progress.epoch(spec.label, "training", epoch, epochs),
            checkpoints,
        )
        student = METHODS.get(spec.method)(dict(spec.params)).fit(train)
        trained = time.perf_counter()
        # A resumed run's training time includes its epochs before the interruption.
        timings["train"] = trained - started + train.seconds_before_resuming
        record.student = {
            "architecture": type(student).__name__,
            "parameters": count_parameters(student),
        }
        progress.stage(spec.label, "scoring")
        scoring = ScoringContext(
            bundle,
            StudentPredictor(student, device, bundle.num_classes),
            teacher,
            timings["train"],
            spec.budget.n_explain,
            spec.budget.explanation,
        )
        if not np.isfinite(scoring.logits).all():
            raise Diverged("the trained student outputs non-finite logits")
        record.metrics, record.metric_metadata = score(scoring)
        record.dissection = dissection_summary(scoring)
        record.attribution_maps = save_attribution_maps(ctx.path_of(spec), scoring, ctx.folder.root)
        timings["score"] = time.perf_counter() - trained
        record.status = Status.OK
    except Diverged as exc:
        record.status, record.error = Status.DIVERGED, error_entry(exc, "training")
    except (Exception, SystemExit) as exc:  # a method's sys.exit() must not end the suite
        record.status, record.error = Status.FAILED, error_entry(exc, None)
    if train is not None:
        record.training = {
            "best_epoch": train.best_epoch,
            "last_epoch_test_accuracy": train.last_epoch_test_accuracy,
            "history": train.history,
            "diagnostics": train.diagnostics,
            **({"resumed_at_epoch": train.resumed_at_epoch} if train.resumed_at_epoch else {}),
        }
    timings["total"] = (
        time.perf_counter() - started + (train.seconds_before_resuming if train else 0)
    )
    record.timings, record.ended = timings, now()
    ctx.folder.write(record)
    checkpoints.clear()
    progress.finished(spec.label, record.status, timings["total"])
    return record.status


GALLERY_SAMPLES = 4


def save_attribution_maps(
    record_file: Path, scoring: ScoringContext, root: Path, with_inputs: bool = False
) -> dict[str, Any] | None:
    """Keep the first explained test samples' attributions beside an image run's record.

    The report's gallery puts the teacher's and each student's maps of the same test images side
    by side; the scored attributions are already computed (and cached by `scoring`), so this costs
    only a small `.npy` file (`seed<k>.maps.npy`, float32, the explainer's output shape). The
    teacher also keeps the images themselves (`seed<k>.inputs.npy`), so the report needs no data.
    Tables have no picture to show: None. `root`: the results folder, below which no link is
    followed.
    """
    if scoring.bundle.modality != "image" or not scoring.explanation:
        return None
    explainer = scoring.explanation.explainers[0]
    index = scoring.explain_index[:GALLERY_SAMPLES]
    maps = np.asarray(scoring.attributions(explainer)[:GALLERY_SAMPLES], dtype=np.float32)
    maps_file = ResultsFolder.maps_path(record_file)
    write_array_sealed(maps_file, maps, root)
    entry: dict[str, Any] = {
        "explainer": explainer,
        "test_index": [int(i) for i in index],
        "file": maps_file.name,
    }
    if with_inputs:
        inputs_file = ResultsFolder.inputs_path(record_file)
        inputs = np.asarray(scoring.explain_x[:GALLERY_SAMPLES], np.float32)
        write_array_sealed(inputs_file, inputs, root)
        entry["inputs_file"] = inputs_file.name
    return entry
