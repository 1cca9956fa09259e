"""Every registered method on every compatible dataset, in the smoke profile (as BenchOpt does).

A new method or dataset plugin is tested here the moment it is registered.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import SCHEMA_VERSION
from bench.cli.main import main
from bench.core.vocabulary import RANDOM_CONTROL_ROW, TEACHER_ROW
from bench.data.bundle import DATASETS
from bench.metrics import METRICS
from bench.plan.profiles import PROFILES
from bench.results.record import REQUIRED_KEYS
from bench.train.method import METHODS
from tests.conftest import read_records, record_json

SMOKE = PROFILES.get("smoke")
PAIRS = [
    (dataset, method)
    for dataset in SMOKE.datasets
    for method in METHODS.names()
    if DATASETS.get(dataset).modality in METHODS.get(method).modalities
]


def expected_metrics(modality: str, num_classes: int) -> set[str]:
    """Prediction, fidelity and efficiency metrics, agreement for every explainer of the profile,
    and the main Quantus metrics for its Quantus explainer."""
    explanation = SMOKE.budgets[modality].explanation
    core = {
        name
        for name in METRICS.names()
        if METRICS.get(name).category in ("prediction", "fidelity", "efficiency")
        and modality in METRICS.get(name).modalities
    }
    if num_classes != 2:
        core.discard("roc_auc")
    agreement = {
        f"expl_{kind}_{explainer}"
        for kind in ("spearman", "topk", "cosine")
        for explainer in explanation.explainers
    }
    quantus = {
        f"{name}_{explanation.quantus_explainer}"
        for name in ("faithfulness_correlation", "max_sensitivity", "sparseness", "complexity")
    }
    return core | agreement | quantus


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("smoke")
    code = main(["run", "--all", "--profile", "smoke", "--results", str(results)])
    assert code == 0
    return results


def test_a_finished_suite_leaves_no_checkpoints(smoke_results: Path) -> None:
    """Every run and network teacher kept per-epoch checkpoints while it trained
    (`bench.train.checkpoints`) and removed them once its record or cache entry was written."""
    assert (smoke_results / "runs" / "smoke" / "digits" / "teacher" / "seed0.json").is_file()
    assert not any((smoke_results / "cache" / "checkpoints").glob("*"))
    resumed = [
        r
        for r in read_records(smoke_results).values()
        if "resumed_at_epoch" in (r.get("training") or {})
    ]
    assert resumed == []


def test_every_compatible_pair_is_planned_and_nothing_else(smoke_results: Path) -> None:
    records = read_records(smoke_results)
    students = {
        (r["dataset"]["name"], r["method"]["name"])
        for r in records.values()
        if r["role"] == "student"
    }
    assert students == set(PAIRS)
    for role in ("teacher", "control"):
        rows = {r["dataset"]["name"] for r in records.values() if r["role"] == role}
        assert rows == set(SMOKE.datasets), role


@pytest.mark.parametrize(("dataset", "method"), PAIRS)
def test_run_record_is_complete(smoke_results: Path, dataset: str, method: str) -> None:
    record = record_json(smoke_results, "smoke", dataset, method, SMOKE.seeds[0])
    assert record is not None, f"no record of {dataset}/{method}"
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
    assert expected_metrics(modality, record["dataset"]["num_classes"]) <= set(record["metrics"])
    for name, value in record["metrics"].items():
        assert value is not None and math.isfinite(value), name
        assert record["metric_metadata"][name]["higher_is_better"] in (True, False)
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
    # The loop logged every named loss term per epoch.
    history = record["training"]["history"]
    epochs = SMOKE.budget(dataset, modality).student_training.epochs
    assert len(history["val_accuracy"]) == epochs
    assert any(key.startswith("loss/") and len(v) == epochs for key, v in history.items())


@pytest.mark.parametrize("dataset", SMOKE.datasets)
def test_teacher_is_scored_as_a_reference_row(smoke_results: Path, dataset: str) -> None:
    record = record_json(smoke_results, "smoke", dataset, TEACHER_ROW, 0)
    assert record is not None and record["status"] == "ok"
    assert record["role"] == "teacher"
    assert record["metrics"]["teacher_agreement"] == 1.0
    assert record["metrics"]["teacher_kl"] == pytest.approx(0.0, abs=1e-9)
    # It explains exactly like itself: the ceiling of every agreement metric.
    for name, value in record["metrics"].items():
        if name.startswith("expl_"):
            assert value == pytest.approx(1.0), name
    # The teacher is better than chance on every embedded dataset.
    assert record["metrics"]["accuracy"] > 1.5 / record["dataset"]["num_classes"]


def test_only_xdistill_has_an_explainer_of_its_own(smoke_results: Path) -> None:
    """Under `own` every record of digits, control rows and the teacher included, scores its
    Grad-CAM again, but xdistill, whose decoder's maps differ."""
    own = [
        (r["method"]["name"], name, value, r["metrics"][name.replace("_own", "_gradcam")])
        for r in read_records(smoke_results).values()
        if r["dataset"]["name"] == "digits"
        for name, value in r["metrics"].items()
        if name.endswith("_own")
    ]
    rows = {row for row, *_ in own}
    assert {"xdistill", "xdistill_arch", TEACHER_ROW, RANDOM_CONTROL_ROW} <= rows
    for row, name, value, gradcam in own:
        if row != "xdistill":
            assert value == gradcam or math.isnan(value) and math.isnan(gradcam), (row, name)
    differ = [name for row, name, value, gradcam in own if row == "xdistill" and value != gradcam]
    assert "expl_spearman_own" in differ


@pytest.mark.parametrize("dataset", SMOKE.datasets)
def test_random_control_row_marks_the_floor_of_agreement(smoke_results: Path, dataset: str) -> None:
    record = record_json(smoke_results, "smoke", dataset, RANDOM_CONTROL_ROW, 0)
    assert record is not None and record["status"] == "ok" and record["role"] == "control"
    assert "accuracy" not in record["metrics"]  # no predictions of its own
    spearman = [v for k, v in record["metrics"].items() if k.startswith("expl_spearman_")]
    assert spearman and all(abs(v) < 0.2 for v in spearman)
