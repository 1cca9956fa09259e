"""Resuming a suite: which of a plan's runs and reference rows are finished, read from records alone.

Kept apart from the runner, which trains and scores, so that a rerun of a finished suite (and
`status`) decides there is nothing to do without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.core.specs import RunSpec, TeacherSpec
from bench.plan.planner import Plan
from bench.results.folder import ResultsFolder
from bench.run.progress import Work


@dataclass(frozen=True)
class DatasetStage:
    """One teacher's share of a suite: its teacher stage, then the runs still to do that learn
    from it (a dataset has one stage per teacher seed)."""

    dataset: str
    teacher: TeacherSpec
    runs: list[RunSpec]
    # Whether the teacher's reference rows (the teacher and its control rows) are recorded; true
    # for a stage that only trains a dataset's `other_teacher`, which has no rows.
    teacher_done: bool
    # The run id of those rows (`Plan.reference_ids`).
    reference_id: str
    # A stage with no runs and no rows: it trains a dataset's `other_teacher` for the dataset's
    # teacher stages to score their rows beside (`FinishedRecords.stages`).
    trains_only: bool = False

    @property
    def work(self) -> Work:
        """What the progress display counts the stage as: a teacher stage, or a training alone."""
        return ("training" if self.trains_only else "teacher", self.dataset)


def stage_label(stage: DatasetStage) -> str:
    """How the progress display names a teacher stage: its dataset and teacher seed."""
    return f"{stage.dataset} (teacher seed {stage.teacher.seed})"


@dataclass(frozen=True)
class FinishedRecords:
    """What counts as finished in one results folder.

    `redo_before`: with `--force`, the start of the suite (a `time.time()`); a record written since
    then was written by a concurrent process of the same suite and is not redone. None without
    `--force`.
    """

    folder: ResultsFolder
    redo_before: float | None = None

    def is_done(self, path: Path, run_id: str) -> bool:
        """The record at `path` finished `ok` under this run id (and, with `--force`, since the
        suite started)."""
        record = self.folder.read(path)
        if record is None or not record.ok or record.run_id != run_id:
            return False
        if self.redo_before is None:
            return True
        try:
            return path.stat().st_mtime >= self.redo_before
        except FileNotFoundError:
            return False

    def todo(self, plan: Plan) -> list[RunSpec]:
        """The plan's runs still to do, in plan order."""
        return [
            spec for spec in plan.runs if not self.is_done(self.folder.run_path(spec), spec.run_id)
        ]

    def reference_done(self, profile: str, spec: TeacherSpec, reference_id: str) -> bool:
        """Every reference row of the teacher finished under `reference_id`."""
        return all(
            self.is_done(self.folder.reference_path(profile, spec, row), reference_id)
            for row in spec.reference_rows
        )

    def stages(self, plan: Plan, todo: list[RunSpec]) -> list[DatasetStage]:
        """One stage per teacher (dataset and teacher seed) with runs to do or reference rows to
        score, in plan order.

        After the first stage of a dataset to score reference rows, a stage that only trains its
        `other_teacher` (`TeacherSpec.other_teacher`), unless that teacher is cached: with two
        slots or more it trains beside the first teacher. Inside the first teacher's stage, it
        kept that stage's students waiting, and the second teacher's stage idle on its lock, for
        a whole teacher training (the longest stage of an image dataset's suite)."""
        stages = []
        others: set[str] = set()
        for teacher in plan.teachers:
            runs = [spec for spec in todo if spec.teacher.key == teacher.key]
            reference_id = plan.reference_ids[teacher.key]
            teacher_done = self.reference_done(plan.profile.name, teacher, reference_id)
            if runs or not teacher_done:
                stages.append(
                    DatasetStage(teacher.dataset, teacher, runs, teacher_done, reference_id)
                )
            other = teacher.other_teacher(plan.profile)
            if teacher_done or other is None or other.key in others:
                continue
            others.add(other.key)
            if not self.folder.teacher_folder(other).exists():
                stages.append(DatasetStage(teacher.dataset, other, [], True, "", trains_only=True))
        return stages
