"""The runner: the suite loop. Per teacher, its teacher stage, then the student stage of every run
still to do that learns from it (`bench.run.stages`), in this process or through an executor
(`bench.run.executors`); finished runs whose id still matches the plan are skipped
(`bench.run.resume`), so an interrupted suite resumes where it stopped.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from bench.plan.planner import Plan
from bench.run.progress import Progress
from bench.run.resume import DatasetStage
from bench.run.stages import RunOptions, Stages, Unavailable


class Executor(Protocol):
    """Executes dataset stages somewhere other than this process (`bench.run.executors`)."""

    @property
    def slots(self) -> int:
        """How many jobs run at once."""
        ...

    def execute(self, runner: SuiteRunner, stages: list[DatasetStage]) -> list[str]: ...


@dataclass
class Summary:
    """Status counts of a suite; `done` counts runs skipped because they had finished before,
    `locked` runs left to another live process that was executing them."""

    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def exit_status(self) -> int:
        return 1 if self.counts["failed"] or self.counts["diverged"] else 0


class SuiteRunner:
    """Executes a plan: in this process, one stage after another (the `local` executor), or
    through an `Executor`, whose workers run the stages themselves."""

    def __init__(
        self,
        plan: Plan,
        options: RunOptions,
        progress: Progress | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.plan = plan
        self.executor = executor
        self.stages = Stages(plan.profile, options, progress)

    @property
    def progress(self) -> Progress:
        return self.stages.progress

    # --- the suite -------------------------------------------------------------------------
    def run(self) -> Summary:
        started = time.perf_counter()
        summary = Summary()
        todo = self.stages.finished.todo(self.plan)
        summary.counts["done"] = len(self.plan.runs) - len(todo)
        stages = self.stages.finished.stages(self.plan, todo)
        work = [("teacher", stage.dataset) for stage in stages]
        work += [("run", spec.dataset) for stage in stages for spec in stage.runs]
        slots = self.executor.slots if self.executor is not None else 1
        self.progress.start(len(self.plan.runs), summary.counts["done"], work, slots)
        if self.executor is not None:
            statuses = self.executor.execute(self, stages)
        else:
            statuses = [status for stage in stages for status in self._run_dataset(stage)]
        for status in statuses:
            summary.counts[status] += 1
        summary.seconds = time.perf_counter() - started
        return summary

    def _run_dataset(self, stage: DatasetStage) -> list[str]:
        prepared = self.stages.prepare_dataset(stage)
        if isinstance(prepared, Unavailable):
            return prepared.statuses
        return [
            self.stages.run_student(spec, prepared.bundle, prepared.teacher) for spec in stage.runs
        ]
