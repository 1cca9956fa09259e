"""Frozen descriptions of what to run, with the stable hashes that identify their results.

A run id hashes everything that determines a run's result; when any of it changes (settings, data
version, record schema) the id changes and the run is redone instead of trusted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

from bench import SCHEMA_VERSION
from bench.core.budgets import ModalityBudget, Profile
from bench.core.vocabulary import OTHER_TEACHER, REFERENCE_ROWS, Modality

MAX_SEED = 2**32 - 1  # numpy's and LightGBM's seeds are unsigned 32-bit


def stable_hash(value: Any, length: int = 16) -> str:
    """A hash of a JSON-able value that does not depend on dict order or the Python process."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class TeacherSpec:
    dataset: str
    dataset_version: str
    modality: Modality
    kind: str  # "lightgbm" or the registered model name of a network teacher
    settings: dict[str, Any] = field(hash=False)
    # The teacher's own training seed (`Profile.teacher_seeds`); part of its key and run ids.
    seed: int = 0

    @cached_property
    def key(self) -> str:
        # Cached: planning a large suite asks for it once per run (the spec is frozen).
        return stable_hash(asdict(self))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}

    @property
    def pretrained(self) -> bool:
        """A network loaded from published weights (`PretrainedWeights`), not trained here."""
        return "weights" in self.settings

    @property
    def reference_rows(self) -> tuple[str, ...]:
        """The teacher's reference rows: every one of `REFERENCE_ROWS` but, for a pretrained
        teacher, `other_teacher` (a second draw of its training does not exist)."""
        if self.pretrained:
            return tuple(row for row in REFERENCE_ROWS if row != OTHER_TEACHER.name)
        return REFERENCE_ROWS

    def other_teacher(self, profile: Profile) -> TeacherSpec | None:
        """The teacher of the `other_teacher` reference level: this recipe trained with the first
        seed after `profile`'s teachers' (`Profile.other_teacher_seed`), shared by every teacher of
        the dataset; None for a pretrained teacher, which has no such level."""
        if OTHER_TEACHER.name not in self.reference_rows:
            return None
        return replace(self, seed=profile.other_teacher_seed)


def teacher_spec_for(
    profile: Profile, dataset: str, version: str, modality: Modality, seed: int = 0
) -> TeacherSpec:
    """The teacher of `dataset` that `profile` trains with training seed `seed`; for a teacher
    with published weights (`PretrainedWeights`), the one teacher whatever `seed`."""
    budget = profile.budget(dataset, modality)
    if modality == "tabular":
        if budget.teacher_lightgbm is None:
            raise ValueError(f"profile {profile.name!r} sets no LightGBM teacher for tables")
        settings = asdict(budget.teacher_lightgbm)
        return TeacherSpec(dataset, version, modality, "lightgbm", settings, seed)
    if budget.teacher_network is None:
        raise ValueError(f"profile {profile.name!r} sets no network teacher for images")
    architecture = asdict(budget.teacher_network)
    if budget.teacher_weights is not None:
        # Trained elsewhere: the same teacher for every teacher seed.
        settings = {"architecture": architecture, "weights": asdict(budget.teacher_weights)}
        return TeacherSpec(dataset, version, modality, budget.teacher_network.model, settings)
    if budget.teacher_training is None:
        raise ValueError(f"profile {profile.name!r} sets neither training nor weights of a teacher")
    settings = {"architecture": architecture, "training": budget.teacher_training.as_dict()}
    return TeacherSpec(dataset, version, modality, budget.teacher_network.model, settings, seed)


def reference_run_id(
    spec: TeacherSpec, budget: ModalityBudget, metric_settings: dict[str, Any], other_seed: int
) -> str:
    """The run id of a teacher's reference rows (the teacher and the control rows): what scoring
    them depends on, which is its teacher, the seed of the `other_teacher` level
    (`Profile.other_teacher_seed`, which moves with the profile's teacher seeds; a pretrained
    teacher has no such row, so none), its budget and the metrics' settings."""
    return stable_hash(
        {
            "schema_version": SCHEMA_VERSION,
            "teacher": spec.key,
            "other_teacher_seed": None if spec.pretrained else other_seed,
            "budget": budget.as_dict(),
            "metrics": metric_settings,
        }
    )


@dataclass(frozen=True)
class RunSpec:
    """One (dataset, method variant, seed) of a profile."""

    profile: str
    dataset: str
    dataset_version: str
    modality: Modality
    method: str  # the registered method name
    variant: str  # the row name: `kd`, or `kd[temperature=2]` for a `--set` override
    params: tuple[tuple[str, Any], ...]
    seed: int
    teacher: TeacherSpec
    budget: ModalityBudget
    metric_settings: dict[str, Any] = field(hash=False)
    # The SHA-256 of a plugin method's code (`bench.core.plugin_code`); empty for a built-in.
    code: str = ""
    # `Method.version`: raised when the method's computation changes.
    method_version: int = 1

    @cached_property
    def run_id(self) -> str:
        identity = {
            "schema_version": SCHEMA_VERSION,
            "dataset": [self.dataset, self.dataset_version],
            "method": [self.method, dict(self.params)],
            "teacher": self.teacher.key,
            "budget": self.budget.as_dict(),
            "metrics": self.metric_settings,
            "seed": self.seed,
        }
        # Only where there is one, and a version only once raised: the run ids of built-in methods
        # at their first version stay those of the reference sets.
        if self.code:
            identity["code"] = self.code
        if self.method_version != 1:
            identity["method_version"] = self.method_version
        return stable_hash(identity)

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.variant}/seed{self.seed}"
