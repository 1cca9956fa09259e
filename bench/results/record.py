"""The run record, typed: what one (profile, dataset, row, seed) left behind, and its JSON form.

A row is a method variant (`kd`, `kd[temperature=2]`) or one of a teacher's reference rows: the
teacher itself and the control rows that show each explanation metric's floor. Every record is a
`Record`: the run builds one (`Record(...)` has every field, status and results still empty), fills
it in and writes it (`bench.results.folder.ResultsFolder.write`); the report, `status` and `show`
read records back as `Record`s. `Record.from_json` is the one place a record's JSON is read: it
checks it (`record_problems`) and applies the defaults of older records once, so no reader
guesses what a missing key means. The README's "Results" table is generated from the fields'
`doc` (`python tests/doc_blocks.py`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from bench import SCHEMA_VERSION
from bench.core.paths import SAFE_NAME
from bench.core.specs import MAX_SEED
from bench.core.vocabulary import Family, Role


class Status(StrEnum):
    """How a run ended: `ok`, `failed` (it raised), `diverged` (its loss went non-finite) or
    `skipped` (its dataset could not be obtained). Equal to the plain string, as in the JSON."""

    OK = "ok"
    FAILED = "failed"
    DIVERGED = "diverged"
    SKIPPED = "skipped"


STATUSES: tuple[Status, ...] = tuple(Status)
PROBLEM_STATUSES = (Status.FAILED, Status.DIVERGED, Status.SKIPPED)
REQUIRED_KEYS = ("schema_version", "run_id", "status", "dataset", "method", "seed", "profile")


def _doc(text: str, default: Any = None, factory: Any = None, required: bool = False) -> Any:
    """A field with its README description: one every record is built with (`required`), one
    that starts as a fresh empty mapping (`factory`), or one with a default."""
    if required:
        return field(metadata={"doc": text})
    if factory is not None:
        return field(default_factory=factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass(slots=True)
class Record:
    """One run's record; the fields in the order they are written."""

    run_id: str = _doc("the run's identifying hash (settings, code version, seed)", required=True)
    role: Role = _doc(
        "`student`, `teacher` or `control` (`random_explainer`, `permuted_teacher`, "
        "`untrained_student`); records written before roles existed read as `student`",
        required=True,
    )
    dataset: dict[str, Any] = _doc(
        "`name`, `version`, `modality`, split `sizes`, `num_classes`", required=True
    )
    method: dict[str, Any] = _doc(
        "`name` (the leaderboard row, e.g. `kd[temperature=2.0]`), `base`, `params`, `citation`, "
        "`family` (baseline, logit, feature, explanation, tabular or other), `description` (the "
        "first paragraph of the method's docstring: what the report shows; records written before "
        "it existed are described from the catalogue)",
        required=True,
    )
    seed: int = _doc("the run's seed (a reference row's: its teacher's seed)", required=True)
    profile: str = _doc("the budget profile it ran under", required=True)
    started: str = _doc("UTC time the run began", required=True)
    budget: dict[str, Any] = _doc("the budgets it used", factory=dict)
    environment: dict[str, Any] = _doc(
        "Python, platform, library versions, device, CPU model/GPU, torch thread count, git "
        "revision",
        factory=dict,
    )
    status: Status | None = _doc("`ok`, `failed`, `diverged` or `skipped`")
    teacher: dict[str, Any] | None = _doc(
        "teacher spec, hash and `seed` (the teacher seed the run learned from)"
    )
    student: dict[str, Any] | None = _doc("student `architecture` and `parameters` count")
    metrics: dict[str, float | None] = _doc(
        "metric name → number (null when undefined)", factory=dict
    )
    metric_metadata: dict[str, dict[str, Any]] = _doc(
        "per metric: `category`, `higher_is_better`, `description`, `settings` (for explanation "
        "metrics the explainer, its `form`, signed or absolute, and the `rules` of class-score "
        "centring and Grad-CAM layer), `measures_time`, and the per-sample `coverage` (samples "
        "scored / samples asked), `n_scored`, `n_asked`, `sample_sd`, and `split_halves` (the "
        "means over the even and the odd samples asked: the metric's split-half reliability)",
        factory=dict,
    )
    dissection: dict[str, Any] | None = _doc(
        "CNNs on a dataset with a concept probe (else null): the settings of network dissection, "
        "`units`, and `detectors` (unit, concept, IoU)"
    )
    training: dict[str, Any] | None = _doc(
        "`best_epoch`, `history` (each loss term and the validation accuracy per epoch), "
        "`last_epoch_test_accuracy` and `diagnostics` (numbers a method measures about its own "
        "training, e.g. kd's `soft_target_entropy` and `similarity_correlation`); "
        "`resumed_at_epoch` when an interrupted run resumed from its checkpoint (its `train` "
        "timing includes the epochs before the interruption)"
    )
    timings: dict[str, float | None] = _doc(
        "seconds spent in `train`, `score`, `total`", factory=dict
    )
    ended: str | None = _doc("UTC time the run ended")
    error: dict[str, str | None] | None = _doc(
        "for a run that did not end `ok`: the exception `type`, `message`, `stage` and `traceback`"
    )
    attribution_maps: dict[str, Any] | None = _doc(
        "image runs and teachers: `explainer` (the profile's first), `test_index` (4 test rows), "
        "`file` (`seed<k>.maps.npy` beside the record: those rows' attributions, float32); the "
        "teacher also `inputs_file` (`seed<k>.inputs.npy`, the images)"
    )
    schema_version: int = _doc("the record format's version", SCHEMA_VERSION)

    def __post_init__(self) -> None:
        self.role = Role(self.role)
        if self.status is not None:
            self.status = Status(self.status)

    # --- what readers ask of a record, answered once ---------------------------------------------
    @property
    def dataset_name(self) -> str:
        return str(self.dataset["name"])

    @property
    def modality(self) -> str | None:
        return self.dataset.get("modality")

    @property
    def row(self) -> str:
        """The leaderboard row: the method variant, or the reference row's name."""
        return str(self.method["name"])

    @property
    def family(self) -> Family | None:
        """The method's family, when the record names a known one (older records name none)."""
        family = self.method.get("family")
        return Family(family) if family in tuple(Family) else None

    @property
    def description(self) -> str | None:
        """What the report says of the row, when the record says it (newer records do)."""
        text = self.method.get("description")
        return text if isinstance(text, str) else None

    @property
    def teacher_seed(self) -> int | None:
        """The seed of the teacher the run learned from; None for a record written before
        teachers had seeds, or a teacher named by key only."""
        seed = self.teacher.get("seed") if isinstance(self.teacher, dict) else None
        return None if seed is None else int(seed)

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def label(self) -> str:
        """`<dataset>/<row>/seed<k>`, as `show` and `status` name a run."""
        return f"{self.dataset_name}/{self.row}/seed{self.seed}"

    # --- JSON -----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The record as written: every field, in the documented order."""
        return {name: getattr(self, name) for name in JSON_ORDER}

    @classmethod
    def from_json(cls, data: Any, bounds: MetricBounds | None = None) -> Record:
        """The record `data` holds, with the defaults of older records applied; raises
        `ValueError` naming what is wrong when it is not a valid record (its metrics checked
        against `bounds`, `record_problems`)."""
        problems = record_problems(data, bounds)
        if problems:
            raise ValueError("; ".join(problems))
        known = {name: data[name] for name in JSON_ORDER if name in data}
        # Legacy: records written before roles, metadata and timings existed.
        known["role"] = known.get("role") or Role.STUDENT
        known["started"] = known.get("started") or ""
        for name in ("metrics", "metric_metadata", "timings"):
            known[name] = known.get(name) or {}
        return cls(**known)

    @classmethod
    def coerce(cls, record: Record | Mapping[str, Any]) -> Record:
        """`record` as a `Record` (a test or a script may hold the JSON form)."""
        return record if isinstance(record, Record) else cls.from_json(dict(record))


# The JSON key order: identity first, then results, then provenance (as records always had it).
JSON_ORDER = (
    "schema_version", "run_id", "status", "role", "dataset", "method", "teacher", "student",
    "seed", "profile", "budget", "metrics", "metric_metadata", "dissection", "training",
    "timings", "environment", "started", "ended", "error", "attribution_maps",
)  # fmt: skip


def schema_rows() -> list[tuple[str, str]]:
    """(key, description) of every record field in JSON order: the README's "Results" table."""
    docs = {f.name: f.metadata["doc"] for f in fields(Record)}
    return [(name, docs[name]) for name in JSON_ORDER]


def _is_number(value: Any) -> bool:
    """A finite JSON number (not a bool; `10**400` is an int that no float can hold)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED


# No metric of the benchmark comes near this (parameter counts, milliseconds, counts of units):
# a larger value is damage, and two of 1.7e308 used to overflow the report's means to inf. It
# holds for every metric; each also declares its own bounds (`bench.metrics.register_metric`),
# which the reader is handed (`MetricBounds`) and checks within `BOUND_SLACK` (float rounding:
# a cosine of 1 + 2e-16).
METRIC_BOUND = 1e15
BOUND_SLACK = 1e-6
# Metric name -> (low, high): the closed range the metric declares.
MetricBounds = Mapping[str, tuple[float, float]]
# The fields a command reads as mappings, when present.
MAPPINGS = (
    "metric_metadata", "timings", "environment", "student", "budget", "training", "dissection",
    "attribution_maps",
)  # fmt: skip


# The fields of a metric's metadata that commands read, and their types (None is allowed).
_METADATA_TYPES: dict[str, tuple[type, ...]] = {
    "category": (str,),
    "higher_is_better": (bool,),
    "description": (str,),
    "settings": (dict,),
    "measures_time": (bool,),
    "coverage": (int, float),
    "n_scored": (int,),
    "n_asked": (int,),
    "sample_sd": (int, float),
    "split_halves": (list,),
}


def _nested_problems(record: dict[str, Any]) -> list[str]:
    """The parts of the mappings that `show`, `report` and `--reference` read by key."""
    problems = []
    metadata = record.get("metric_metadata")
    if isinstance(metadata, dict):
        if not all(isinstance(v, dict) for v in metadata.values()):
            problems.append("metric_metadata entries are not all mappings")
        else:
            wrong = sorted(
                {
                    f"{key} ({', '.join(kinds.__name__ for kinds in _METADATA_TYPES[key])})"
                    for entry in metadata.values()
                    for key, kinds in (
                        (k, _METADATA_TYPES[k]) for k in entry if k in _METADATA_TYPES
                    )
                    if entry[key] is not None and not isinstance(entry[key], kinds)
                }
            )
            if wrong:
                problems.append(f"metric_metadata fields of the wrong type: {', '.join(wrong)}")
    method = record["method"]
    if isinstance(method, dict):
        if method.get("params") is not None and not isinstance(method["params"], dict):
            problems.append("method.params is not a mapping")
        for key in ("base", "citation"):
            if method.get(key) is not None and not isinstance(method[key], str):
                problems.append(f"method.{key} is not a string")
        code = method.get("code")
        if code is not None and not (
            isinstance(code, dict) and all(isinstance(v, str) for v in code.values())
        ):
            problems.append("method.code is not a mapping of strings")
    teacher = record.get("teacher")  # a mapping; in the oldest records a teacher key
    if teacher is not None and not isinstance(teacher, dict | str):
        problems.append("teacher is not a mapping or a teacher key")
    if (
        isinstance(teacher, dict)
        and teacher.get("seed") is not None
        and not _is_seed(teacher["seed"])
    ):
        problems.append(f"teacher.seed {teacher['seed']!r} is not an integer in 0 ... {MAX_SEED}")
    environment = record.get("environment")
    if isinstance(environment, dict):
        if environment.get("versions") is not None and not isinstance(
            environment["versions"], dict
        ):
            problems.append("environment.versions is not a mapping")
        texts = ("python", "platform", "bench", "git_revision", "device", "cpu")
        wrong = [
            k
            for k in texts
            if environment.get(k) is not None and not isinstance(environment[k], str)
        ]
        if wrong:
            problems.append(f"environment {', '.join(wrong)} not strings")
    return problems


def _metric_problems(metrics: dict[Any, Any], bounds: MetricBounds) -> list[str]:
    """Metrics that are not null or a finite number within ±`METRIC_BOUND` and within the bounds
    their metric declares (a metric `bounds` does not know, such as a plugin's that is not
    loaded, has only the first)."""
    problems = []
    bad = [
        name
        for name, value in metrics.items()
        if value is not None and not (_is_number(value) and abs(value) <= METRIC_BOUND)
    ]
    if bad:
        problems.append(
            f"metrics not a finite number within ±{METRIC_BOUND:g} or null: "
            f"{', '.join(map(str, bad))}"
        )
    outside = [
        f"{name} {value:g} outside [{low:g}, {high:g}]"
        for name, value in metrics.items()
        if name not in bad and value is not None and name in bounds
        for low, high in [bounds[name]]
        if not low - BOUND_SLACK <= value <= high + BOUND_SLACK
    ]
    if outside:
        problems.append(f"metrics outside their declared bounds: {', '.join(outside)}")
    return problems


def record_problems(record: Any, bounds: MetricBounds | None = None) -> list[str]:
    """What makes `record` (a record's JSON) unusable as a run record; empty when it is valid.

    Checked: the required keys and their types, a known status and role, metrics that are finite
    numbers or null and within the `bounds` their metrics declare (by name; see
    `_metric_problems`), an error that is null or a mapping of strings, timings that are numbers.
    Everything the report, the statistics and `status` read is among them, so a record that
    passes cannot crash them, and one that fails is treated as not done.
    """
    if not isinstance(record, dict):
        return ["not a JSON object"]
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        return [f"missing {', '.join(missing)}"]
    problems = []
    version = record["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        problems.append("schema_version is not an integer")
    elif not 1 <= version <= SCHEMA_VERSION:
        problems.append(
            f"schema_version {version} is unknown to this xkd-bench (it reads 1 ... "
            f"{SCHEMA_VERSION})"
        )
    for key in ("run_id", "profile"):
        if not isinstance(record[key], str) or not record[key]:
            problems.append(f"{key} is not a non-empty string")
    if record["status"] not in STATUSES:
        problems.append(f"status {record['status']!r} is not one of {', '.join(STATUSES)}")
    if record.get("role") not in (*Role, None):
        problems.append(f"role {record.get('role')!r} is not one of {', '.join(Role)}")
    if not _is_seed(record["seed"]):
        problems.append(f"seed {record['seed']!r} is not an integer in 0 ... {MAX_SEED}")
    for key in ("dataset", "method"):
        entry = record[key]
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            problems.append(f"{key} has no name")
    # The report files pages and figures under these names: they must be safe as file names.
    names = {"profile": record["profile"]} | {
        key: record[key].get("name")
        for key in ("dataset", "method")
        if isinstance(record[key], dict)
    }
    problems += [f"{key} name {name!r} is not a safe name" for key, name in names.items()
                 if isinstance(name, str) and not SAFE_NAME.fullmatch(name)]  # fmt: skip
    metrics = record.get("metrics")
    if metrics is not None and not isinstance(metrics, dict):
        problems.append("metrics is not a mapping")
    elif metrics:
        problems += _metric_problems(metrics, bounds or {})
    for key in MAPPINGS:
        if record.get(key) is not None and not isinstance(record[key], dict):
            problems.append(f"{key} is not a mapping")
    problems += _nested_problems(record)
    timings = record.get("timings")
    if isinstance(timings, dict) and not all(v is None or _is_number(v) for v in timings.values()):
        problems.append("timings are not all finite numbers or null")
    error = record.get("error")
    if error is not None and not (
        isinstance(error, dict) and all(v is None or isinstance(v, str) for v in error.values())
    ):
        problems.append("error is not null or a mapping of strings")
    return problems
