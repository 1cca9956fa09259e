"""The one scheduler: it hands a suite's jobs to a backend and reports their results as they come.

A dataset's teacher stage is one job that must finish before its students' jobs are queued: the
teacher is trained and its reference rows scored once, it is cached on disk, and each student job
loads it from the cache (or keeps it from the job before). At most `backend.slots` jobs are in
flight, so the order in which runs start stays ours, not the pool's. With several slots, teacher
jobs go first: each unlocks a dataset's students, and teacher stages of different datasets run in
parallel (on a Ray cluster, where the GPUs are). With one slot, a teacher's students go before
the next teacher, so one dataset at a time is held in memory.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from bench.core.specs import RunSpec
from bench.plan.profiles import PROFILES
from bench.results.record import Status
from bench.run.backends import Backend, Job
from bench.run.context import SuiteContext
from bench.run.progress import Progress, Work
from bench.run.resume import DatasetStage, stage_label
from bench.run.student_stage import record_unrun
from bench.run.worker import WorkerSetup, student_job, teacher_job

log = logging.getLogger(__name__)

# A job whose worker died is tried once more (a crash kills the other workers of a process pool
# too); a second death records its runs as failed.
MAX_ATTEMPTS = 2
# Seconds to wait for the locks of a worker that died; a live holder keeps them far longer.
DEAD_WORKER_LOCK_WAIT = 10.0


class WorkerLost(RuntimeError):
    """The worker executing a job died (killed, out of memory) before it could write a record."""


@dataclass(frozen=True)
class _Job:
    label: str
    fn: Job
    args: tuple[Any, ...]
    runs: tuple[RunSpec, ...]  # the runs whose records the job writes (or, if it dies, we do)
    stage: str
    work: Work  # what the progress display's cost model counts it as
    attempt: int = 1


def _teacher_job(setup: WorkerSetup, stage: DatasetStage) -> _Job:
    label = stage_label(stage)
    name = "training the teacher" if stage.trains_only else "the teacher stage"
    return _Job(label, teacher_job, (setup, stage), tuple(stage.runs), name, stage.work)


def _student_job(setup: WorkerSetup, stage: DatasetStage, spec: RunSpec) -> _Job:
    work = ("run", spec.dataset)
    return _Job(spec.label, student_job, (setup, stage, spec), (spec,), "training", work)


class Scheduler:
    """Runs the jobs of a suite's dataset stages on `backend`, reporting to `progress`."""

    def __init__(self, backend: Backend, setup: WorkerSetup, progress: Progress) -> None:
        self.backend = backend
        self.setup = setup.resolved()
        self.progress = progress

    def execute(self, stages: list[DatasetStage]) -> list[str]:
        """Every stage's teacher job, then its students' jobs; returns the runs' statuses."""
        self.backend.open(self.setup, self.progress)
        teachers = deque(_teacher_job(self.setup, stage) for stage in stages)
        students: deque[_Job] = deque()
        in_flight: dict[Any, _Job] = {}
        submitted: dict[Any, float] = {}
        statuses: list[str] = []
        try:
            while teachers or students or in_flight:
                while len(in_flight) < self.backend.slots:
                    job = self._next(teachers, students, in_flight)
                    if job is None:
                        break
                    handle = self.backend.submit(job.fn, job.args)
                    in_flight[handle], submitted[handle] = job, time.perf_counter()
                    self.progress.began(job.label, job.work)
                    self.progress.stage(job.label, f"{job.stage}{self.backend.where}")
                for handle, outcome in self.backend.wait(list(in_flight)):
                    job = in_flight.pop(handle)
                    seconds = time.perf_counter() - submitted.pop(handle)
                    statuses += self._collect(job, outcome, seconds, teachers, students)
        except BaseException:
            self.backend.abort(list(in_flight))
            raise
        return statuses

    def _next(
        self, teachers: deque[_Job], students: deque[_Job], in_flight: dict[Any, _Job]
    ) -> _Job | None:
        """The job to submit next, or None to wait for those in flight."""
        first, then = (students, teachers) if self.backend.slots == 1 else (teachers, students)
        queue = first or then
        if not queue:
            return None
        # A retried job runs alone: if its worker dies again, it is the culprit, and no other job
        # is lost with it.
        if in_flight and (queue[0].attempt > 1 or any(j.attempt > 1 for j in in_flight.values())):
            return None
        return queue.popleft()

    def _collect(
        self,
        job: _Job,
        outcome: Any,
        seconds: float,
        teachers: deque[_Job],
        students: deque[_Job],
    ) -> list[str]:
        """Report a finished job; queue its retry or its dataset's students; the runs' statuses."""
        retry = (
            isinstance(outcome, BaseException)
            and self.backend.worker_lost(outcome)
            and job.attempt < MAX_ATTEMPTS
        )
        is_teacher = job.work[0] != "run"
        if is_teacher and not retry:  # runs report themselves
            self.progress.teacher_finished(job.label, job.work, seconds)
        if isinstance(outcome, BaseException):
            if retry:
                log.warning("worker died during %s; trying it again", job.label)
                (teachers if is_teacher else students).appendleft(
                    replace(job, attempt=job.attempt + 1)
                )
                return []
            return self._record_failure(job, outcome)
        for line in outcome.finished:
            self.progress.finished(line.label, line.status, line.seconds)
        if outcome.teacher_ready:
            stage = job.args[1]
            students.extend(_student_job(self.setup, stage, spec) for spec in stage.runs)
        return [line.status for line in outcome.finished]

    def _record_failure(self, job: _Job, exc: BaseException) -> list[str]:
        """Runs of a job that ended without reporting: recorded as failed, unless finished."""
        if self.backend.worker_lost(exc):
            exc = WorkerLost(
                f"the worker process died while executing {job.label} ({job.attempt} attempts): "
                "killed, or out of memory; run the suite again to retry it"
            )
        ctx = SuiteContext(
            PROFILES.get(self.setup.profile),
            self.setup.options,
            self.progress,
            self.setup.suite_started,
        )
        # The dead worker's locks are dropped by the kernel a moment after we learn of its death.
        return [
            record_unrun(ctx, spec, Status.FAILED, exc, job.stage, lock_wait=DEAD_WORKER_LOCK_WAIT)
            for spec in job.runs
        ]
