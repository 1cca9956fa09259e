"""What identifies a plugin's code: a content hash of its file and of the local modules it imports
from beside it, which enters the run ids of what it registers.

A run id hashes a method's name and parameters; for a built-in that is enough, since a change of
its computation comes with the code version the records carry. A plugin's loss edited in place
kept its name and parameters, so the old records were reused silently. The hash of the plugin's
code goes into the run id instead of into provenance alone: a record written by other code is then
`stale` for `status` and redone by `run`, by the same mechanism as a changed setting, with no
second rule to keep in step.

"Local modules" are found by reading the file's imports, not by watching what Python imports: a
module named in an `import` that is a file (`helpers.py`) or a package (`helpers/`) beside the
plugin, or a relative import, is hashed too, recursively. A module imported from elsewhere (an
installed package) is not covered: pin its version instead.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import os
from pathlib import Path

from bench.core.registry import BUILTIN_PACKAGES


@functools.cache
def builtin_folders() -> tuple[Path, ...]:
    """The folders of bench and its built-in components (`methods/`, `datasets/` are installed
    as `bench.methods`, `bench.datasets`): what lies there is not a plugin."""
    folders = [Path(__file__).resolve().parent.parent]
    for package in BUILTIN_PACKAGES:
        spec = importlib.util.find_spec(package)
        folders += (
            [Path(f).resolve() for f in (spec.submodule_search_locations or [])] if spec else []
        )
    return tuple(folders)


def local_modules(path: Path) -> list[Path]:
    """`path` and the modules beside it that it imports, directly or through each other, sorted."""
    found: set[Path] = set()
    pending = [path.resolve()]
    while pending:
        current = pending.pop()
        if current in found or not current.is_file():
            continue
        found.add(current)
        pending += _imported_beside(current)
    return sorted(found)


def _imported_beside(path: Path) -> list[Path]:
    """The files of the modules `path` imports that lie in its folder (or a relative import's)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return []  # the loader names a broken file; its bytes are hashed all the same
    names: list[tuple[Path, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(path.parent, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = path.parent
            for _ in range(max(node.level - 1, 0)):
                base = base.parent
            if node.module:
                names.append((base, node.module))
            if node.level:  # `from . import helpers`
                names += [(base, alias.name) for alias in node.names]
    files = []
    for base, dotted in names:
        target = base.joinpath(*dotted.split("."))
        if target.with_suffix(".py").is_file():
            files.append(target.with_suffix(".py"))
        elif (target / "__init__.py").is_file():
            files += sorted(target.rglob("*.py"))
        else:  # `import pkg.sub`: the package's folder beside the plugin
            top = base / dotted.split(".")[0]
            if (top / "__init__.py").is_file():
                files += sorted(top.rglob("*.py"))
    return files


def code_identity(source: str) -> dict[str, str]:
    """`{"file": ..., "sha256": ...}` of the plugin defined in `source` (a file path) and its
    local modules; empty for bench's own components and for a source that is no file."""
    path = Path(source)
    if not path.is_file():
        return {}
    path = path.resolve()
    if any(path.is_relative_to(folder) for folder in builtin_folders()):
        return {}
    digest = hashlib.sha256()
    for module in local_modules(path):
        digest.update(os.path.relpath(module, path.parent).encode() + b"\0")
        digest.update(module.read_bytes() + b"\0")
    return {"file": str(path), "sha256": digest.hexdigest()}
