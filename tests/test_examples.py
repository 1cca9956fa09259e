"""The plugin guide's three examples (`examples/`), run as a user runs them: through the command
line, in a fresh process, on the smoke profile. The guide shows these files verbatim."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import read_records

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SOFT_TARGET = EXAMPLES / "soft_target.py"
TREESHAP = EXAMPLES / "treeshap_gradients.py"
IRIS = EXAMPLES / "iris_dataset.py"


def bench(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *map(str, args)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three plugins in one suite: both methods on the plugin's dataset and on a built-in
    table, beside kd as the baseline."""
    results = tmp_path_factory.mktemp("examples")
    done = bench(
        "run", "--profile", "smoke", "--plugin", SOFT_TARGET, TREESHAP, IRIS,
        "--dataset", "iris", "breast_cancer", "--method", "soft_target", "treeshap_cosine", "kd",
        "--results", results,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "6 runs (6 ok)" in done.stdout
    return results


@pytest.mark.parametrize("dataset", ["iris", "breast_cancer"])
@pytest.mark.parametrize(
    ("method", "plugin"), [("soft_target", SOFT_TARGET), ("treeshap_cosine", TREESHAP)]
)
def test_each_example_method_trains_and_names_its_code(
    example_runs: Path, dataset: str, method: str, plugin: Path
) -> None:
    record = read_records(example_runs)[f"smoke/{dataset}/{method}/seed0.json"]
    assert record["status"] == "ok"
    assert record["method"]["code"]["file"] == str(plugin)
    assert len(record["method"]["code"]["sha256"]) == 64
    teacher_accuracy = read_records(example_runs)[f"smoke/{dataset}/teacher/seed0.json"]["metrics"]
    assert record["metrics"]["accuracy"] > 0.5 * teacher_accuracy["accuracy"]


def test_the_treeshap_term_is_trained_down(example_runs: Path) -> None:
    """The explanation term is differentiated through the input gradient and trained: its value
    falls over the epochs (a term that did not reach the optimiser would stay where it began)."""
    for dataset in ("iris", "breast_cancer"):
        history = read_records(example_runs)[f"smoke/{dataset}/treeshap_cosine/seed0.json"]
        terms = history["training"]["history"]["loss/explanation"]
        assert terms[-1] < terms[0], (dataset, terms)


def test_the_dataset_example_is_the_real_iris_table(example_runs: Path) -> None:
    record = read_records(example_runs)["smoke/iris/kd/seed0.json"]
    assert record["dataset"]["name"] == "iris"
    assert record["dataset"]["num_classes"] == 3
    assert sum(record["dataset"]["sizes"].values()) == 150


def test_bench_plugins_takes_several_files() -> None:
    separator = os.pathsep
    env = {"BENCH_PLUGINS": separator.join(map(str, (SOFT_TARGET, TREESHAP, IRIS)))}
    methods = bench("list", "methods", env=env)
    datasets = bench("list", "datasets", env=env)
    assert methods.returncode == 0 and datasets.returncode == 0, methods.stderr + datasets.stderr
    assert "soft_target" in methods.stdout and "treeshap_cosine" in methods.stdout
    assert "iris" in datasets.stdout


def test_a_plugin_dataset_joins_all_and_status_counts_the_same_runs(tmp_path: Path) -> None:
    """`run --all` includes a plugin's dataset and says so first; `status` counts those runs."""
    status = bench("status", "--profile", "smoke", "--plugin", IRIS, "--results", tmp_path)
    assert status.returncode == 0, status.stderr
    first, counted = status.stdout.splitlines()[:2]
    assert first.startswith("including the plugin datasets iris, which profile smoke does not list")
    without = bench("status", "--profile", "smoke", "--results", tmp_path)
    planned = int(counted.split(": ")[1].split()[0])
    planned_without = int(without.stdout.splitlines()[0].split(": ")[1].split()[0])
    assert planned > planned_without
    run = bench(
        "run", "--all", "--profile", "smoke", "--plugin", IRIS, "--method", "scratch",
        "--results", tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines()[0] == first
    assert "smoke/iris/scratch/seed0.json" in read_records(tmp_path)
    after = bench("status", "--profile", "smoke", "--plugin", IRIS, "--results", tmp_path)
    assert after.returncode == 0, after.stderr
    assert f"{planned} runs" in after.stdout.splitlines()[1]
