"""The structure the architecture map promises: the wings of `bench/` import only downwards, no two
modules import each other (even through others or inside a function), the modules that plan,
resume and list never import torch, one module knows the results folder's layout and one reads a
record's keys. The documentation generated from the code is checked by tests/test_docs.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LONGEST_FILES
from tests.structure import (
    COMPONENT_CEILINGS,
    ROOT,
    WINGS,
    cycles,
    import_graph,
    layout_knowers,
    record_key_readers,
    upward_imports,
    wing_of,
)


def test_wings_import_only_downwards() -> None:
    graph = import_graph()
    assert {wing_of(module) for module in graph} == {"bench", *WINGS, *COMPONENT_CEILINGS}
    assert upward_imports(graph) == []


def test_the_wing_check_finds_an_import_back_up() -> None:
    """The check above can fail: a core module reaching into the report, and a dataset loader
    reaching into the training wing, are both found."""
    graph = import_graph()
    graph["bench.core.errors"] = graph["bench.core.errors"] | {"bench.report.render"}
    graph["bench.datasets.wine"] = graph["bench.datasets.wine"] | {"bench.train.loop"}
    assert upward_imports(graph) == [
        "bench.core.errors -> bench.report.render",
        "bench.datasets.wine -> bench.train.loop",
    ]


def test_no_module_imports_itself_through_others() -> None:
    graph = import_graph()
    assert {"bench.train.method", "bench.train.loop", "bench.train.teachers"} <= set(graph)
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_circle() -> None:
    """The check above can fail: a circle through a function-level import is found."""
    graph = import_graph()
    graph["bench.core.contracts"] = graph["bench.core.contracts"] | {"bench.train.loop"}
    assert ["bench.core.contracts", "bench.train.loop"] in cycles(graph)


@pytest.mark.parametrize(
    "modules",
    [
        "bench, bench.cli.main, bench.plan.planner, bench.plan.catalogue, bench.run.resume, bench.core.atomic",
        "bench.plan.profiles, bench.core.specs, bench.core.vocabulary, bench.cli.show, bench.run.progress",
    ],
)
def test_planning_and_listing_modules_do_not_import_torch(modules: str) -> None:
    heavy = ("torch", "captum", "quantus", "lightgbm", "sklearn", "pandas")
    code = f"import sys, {modules}; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "[]"


def test_one_module_knows_the_results_layout_and_one_reads_record_keys() -> None:
    """The results folder's paths are built by `ResultsFolder` alone, and a record's JSON keys are
    read by `Record.from_json` alone: every other module asks them."""
    assert set(layout_knowers()) == {"bench.results.folder"}
    assert set(record_key_readers()) == {"bench.results.record"}


def test_the_record_key_check_finds_a_raw_read(tmp_path, monkeypatch) -> None:
    """The check above can fail: a report module reading `record["metrics"]` is found."""
    import tests.structure as structure

    extra = tmp_path / "bench" / "report" / "sneaky.py"
    extra.parent.mkdir(parents=True)
    extra.write_text(
        'def f(record):\n    """Uses "runs"."""\n    return record["metrics"], "runs"\n'
    )
    monkeypatch.setattr(structure, "ROOT", tmp_path)
    assert structure.record_key_readers() == {"bench.report.sneaky": [3]}
    assert structure.layout_knowers() == {"bench.report.sneaky": [3]}


def test_the_files_scheduled_first_exist() -> None:
    """A renamed file would silently lose its place at the front of the test run."""
    here = Path(__file__).parent
    assert [name for name in LONGEST_FILES if not (here / name).is_file()] == []
