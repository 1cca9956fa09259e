"""The catalogue: what the registries hold, as plain data, so that `list`, `status` and planning
answer without importing torch.

Registering a method or a metric means importing its module, and with it torch, captum and quantus
(5-8 s here), while planning needs only names, parameters and settings. So the first command after
the code changed imports every component, builds the catalogue from the live registries and writes
it to a cache file (`$XKD_CACHE_DIR`, else `$XDG_CACHE_HOME/xkd-bench` or ~/.cache/xkd-bench);
later commands read it back.

A cache file is trusted only under the fingerprint of the code it was built from: the bytes of
every source file of bench and its built-in components, of the plugin files (`--plugin`,
`$BENCH_PLUGINS`) and of the modules of the installed entry points, each with the local modules
it imports from beside it (`bench.core.plugin_code`). Any edit of those files, a plugin added or
removed, a torn or foreign file: the catalogue is rebuilt. Not covered: a module that a plugin
imports from an installed package (pin its version). Once the registries are loaded in a process (a runner about to train, a test, a
library caller), they are the catalogue and no file is read.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.core import registry
from bench.core.atomic import write_atomic
from bench.core.confined import read_regular
from bench.core.errors import UnknownNameError
from bench.core.jsontext import parse_json
from bench.core.paths import user_cache_root
from bench.core.plugin_code import code_identity, local_modules

log = logging.getLogger(__name__)

CACHE_ENV = "XKD_CACHE_DIR"


@dataclass(frozen=True)
class MethodInfo:
    """A registered method as planning and `list` see it (`bench.train.method.Method`)."""

    name: str
    family: str
    modalities: tuple[str, ...]
    defaults: dict[str, Any]
    hyperparameters: dict[str, Any]
    paper_changes: dict[str, Any]
    # The allowed values of the parameters whose values form a closed set (`Method.choices`).
    choices: dict[str, list[Any]]
    description: str
    citation: str
    # Closed ranges the method narrows its parameters to (`Method.ranges`).
    ranges: dict[str, list[float]] = field(default_factory=dict)
    # A plugin's file and the hash of its code (`bench.core.plugin_code`); empty for a built-in.
    code: dict[str, str] = field(default_factory=dict)
    # `Method.version`: raised when what the method computes changes.
    version: int = 1


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: what identifies its data, not its loader (`bench.data.bundle`)."""

    name: str
    modality: str
    version: str
    description: str
    # A plugin's file and the hash of its code (`bench.core.plugin_code`); empty for a built-in.
    code: dict[str, str] = field(default_factory=dict)

    @property
    def data_version(self) -> str:
        """The version that identifies its data in run ids and teacher keys: a plugin's has its
        code's hash appended, so an edited loader retrains the teacher and redoes the runs."""
        return f"{self.version}+code.{self.code['sha256'][:16]}" if self.code else self.version


@dataclass(frozen=True)
class MetricInfo:
    """A registered metric: its declaration, not its code (`bench.metrics.Metric`)."""

    name: str
    category: str
    higher_is_better: bool
    modalities: tuple[str, ...]
    description: str
    settings: dict[str, Any]
    # The closed range of its values (`bench.metrics.Bounds`; JSON writes an open end as
    # Infinity, which Python's reader reads back).
    bounds: tuple[float, float]


@dataclass(frozen=True)
class Catalogue:
    methods: dict[str, MethodInfo]
    datasets: dict[str, DatasetInfo]
    metrics: dict[str, MetricInfo]
    # Families of parameterised dataset names, prefix -> pattern (`openml` -> `openml:<id>`).
    families: dict[str, str]
    # The plugin files the catalogue covers: loaded to resolve a name of a family.
    plugin_files: tuple[str, ...] = field(default=(), compare=False)

    def method(self, name: str) -> MethodInfo:
        return _lookup(self.methods, "method", name)

    def dataset(self, name: str) -> DatasetInfo:
        """A registered dataset, or a name of a family (`openml:1590`), whose entry its family's
        code computes: the registries are loaded for it."""
        if name in self.datasets:
            return self.datasets[name]
        prefix, sep, _ = name.partition(":")
        if not (sep and prefix in self.families):
            raise UnknownNameError("dataset", name, [*self.datasets, *self.families.values()])
        from bench.data.bundle import DATASETS

        registry.load_plugins(list(self.plugin_files))
        return _dataset_info(DATASETS.get(name))

    def metric_bounds(self) -> dict[str, tuple[float, float]]:
        """Each metric's bounds, by name: what a record's values are checked against."""
        return {name: info.bounds for name, info in self.metrics.items()}

    def metric_settings(self, modality: str) -> dict[str, Any]:
        """What a run id hashes of the metrics of a modality: each metric's name and settings."""
        return {m.name: m.settings for m in self.metrics.values() if modality in m.modalities}

    def as_dict(self) -> dict[str, Any]:
        entries = {
            kind: {name: asdict(info) for name, info in sorted(items.items())}
            for kind, items in (
                ("methods", self.methods),
                ("datasets", self.datasets),
                ("metrics", self.metrics),
            )
        }
        return {**entries, "families": dict(sorted(self.families.items()))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], plugin_files: Sequence[str] = ()) -> Catalogue:
        """The catalogue `data` (its JSON form) holds, every field checked against the type its
        dataclass declares: a cache file is untrusted, and a wrong type would otherwise crash
        every command that reads it (ValueError naming the field)."""

        def entries(kind: str, info: type) -> dict[str, Any]:
            found = data[kind]
            if not _matches(found, dict[str, dict[str, Any]]):
                raise ValueError(f"{kind} is not a mapping of names to entries")
            return {name: _info(info, kind, name, fields) for name, fields in found.items()}

        if not _matches(data.get("families"), dict[str, str]):
            raise ValueError("families is not a mapping of prefixes to patterns")
        return cls(
            methods=entries("methods", MethodInfo),
            datasets=entries("datasets", DatasetInfo),
            metrics=entries("metrics", MetricInfo),
            families=dict(data["families"]),
            plugin_files=tuple(plugin_files),
        )


def _lookup(entries: Mapping[str, Any], kind: str, name: str) -> Any:
    try:
        return entries[name]
    except KeyError:
        raise UnknownNameError(kind, name, entries) from None


def _matches(value: Any, kind: Any) -> bool:
    """Whether the JSON `value` has the type `kind` declares (a JSON list for a tuple)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return True
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is None:
        return isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            return False
        if origin is list or args[-1] is Ellipsis:
            return all(_matches(item, args[0]) for item in value)
        return len(value) == len(args) and all(map(_matches, value, args))
    if origin is dict:
        return isinstance(value, dict) and all(
            isinstance(key, str) and _matches(item, args[1]) for key, item in value.items()
        )
    return False


def _info(info: type, kind: str, name: str, fields: Mapping[str, Any]) -> Any:
    """An entry from its JSON fields, each of the type the dataclass declares (lists become the
    tuples it declares); ValueError naming the first field that is not."""
    types = typing.get_type_hints(info)
    if set(fields) != set(types):
        raise ValueError(f"{kind} {name!r} has fields {sorted(fields)}, not {sorted(types)}")
    for field_name, declared in types.items():
        if not _matches(fields[field_name], declared):
            raise ValueError(f"{kind} {name!r}: {field_name} is not of type {declared}")
    if fields["name"] != name:
        raise ValueError(f"{kind} {name!r} is filed under another name ({fields['name']!r})")
    return info(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def _dataset_info(entry: Any) -> DatasetInfo:
    code = code_identity(registry.source_file(entry.loader))
    return DatasetInfo(entry.name, entry.modality, entry.version, entry.description, code)


def from_registries(plugin_files: Sequence[str | Path] = ()) -> Catalogue:
    """The catalogue of the registries as this process has loaded them (imports torch)."""
    from bench.data.bundle import DATASETS
    from bench.metrics import METRICS
    from bench.train.method import METHODS

    methods = {}
    for name in METHODS:
        cls = METHODS.get(name)
        methods[name] = MethodInfo(
            name=name,
            family=cls.family,
            modalities=tuple(sorted(cls.modalities)),
            defaults=dict(cls.defaults),
            hyperparameters=cls.hyperparameters(),
            paper_changes=cls.paper_changes(),
            choices={param: list(values) for param, values in cls.choices.items()},
            description=cls.describe(),
            citation=cls.citation,
            ranges={param: list(bounds) for param, bounds in cls.ranges.items()},
            code=code_identity(METHODS.source(name)),
            version=cls.version,
        )
    datasets = {name: _dataset_info(DATASETS.get(name)) for name in DATASETS}
    metrics = {
        name: MetricInfo(
            name=name,
            category=metric.category,
            higher_is_better=metric.higher_is_better,
            modalities=tuple(sorted(metric.modalities)),
            description=metric.description,
            settings=dict(metric.settings),
            bounds=metric.bounds,
        )
        for name in METRICS
        for metric in [METRICS.get(name)]
    }
    families = {pattern.partition(":")[0]: pattern for pattern in DATASETS.patterns()}
    files = tuple(str(path) for path in plugin_files)
    return Catalogue(methods, datasets, metrics, families, files)


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or user_cache_root()).expanduser()


def code_fingerprint(plugin_files: Sequence[str | Path] = ()) -> str:
    """A hash of every file whose code can change what the registries hold (module docstring),
    this module's own among them: a change of the catalogue's fields changes it too."""
    digest = hashlib.sha256()
    sources: list[Path] = []
    for package in ("bench", *registry.BUILTIN_PACKAGES):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            sources += sorted(Path(folder).rglob("*.py"))
    for plugin in registry.plugin_files(plugin_files):  # with the modules it imports beside it
        sources += local_modules(Path(plugin)) if Path(plugin).is_file() else [Path(plugin)]
    for group in registry.ENTRY_POINT_GROUPS:
        for entry in importlib.metadata.entry_points(group=group):
            digest.update(f"{group}:{entry.name}={entry.value}".encode())
            spec = importlib.util.find_spec(entry.module)
            if spec is not None and spec.origin and Path(spec.origin).is_file():
                sources += local_modules(Path(spec.origin))
    for path in dict.fromkeys(sources):
        digest.update(str(path).encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"<unreadable>")  # `load_plugins` names the missing file
    return digest.hexdigest()[:32]


def load_catalogue(plugin_files: Sequence[str | Path] = ()) -> Catalogue:
    """The catalogue of the built-ins and these plugins: from the cache when the code is the one
    it was built from, else built from the registries (importing them) and cached."""
    if registry.builtins_loaded():
        registry.load_plugins(list(plugin_files))
        return from_registries(plugin_files)
    fingerprint = code_fingerprint(plugin_files)
    path = cache_root() / f"catalogue-{fingerprint}.json"
    cached = _read(path, fingerprint, plugin_files)
    if cached is not None:
        return cached
    registry.load_plugins(list(plugin_files))
    catalogue = from_registries(plugin_files)
    _write(path, fingerprint, catalogue)
    return catalogue


# A catalogue is a few tens of kB; a cache file far larger is not one.
CATALOGUE_CAP = 8 << 20


def _content_digest(catalogue: Any) -> str:
    """The digest of a catalogue's content, stored beside it: a value edited in the file (a
    default changed by hand) no longer matches and the catalogue is rebuilt, not believed."""
    text = json.dumps(catalogue, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path: Path, fingerprint: str, plugin_files: Sequence[str | Path]) -> Catalogue | None:
    """The cached catalogue, or None (rebuilt by the caller) when it is absent or cannot be
    trusted: another fingerprint, edited content, a wrong type anywhere, not a regular file."""
    try:
        data = parse_json(read_regular(path, CATALOGUE_CAP))
        if data["fingerprint"] != fingerprint:
            raise ValueError(f"fingerprint {data['fingerprint']!r}, expected {fingerprint!r}")
        if data["digest"] != _content_digest(data["catalogue"]):
            raise ValueError("its content does not match its digest (edited)")
        return Catalogue.from_dict(data["catalogue"], [str(p) for p in plugin_files])
    except FileNotFoundError:
        return None
    except Exception as exc:  # torn, foreign, old, edited or ill-typed: rebuild  # noqa: BLE001
        log.warning("ignoring the catalogue cache %s (%s); rebuilding it", path, exc)
        return None


def _write(path: Path, fingerprint: str, catalogue: Catalogue) -> None:
    """Cache the catalogue and drop the files of older code; a cache that cannot be written costs
    time on the next command, not a failed one."""
    content = catalogue.as_dict()
    text = json.dumps(
        {"fingerprint": fingerprint, "digest": _content_digest(content), "catalogue": content},
        indent=1,
    )
    try:
        write_atomic(path, lambda handle: handle.write(text.encode()))
        for old in path.parent.glob("catalogue-*.json"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not cache the catalogue in %s: %s", path.parent, exc)
