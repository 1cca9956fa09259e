"""Where runs execute: `local` (this process, one run after another), `process` (a pool of worker
processes on this machine) and `ray` (Ray tasks, on this machine or on a cluster).

The parent plans, schedules and reports; a worker runs the stages (`bench.run.stages`: `prepare_dataset`,
`run_student`), writes the records itself, and sends back only the lines of the progress display,
so every executor shows the same progress, summary and exit status. A dataset's teacher stage is
one job that must finish before its students' jobs are queued: the teacher is trained and its
reference rows scored once, it is cached on disk, and each student job loads it from the cache.
Teacher stages of different datasets run in parallel, and on a Ray cluster they run where the
GPUs are rather than on the machine that submitted the suite.

Workers load the same plugin files as the parent and divide the machine's cores among themselves
(`torch.set_num_threads`): two workers with two threads each on two cores would only contend.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any

import torch

from bench.core import registry
from bench.core.errors import BenchError
from bench.core.specs import RunSpec
from bench.data.bundle import DatasetBundle
from bench.plan.profiles import PROFILES
from bench.run.environment import resolve_device
from bench.run.progress import Progress, SilentProgress, Work, epoch_detail
from bench.run.resume import DatasetStage, stage_label
from bench.run.runner import SuiteRunner
from bench.run.stages import RunOptions, Stages, Unavailable
from bench.train.teachers import Teacher

log = logging.getLogger(__name__)

EXECUTORS = ("local", "process", "ray")
# A job whose worker died is tried once more (a crash kills the other workers of a process pool
# too); a second death records its runs as failed.
MAX_ATTEMPTS = 2
# Seconds to wait for the locks of a worker that died; a live holder keeps them far longer.
DEAD_WORKER_LOCK_WAIT = 10.0
RAY_INSTALL_HINT = 'the ray executor needs Ray: pip install -e ".[ray]"'


def available_cores() -> int:
    """The cores this process may use (its CPU affinity, which a cluster's job slot may narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# --- the worker side ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Finished:
    """One line of the progress display, produced by a worker and replayed by the parent."""

    label: str
    status: str
    seconds: float


@dataclass(frozen=True)
class JobResult:
    finished: list[Finished]
    # Teacher jobs: whether the teacher is ready, so the dataset's student jobs may be queued.
    teacher_ready: bool = False


class RecordingProgress(SilentProgress):
    """A worker's progress: the finished runs are kept and sent back to the parent with the
    job's result, which times the worker's stages itself; in a process pool, each stage and
    epoch is sent to the parent as it begins (`_stage_queue`), for its status line."""

    def __init__(self) -> None:
        self.finished_runs: list[Finished] = []

    def stage(self, label: str, stage: str, detail: str = "") -> None:
        if _stage_queue is not None:
            _stage_queue.put((label, stage, detail))

    def epoch(self, label: str, stage: str, epoch: int, epochs: int) -> None:
        self.stage(label, stage, epoch_detail(epoch, epochs))

    def finished(self, label: str, status: str, seconds: float) -> None:
        self.finished_runs.append(Finished(label, status, seconds))


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker process needs besides the job: picklable, sent with every job."""

    options: RunOptions
    plugin_files: tuple[str, ...]
    threads: int
    suite_started: float
    log_level: int


_prepared: WorkerSetup | None = None
# In a process-pool worker, the parent's queue of (label, stage, detail) reports.
_stage_queue: Any = None
# Seconds between the parent's looks at that queue when it is empty.
RELAY_POLL = 0.2
# The data and teacher of the last dataset this worker served: its next job is likely the same one.
_loaded: tuple[str, DatasetBundle, Teacher] | None = None


def _init_worker(parent_pid: int, reports: Any) -> None:
    """Process-pool worker initialiser: report stages to the parent's queue, die with it."""
    global _stage_queue
    _die_with_parent(parent_pid)
    # A report not yet written when the worker exits is dropped: the worker never waits on the
    # parent's reading (progress lines are not results).
    reports.cancel_join_thread()
    _stage_queue = reports


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


def prepare_worker(setup: WorkerSetup) -> None:
    """Make this process ready for jobs: logging, plugins, threads. Cheap when already done."""
    global _prepared
    if _prepared == setup:
        return
    logging.basicConfig(level=setup.log_level, format="%(levelname)s %(name)s: %(message)s")
    registry.load_plugins(list(setup.plugin_files))
    torch.set_num_threads(setup.threads)
    _prepared = setup


def _worker_stages(setup: WorkerSetup, profile: str) -> Stages:
    """A worker's stages: the parent's options and suite start, a progress that records."""
    return Stages(PROFILES.get(profile), setup.options, RecordingProgress(), setup.suite_started)


def _finished(stages: Stages) -> list[Finished]:
    progress = stages.progress
    assert isinstance(progress, RecordingProgress)
    return progress.finished_runs


def teacher_job(setup: WorkerSetup, stage: DatasetStage, profile: str) -> JobResult:
    """A dataset's teacher stage: train or load the teacher, score its reference rows if missing.

    When the data or the teacher cannot be had, the stage's runs are recorded here as skipped or
    failed, and the teacher is not ready.
    """
    global _loaded
    prepare_worker(setup)
    stages = _worker_stages(setup, profile)
    prepared = stages.prepare_dataset(stage)
    if isinstance(prepared, Unavailable):
        return JobResult(_finished(stages))
    _loaded = (stage.teacher.key, prepared.bundle, prepared.teacher)
    return JobResult([], teacher_ready=True)


def student_job(setup: WorkerSetup, spec: RunSpec) -> JobResult:
    """One run's student stage, with the teacher from the cache its teacher job filled."""
    global _loaded
    prepare_worker(setup)
    stages = _worker_stages(setup, spec.profile)
    if _loaded is not None and _loaded[0] == spec.teacher.key:
        bundle, teacher = _loaded[1], _loaded[2]
    else:
        _loaded = None  # free the last dataset before loading the next
        prepared = stages.prepare_dataset(DatasetStage(spec.dataset, spec.teacher, [spec], True))
        if isinstance(prepared, Unavailable):
            return JobResult(_finished(stages))
        bundle, teacher = prepared.bundle, prepared.teacher
        _loaded = (spec.teacher.key, bundle, teacher)
    stages.run_student(spec, bundle, teacher)
    return JobResult(_finished(stages))


# --- the parent side ---------------------------------------------------------------------------
class WorkerLost(RuntimeError):
    """The worker executing a job died (killed, out of memory) before it could write a record."""


@dataclass(frozen=True)
class _Job:
    label: str
    fn: Callable[..., JobResult]
    args: tuple[Any, ...]
    runs: tuple[RunSpec, ...]  # the runs whose records the job writes (or, if it dies, we do)
    stage: str
    work: Work  # what the progress display's cost model counts it as
    attempt: int = 1


class Backend:
    """Somewhere jobs run: `submit` them, `wait` for some to finish, `close` at the end."""

    name = ""
    slots = 1  # jobs in flight at most
    threads = 1  # torch threads per job
    # A queue of (label, stage, detail) that workers report as their stages and epochs begin;
    # None where the backend has no such channel (Ray: the status line shows each job's
    # elapsed time, not its epoch).
    stage_reports: Any = None

    def resolve_device(self, requested: str) -> torch.device:
        return resolve_device(requested)

    def submit(self, fn: Callable[..., JobResult], args: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    def wait(self, handles: Sequence[Any]) -> list[tuple[Any, JobResult | BaseException]]:
        """At least one finished job: its handle and its result, or the exception it ended with."""
        raise NotImplementedError

    def worker_lost(self, exc: BaseException) -> bool:
        """Whether `exc` says the job's worker died (rather than the job raising)."""
        return False

    def abort(self, handles: Sequence[Any]) -> None:
        """Stop the jobs in flight at once (Ctrl-C); their runs stay unrecorded, to be resumed."""

    def close(self) -> None:
        pass


class ProcessBackend(Backend):
    """A `ProcessPoolExecutor` of `jobs` spawned workers (spawn: a fresh interpreter, so no
    inherited locks or OpenMP thread pools, the same on Linux and macOS)."""

    name = "process"

    def __init__(self, jobs: int) -> None:
        self.slots = jobs
        self.threads = max(1, available_cores() // jobs)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._context = multiprocessing.get_context("spawn")
        self.stage_reports = self._context.Queue()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.slots,
            mp_context=self._context,
            initializer=_init_worker,
            initargs=(os.getpid(), self.stage_reports),
        )

    def submit(self, fn: Callable[..., JobResult], args: tuple[Any, ...]) -> Any:
        if self._pool is None:
            self._pool = self._new_pool()
        try:
            return self._pool.submit(fn, *args)
        except BrokenProcessPool:  # a worker died earlier: the pool is spent, start another
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(fn, *args)

    def wait(self, handles: Sequence[Any]) -> list[tuple[Any, JobResult | BaseException]]:
        done, _ = concurrent.futures.wait(handles, return_when=concurrent.futures.FIRST_COMPLETED)
        return [(future, future.exception() or future.result()) for future in done]

    def worker_lost(self, exc: BaseException) -> bool:
        return isinstance(exc, BrokenProcessPool)

    def abort(self, handles: Sequence[Any]) -> None:
        if self._pool is None:
            return
        # `ProcessPoolExecutor` cannot stop a running job before Python 3.14 (`terminate_workers`):
        # end its processes ourselves, then shut it down.
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10)
        self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.stage_reports.close()


class RayBackend(Backend):
    """One Ray task per job, on a local Ray instance or on the cluster at `address`.

    A task asks for one CPU, and one GPU when runs execute on CUDA; Ray places it and retries it
    if its node or worker dies. Records are written by the task, so the results folder must be
    one that every node sees (a shared filesystem), as must plugin files and `--data-dir`.
    """

    name = "ray"

    def __init__(self, jobs: int | None, address: str | None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise BenchError(RAY_INSTALL_HINT) from exc
        self.ray = ray
        self.jobs = jobs
        self.gpus_per_task = 0
        settings: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        if address is None:
            # A fresh instance of our own ("local"), never someone else's found on the machine.
            cpus = jobs or available_cores()
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, **settings)
            self.threads = max(1, available_cores() // cpus)
        else:
            try:
                ray.init(address=address, **settings)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise BenchError(f"cannot join the Ray cluster at {address!r}: {exc}") from exc
            self.threads = 1
        resources = ray.cluster_resources()
        self.slots = jobs or max(1, int(resources.get("CPU", 1)))
        self._remote: dict[Callable[..., JobResult], Any] = {}

    def resolve_device(self, requested: str) -> torch.device:
        """`auto` and `cuda` are judged by the cluster's GPUs, not this machine's."""
        gpus = int(self.ray.cluster_resources().get("GPU", 0))
        if requested == "auto":
            device = torch.device("cuda" if gpus else "cpu")
        elif requested == "cuda" and not gpus:
            raise BenchError("--device cuda was asked for, but the Ray cluster has no GPU")
        else:
            device = torch.device(requested)
        self.gpus_per_task = 1 if device.type == "cuda" else 0
        if self.gpus_per_task and self.jobs is None:
            self.slots = gpus  # one run per GPU at a time; more would only wait in Ray's queue
        return device

    def submit(self, fn: Callable[..., JobResult], args: tuple[Any, ...]) -> Any:
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self.ray.remote(fn).options(
                num_cpus=1, num_gpus=self.gpus_per_task
            )
        return remote.remote(*args)

    def wait(self, handles: Sequence[Any]) -> list[tuple[Any, JobResult | BaseException]]:
        ready, _ = self.ray.wait(list(handles), num_returns=1)
        out: list[tuple[Any, JobResult | BaseException]] = []
        for ref in ready:
            try:
                out.append((ref, self.ray.get(ref)))
            except self.ray.exceptions.RayError as exc:
                out.append((ref, exc))
        return out

    def abort(self, handles: Sequence[Any]) -> None:
        for ref in handles:
            self.ray.cancel(ref, force=True)

    def close(self) -> None:
        self.ray.shutdown()


class PoolExecutor:
    """Schedules a suite's jobs on a backend and reports their results as they come back.

    Teacher jobs go first (each unlocks a dataset's students); at most `backend.slots` jobs are in
    flight, so the order in which runs start stays ours, not the pool's.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def slots(self) -> int:
        return self.backend.slots

    def resolve_device(self, requested: str) -> torch.device:
        return self.backend.resolve_device(requested)

    def close(self) -> None:
        self.backend.close()

    def _setup(self, runner: SuiteRunner) -> WorkerSetup:
        # Absolute paths: a worker may start elsewhere (Ray sets its own working directory).
        options = runner.stages.options
        options = replace(
            options,
            results=options.results.resolve(),
            data_dir=options.data_dir.resolve() if options.data_dir else None,
        )
        return WorkerSetup(
            options=options,
            plugin_files=tuple(str(path) for path in registry._loaded_files),
            threads=self.backend.threads,
            suite_started=runner.stages.suite_started,
            log_level=logging.getLogger().getEffectiveLevel(),
        )

    def execute(self, runner: SuiteRunner, stages: list[DatasetStage]) -> list[str]:
        if self.backend.stage_reports is None:
            return self._execute(runner, stages)
        stop = threading.Event()
        relay = threading.Thread(
            target=_relay_stages,
            args=(self.backend.stage_reports, runner.progress, stop),
            name="stage-relay",
            daemon=True,
        )
        relay.start()
        try:
            return self._execute(runner, stages)
        finally:
            stop.set()
            relay.join(timeout=RELAY_POLL * 10)

    def _execute(self, runner: SuiteRunner, stages: list[DatasetStage]) -> list[str]:
        setup = self._setup(runner)
        profile = runner.plan.profile.name
        waiting: deque[_Job] = deque(
            _Job(
                stage_label(stage),
                teacher_job,
                (setup, stage, profile),
                tuple(stage.runs),
                "the teacher stage",
                ("teacher", stage.dataset),
            )
            for stage in stages
        )
        in_flight: dict[Any, _Job] = {}
        submitted: dict[Any, float] = {}
        statuses: list[str] = []
        try:
            while waiting or in_flight:
                while waiting and len(in_flight) < self.backend.slots:
                    # A retried job runs alone: if its worker dies again, it is the culprit, and
                    # no other job is lost with it.
                    if in_flight and (
                        waiting[0].attempt > 1 or any(j.attempt > 1 for j in in_flight.values())
                    ):
                        break
                    job = waiting.popleft()
                    handle = self.backend.submit(job.fn, job.args)
                    in_flight[handle], submitted[handle] = job, time.perf_counter()
                    runner.progress.began(job.label, job.work)
                    runner.progress.stage(job.label, f"{job.stage} in a worker")
                for handle, outcome in self.backend.wait(list(in_flight)):
                    job = in_flight.pop(handle)
                    seconds = time.perf_counter() - submitted.pop(handle)
                    retry = (
                        isinstance(outcome, BaseException)
                        and self.backend.worker_lost(outcome)
                        and job.attempt < MAX_ATTEMPTS
                    )
                    if job.work[0] == "teacher" and not retry:  # runs report themselves
                        runner.progress.teacher_finished(job.label, job.work[1], seconds)
                    if isinstance(outcome, BaseException):
                        if retry:
                            log.warning("worker died during %s; trying it again", job.label)
                            waiting.appendleft(replace(job, attempt=job.attempt + 1))
                        else:
                            statuses += self._record_failure(runner, job, outcome)
                        continue
                    for line in outcome.finished:
                        runner.progress.finished(line.label, line.status, line.seconds)
                        statuses.append(line.status)
                    if outcome.teacher_ready:
                        waiting.extend(
                            _Job(
                                spec.label,
                                student_job,
                                (setup, spec),
                                (spec,),
                                "training",
                                ("run", spec.dataset),
                            )
                            for spec in job.runs
                        )
        except BaseException:
            self.backend.abort(list(in_flight))
            raise
        return statuses

    def _record_failure(self, runner: SuiteRunner, job: _Job, exc: BaseException) -> list[str]:
        """Runs of a job that ended without reporting: recorded as failed, unless finished."""
        if self.backend.worker_lost(exc):
            exc = WorkerLost(
                f"the worker process died while executing {job.label} ({job.attempt} attempts): "
                "killed, or out of memory; run the suite again to retry it"
            )
        # The dead worker's locks are dropped by the kernel a moment after we learn of its death.
        return [
            runner.stages.record_unrun(
                spec, "failed", exc, job.stage, lock_wait=DEAD_WORKER_LOCK_WAIT
            )
            for spec in job.runs
        ]


def _relay_stages(reports: Any, progress: Progress, stop: threading.Event) -> None:
    """Pass the workers' stage reports to the parent's progress display until `stop` is set.

    It polls rather than waiting for a sentinel: a worker terminated mid-report (Ctrl-C, a crash)
    can leave the queue's write lock held, and a sentinel put after it would never arrive.
    """
    while not stop.is_set():
        try:
            report = reports.get(timeout=RELAY_POLL)
        except queue.Empty:
            continue
        progress.stage(*report)


def make_executor(
    name: str | None, jobs: int | None, ray_address: str | None
) -> PoolExecutor | None:
    """The executor the CLI asked for; None means `local` (the runner's own loop).

    `--jobs N` alone implies `process`, `--ray-address` alone implies `ray`.
    """
    if jobs is not None and jobs < 1:
        raise BenchError(f"--jobs must be 1 or more, not {jobs}")
    if name is None:
        name = "ray" if ray_address else "process" if jobs and jobs > 1 else "local"
    if name not in EXECUTORS:
        raise BenchError(f"unknown executor {name!r}; valid executors: {', '.join(EXECUTORS)}")
    if ray_address is not None and name != "ray":
        raise BenchError(f"--ray-address joins a Ray cluster: it needs --executor ray, not {name}")
    if name == "local":
        if jobs is not None and jobs > 1:
            raise BenchError(
                f"the local executor runs one run at a time; for --jobs {jobs} use "
                "--executor process (or ray)"
            )
        return None
    if name == "process":
        return PoolExecutor(ProcessBackend(jobs or available_cores()))
    started = time.perf_counter()
    backend = RayBackend(jobs, ray_address)
    log.info("Ray ready in %.1f s", time.perf_counter() - started)
    return PoolExecutor(backend)
