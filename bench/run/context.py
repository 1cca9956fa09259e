"""What every stage of one profile's suite shares: the profile, the run options, the progress
display, the environment, and where and under which lock each record is written.

Processes may share a results folder: a run's record is written only by the process holding the
run's lock, which checks again, once it holds it, whether the run has meanwhile finished.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from bench.core.atomic import remove_temporaries
from bench.core.budgets import ModalityBudget, Profile
from bench.core.locks import try_lock
from bench.core.specs import RunSpec, TeacherSpec
from bench.core.terminal import exception_message
from bench.core.vocabulary import TEACHER_ROW
from bench.data.bundle import DatasetBundle
from bench.metrics import declared_bounds
from bench.results.folder import ResultsFolder
from bench.run.environment import environment
from bench.run.progress import Progress, SilentProgress
from bench.run.resume import FinishedRecords


@dataclass(frozen=True)
class RunOptions:
    results: Path
    device: torch.device
    force: bool = False
    data_dir: Path | None = None


class SuiteContext:
    """The shared state of one profile's suite, for one results folder and device."""

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

    @property
    def folder(self) -> ResultsFolder:
        return ResultsFolder(self.options.results, declared_bounds())

    @property
    def finished(self) -> FinishedRecords:
        redo_before = self.suite_started if self.options.force else None
        return FinishedRecords(self.folder, redo_before)

    def budget(self, spec: TeacherSpec) -> ModalityBudget:
        return self.profile.budget(spec.dataset, spec.modality)

    def path_of(self, spec: RunSpec) -> Path:
        return self.folder.run_path(spec)

    def reference_path(self, spec: TeacherSpec, row: str = TEACHER_ROW) -> Path:
        """The record of one of a teacher's reference rows (the teacher or a control row)."""
        return self.folder.reference_path(self.profile.name, spec, row)

    def locked(self, spec: RunSpec, work: Callable[[], str], lock_wait: float = 0.0) -> str:
        """Do `work`, which writes the run's record, holding the run's lock.

        A run whose lock another live process holds is left to it (`locked`); one that finished
        while this process was busy with others is not redone (`done`).
        """
        path = self.path_of(spec)
        with try_lock(self.folder.lock_of(path), wait=lock_wait, root=self.folder.root) as held:
            if held and not self.finished.is_done(path, spec.run_id):
                remove_temporaries(path)
                return work()
        status = "done" if held else "locked"
        self.progress.finished(spec.label, status, 0.0)
        return status


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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


def error_entry(exc: BaseException, stage: str | None) -> dict[str, Any]:
    """A record's `error`: what was raised, in which stage, with its traceback."""
    return {
        "type": type(exc).__name__,
        "message": exception_message(exc),
        "stage": stage,
        "traceback": "".join(traceback.format_exception(exc)),
    }
