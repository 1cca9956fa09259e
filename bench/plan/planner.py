"""Planning: a profile plus the CLI's selection becomes the list of `RunSpec`s to run.

Planning reads a `Catalogue` (names, parameters, settings), never the components' code, so that
it runs without torch (`bench.plan.catalogue`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.core.budgets import Profile
from bench.core.errors import BenchError
from bench.core.parameters import check_ranges
from bench.core.paths import check_name
from bench.core.registry import check_choices
from bench.core.specs import MAX_SEED, RunSpec, TeacherSpec, reference_run_id, teacher_spec_for
from bench.plan.catalogue import Catalogue, from_registries
from bench.plan.profiles import PROFILES


@dataclass(frozen=True)
class Selection:
    """What the user asked for; None means "what the profile lists"."""

    profile: str = "default"
    datasets: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    overrides: tuple[str, ...] = ()
    preset: str | None = None


@dataclass(frozen=True)
class Plan:
    profile: Profile
    runs: list[RunSpec]
    # The run id of each teacher's reference rows (teacher and controls), by teacher key.
    reference_ids: dict[str, str]
    # Each metric's declared bounds (`Catalogue.metric_bounds`): records are read against them.
    metric_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Datasets a plugin registered that the plan runs though its profile does not list them.
    plugin_datasets: tuple[str, ...] = ()

    def datasets(self) -> list[str]:
        return list(dict.fromkeys(run.dataset for run in self.runs))

    @property
    def teachers(self) -> list[TeacherSpec]:
        """The teachers the runs learn from, in plan order (per dataset, by teacher seed)."""
        unique = {run.teacher.key: run.teacher for run in self.runs}
        return sorted(unique.values(), key=lambda t: (self.datasets().index(t.dataset), t.seed))


def _coerce(raw: str, default: Any, where: str) -> Any:
    """Give a `--set` value the type of the parameter's default."""
    try:
        if isinstance(default, bool):
            lowered = raw.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return lowered in ("true", "1", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise BenchError(
            f"--set {where}={raw}: expected a {type(default).__name__} like {default!r}"
        ) from None
    return raw


def parse_overrides(items: Sequence[str], catalogue: Catalogue) -> dict[str, dict[str, Any]]:
    """`["kd.temperature=2"]` -> `{"kd": {"temperature": 2.0}}`, checked against each method."""
    parsed: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method_name, dot, param = key.partition(".")
        if not sep or not dot or not method_name or not param:
            raise BenchError(f"--set {item!r}: expected METHOD.PARAM=VALUE, e.g. kd.temperature=2")
        method = catalogue.method(method_name)
        parameters = method.hyperparameters
        if param not in parameters:
            valid = ", ".join(sorted(parameters)) or "(it has none)"
            raise BenchError(
                f"--set {item!r}: method {method_name!r} has no parameter {param!r}; "
                f"its parameters: {valid}"
            )
        if param in parsed.get(method_name, {}):
            raise BenchError(f"--set {key} is given twice; give each parameter once")
        value = _coerce(raw, parameters[param], key)
        check_choices(method_name, {param: value}, method.choices)
        check_ranges(method_name, {param: value}, {k: tuple(v) for k, v in method.ranges.items()})
        parsed.setdefault(method_name, {})[param] = value
    return parsed


# `--preset NAME`: which parameter values every selected method runs with, before `--set`.
PRESETS = {
    "paper": "each method's `paper_defaults`, the authors' released values (CIFAR-100 where "
    "they released those)",
}


def preset_overrides(
    preset: str | None, methods: Sequence[str], catalogue: Catalogue
) -> dict[str, dict[str, Any]]:
    """The overrides a preset makes, per method: only the values that differ from its defaults.

    A preset is a set of overrides like `--set`, so its rows are named by what they change
    (`kd[alpha=0.1]`) and a method whose defaults already are the paper's keeps its own row and
    its finished runs.
    """
    if preset is None:
        return {}
    if preset not in PRESETS:
        raise BenchError(f"--preset {preset!r}: known presets are {', '.join(PRESETS)}")
    changes = {name: catalogue.method(name).paper_changes for name in methods}
    return {name: changed for name, changed in changes.items() if changed}


def variant_name(method: str, overrides: dict[str, Any]) -> str:
    """The leaderboard row of a method run with overridden parameters, e.g. `kd[temperature=2]`.

    The row is also a folder name, so the values it holds must keep it a safe one (`bench.core.paths`).
    """
    if not overrides:
        return method
    inner = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return check_name(f"{method}[{inner}]", "--set value in the row")


def methods_on(
    profile: Profile, dataset: str, selection: Selection, catalogue: Catalogue
) -> list[str]:
    """The methods run on `dataset`: the selection's, else the profile's, else every registered
    one; less the profile's `left_out` for the dataset (each checked to be registered: a
    misspelt name would leave out nothing), unless the selection names both the dataset and
    methods (who asks for a left-out method there gets it)."""
    left_out = profile.left_out(dataset)
    for name in left_out:
        catalogue.method(name)
    if selection.datasets and selection.methods:
        left_out = ()
    named = selection.methods or profile.methods_for(dataset) or sorted(catalogue.methods)
    return [method for method in named if method not in left_out]


def make_plan(selection: Selection, catalogue: Catalogue | None = None) -> Plan:
    """The runs of a selection; `catalogue` defaults to the registries this process has loaded."""
    catalogue = catalogue or from_registries()
    profile = PROFILES.get(selection.profile)
    added = () if selection.datasets else plugin_datasets(profile, catalogue)
    dataset_names = list(selection.datasets or (*profile.datasets, *added))
    for name in dataset_names:
        catalogue.dataset(name)
    methods_of = {name: methods_on(profile, name, selection, catalogue) for name in dataset_names}
    selected = list(dict.fromkeys(m for names in methods_of.values() for m in names))
    for name in selected:
        catalogue.method(name)
    given = parse_overrides(selection.overrides, catalogue)
    for name in given:
        if name not in selected:
            raise BenchError(f"--set names method {name!r}, which is not among those selected")
    overrides = preset_overrides(selection.preset, selected, catalogue)
    for name, values in given.items():  # `--set` wins over the preset
        overrides[name] = {**overrides.get(name, {}), **values}
    for name, values in overrides.items():
        # A value equal to the default computes the default: it keeps the plain row and its runs.
        defaults = catalogue.method(name).hyperparameters
        overrides[name] = {k: v for k, v in values.items() if v != defaults[k]}
    if selection.seeds is not None:
        if not selection.seeds:
            raise BenchError("no seeds selected")
        for seed in selection.seeds:
            if not 0 <= seed <= MAX_SEED:
                raise BenchError(f"seed {seed} is outside 0 ... {MAX_SEED} (2^32 - 1)")

    runs: list[RunSpec] = []
    reference_ids: dict[str, str] = {}
    for dataset_name in dataset_names:
        entry = catalogue.dataset(dataset_name)
        if entry.modality not in profile.budgets:
            raise BenchError(
                f"profile {profile.name!r} sets no budget for {entry.modality} datasets such as "
                f"{entry.name!r}; it covers: {', '.join(profile.budgets)}"
            )
        teachers: dict[int, TeacherSpec] = {}
        budget = profile.budget(entry.name, entry.modality)
        settings = catalogue.metric_settings(entry.modality)
        for method_name in methods_of[dataset_name]:
            method = catalogue.method(method_name)
            if entry.modality not in method.modalities:
                continue
            params = {**method.defaults, **overrides.get(method_name, {})}  # unset switch: absent
            seeds = selection.seeds or profile.seeds_for(entry.name, method_name)
            for seed in seeds:
                if seed not in teachers:
                    teachers[seed] = teacher_spec_for(
                        profile,
                        entry.name,
                        entry.data_version,
                        entry.modality,
                        profile.teacher_seed_for(seed),
                    )
                    reference_ids[teachers[seed].key] = reference_run_id(
                        teachers[seed], budget, settings, profile.other_teacher_seed
                    )
                runs.append(
                    RunSpec(
                        profile=profile.name,
                        dataset=entry.name,
                        dataset_version=entry.data_version,
                        modality=entry.modality,
                        method=method_name,
                        variant=variant_name(method_name, overrides.get(method_name, {})),
                        params=tuple(sorted(params.items())),
                        seed=seed,
                        teacher=teachers[seed],
                        budget=budget,
                        metric_settings=settings,
                        code=method.code.get("sha256", ""),
                        method_version=method.version,
                    )
                )
    if not runs:
        raise BenchError(
            f"no compatible (dataset, method) pair in the selection: datasets {dataset_names} "
            f"({', '.join(catalogue.dataset(d).modality for d in dataset_names)}), "
            f"methods {selected}"
        )
    return Plan(profile, runs, reference_ids, catalogue.metric_bounds(), added)


def plugin_datasets(profile: Profile, catalogue: Catalogue) -> tuple[str, ...]:
    """The datasets registered by plugins (files or entry points: code of their own) that the
    profile does not list but has a budget for. A selection without `--dataset` runs them too:
    who registers a dataset means to run it, and a profile written before the plugin cannot
    list it."""
    return tuple(
        sorted(
            name
            for name, info in catalogue.datasets.items()
            if info.code and name not in profile.datasets and info.modality in profile.budgets
        )
    )
