"""Name -> component registries filled by decorators, and the loading of outside plugins.

Plain dicts behind a decorator (as torchdistill does) keep a new component to one file with no edit
anywhere else; plugins reach the same registries through entry points, `--plugin FILE` or the
`BENCH_PLUGINS` variable.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from bench.core.errors import BenchError, Interrupted, Terminated, UnknownNameError
from bench.core.paths import check_name
from bench.core.terminal import describe_exception

log = logging.getLogger(__name__)
T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of components of one kind (methods, datasets, metrics, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._sources: dict[str, str] = {}

    def register(self, name: str, source: str | None = None) -> Callable[[T], T]:
        """Decorator adding a component under `name`; a second component with that name is refused.

        The name must be safe as a file name (`bench.core.paths`), since records and caches are filed
        under it. `source` (the defining file) is named in the error when two sources clash.
        """
        check_name(name, self.kind)

        def add(item: T) -> T:
            where = source or _source_of(item)
            if name in self._items and self._items[name] is not item:
                raise BenchError(
                    f"{self.kind} {name!r} is registered twice: by {self._sources[name]} and "
                    f"by {where}; rename one of them"
                )
            self._items[name] = item
            self._sources[name] = where
            return item

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def source(self, name: str) -> str:
        """The file that registered `name` (`bench.core.plugin_code` hashes a plugin's)."""
        return self._sources[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def check_choices(method: str, params: Mapping[str, Any], choices: Mapping[str, Any]) -> None:
    """Refuse a parameter value outside its method's declared choices, naming the valid ones."""
    for param, allowed in choices.items():
        if param in params and params[param] not in allowed:
            valid = ", ".join(map(str, allowed))
            raise BenchError(f"{method}.{param}={params[param]!r}: valid values are {valid}")


def first_paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line: how `list`, the records and the report
    describe a registered component."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def source_file(obj: object) -> str:
    """The file that defines a class or function, for messages; its module when there is none."""
    try:
        return inspect.getfile(obj)  # type: ignore[arg-type]
    except (TypeError, OSError):
        return str(getattr(obj, "__module__", None) or "an unknown source")


def _source_of(item: object) -> str:
    return source_file(item if inspect.isclass(item) or inspect.isfunction(item) else type(item))


BUILTIN_PACKAGES = ("bench.datasets", "bench.methods", "bench.metrics", "bench.models")
ENTRY_POINT_GROUPS = ("bench.methods", "bench.datasets")
PLUGIN_ENV = "BENCH_PLUGINS"
_loaded_files: dict[Path, object] = {}
_builtins_loaded = False


def load_builtins() -> None:
    """Import every built-in component module so that its decorators run."""
    import pkgutil

    global _builtins_loaded
    for package_name in BUILTIN_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package_name}.{info.name}")
    _builtins_loaded = True


def builtins_loaded() -> bool:
    """Whether this process has imported the built-in components (and torch with them)."""
    return _builtins_loaded


def load_entry_points() -> None:
    """Import the modules that installed packages advertise under our entry-point groups."""
    for group in ENTRY_POINT_GROUPS:
        for entry in importlib.metadata.entry_points(group=group):
            try:
                entry.load()
            except Terminated:
                raise
            except (Exception, SystemExit, KeyboardInterrupt) as exc:
                raise BenchError(
                    f"plugin entry point {entry.name!r} ({entry.value}) in group {group!r} "
                    f"failed to load: {describe_exception(exc)}"
                ) from exc


def loaded_plugin_files() -> tuple[str, ...]:
    """The plugin files this process has imported, for worker processes to import as well."""
    return tuple(str(path) for path in _loaded_files)


def load_plugin_file(path: str | Path) -> None:
    """Import one plugin file; a broken file is reported with its name and line, not a traceback.

    Its folder goes on `sys.path` (after what is there), as a script's does, so that it may
    import modules kept beside it (`from helpers import ...`); those count in its code's hash
    (`bench.core.plugin_code`)."""
    path = Path(path).resolve()
    if path in _loaded_files:
        return
    if path.is_dir():
        raise BenchError(f"plugin file {str(path)!r} is a folder: give the Python file(s) in it")
    if not path.is_file():
        raise BenchError(f"plugin file {str(path)!r} does not exist")
    module_name = f"bench_plugin_{path.stem}_{abs(hash(path)) % 10**8}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BenchError(f"plugin file {str(path)!r} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    try:
        with _users_interrupts_marked():
            spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise BenchError(f"plugin file {exc.filename}, line {exc.lineno}: {exc.msg}") from exc
    except BenchError:
        sys.modules.pop(module_name, None)
        raise
    except (Terminated, Interrupted):  # SIGTERM or Ctrl-C while importing: the user's
        sys.modules.pop(module_name, None)
        raise
    # A plugin that exits or raises KeyboardInterrupt while importing is a broken plugin too, never
    # a silent success (`sys.exit(0)` at import used to end `run` with status 0 and nothing done).
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        sys.modules.pop(module_name, None)
        frame = _innermost_frame_in(path, exc)
        where = f", line {frame.lineno}" if frame else ""
        raise BenchError(f"plugin file {path}{where}: {describe_exception(exc)}") from exc
    _loaded_files[path] = module


@contextmanager
def _users_interrupts_marked() -> Iterator[None]:
    """Ctrl-C raises `Interrupted` meanwhile, where Python's default handler would raise a plain
    KeyboardInterrupt: a plugin raising KeyboardInterrupt at import is broken, the user's Ctrl-C
    is an interruption (exit 130). Only where Python's own handler is in place and this is the
    main thread (the only one that may set handlers); elsewhere nothing changes."""
    in_main = threading.current_thread() is threading.main_thread()
    if not in_main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _innermost_frame_in(path: Path, exc: BaseException) -> traceback.FrameSummary | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return frames[-1] if frames else None


def plugin_files(files: Sequence[str | Path] = ()) -> list[str | Path]:
    """The plugin files to load: those of `BENCH_PLUGINS`, then the given ones."""
    from_env = [p for p in os.environ.get(PLUGIN_ENV, "").split(os.pathsep) if p]
    return [*from_env, *files]


def load_plugins(files: Sequence[str | Path] = ()) -> None:
    """Load built-ins, entry points, `BENCH_PLUGINS` files and the given files, in that order."""
    load_builtins()
    load_entry_points()
    for path in plugin_files(files):
        load_plugin_file(path)
