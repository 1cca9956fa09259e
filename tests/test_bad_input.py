"""Bad data and damaged files: a clear message, the right exit status, and nothing lost.

Usage errors (unknown names, bad `--set`, broken plugin files, `--jobs 0`) are tested in
`test_cli.py` and `test_executors.py`; here is what goes wrong with data, caches and records.
A dataset whose loader returns bad data (NaN features, a single class) is a failed dataset load:
its runs are recorded `failed` with the loader's message and the suite goes on with the other
datasets, exit status 1. It is not a usage error (2): the command was right, the data is not.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import read_records, teacher_cache

BAD_DATA = """
import numpy as np
from bench import DatasetBundle, Split, register_dataset

def _bundle(name, x, y):
    split = Split(x.astype(np.float32), y)
    return DatasetBundle(name, "1", "tabular", split, split, split, ("a", "b"))

@register_dataset("has_nan", modality="tabular", version="1")
def has_nan(options):
    x = np.random.default_rng(0).normal(size=(40, 3))
    x[5, 1] = np.nan
    return _bundle("has_nan", x, np.arange(40) % 2)

@register_dataset("one_class", modality="tabular", version="1")
def one_class(options):
    return _bundle("one_class", np.random.default_rng(0).normal(size=(40, 3)), np.zeros(40, int))
"""


@pytest.fixture
def bad_data(tmp_path: Path) -> Path:
    plugin = tmp_path / "bad_data.py"
    plugin.write_text(BAD_DATA)
    return plugin


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("has_nan", "dataset 'has_nan': the train split has NaN or infinite features"),
        ("one_class", "dataset 'one_class': the training split has a single class"),
    ],
)
def test_a_dataset_with_bad_data_fails_its_runs_and_the_suite_goes_on(
    cli, tmp_path: Path, bad_data: Path, dataset: str, message: str
) -> None:
    result = cli(
        "run", "--profile", "smoke", "--dataset", dataset, "wine", "--method", "scratch",
        "--plugin", bad_data, "--results", tmp_path / "res",
    )  # fmt: skip
    assert result.code == 1
    assert "Traceback" not in result.err
    records = read_records(tmp_path / "res")
    failed = records[f"smoke/{dataset}/scratch/seed0.json"]
    assert failed["status"] == "failed"
    assert failed["error"]["stage"] == "loading the dataset"
    assert message in failed["error"]["message"]
    assert records["smoke/wine/scratch/seed0.json"]["status"] == "ok"
    status = cli("status", "--profile", "smoke", "--results", tmp_path / "res")
    assert status.code == 0


def test_bad_data_fails_the_same_way_in_worker_processes(
    cli, tmp_path: Path, bad_data: Path
) -> None:
    result = cli(
        "run", "--profile", "smoke", "--dataset", "has_nan", "--method", "scratch", "kd",
        "--plugin", bad_data, "--jobs", "2", "--results", tmp_path / "res",
    )  # fmt: skip
    assert result.code == 1
    records = read_records(tmp_path / "res")
    assert {r["status"] for r in records.values()} == {"failed"}
    assert all("NaN" in r["error"]["message"] for r in records.values())


def test_a_corrupt_teacher_cache_is_rebuilt_not_trusted(cli, tmp_path: Path, caplog) -> None:
    suite = ("run", "--profile", "smoke", "--dataset", "wine", "--method", "scratch")
    assert cli(*suite, "--results", tmp_path).code == 0
    model = teacher_cache(tmp_path, "smoke", "wine") / "model.txt"
    reference = json.loads((tmp_path / "runs/smoke/wine/teacher/seed0.json").read_text())
    model.write_text("tree\nthis is not a LightGBM model\n")
    with caplog.at_level(logging.WARNING):
        result = cli(*suite, "--force", "--results", tmp_path)
    assert result.code == 0
    assert "damaged" in caplog.text and "retraining" in caplog.text
    assert "not a LightGBM model" not in model.read_text()
    rebuilt = json.loads((tmp_path / "runs/smoke/wine/teacher/seed0.json").read_text())
    assert rebuilt["teacher"]["from_cache"] is False
    assert rebuilt["metrics"]["accuracy"] == reference["metrics"]["accuracy"]


def test_a_corrupt_record_is_redone_with_a_warning(cli, tmp_path: Path, caplog) -> None:
    suite = ("run", "--profile", "smoke", "--dataset", "wine", "--method", "scratch", "kd")
    assert cli(*suite, "--results", tmp_path).code == 0
    damaged = tmp_path / "runs/smoke/wine/kd/seed0.json"
    damaged.write_text(damaged.read_text()[:100])  # cut short, as by a disk filling up
    kept = tmp_path / "runs/smoke/wine/scratch/seed0.json"
    before = kept.stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):
        result = cli(*suite, "--results", tmp_path)
    assert result.code == 0
    assert "skipping unreadable record" in caplog.text
    assert "1 done" in result.out and "1 ok" in result.out
    assert json.loads(damaged.read_text())["status"] == "ok"
    assert kept.stat().st_mtime_ns == before


def test_results_that_name_a_file_are_a_usage_error(cli, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "results.txt"
    not_a_folder.write_text("keep me")
    result = cli("run", "--all", "--profile", "smoke", "--results", not_a_folder)
    assert result.code == 2
    assert "is not writable" in result.err
    assert not_a_folder.read_text() == "keep me"


def test_a_plugin_with_a_syntax_error_stops_every_executor_before_any_work(
    cli, tmp_path: Path
) -> None:
    plugin = tmp_path / "typo.py"
    plugin.write_text("from bench import register_method\n\nclass X(:\n    pass\n")
    for executor in ("local", "process"):
        result = cli(
            "run", "--all", "--profile", "smoke", "--executor", executor, "--plugin", plugin,
            "--results", tmp_path / "res",
        )  # fmt: skip
        assert result.code == 2
        assert f"plugin file {plugin}, line 3" in result.err
    assert not (tmp_path / "res").exists()


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise() -> None:
    # Spinning OpenMP threads made a shared 2-core machine 5-10x slower (see bench/__init__.py).
    probe = "import bench, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    default = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert default.stdout.strip() == "PASSIVE"
    chosen = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
        capture_output=True,
        text=True,
    )
    assert chosen.stdout.strip() == "ACTIVE"
