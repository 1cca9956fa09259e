"""Names that become paths, and the one function that turns them into paths under a folder.

Method, dataset, variant and row names (and every `--set` value, which becomes part of a variant
name such as `kd[temperature=2]`) end up as folder and file names under `--results`. A name is
accepted only if it matches `SAFE_NAME`: it starts with a letter or digit (so never `.` or `..`)
and holds no path separator, so it cannot leave its folder or alias another name's. `inside`
builds every such path from checked names only, so the path stays under its root by
construction. Links are a matter of opening, not of naming: records and their locks are opened
without following a link below the root (`bench.core.confined`), which costs a few system calls
per open instead of a `realpath` per path at planning time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bench.core.errors import BenchError

# Letters, digits and the punctuation of variant names (`kd[temperature=0.5,alpha=1e-3]`) and of
# dataset families (`openml:1590`); no `/`, `\`, whitespace or NUL, and at most 160 characters.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:,=+\-\[\]]{0,159}")


class UnsafeNameError(BenchError):
    """A name that cannot be a file or folder name under the results folder."""


def check_name(name: object, what: str) -> str:
    """`name` if it is a safe file name, else an error that says what the rule is."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise UnsafeNameError(
            f"{what} name {name!r} is not allowed: names start with a letter or digit and use "
            "only letters, digits and _ . : , = + - [ ] (at most 160 characters, no path "
            "separators)"
        )
    return name


def inside(root: Path, *names: str) -> Path:
    """`root/names[0]/names[1]/...`, each name checked, so the result stays in `root`.

    `:` (dataset families) becomes `_` in the path, which some file systems require.
    """
    path = root
    for name in names:
        path = path / check_name(name, "path component").replace(":", "_")
    return path


def user_cache_root() -> Path:
    """The project's folder in the user's cache: `$XDG_CACHE_HOME/xkd-bench`, else
    `~/.cache/xkd-bench`.

    The XDG base-directory rule, which Linux desktops and clusters follow: a relative
    `XDG_CACHE_HOME` is ignored, as the specification says. Five lines rather than the
    `platformdirs` dependency: the project targets Linux, where this is all `platformdirs` does.
    """
    configured = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(configured) if configured and Path(configured).is_absolute() else None
    return (base or Path("~/.cache").expanduser()) / "xkd-bench"
