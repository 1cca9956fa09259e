"""The progress display: its ETA from a per-stage cost model, tested against a fake clock; its
status line with the stage's own elapsed time and epoch; its refresh while nothing finishes."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest
import torch

from bench.plan.planner import Selection, make_plan
from bench.run.backends import make_backend
from bench.run.context import RunOptions
from bench.run.progress import CostModel, TerminalProgress, dataset_of
from bench.run.runner import run_suite


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so the status line is drawn."""

    def isatty(self) -> bool:
        return True


def progress(clock: FakeClock, live: bool = False) -> TerminalProgress:
    stream = Terminal() if live else io.StringIO()
    return TerminalProgress(stream, clock=clock, refresh=3600)


def test_the_cost_model_uses_the_datasets_own_cost_else_its_kinds() -> None:
    costs = CostModel()
    assert costs.estimate(("run", "digits")) is None
    costs.record(("run", "digits"), 4.0)
    costs.record(("run", "digits"), 6.0)
    costs.record(("run", "wine"), 1.0)
    assert costs.estimate(("run", "digits")) == 5.0
    assert costs.estimate(("run", "concept_shapes")) == pytest.approx(11 / 3)  # any dataset's
    assert costs.estimate(("teacher", "digits")) is None


def test_the_eta_follows_the_cost_of_each_kind_and_dataset() -> None:
    clock = FakeClock()
    shown = progress(clock)
    work = [("teacher", "wine"), ("teacher", "shapes")]
    work += [("run", "wine")] * 3 + [("run", "shapes")] * 3
    shown.start(6, 0, work, slots=1)
    assert shown.eta() is None  # nothing measured yet: "?" rather than a guess

    shown.began("wine (teacher seed 0)", ("teacher", "wine"))
    clock.now = 10.0
    shown.teacher_finished("wine (teacher seed 0)", "wine", 10.0)
    shown.began("wine/kd/seed0", ("run", "wine"))
    clock.now = 12.0
    assert shown.eta() is None  # no run has finished: a run's cost is unknown
    clock.now = 14.0
    shown.finished("wine/kd/seed0", "ok", 4.0)
    # Left: 2 wine runs (4 s), the shapes teacher (wine's 10 s), 3 shapes runs (wine's 4 s).
    assert shown.eta() == pytest.approx(2 * 4 + 10 + 3 * 4)

    shown.began("wine/kd/seed1", ("run", "wine"))
    clock.now = 17.0  # 3 s into a 4 s run
    assert shown.eta() == pytest.approx(1 + 4 + 10 + 3 * 4)
    clock.now = 30.0  # overrunning: what is left of it counts as nothing, not as negative
    assert shown.eta() == pytest.approx(0 + 4 + 10 + 3 * 4)
    shown.finished("wine/kd/seed1", "ok", 16.0)
    shown.finished("wine/kd/seed2", "skipped", 0.0)  # never began: it leaves the pending work
    assert shown.eta() == pytest.approx(10 + 3 * 10)  # wine runs now average 10 s

    shown.began("shapes (teacher seed 0)", ("teacher", "shapes"))
    clock.now = 130.0
    shown.teacher_finished("shapes (teacher seed 0)", "shapes", 100.0)
    shown.began("shapes/kd/seed0", ("run", "shapes"))
    clock.now = 190.0
    shown.finished("shapes/kd/seed0", "ok", 60.0)
    # The shapes runs cost their own 60 s, not the 10 s of wine's.
    assert shown.eta() == pytest.approx(2 * 60)


def test_the_eta_divides_the_work_among_the_slots() -> None:
    clock = FakeClock()
    shown = progress(clock)
    shown.start(5, 0, [("run", "wine")] * 5, slots=2)
    shown.began("wine/a/seed0", ("run", "wine"))
    clock.now = 6.0
    shown.finished("wine/a/seed0", "ok", 6.0)
    assert shown.eta() == pytest.approx(4 * 6 / 2)


def test_the_status_line_shows_the_stage_its_own_elapsed_time_and_epoch() -> None:
    clock = FakeClock()
    shown = progress(clock)
    shown.start(3, 1, [("run", "digits")] * 2)
    clock.now = 5.0
    shown.began("digits/kd/seed0", ("run", "digits"))
    shown.stage("digits/kd/seed0", "training")
    clock.now = 9.0
    shown.epoch("digits/kd/seed0", "training", 3, 30)
    clock.now = 12.0
    line = shown.status_line()
    # The stage's clock runs from when training began (t = 5), across its epochs.
    assert "digits/kd/seed0: training epoch 3/30 (0:07)" in line
    assert line.startswith("[1/3] 33% |") and "elapsed 0:12" in line and line.endswith("ETA ?")
    shown.stage("digits/kd/seed0", "scoring")
    clock.now = 14.0
    assert "digits/kd/seed0: scoring (0:02)" in shown.status_line()
    shown.finished("digits/kd/seed0", "ok", 9.0)
    assert "digits/kd/seed0" not in shown.status_line()
    assert shown.status_line().startswith("[2/3] 66% | waiting |")
    assert shown.status_line().endswith("ETA 0:09")


def test_a_live_status_line_is_redrawn_while_nothing_happens() -> None:
    stream = Terminal()
    shown = TerminalProgress(stream, refresh=0.02)
    shown.start(1, 0, [("run", "digits")])
    shown.began("digits/kd/seed0", ("run", "digits"))
    shown.stage("digits/kd/seed0", "training")
    time.sleep(0.3)
    shown.close()
    redraws = stream.getvalue().count("digits/kd/seed0: training")
    assert redraws >= 5  # about 15 in 0.3 s; none needed a report from the runner
    after = stream.getvalue()
    time.sleep(0.1)
    assert stream.getvalue() == after  # closed: the ticker has stopped


def test_a_stream_that_is_not_a_terminal_gets_finished_lines_only() -> None:
    stream = io.StringIO()
    shown = TerminalProgress(stream, refresh=0.01)
    shown.start(1, 0, [("run", "wine")])
    shown.stage("wine/kd/seed0", "training")
    time.sleep(0.05)
    shown.finished("wine/kd/seed0", "ok", 1.0)
    shown.close()
    assert stream.getvalue().splitlines() == [
        "1 runs planned: 0 already done, 1 to run",
        "[1/1] ok       wine/kd/seed0 (1.0s)",
    ]


@pytest.mark.parametrize("jobs", [None, 2])
def test_a_suite_reports_its_teacher_and_student_epochs(tmp_path: Path, jobs: int | None) -> None:
    """In this process, and from the workers of a process pool (relayed to the parent)."""
    stream = Terminal()
    shown = TerminalProgress(stream, refresh=3600)
    plan = make_plan(Selection(profile="smoke", datasets=("digits",), methods=("kd",)))
    options = RunOptions(results=tmp_path, device=torch.device("cpu"))
    backend = make_backend(None, jobs, None)
    try:
        run_suite(plan, options, shown, backend)
    finally:
        backend.close()
    shown.close()
    drawn = stream.getvalue()
    assert "digits (teacher seed 0): teacher training epoch 3/3" in drawn
    assert "digits/kd/seed0: training epoch 6/6" in drawn
    assert re.search(r"digits/kd/seed0: scoring \(\d+:\d\d\)", drawn)
    # Once the teacher stage is measured, the ETA is a time, not "?".
    assert re.search(r"ETA \d+:\d\d", drawn)
    assert dataset_of("digits/kd/seed0") == "digits"
