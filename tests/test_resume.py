"""Rerunning a suite trains nothing that has finished; changed settings and failures are redone."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch

from bench.plan.planner import Selection, make_plan
from bench.results.folder import ResultsFolder
from bench.run import worker
from bench.run.context import RunOptions
from bench.run.progress import SilentProgress, Work
from bench.run.resume import FinishedRecords
from bench.run.runner import run_suite
from bench.run.worker import WorkerSetup, teacher_job
from tests.conftest import read_records

BASELINES = ("scratch", "label_smoothing", "kd")
RUN = ("run", "--profile", "smoke", "--dataset", "wine", "--method", *BASELINES)


def snapshot(results: Path) -> dict[str, tuple[int, str]]:
    """mtime and content of every file a run leaves (records and teacher cache)."""
    return {
        str(p.relative_to(results)): (p.stat().st_mtime_ns, p.read_text(errors="replace"))
        for p in sorted(results.rglob("*"))
        if p.is_file()
    }


def test_rerun_skips_finished_runs_and_touches_nothing(cli, tmp_path: Path) -> None:
    first = cli(*RUN, "--results", tmp_path)
    assert first.code == 0
    before = snapshot(tmp_path)
    assert any("cache/teachers" in name for name in before)
    second = cli(*RUN, "--results", tmp_path)
    assert second.code == 0
    assert "3 done" in second.out
    assert snapshot(tmp_path) == before


def test_changed_settings_failed_and_missing_runs_are_redone(cli, tmp_path: Path) -> None:
    assert cli(*RUN, "--results", tmp_path).code == 0
    runs = tmp_path / "runs" / "smoke" / "wine"
    stale = runs / "kd" / "seed0.json"
    record = json.loads(stale.read_text())
    record["run_id"] = "from-older-settings"
    stale.write_text(json.dumps(record))
    failed = runs / "scratch" / "seed0.json"
    record = json.loads(failed.read_text())
    record["status"] = "failed"
    failed.write_text(json.dumps(record))
    (runs / "label_smoothing" / "seed0.json").unlink()
    untouched = (runs / "teacher" / "seed0.json").stat().st_mtime_ns

    result = cli(*RUN, "--results", tmp_path)
    assert result.code == 0
    assert "3 ok" in result.out
    records = read_records(tmp_path)
    assert {r["status"] for r in records.values()} == {"ok"}
    assert records["smoke/wine/kd/seed0.json"]["run_id"] != "from-older-settings"
    assert (runs / "teacher" / "seed0.json").stat().st_mtime_ns == untouched


def test_force_redoes_finished_runs(cli, tmp_path: Path) -> None:
    once = ("run", "--profile", "smoke", "--dataset", "wine", "--method", "scratch")
    assert cli(*once, "--results", tmp_path).code == 0
    path = tmp_path / "runs" / "smoke" / "wine" / "scratch" / "seed0.json"
    started = json.loads(path.read_text())["started"]
    before = path.stat().st_mtime_ns
    result = cli(*once, "--force", "--results", tmp_path)
    assert result.code == 0 and "1 ok" in result.out
    assert path.stat().st_mtime_ns != before or json.loads(path.read_text())["started"] != started


def test_no_temporary_files_are_left_behind(cli, tmp_path: Path) -> None:
    assert cli(*RUN, "--results", tmp_path).code == 0
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_each_datasets_other_teacher_trains_in_a_stage_of_its_own_once(tmp_path: Path) -> None:
    """Right after a dataset's first teacher, so that two slots train both at once; none for the
    pretrained teacher (no such level), none once the teacher is cached, none once every
    reference row is scored (`tests/test_catalogue.py::finish`)."""
    plan = make_plan(Selection(profile="real", datasets=("wine", "digits_28px"), methods=("kd",)))
    finished = FinishedRecords(ResultsFolder(tmp_path))
    stages = finished.stages(plan, finished.todo(plan))
    other_seed = plan.profile.other_teacher_seed
    assert [(s.dataset, s.teacher.seed, s.trains_only) for s in stages] == [
        ("wine", 0, False), ("wine", other_seed, True), ("wine", 1, False), ("wine", 2, False),
        ("digits_28px", 0, False),
    ]  # fmt: skip
    other = stages[1].teacher
    assert other == stages[0].teacher.other_teacher(plan.profile) and not stages[1].runs
    finished.folder.teacher_folder(other).mkdir(parents=True)
    assert not any(s.trains_only for s in finished.stages(plan, finished.todo(plan)))


def test_a_stage_that_only_trains_ends_at_once_once_its_teacher_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage that needed the other teacher may train it before that teacher's own stage
    comes (a dataset's first, or another process's): the stage then loads neither data nor
    teacher."""
    plan = make_plan(Selection(profile="smoke", datasets=("wine",), methods=("kd",)))
    finished = FinishedRecords(ResultsFolder(tmp_path))
    (stage,) = [s for s in finished.stages(plan, finished.todo(plan)) if s.trains_only]
    options = RunOptions(tmp_path, torch.device("cpu"))
    setup = WorkerSetup(options, (), torch.get_num_threads(), time.time(), logging.WARNING, "smoke")
    assert teacher_job(setup, stage).teacher_ready  # trains it: LightGBM on wine
    assert finished.folder.teacher_folder(stage.teacher).is_dir()

    def must_not_load(*args: object) -> None:
        raise AssertionError("a cached teacher's training-only stage loaded its dataset")

    monkeypatch.setattr(worker, "prepare_dataset", must_not_load)
    try:
        assert teacher_job(setup, stage).teacher_ready
    finally:
        worker.release()  # this process is no worker: it keeps nothing for a next job


class WorkSeen(SilentProgress):
    """The pieces of work a suite announces to its progress display."""

    work: list[Work]

    def start(
        self, total: int, already_done: int, work: Iterable[Work] = (), *args: object
    ) -> None:
        self.work = list(work)


def test_one_slot_leaves_the_other_teacher_to_the_first_teachers_stage(tmp_path: Path) -> None:
    """One slot runs a teacher's students before the next teacher's stage: no training-only stage
    is queued (nor announced to the display), and the other teacher is still trained, once, for
    every teacher's reference rows."""
    plan = make_plan(Selection(profile="smoke", datasets=("wine",), methods=("kd",)))
    seen = WorkSeen()
    summary = run_suite(plan, RunOptions(tmp_path, torch.device("cpu")), seen)
    assert summary.counts["ok"] == 1
    assert seen.work == [("teacher", "wine"), ("run", "wine")]
    records = read_records(tmp_path)
    assert records["smoke/wine/other_teacher/seed0.json"]["status"] == "ok"
    other = plan.teachers[0].other_teacher(plan.profile)
    assert ResultsFolder(tmp_path).teacher_folder(other).is_dir()
