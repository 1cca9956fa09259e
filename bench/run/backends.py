"""Where jobs run: `local` (this process, one job after another), `process` (a pool of worker
processes on this machine) and `ray` (Ray tasks, on this machine or on a cluster).

A backend only runs jobs; the scheduler (`bench.run.scheduler`) decides which and when. Workers
load the same plugin files as the parent and divide the machine's cores among themselves
(`torch.set_num_threads`): two workers with two threads each on two cores would only contend.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import torch

from bench.core.errors import BenchError
from bench.run import worker
from bench.run.environment import resolve_device
from bench.run.progress import Progress
from bench.run.worker import JobResult, WorkerSetup

log = logging.getLogger(__name__)

BACKENDS = ("local", "process", "ray")
RAY_INSTALL_HINT = 'the ray executor needs Ray: pip install -e ".[ray]"'
# Seconds between the parent's looks at the workers' stage reports when there are none.
RELAY_POLL = 0.2

Job = Callable[..., JobResult]


def ray_join_hint(address: str) -> str:
    """What to do when joining a cluster fails. Since Ray 2.59 a head started with `ray start
    --head` requires a token by default, while a process joining it by address does not send one
    unless told to; Ray then says only "Failed to connect" (its log names the token)."""
    mode = os.environ.get("RAY_AUTH_MODE", "")
    if mode != "token":
        return (
            "if the head uses token authentication (Ray 2.59+ does by default), set "
            "RAY_AUTH_MODE=token here, with the head's token in ~/.ray/auth_token, RAY_AUTH_TOKEN "
            "or RAY_AUTH_TOKEN_PATH (`ray get-auth-token` prints it on the head), or start the "
            "head with RAY_AUTH_MODE=disabled on a trusted network; else check the address with "
            f"`ray status --address {address}`"
        )
    return (
        "RAY_AUTH_MODE=token is set: check that this process has the head's token "
        "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token; `ray get-auth-token` on the "
        f"head) and the address (`ray status --address {address}`)"
    )


def available_cores() -> int:
    """The cores this process may use (its CPU affinity, which a cluster's job slot may narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Backend:
    """Somewhere jobs run: `open` for a suite, `submit` jobs, `wait` for some to finish, `close`."""

    name = ""
    slots = 1  # jobs in flight at most
    threads = 1  # torch threads per job
    # Said of a job that has been handed over and is not yet reporting its own stages.
    where = " in a worker"

    def resolve_device(self, requested: str) -> torch.device:
        return resolve_device(requested)

    def open(self, setup: WorkerSetup, progress: Progress) -> None:
        """Start a suite: `progress` shows the stages the jobs report as they begin."""

    def submit(self, fn: Job, args: tuple[Any, ...]) -> Any:
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


@dataclass(eq=False)
class _Deferred:
    """A local job, run when it is waited for (a handle: hashed by identity)."""

    fn: Job
    args: tuple[Any, ...]


class LocalBackend(Backend):
    """This process, one job at a time: a job runs when the scheduler waits for it. Ctrl-C (and
    any other `BaseException` but `SystemExit`) stops the suite at once, as in a pool."""

    name = "local"
    where = ""

    def __init__(self) -> None:
        self.threads = torch.get_num_threads()  # this process's own: left as they are

    def open(self, setup: WorkerSetup, progress: Progress) -> None:
        worker.adopt(setup, progress.stage)

    def submit(self, fn: Job, args: tuple[Any, ...]) -> Any:
        return _Deferred(fn, args)

    def wait(self, handles: Sequence[Any]) -> list[tuple[Any, JobResult | BaseException]]:
        handle = handles[0]
        try:
            return [(handle, handle.fn(*handle.args))]
        except Exception as exc:  # the scheduler records the job's runs as failed
            return [(handle, exc)]

    def close(self) -> None:
        worker.release()


class ProcessBackend(Backend):
    """A `ProcessPoolExecutor` of `jobs` spawned workers (spawn: a fresh interpreter, so no
    inherited locks or OpenMP thread pools, the same on Linux and macOS). Workers send each stage
    and epoch to the parent's display through a queue, which a thread relays."""

    name = "process"

    def __init__(self, jobs: int) -> None:
        self.slots = jobs
        self.threads = max(1, available_cores() // jobs)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._context = multiprocessing.get_context("spawn")
        self._reports = self._context.Queue()
        self._relay: threading.Thread | None = None
        self._stop = threading.Event()

    def open(self, setup: WorkerSetup, progress: Progress) -> None:
        self._stop.clear()
        self._relay = threading.Thread(
            target=_relay_stages,
            args=(self._reports, progress, self._stop),
            name="stage-relay",
            daemon=True,
        )
        self._relay.start()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.slots,
            mp_context=self._context,
            initializer=worker.init_worker_process,
            initargs=(os.getpid(), self._reports),
        )

    def submit(self, fn: Job, args: tuple[Any, ...]) -> Any:
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
        self._stop.set()
        if self._relay is not None:
            self._relay.join(timeout=RELAY_POLL * 10)
            self._relay = None
        self._reports.close()


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


class RayBackend(Backend):
    """One Ray task per job, on a local Ray instance or on the cluster at `address`.

    A task asks for one CPU, and one GPU when runs execute on CUDA; Ray places it and retries it
    if its node or worker dies. Records are written by the task, so the results folder must be
    one that every node sees (a shared filesystem), as must plugin files and `--data-dir`.
    Tasks report no stages: the status line shows each job's elapsed time, not its epoch.
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
                raise BenchError(
                    f"cannot join the Ray cluster at {address!r}: {exc}; {ray_join_hint(address)}"
                ) from exc
            self.threads = 1
        resources = ray.cluster_resources()
        self.slots = jobs or max(1, int(resources.get("CPU", 1)))
        self._remote: dict[Job, Any] = {}

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

    def submit(self, fn: Job, args: tuple[Any, ...]) -> Any:
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


def make_backend(name: str | None, jobs: int | None, ray_address: str | None) -> Backend:
    """The backend the CLI asked for. `--jobs N` alone implies `process`, `--ray-address` alone
    implies `ray`, neither `local`."""
    if jobs is not None and jobs < 1:
        raise BenchError(f"--jobs must be 1 or more, not {jobs}")
    if name is None:
        name = "ray" if ray_address else "process" if jobs and jobs > 1 else "local"
    if name not in BACKENDS:
        raise BenchError(f"unknown executor {name!r}; valid executors: {', '.join(BACKENDS)}")
    if ray_address is not None and name != "ray":
        raise BenchError(f"--ray-address joins a Ray cluster: it needs --executor ray, not {name}")
    if name == "local":
        if jobs is not None and jobs > 1:
            raise BenchError(
                f"the local executor runs one run at a time; for --jobs {jobs} use "
                "--executor process (or ray)"
            )
        return LocalBackend()
    if name == "process":
        return ProcessBackend(jobs or available_cores())
    started = time.perf_counter()
    backend = RayBackend(jobs, ray_address)
    log.info("Ray ready in %.1f s", time.perf_counter() - started)
    return backend
