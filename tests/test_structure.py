"""The structure the architecture map promises: the wings of `bench/` import only downwards, no two
modules import each other (even through others or inside a function), and the modules that plan,
resume and list never import torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# The wings of `bench/`, lowest first: a module may import its own wing and the wings before it.
WINGS = (
    "core",
    "data",
    "models",
    "explain",
    "train",
    "metrics",
    "plan",
    "results",
    "run",
    "report",
    "cli",
)
# The built-in components, loaded by name through the registries (no wing imports them): the
# highest wing each may import.
COMPONENT_CEILINGS = {"datasets": "data", "methods": "train"}


def module_name(path: Path) -> str:
    """`bench/metrics/dissection.py` -> `bench.metrics.dissection`; `methods/kd.py` is installed
    as `bench.methods.kd` and `datasets/wine.py` as `bench.datasets.wine` (pyproject's
    package-dir)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in COMPONENT_CEILINGS:
        parts = ["bench", *parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the bench modules it imports anywhere: at the top, in a function, or under
    `TYPE_CHECKING` (a circle through type hints is still a circle for a reader)."""
    paths = [
        *sorted((ROOT / "bench").rglob("*.py")),
        *sorted((ROOT / "methods").glob("*.py")),
        *sorted((ROOT / "datasets").glob("*.py")),
    ]
    modules = {module_name(p): p for p in paths}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        # `from bench import x` names the package: an edge only to the submodule it loads.
        graph[name] = {t for t in targets if t in modules and t not in (name, "bench")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


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
