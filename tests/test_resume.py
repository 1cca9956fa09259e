"""Rerunning a suite trains nothing that has finished; changed settings and failures are redone."""

from __future__ import annotations

import json
from pathlib import Path

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
