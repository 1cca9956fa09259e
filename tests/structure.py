"""The structure of bench/, methods/ and datasets/: the import graph, its wings and their diagram;
which modules know the results folder's layout and read a record's keys; and the documentation
blocks generated from the code.

`tests/test_structure.py` checks the structure; `python tests/structure.py` rewrites the generated
blocks (the wing diagram in docs/architecture.md, the record schema in README.md) from the code
(the tests fail while one is stale).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.results.record import JSON_ORDER, schema_rows

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


# --- documentation generated from the code ---------------------------------------------------------
def record_schema() -> str:
    """README's table of a record's keys, from the fields of `bench.results.record.Record`."""
    lines = ["| key | content |", "|---|---|"]
    lines += [f"| `{key}` | {text} |" for key, text in schema_rows()]
    return "\n".join(lines)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def claim_definitions() -> str:
    """README's table of the claims and their tests, from `bench.report.claims.CLAIMS`."""
    from bench.report.claims import CLAIMS

    lines = ["| claim | source | part | primary | secondary |", "|---|---|---|---|---|"]
    for claim in CLAIMS:
        for index, part in enumerate(claim.parts):
            tests = {
                role: "; ".join(
                    t.describe() + (f" ({t.note})" if t.note else "")
                    for t in claim.tests
                    if t.part == part and t.role == role
                )
                for role in ("primary", "secondary")
            }
            head = (claim.statement, claim.source) if index == 0 else ("", "")
            cells = [*head, part, tests["primary"], tests["secondary"] or "–"]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


REFERENCE_CLAIMS = ROOT / "reference" / "default-v7" / "claims.csv"


def _number(value: float, digits: int = 3) -> str:
    return "–" if value != value else f"{value:+.{digits}f}"


def _claim_cell(row: Any) -> str:
    """The verdict called, and how it came about where it is not the records' own."""
    called = f"**{row.claim_verdict}**"
    if row.claim_verdict != row.verdict_on_records:
        called += f" ({row.verdict_on_records} on these seeds)"
    stability = (
        ""
        if row.verdict_stability != row.verdict_stability
        else (f"; stable in {row.verdict_stability:.0%} of seed resamples")
    )
    return f"{called}{stability}; under the paper's metrics: {row.paper_verdict}"


def claim_verdicts() -> str:
    """README's table of the reference set's verdicts: every primary test, part by part."""
    import pandas as pd

    table = pd.read_csv(REFERENCE_CLAIMS)
    lines = [
        "| claim | part | primary test | dataset | mean difference [95 % interval] | p_holm "
        "| smallest detectable Δ | test | part | claim |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    shown_claim, shown_part = None, None
    for row in table[table.role == "primary"].itertuples():
        claim = f"{row.claim}" if row.claim != shown_claim else ""
        claim_verdict = _claim_cell(row) if row.claim != shown_claim else ""
        part_verdict = row.part_verdict if (row.claim, row.part) != shown_part else ""
        part = row.part if (row.claim, row.part) != shown_part else ""
        shown_claim, shown_part = row.claim, (row.claim, row.part)
        relation = {"higher": ">", "lower": "<", "not_worse": "≥"}[row.expect]
        margin = f" − {row.margin:g}" if row.expect == "not_worse" else ""
        test = f"`{row.method}` {relation} `{row.baseline}`{margin} on `{row.metric}`"
        interval = f"{_number(row.mean_diff)} [{_number(row.ci95_low)}, {_number(row.ci95_high)}]"
        cells = [
            claim, part, test, row.dataset, interval, f"{row.p_holm:.2g}",
            f"{row.mde_80:.3g}", row.test_verdict, part_verdict, claim_verdict,
        ]  # fmt: skip
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class GeneratedBlock:
    """A block of a document between two markers, written by `generate` and never by hand."""

    path: Path
    name: str
    generate: Callable[[], str]

    @property
    def begin(self) -> str:
        return f"<!-- {self.name}: generated by `python tests/structure.py`; do not edit -->"

    @property
    def end(self) -> str:
        return f"<!-- {self.name}: end -->"

    def documented(self) -> str:
        text = self.path.read_text()
        return text[text.index(self.begin) + len(self.begin) : text.index(self.end)].strip("\n")

    def write(self) -> None:
        text = self.path.read_text()
        head, tail = text[: text.index(self.begin)], text[text.index(self.end) :]
        self.path.write_text(f"{head}{self.begin}\n{self.generate()}\n{tail}")


BLOCKS = (
    GeneratedBlock(
        ROOT / "docs" / "architecture.md",
        "wings",
        lambda: f"```\n{wing_diagram(import_graph())}\n```",
    ),
    GeneratedBlock(ROOT / "README.md", "record schema", record_schema),
    GeneratedBlock(ROOT / "README.md", "claims", claim_definitions),
    GeneratedBlock(ROOT / "README.md", "claim verdicts", claim_verdicts),
)


if __name__ == "__main__":
    for block in BLOCKS:
        block.write()
