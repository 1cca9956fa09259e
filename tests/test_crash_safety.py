"""Kill -9 in the middle, or two `bench run`s on one folder: nothing redone, lost or corrupted.

These tests start real `python -m bench` processes and kill them for real.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from bench.core.locks import hold_lock, lock_path
from bench.core.specs import teacher_spec_for
from bench.core.vocabulary import REFERENCE_ROWS
from bench.data.bundle import DATASETS, DatasetLoaderOptions
from bench.plan.profiles import PROFILES
from bench.results.folder import ResultsFolder
from bench.train.teachers import _train_and_cache, obtain_teacher
from tests.conftest import read_records
from tests.test_determinism import comparable_metrics
from tests.test_locks import held_by_another_process

REPO = Path(__file__).resolve().parent.parent
SUITE = (
    "run", "--profile", "smoke", "--dataset", "wine", "digits",
    "--method", "scratch", "label_smoothing", "kd", "--device", "cpu",
)  # fmt: skip
STUDENT_RUNS = 6
CPU = torch.device("cpu")


def start(*args: str | Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *map(str, args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux: from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def student_records(results: Path) -> dict[Path, tuple[int, bytes]]:
    """mtime and bytes of every finished student record."""
    return {
        path: (path.stat().st_mtime_ns, path.read_bytes())
        for path in (results / "runs").rglob("*.json")
        if path.parent.name not in REFERENCE_ROWS
    }


def leftovers(results: Path) -> list[Path]:
    """Lock files, temporary files and teacher staging folders: none may outlive a suite."""
    return [
        p
        for p in results.rglob("*")
        if p.suffix in (".lock", ".tmp") or (p.is_dir() and p.name.startswith("."))
    ]


def counts(summary: str) -> dict[str, int]:
    """`6 runs (2 done, 1 locked, 3 ok) in ...` -> {"done": 2, "locked": 1, "ok": 3}."""
    inside = re.search(r"runs \(([^)]*)\)", summary)
    assert inside, summary
    return {status: int(n) for n, status in re.findall(r"(\d+) (\w+)", inside.group(1))}


@pytest.mark.parametrize("executor", [(), ("--executor", "process", "--jobs", "2")])
def test_kill_9_midway_then_rerun_finishes_the_rest(tmp_path: Path, executor: tuple) -> None:
    results = tmp_path / "killed"
    process = start(*SUITE, *executor, "--results", results)
    wait_for(lambda: len(student_records(results)) >= 1, "the first finished run")
    workers = children_of(process.pid)
    process.send_signal(signal.SIGKILL)  # the parent only: its workers must die with it
    process.wait()
    wait_for(lambda: not any(alive(pid) for pid in workers), "the workers to die", timeout=30)
    at_kill = student_records(results)
    assert 1 <= len(at_kill) < STUDENT_RUNS
    for path in at_kill:
        assert json.loads(path.read_text())["status"] == "ok"  # every record there is whole

    rerun = finish(*SUITE, *executor, "--results", results)
    assert rerun.returncode == 0, rerun.stderr
    # What had finished is skipped, nothing is still held by a worker of the killed suite.
    assert counts(rerun.stdout) == {"done": len(at_kill), "ok": STUDENT_RUNS - len(at_kill)}
    for path, (mtime, data) in at_kill.items():
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data, path
    records = read_records(results)
    assert len(records) == STUDENT_RUNS + 2 * len(REFERENCE_ROWS)
    assert {r["status"] for r in records.values()} == {"ok"}
    assert leftovers(results) == []

    uninterrupted = finish(*SUITE, *executor, "--results", tmp_path / "whole")
    assert uninterrupted.returncode == 0
    assert comparable_metrics(results) == comparable_metrics(tmp_path / "whole")


def test_two_processes_on_one_folder_train_each_run_once(tmp_path: Path) -> None:
    suite = (
        "run", "--profile", "smoke", "--dataset", "wine", "--method", "scratch",
        "label_smoothing", "kd", "--seeds", "0", "1", "2", "--results", tmp_path,
    )  # fmt: skip
    first, second = start(*suite), start(*suite)
    outputs = [p.communicate(timeout=900) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    summaries = [counts(out) for out, _ in outputs]
    for summary in summaries:
        assert sum(summary.values()) == 9  # each process accounts for every run...
    assert sum(s.get("ok", 0) for s in summaries) == 9  # ...and each run was trained once
    records = read_records(tmp_path)
    assert len(records) == 9 + len(REFERENCE_ROWS)
    assert {r["status"] for r in records.values()} == {"ok"}
    # The teacher and the other seed's (a control row), each trained once.
    teachers = list((tmp_path / "cache" / "teachers" / "wine").iterdir())
    assert len(teachers) == 2 and leftovers(tmp_path) == []


def test_a_run_another_process_holds_is_left_to_it(cli, tmp_path: Path) -> None:
    suite = ("run", "--profile", "smoke", "--dataset", "wine", "--method", "scratch", "kd")
    held = tmp_path / "runs" / "smoke" / "wine" / "scratch" / "seed0.json"
    with held_by_another_process(lock_path(held)) as holder:
        result = cli(*suite, "--results", tmp_path)
        assert result.code == 0  # busy elsewhere is not a failure
        assert counts(result.out) == {"locked": 1, "ok": 1}
        assert "locked   wine/scratch/seed0" in result.err
        assert "left to it (locked)" in result.err
        assert not held.exists()
        holder.kill()  # dies holding it, as after kill -9: the file stays, the lock does not
        holder.wait()
        assert lock_path(held).exists()
        again = cli(*suite, "--results", tmp_path)
    assert again.code == 0 and counts(again.out) == {"done": 1, "ok": 1}
    assert json.loads(held.read_text())["status"] == "ok"
    assert not lock_path(held).exists()


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
def test_a_second_process_waits_for_the_teacher_and_uses_it(tmp_path: Path) -> None:
    entry = DATASETS.get("wine")
    spec = teacher_spec_for(PROFILES.get("smoke"), entry.name, entry.version, entry.modality)
    bundle = entry.load(DatasetLoaderOptions())
    folder = ResultsFolder(tmp_path).teacher_folder(spec)
    with hold_lock(lock_path(folder)):
        waiting = start(
            "run", "--profile", "smoke", "--dataset", "wine", "--method", "scratch",
            "--results", tmp_path,
        )  # fmt: skip

        def blocked_on_our_lock() -> bool:
            return any(
                line.split()[1:3] == ["->", "FLOCK"] and line.split()[5] == str(waiting.pid)
                for line in Path("/proc/locks").read_text().splitlines()
            )

        wait_for(blocked_on_our_lock, "the second process to wait for the teacher's lock")
        assert not folder.exists()
        ours = obtain_teacher(spec, bundle, ResultsFolder(tmp_path).teacher_folder(spec), CPU)
        assert ours.info["from_cache"] is False
    out, err = waiting.communicate(timeout=900)
    assert waiting.returncode == 0, err
    teacher_row = read_records(tmp_path)["smoke/wine/teacher/seed0.json"]
    assert teacher_row["teacher"]["from_cache"] is True  # it loaded ours rather than training
    assert teacher_row["teacher"]["train_seconds"] == ours.info["train_seconds"]
    assert leftovers(tmp_path) == []


def test_the_loser_of_a_teacher_race_uses_the_winners_teacher(tmp_path: Path) -> None:
    entry = DATASETS.get("wine")
    spec = teacher_spec_for(PROFILES.get("smoke"), entry.name, entry.version, entry.modality)
    bundle = entry.load(DatasetLoaderOptions())
    winner = obtain_teacher(spec, bundle, ResultsFolder(tmp_path).teacher_folder(spec), CPU)
    folder = ResultsFolder(tmp_path).teacher_folder(spec)
    model = folder / "model.txt"
    before = (model.stat().st_mtime_ns, model.read_bytes())
    # The loser trained too (it found no cache when it started) and now finds the winner's there.
    loser = _train_and_cache(spec, bundle, folder, CPU)
    assert loser.info["from_cache"] is True
    assert loser.info["train_seconds"] == winner.info["train_seconds"]
    assert (model.stat().st_mtime_ns, model.read_bytes()) == before
    assert [p.name for p in folder.parent.iterdir()] == [spec.key]  # its staging folder is gone


def test_ctrl_c_stops_the_workers_and_keeps_finished_runs(tmp_path: Path) -> None:
    args = (*SUITE, "--jobs", "2", "--results", tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", *map(str, args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # ...and Ctrl-C handled as there: a suite started in the background by a shell without
        # job control inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_for(lambda: len(student_records(tmp_path)) >= 1, "the first finished run")
    workers = children_of(process.pid)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole group gets SIGINT
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "interrupted: finished runs are kept" in err
    assert "Traceback" not in err
    wait_for(lambda: not any(alive(pid) for pid in workers), "the workers to stop", timeout=30)
    kept = student_records(tmp_path)
    rerun = finish(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert counts(rerun.stdout) == {"done": len(kept), "ok": STUDENT_RUNS - len(kept)}
    assert leftovers(tmp_path) == []
