"""The suite: which runs are left (`bench.run.resume`), then the scheduler runs their teachers'
and their own stages on a backend (`bench.run.scheduler`, `bench.run.backends`); finished runs
whose id still matches the plan are skipped, so an interrupted suite resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.core import registry
from bench.plan.planner import Plan
from bench.results.folder import ResultsFolder
from bench.run.backends import Backend, LocalBackend
from bench.run.context import RunOptions
from bench.run.cost_priors import suite_priors
from bench.run.progress import Progress, SilentProgress
from bench.run.resume import FinishedRecords
from bench.run.scheduler import Scheduler
from bench.run.worker import WorkerSetup


@dataclass
class SuiteSummary:
    """Status counts of a suite; `done` counts runs skipped because they had finished before,
    `locked` runs left to another live process that was executing them."""

    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def exit_status(self) -> int:
        return 1 if self.counts["failed"] or self.counts["diverged"] else 0


def run_suite(
    plan: Plan,
    options: RunOptions,
    progress: Progress | None = None,
    backend: Backend | None = None,
) -> SuiteSummary:
    """Execute what `plan` has left to do in `options.results` (default: in this process)."""
    started = time.perf_counter()
    suite_started = time.time()
    progress = progress or SilentProgress()
    backend = backend or LocalBackend()
    summary = SuiteSummary()
    redo_before = suite_started if options.force else None
    finished = FinishedRecords(ResultsFolder(options.results, plan.metric_bounds), redo_before)
    todo = finished.todo(plan)
    summary.counts["done"] = len(plan.runs) - len(todo)
    stages = finished.stages(plan, todo)
    if backend.slots == 1:
        # One slot runs a teacher's students before the next teacher: the first teacher's stage
        # trains the other teacher it needs long before a stage of its own would come.
        stages = [stage for stage in stages if not stage.trains_only]
    work = [stage.work for stage in stages]
    work += [("run", spec.dataset) for stage in stages for spec in stage.runs]
    priors = suite_priors(finished.folder, plan.profile.name, plan.datasets())
    progress.start(len(plan.runs), summary.counts["done"], work, backend.slots, priors)
    setup = WorkerSetup(
        options=options,
        plugin_files=registry.loaded_plugin_files(),
        threads=backend.threads,
        suite_started=suite_started,
        log_level=logging.getLogger().getEffectiveLevel(),
        profile=plan.profile.name,
    )
    for status in Scheduler(backend, setup, progress).execute(stages):
        summary.counts[status] += 1
    summary.seconds = time.perf_counter() - started
    return summary
