"""The source digests of the built-in methods and metrics, recorded beside their versions.

`Method.version` and `register_metric(version=...)` enter the run ids of what they compute, so a
changed computation is rerun, never reused; but only if whoever changes it raises the version.
`tests/test_component_versions.py` compares each built-in's source digest with the one recorded
in `tests/component_versions.json` for its version, and fails when the source changed while the
version did not. `python -m tests.component_versions` records the current digests (after a
version was raised, or after a change that computes the same, such as a rename).

What a digest covers: the code, not its comments or docstrings (`ast.dump` of the parsed source
without docstrings). A method's is that of its class and of every class it inherits from below
`Method` (a subclass of `kd` changes when `kd` does); a metric's that of its compute function.
Helpers they call in other modules are not covered: a change there needs the same care.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import textwrap
from pathlib import Path
from typing import Any

from tests.structure import ROOT

RECORDED = ROOT / "tests" / "component_versions.json"


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(sources: list[str]) -> str:
    """SHA-256 of the code of `sources`, blind to comments, docstrings and layout."""
    digest = hashlib.sha256()
    for source in sources:
        tree = _without_docstrings(ast.parse(textwrap.dedent(source)))
        digest.update(ast.dump(tree).encode() + b"\0")
    return digest.hexdigest()


def _class_sources(cls: type) -> list[str]:
    """The class and its bases below `Method`; a class made in a function (a registered variant)
    is covered by the source of the function's whole module."""
    from bench.train.method import Method

    sources = []
    for klass in cls.__mro__:
        if klass is Method or not issubclass(klass, Method):
            break
        try:
            sources.append(inspect.getsource(klass))
        except OSError:
            sources.append(inspect.getsource(inspect.getmodule(klass)))
    return sources


def _builtin(source_file: str) -> bool:
    from bench.core.plugin_code import builtin_folders

    path = Path(source_file).resolve()
    return any(path.is_relative_to(folder) for folder in builtin_folders())


def current() -> dict[str, dict[str, Any]]:
    """`method:<name>` and `metric:<name>` of every built-in: its version and source digest."""
    from bench.core import registry
    from bench.metrics import METRICS
    from bench.train.method import METHODS

    registry.load_builtins()
    found: dict[str, dict[str, Any]] = {}
    for name in METHODS.names():
        if _builtin(METHODS.source(name)):
            cls = METHODS.get(name)
            found[f"method:{name}"] = {
                "version": cls.version,
                "source": source_digest(_class_sources(cls)),
            }
    for name in METRICS.names():
        metric = METRICS.get(name)
        if _builtin(inspect.getsourcefile(metric.compute) or ""):
            found[f"metric:{name}"] = {
                "version": metric.settings["version"],
                "source": source_digest([inspect.getsource(metric.compute)]),
            }
    return dict(sorted(found.items()))


def recorded() -> dict[str, dict[str, Any]]:
    return json.loads(RECORDED.read_text())


if __name__ == "__main__":
    RECORDED.write_text(json.dumps(current(), indent=1) + "\n")
