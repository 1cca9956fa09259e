"""The jobs a scheduler hands to a backend, and the state of the process that runs them.

A job is a teacher stage or a student stage (`bench.run.teacher_stage`, `bench.run.student_stage`):
it writes its records itself and returns only the lines of the progress display, so every backend
shows the same progress, summary and exit status. A process keeps the data and teacher of the last
dataset it served, since its next job is likely a student of the same teacher.

Jobs run in a worker process (a process pool, Ray) or in the suite's own process (the local
backend), which `adopt` makes ready without touching its logging, plugins or threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from bench.core import registry
from bench.core.specs import RunSpec
from bench.data.bundle import DatasetBundle
from bench.plan.profiles import PROFILES
from bench.run.context import RunOptions, SuiteContext
from bench.run.progress import SilentProgress, epoch_detail
from bench.run.resume import DatasetStage
from bench.run.student_stage import run_student
from bench.run.teacher_stage import Unavailable, prepare_dataset
from bench.train.teachers import Teacher

# Where this process reports each stage and epoch as it begins: (label, stage, detail). None: it
# reports none (a Ray task: the status line shows each job's elapsed time, not its epoch).
StageSink = Callable[[str, str, str], None]


@dataclass(frozen=True)
class Finished:
    """One line of the progress display, produced by a job and replayed by the scheduler."""

    label: str
    status: str
    seconds: float


@dataclass(frozen=True)
class JobResult:
    finished: list[Finished]
    # Teacher jobs: whether the teacher is ready, so the dataset's student jobs may be queued.
    teacher_ready: bool = False


@dataclass(frozen=True)
class WorkerSetup:
    """What a process needs besides the job: picklable, sent with every job."""

    options: RunOptions
    plugin_files: tuple[str, ...]
    threads: int
    suite_started: float
    log_level: int
    profile: str

    def resolved(self) -> WorkerSetup:
        """Absolute paths: a worker may start elsewhere (Ray sets its own working directory)."""
        options = self.options
        data_dir = options.data_dir.resolve() if options.data_dir else None
        return replace(
            self, options=replace(options, results=options.results.resolve(), data_dir=data_dir)
        )


class RecordingProgress(SilentProgress):
    """A job's progress: the finished runs are kept and returned with the job's result (the
    scheduler times the stages itself); each stage and epoch goes to this process's sink."""

    def __init__(self) -> None:
        self.finished_runs: list[Finished] = []

    def stage(self, label: str, stage: str, detail: str = "") -> None:
        if _stage_sink is not None:
            _stage_sink(label, stage, detail)

    def epoch(self, label: str, stage: str, epoch: int, epochs: int) -> None:
        self.stage(label, stage, epoch_detail(epoch, epochs))

    def finished(self, label: str, status: str, seconds: float) -> None:
        self.finished_runs.append(Finished(label, status, seconds))


_prepared: WorkerSetup | None = None
_stage_sink: StageSink | None = None
# The data and teacher of the last dataset this process served: its next job is likely the same one.
_loaded: tuple[str, DatasetBundle, Teacher] | None = None


def init_worker_process(parent_pid: int, reports: Any) -> None:
    """Process-pool worker initialiser: report stages to the parent's queue, die with it."""
    global _stage_sink
    _die_with_parent(parent_pid)
    # A report not yet written when the worker exits is dropped: the worker never waits on the
    # parent's reading (progress lines are not results).
    reports.cancel_join_thread()
    _stage_sink = lambda *report: reports.put(report)  # noqa: E731


def _die_with_parent(parent_pid: int) -> None:
    """End this worker with the parent, even when it is killed with SIGKILL (Linux).

    Otherwise a killed `bench run` leaves workers finishing their runs in the background, and the
    resumed suite finds those runs locked. Ctrl-C is the parent's to handle: it stops the pool.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def adopt(setup: WorkerSetup, sink: StageSink | None) -> None:
    """Make the suite's own process run jobs (the local backend): it already has its logging,
    plugins and threads; its stages go straight to its display."""
    global _prepared, _stage_sink
    _prepared, _stage_sink = setup, sink


def release() -> None:
    """Forget the dataset and teacher kept for the next job (the local backend, at the end)."""
    global _loaded, _prepared, _stage_sink
    _loaded = _prepared = _stage_sink = None


def prepare_worker(setup: WorkerSetup) -> None:
    """Make this process ready for jobs: logging, plugins, threads. Cheap when already done."""
    global _prepared
    if _prepared == setup:
        return
    logging.basicConfig(level=setup.log_level, format="%(levelname)s %(name)s: %(message)s")
    registry.load_plugins(list(setup.plugin_files))
    torch.set_num_threads(setup.threads)
    _prepared = setup


def _context(setup: WorkerSetup) -> SuiteContext:
    """A job's context: the parent's options and suite start, a progress that records."""
    return SuiteContext(
        PROFILES.get(setup.profile), setup.options, RecordingProgress(), setup.suite_started
    )


def _finished(ctx: SuiteContext) -> list[Finished]:
    progress = ctx.progress
    assert isinstance(progress, RecordingProgress)
    return progress.finished_runs


def teacher_job(setup: WorkerSetup, stage: DatasetStage) -> JobResult:
    """A dataset's teacher stage: train or load the teacher, score its reference rows if missing.

    When the data or the teacher cannot be had, the stage's runs are recorded here as skipped or
    failed, and the teacher is not ready.
    """
    global _loaded
    prepare_worker(setup)
    ctx = _context(setup)
    if stage.trains_only and ctx.folder.teacher_folder(stage.teacher).exists():
        # Trained meanwhile by a stage that needed it (of this suite, or of another process).
        return JobResult([], teacher_ready=True)
    _loaded = None  # free the last dataset before loading the next
    prepared = prepare_dataset(ctx, stage)
    if isinstance(prepared, Unavailable):
        return JobResult(_finished(ctx))
    if not stage.trains_only:  # no student learns from the other teacher
        _loaded = (stage.teacher.key, prepared.bundle, prepared.teacher)
    return JobResult([], teacher_ready=True)


def student_job(setup: WorkerSetup, stage: DatasetStage, spec: RunSpec) -> JobResult:
    """One run's student stage, with the teacher its teacher job (`stage`) trained: kept from the
    last job, or loaded from the cache that job filled."""
    global _loaded
    prepare_worker(setup)
    ctx = _context(setup)
    if _loaded is not None and _loaded[0] == spec.teacher.key:
        bundle, teacher = _loaded[1], _loaded[2]
    else:
        _loaded = None  # free the last dataset before loading the next
        prepared = prepare_dataset(ctx, replace(stage, runs=[spec], teacher_done=True))
        if isinstance(prepared, Unavailable):
            return JobResult(_finished(ctx))
        bundle, teacher = prepared.bundle, prepared.teacher
        _loaded = (spec.teacher.key, bundle, teacher)
    run_student(ctx, spec, bundle, teacher)
    return JobResult(_finished(ctx))
