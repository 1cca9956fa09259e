"""The models of the control rows: what each control row (`bench.core.vocabulary.CONTROLS`, where
each is described) scores in place of a student, built for one teacher."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bench.core.budgets import ModalityBudget
from bench.core.vocabulary import (
    CONTROLS,
    INPUT_EXPLAINER,
    LINEAR_EXPLAINER,
    OTHER_TEACHER,
    PERMUTED_TEACHER,
    RANDOM_EXPLAINER,
    UNTRAINED_STUDENT,
    ReferenceRow,
)
from bench.data.bundle import DatasetBundle
from bench.models import build_model
from bench.run.predictors import (
    InputExplanations,
    LinearModelExplanations,
    PermutedExplanations,
    StudentPredictor,
)
from bench.train.loop import seed_everything
from bench.train.teachers import Teacher


@dataclass(frozen=True)
class Control:
    """A control row built for one teacher: the model scored, and its record's description."""

    row: ReferenceRow
    model: Any
    description: str


# Each builder gets this teacher, its data and budget, the device, and the teacher of another seed
# (None for a pretrained teacher, which has no `other_teacher` row).
Builder = Callable[[Teacher, DatasetBundle, ModalityBudget, torch.device, Teacher | None], Any]


def _untrained_student(
    teacher: Teacher,
    bundle: DatasetBundle,
    budget: ModalityBudget,
    device: torch.device,
    other: Teacher | None,
) -> StudentPredictor:
    """A randomly initialised student of the standard architecture, seeded with the teacher's
    seed: its architecture alone shapes its maps."""
    seed_everything(teacher.spec.seed)
    arch = budget.student
    untrained = build_model(arch.model, bundle.input_shape, bundle.num_classes, **arch.kwargs())
    return StudentPredictor(untrained.to(device), device, bundle.num_classes)


BUILDERS: dict[str, Builder] = {
    RANDOM_EXPLAINER.name: lambda teacher, *_: teacher,  # explained by the random explainer
    PERMUTED_TEACHER.name: lambda teacher, *_: PermutedExplanations(teacher),
    UNTRAINED_STUDENT.name: _untrained_student,
    INPUT_EXPLAINER.name: lambda teacher, *_: InputExplanations(teacher),
    LINEAR_EXPLAINER.name: lambda teacher, bundle, *_: LinearModelExplanations(teacher, bundle),
    OTHER_TEACHER.name: lambda *args: args[4],  # (teacher, bundle, budget, device, other)
}


def build_controls(
    teacher: Teacher,
    bundle: DatasetBundle,
    budget: ModalityBudget,
    device: torch.device,
    other_teacher: Teacher | None,
) -> list[Control]:
    """Every control row of `teacher` (`TeacherSpec.reference_rows`), in `CONTROLS` order;
    `other_teacher` is the same recipe trained with another seed (`OTHER_TEACHER`), None for a
    pretrained teacher."""
    arch = budget.student
    architecture = f"{arch.model}, {dict(arch.size)}"
    other_seed = other_teacher.spec.seed if other_teacher is not None else None
    return [
        Control(
            row,
            BUILDERS[row.name](teacher, bundle, budget, device, other_teacher),
            row.record_text.format(architecture=architecture, other_seed=other_seed),
        )
        for row in CONTROLS
        if row.name in teacher.spec.reference_rows
    ]
