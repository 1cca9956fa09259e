"""The structure the architecture map promises: the wings of `bench/` import only downwards, no two
modules import each other (even through others or inside a function), the modules that plan,
resume and list never import torch, and docs/architecture.md's wing diagram is the code's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.structure import (
    COMPONENT_CEILINGS,
    ROOT,
    WINGS,
    cycles,
    documented_diagram,
    import_graph,
    upward_imports,
    wing_diagram,
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


def test_the_architecture_map_draws_the_wings_as_they_are() -> None:
    """Stale after a module is added, moved or imports another wing: `python tests/structure.py`."""
    assert documented_diagram() == wing_diagram(import_graph())
