"""Every registered method on every compatible dataset, in the smoke profile (as BenchOpt does).

A new method or dataset plugin is tested here the moment it is registered.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import SCHEMA_VERSION
from bench.cli import main
from bench.data import DATASETS
from bench.method import METHODS, TEACHER_ROW
from bench.metrics import METRICS
from bench.profiles import PROFILES
from bench.store import REQUIRED_KEYS, read_record, record_path
from tests.conftest import read_records

SMOKE = PROFILES.get("smoke")
PAIRS = [
    (dataset, method)
    for dataset in SMOKE.datasets
    for method in METHODS.names()
    if DATASETS.get(dataset).modality in METHODS.get(method).modalities
]


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("smoke")
    code = main(["run", "--all", "--profile", "smoke", "--results", str(results)])
    assert code == 0
    return results


def test_every_compatible_pair_is_planned_and_nothing_else(smoke_results: Path) -> None:
    records = read_records(smoke_results)
    students = {
        (r["dataset"]["name"], r["method"]["name"])
        for r in records.values()
        if r["role"] == "student"
    }
    assert students == set(PAIRS)
    teachers = {r["dataset"]["name"] for r in records.values() if r["role"] == "teacher"}
    assert teachers == set(SMOKE.datasets)


@pytest.mark.parametrize(("dataset", "method"), PAIRS)
def test_run_record_is_complete(smoke_results: Path, dataset: str, method: str) -> None:
    path = record_path(smoke_results, "smoke", dataset, method, SMOKE.seeds[0])
    record = read_record(path)
    assert record is not None, f"no record at {path}"
    assert record["status"] == "ok", record.get("error")
    assert all(key in record for key in REQUIRED_KEYS)
    assert record["schema_version"] == SCHEMA_VERSION
    assert record["dataset"]["name"] == dataset and record["method"]["name"] == method
    assert record["student"]["parameters"] > 0
    for key in ("python", "versions", "device", "cpu"):
        assert key in record["environment"]
    assert record["timings"]["train"] > 0
    # Every metric that applies to the dataset is there, finite, with its metadata.
    modality = DATASETS.get(dataset).modality
    expected = {m for m in METRICS.names() if modality in METRICS.get(m).modalities}
    if record["dataset"]["num_classes"] != 2:
        expected.discard("roc_auc")
    assert expected <= set(record["metrics"])
    for name, value in record["metrics"].items():
        assert value is not None and math.isfinite(value), name
        assert record["metric_metadata"][name]["higher_is_better"] in (True, False)
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
    # The loop logged every named loss term per epoch.
    history = record["training"]["history"]
    epochs = SMOKE.budget(modality).student_training.epochs
    assert len(history["val_accuracy"]) == epochs
    assert any(key.startswith("loss/") and len(v) == epochs for key, v in history.items())


@pytest.mark.parametrize("dataset", SMOKE.datasets)
def test_teacher_is_scored_as_a_reference_row(smoke_results: Path, dataset: str) -> None:
    record = read_record(record_path(smoke_results, "smoke", dataset, TEACHER_ROW, 0))
    assert record is not None and record["status"] == "ok"
    assert record["role"] == "teacher"
    assert record["metrics"]["teacher_agreement"] == 1.0
    assert record["metrics"]["teacher_kl"] == pytest.approx(0.0, abs=1e-9)
    # The teacher is better than chance on every embedded dataset.
    assert record["metrics"]["accuracy"] > 1.5 / record["dataset"]["num_classes"]
