"""The structure of bench/, methods/ and datasets/: the import graph, its wings and their diagram,
and which modules know the results folder's layout and read a record's keys.

`tests/test_structure.py` checks the structure; the wing diagram in docs/architecture.md is one of
the generated blocks of `tests/docs_pages.py`.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from bench.results.record import JSON_ORDER

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


def wing_of(module: str) -> str:
    """`bench.train.method` -> `train`; `bench.methods.kd` -> `methods`; the package root and
    `bench.__main__`, the entry points above every wing -> `bench`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__main__" else "bench"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that runs back up: into a higher wing, from a component above its ceiling,
    or from a wing into a component (components are loaded by name, never imported)."""
    rank = {wing: i for i, wing in enumerate(WINGS)}
    ceilings = {name: rank[top] for name, top in COMPONENT_CEILINGS.items()}
    found = []
    for source, targets in graph.items():
        source_wing = wing_of(source)
        if source_wing == "bench":  # the package root and `__main__`: the entry points
            continue
        allowed = ceilings.get(source_wing, rank.get(source_wing))
        assert allowed is not None, f"{source} is in no wing: add its folder to WINGS"
        for target in targets:
            target_wing = wing_of(target)
            if target_wing == source_wing:
                continue
            if target_wing in ceilings or rank[target_wing] > allowed:
                found.append(f"{source} -> {target}")
    return sorted(found)


def wing_diagram(graph: dict[str, set[str]]) -> str:
    """Each wing, highest first, with the wings it imports and its modules (`__init__`: the wing's
    own package module)."""
    modules: dict[str, list[str]] = defaultdict(list)
    imports: dict[str, set[str]] = defaultdict(set)
    for source, targets in graph.items():
        wing = wing_of(source)
        depth = 1 if wing == "bench" else 2
        modules[wing].append(".".join(source.split(".")[depth:]) or "__init__")
        imports[wing] |= {wing_of(t) for t in targets} - {wing}
    order = ["bench", *reversed(WINGS[5:]), *COMPONENT_CEILINGS, *reversed(WINGS[:5])]
    width = max(map(len, order))
    lines = []
    for wing in order:
        below = [w for w in order if w in imports[wing]]
        lines.append(f"{wing:<{width}}  -> {', '.join(below) or '(nothing of bench)'}")
        lines.append(f"{'':<{width}}     {' '.join(sorted(modules[wing]))}")
    return "\n".join(lines)


# --- who knows the results folder and the record ---------------------------------------------------
# A record's top-level keys, read as `x["metrics"]` or `x.get("metrics")`. `training` is left out:
# a teacher spec's settings have a `training` entry of their own (its budget).
RECORD_KEYS = frozenset(JSON_ORDER) - {"training"}
# The names the results folder's layout is made of.
LAYOUT_NAMES = frozenset({"runs", "cache", "teachers"})
LAYOUT_SUFFIXES = (".maps.npy", ".inputs.npy")


def _bench_sources() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted((ROOT / "bench").rglob("*.py")):
        yield module_name(path), ast.parse(path.read_text())


def _docstrings(tree: ast.Module) -> set[int]:
    """The ids of the docstring constants of a module and its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            found.add(id(first.value))
    return found


def record_key_readers() -> dict[str, list[int]]:
    """Module -> the lines where it reads a record's key by its string (`x["metrics"]`,
    `x.get("role")`)."""
    found: dict[str, list[int]] = {}
    for name, tree in _bench_sources():
        for node in ast.walk(tree):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                key = node.slice.value
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                key = node.args[0].value
            if key in RECORD_KEYS:
                found.setdefault(name, []).append(node.lineno)
    return found


def layout_knowers() -> dict[str, list[int]]:
    """Module -> the lines of code (not docstrings) that name a part of the results folder's
    layout (`"runs"`, `"cache"`, `"teachers"`, a `.maps.npy` or `.inputs.npy` suffix)."""
    found: dict[str, list[int]] = {}
    for name, tree in _bench_sources():
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
                continue
            if id(node) in docstrings:
                continue
            if node.value in LAYOUT_NAMES or node.value.endswith(LAYOUT_SUFFIXES):
                found.setdefault(name, []).append(node.lineno)
    return found
