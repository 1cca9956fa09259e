"""A method that raises or diverges fails alone, with its traceback in its record."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import read_records

PLUGIN = Path(__file__).parent / "plugins" / "broken_methods.py"


def test_failures_are_recorded_and_the_suite_goes_on(cli, tmp_path: Path) -> None:
    result = cli(
        "run", "--profile", "smoke", "--dataset", "wine", "--method", "raises", "nan_loss",
        "scratch", "--plugin", PLUGIN, "--results", tmp_path,
    )  # fmt: skip
    assert result.code == 1
    assert "failed" in result.err
    records = read_records(tmp_path)
    raised = records["smoke/wine/raises/seed0.json"]
    assert raised["status"] == "failed"
    assert raised["error"]["type"] == "RuntimeError"
    assert "deliberate failure inside loss()" in raised["error"]["traceback"]
    assert "broken_methods.py" in raised["error"]["traceback"]
    diverged = records["smoke/wine/nan_loss/seed0.json"]
    assert diverged["status"] == "diverged"
    assert diverged["error"]["type"] == "Diverged"
    assert diverged["metrics"] == {}
    assert records["smoke/wine/scratch/seed0.json"]["status"] == "ok"


def test_failed_runs_show_in_status_and_report(cli, tmp_path: Path) -> None:
    args = ("--profile", "smoke", "--results", tmp_path)
    cli("run", "--dataset", "wine", "--method", "raises", "--plugin", PLUGIN, *args)
    status = cli("status", "--plugin", PLUGIN, *args)
    assert status.code == 0
    assert "failed   wine/raises/seed0: RuntimeError: deliberate failure" in status.out
    report = cli("report", "--results", tmp_path, "--out", tmp_path / "site")
    assert report.code == 0
    html = (tmp_path / "site" / "index.html").read_text()
    assert "Runs that did not finish" in html and "deliberate failure inside loss()" in html


def test_unavailable_dataset_is_skipped_with_instructions(cli, tmp_path: Path) -> None:
    plugin = tmp_path / "offline_data.py"
    plugin.write_text(
        "from bench import DatasetUnavailable, register_dataset\n"
        "@register_dataset('needs_download', modality='tabular', version='1')\n"
        "def load(options):\n"
        "    raise DatasetUnavailable('not cached; run with network or pass --data-dir')\n"
    )
    result = cli(
        "run", "--profile", "smoke", "--dataset", "needs_download", "--method", "scratch",
        "--plugin", plugin, "--results", tmp_path / "res",
    )  # fmt: skip
    assert result.code == 0
    record = read_records(tmp_path / "res")["smoke/needs_download/scratch/seed0.json"]
    assert record["status"] == "skipped"
    assert "pass --data-dir" in record["error"]["message"]
