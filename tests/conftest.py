"""Shared fixtures: registries restored after every test, and the CLI run in-process."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from bench.cli.main import main
from bench.core import registry
from bench.data.bundle import DATASETS
from bench.metrics import METRICS
from bench.models import MODELS
from bench.plan.catalogue import CACHE_ENV
from bench.plan.profiles import PROFILES
from bench.results.folder import ResultsFolder, read_record
from bench.train.method import METHODS

registry.load_plugins()
ALL_REGISTRIES = (METHODS, DATASETS, METRICS, MODELS, PROFILES)


# The files whose tests take longest (`pytest --durations=0`, 2026-12-07: each a minute or more of
# one worker, the median file a few seconds). The test command hands whole files to its workers
# (`--dist loadfile`) in collection order, so these go first: a long file begun last would leave
# the other workers idle at the end.
LONGEST_FILES = (
    "test_executors.py", "test_crash_safety.py", "test_reliability.py", "test_hostile_input.py",
    "test_conformance.py", "test_catalogue.py", "test_dissection.py", "test_report.py",
    "test_progress.py", "test_examples.py", "test_reference_tables.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (`LONGEST_FILES`), the others in their order. Tests marked `cuda`
    need a GPU: skipped where torch sees none (`benchmarks/gpu_check.sh` runs them with `-m cuda`
    on a GPU machine)."""
    first = {name: rank for rank, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))  # stable: order kept within
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run by benchmarks/gpu_check.sh on a GPU)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def catalogue_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Commands the tests run, in this process or another, cache their catalogue in a folder of
    the session, never in the user's ~/.cache."""
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("catalogue"))
    yield
    if before is None:
        os.environ.pop(CACHE_ENV)
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture(autouse=True)
def restore_registries() -> Iterator[None]:
    """Plugins registered by a test must not leak into the next one."""
    saved = [dict(r._items) for r in ALL_REGISTRIES]
    loaded = dict(registry._loaded_files)
    yield
    for reg, items in zip(ALL_REGISTRIES, saved, strict=True):
        reg._items.clear()
        reg._items.update(items)
    registry._loaded_files.clear()
    registry._loaded_files.update(loaded)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module of tiny tensors (`pytestmark = usefixtures("one_thread")`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `python -m bench ARGS` in this process and capture its exit status and output."""

    def run(*args: str | Path) -> CliResult:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def record_json(results: Path, profile: str, dataset: str, row: str, seed: int) -> dict | None:
    """The record of one run as its JSON form, read and checked by the harness's own reader
    (None when it is missing or invalid): tests check the documented keys of the file."""
    record = read_record(ResultsFolder(results).record_path(profile, dataset, row, seed))
    return None if record is None else record.to_json()


def teacher_cache(results: Path, profile: str, dataset: str, seed: int = 0) -> Path:
    """The cache folder of the teacher of `seed` (beside it: the other seed's, a control row's)."""
    record = record_json(results, profile, dataset, "teacher", seed)
    assert record is not None, f"no teacher record of {dataset} seed {seed}"
    return ResultsFolder(results).root / "cache" / "teachers" / dataset / record["teacher"]["key"]


def read_records(results: Path) -> dict[str, dict]:
    """Every record under `results/runs`, keyed by its path relative to `runs/`."""
    root = results / "runs"
    return {
        str(p.relative_to(root)): json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))
    }
