"""The method contract: a distillation method is one class registered with `@register_method`.

Like mdistiller's distillers, a method's `loss` returns a dict of named terms that the shared loop
sums and logs, so a method file reads like its paper's equation. Methods with stages of their own
override `fit` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from bench.losses import standardise_logits
from bench.registry import Registry, source_file

if TYPE_CHECKING:
    from bench.training import TrainContext


@dataclass
class Batch:
    """A minibatch of the training split; `index` locates its rows for precomputed teacher outputs.

    `augmented`: the images were cropped and flipped (`TrainBudget.crop_padding`), so anything
    computed once from the training split's images (teacher logits, features, maps) belongs to
    other images; teachers and methods then compute it from `x`.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    augmented: bool = False


@dataclass
class ModelOutput:
    """Logits plus the intermediate activations of the layers the method asked to hook."""

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)


# The parameter of the logit-standardisation switch (`Method.standardisable`).
STANDARDISE = "standardise"


class Method:
    """Base class of distillation methods.

    Subclasses set `modalities`, `defaults` (every hyper-parameter, overridable with
    `--set name.param=value`), `citation`, `family` (one of `FAMILIES`, how the report groups
    methods), and implement `loss` or `fit`. They may set `paper_defaults`, the authors' own
    released values of some of those parameters (on CIFAR-100 where they released those; what
    `--preset paper` runs), and `standardisable`, for a logit method whose teacher-matching terms
    read `distilled_logits` (what `--set METHOD.standardise=true` switches).
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = "other"
    modalities: ClassVar[frozenset[str]] = frozenset({"tabular", "image"})
    defaults: ClassVar[Mapping[str, Any]] = {}
    paper_defaults: ClassVar[Mapping[str, Any]] = {}
    standardisable: ClassVar[bool] = False
    # Set by a method whose loss differentiates the student's logits by its input (Jacobian or
    # saliency matching): the shared loop then hands the student an input that requires grad.
    input_requires_grad: ClassVar[bool] = False
    citation: ClassVar[str] = ""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params: Mapping[str, Any] = MappingProxyType(
            {**self.hyperparameters(), **(params or {})}
        )

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Every parameter `--set` may change, with its default.

        The standardisation switch is not among `defaults`: a run that leaves it off names no such
        parameter, so its run id (and its records) are those of the method before the switch
        existed.
        """
        switch = {STANDARDISE: False} if cls.standardisable else {}
        return {**cls.defaults, **switch}

    @classmethod
    def paper_changes(cls) -> dict[str, Any]:
        """The `paper_defaults` that differ from `defaults`: what `--preset paper` changes."""
        return {k: v for k, v in cls.paper_defaults.items() if cls.defaults[k] != v}

    def distilled_logits(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits the teacher-matching terms compare: as they are, or each row z-scored when
        the run sets `standardise` (Sun et al. 2024). Cross-entropy always reads the raw logits."""
        if not self.params.get(STANDARDISE, False):
            return student_logits, teacher_logits
        return standardise_logits(student_logits), standardise_logits(teacher_logits)

    def build_student(self, ctx: TrainContext) -> nn.Module:
        """The student network; by default the profile's standard student for the modality."""
        return ctx.default_student()

    def student_layers(self, student: nn.Module) -> Sequence[str]:
        """Module paths of student layers whose outputs `loss` needs in `student_out.features`."""
        return ()

    def teacher_layers(self, teacher: nn.Module) -> Sequence[str]:
        """Module paths of (network) teacher layers whose outputs `loss` needs."""
        return ()

    def trainable_modules(self, student: nn.Module, ctx: TrainContext) -> nn.Module | None:
        """Modules trained jointly with the student that are not part of it, or None.

        A FitNets regressor or an autoencoder's decoder serves the loss only: the shared loop moves
        it to the device and adds its parameters to the optimiser, but scores and returns the
        student alone. The method keeps a reference to use it in `loss`. Called once per run,
        after `build_student`.
        """
        return None

    def loss(
        self,
        batch: Batch,
        student_out: ModelOutput,
        teacher_out: ModelOutput,
        ctx: TrainContext,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"method {self.name!r} implements neither loss() nor fit()")

    def fit(self, ctx: TrainContext) -> nn.Module:
        """Train and return the student; the default runs the shared loop over `loss`."""
        from bench.training import train_with_loss

        return train_with_loss(ctx, self)

    @classmethod
    def describe(cls) -> str:
        """The first paragraph of the class docstring: what the report and `list` show."""
        doc = (cls.__doc__ or "").strip()
        return " ".join(doc.split("\n\n")[0].split())


METHODS: Registry[type[Method]] = Registry("method")

# How methods are grouped in the report, in this order: what a method distils from its teacher.
FAMILIES = {
    "baseline": "Baselines without a teacher signal",
    "logit": "Logit-based distillation",
    "feature": "Feature-based distillation",
    "explanation": "Explanation-aware distillation",
    "tabular": "Tree-to-network distillation (tables)",
    "other": "Other methods (plugins)",
}

# The names of the reference rows, scored once per teacher seed; no method may take them.
TEACHER_ROW = "teacher"
# Control rows: the floors of the explanation metrics (DESIGN §6). Random attributions are the
# floor of an explainer that ignores the model; the teacher's explanation of another test sample
# is the floor of one that knows the data but not the sample (on concept_shapes it already agrees
# with the teacher at Spearman 0.37); a randomly initialised student of the standard architecture
# is the floor of a student that learned nothing (its architecture alone shapes its maps).
RANDOM_CONTROL_ROW = "random_explainer"
PERMUTED_CONTROL_ROW = "permuted_teacher"
UNTRAINED_CONTROL_ROW = "untrained_student"
CONTROL_ROWS = (RANDOM_CONTROL_ROW, PERMUTED_CONTROL_ROW, UNTRAINED_CONTROL_ROW)
REFERENCE_ROWS = (TEACHER_ROW, *CONTROL_ROWS)


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a `Method` subclass under `name`."""

    def add(cls: type[Method]) -> type[Method]:
        if name in REFERENCE_ROWS or "[" in name or "]" in name:
            raise ValueError(f"{name!r} cannot name a method (reserved or not a plain name)")
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register_method({name!r}) decorates a subclass of bench.Method")
        if cls.family not in FAMILIES:
            raise ValueError(
                f"method {name!r}: family {cls.family!r} is not one of {list(FAMILIES)}"
            )
        unknown = set(cls.modalities) - {"tabular", "image"}
        if unknown:
            raise ValueError(f"method {name!r}: unknown modalities {sorted(unknown)}")
        stray = set(cls.paper_defaults) - set(cls.defaults)
        if stray:
            raise ValueError(
                f"method {name!r}: paper_defaults names {sorted(stray)}, which are not among its "
                f"defaults {sorted(cls.defaults)}"
            )
        cls.name = name
        return METHODS.register(name, source_file(cls))(cls)

    return add
