"""The method contract: a distillation method is one class registered with `@register_method`.

Like mdistiller's distillers, a method's `loss` returns a dict of named terms that the shared loop
sums and logs, so a method file reads like its paper's equation. Methods with stages of their own
override `fit` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.contracts import Batch, ModelOutput
from bench.core.parameters import check_ranges
from bench.core.registry import Registry, check_choices, first_paragraph, source_file
from bench.core.vocabulary import FAMILIES, MODALITIES, REFERENCE_ROWS
from bench.models.hooks import FeatureHooks
from bench.train.loop import TrainContext
from bench.train.losses import kd_kl, standardise_logits

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
    # The allowed values of parameters that take one of a closed set (e.g. which layer): a value
    # outside them is refused when the suite is planned (exit status 2), not by every run.
    choices: ClassVar[Mapping[str, tuple[Any, ...]]] = {}
    # Closed ranges of parameters whose meaning here is narrower than their name's
    # (`bench.core.parameters`): e.g. an `alpha` that mixes two terms lies in [0, 1].
    ranges: ClassVar[Mapping[str, tuple[float, float]]] = {}
    citation: ClassVar[str] = ""
    # Raised whenever what the method computes changes: above 1 it enters its runs' ids, so no
    # record of the old computation is reused. `tests/test_component_versions.py` fails when a
    # built-in method's source changes and its version does not.
    version: ClassVar[int] = 1

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        merged = {**self.hyperparameters(), **(params or {})}
        check_choices(self.name, merged, self.choices)
        check_ranges(self.name, merged, self.ranges)
        self.params: Mapping[str, Any] = MappingProxyType(merged)

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

    def hinton_terms(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """α·CE(labels) + (1−α)·T²·KL(teacher ‖ student) as the terms `ce` and `kd`, at the
        method's `alpha` and `temperature` (Hinton et al. 2015; `kd_kl`).

        KD and the methods that add their own term to it (kd_expl, e2kd, xdistill) share this
        one definition, so that their difference from kd is their term. The KL reads
        `distilled_logits`; cross-entropy the raw logits.
        """
        alpha, temperature = self.params["alpha"], self.params["temperature"]
        student, teacher = self.distilled_logits(student_logits, teacher_logits)
        return {
            "ce": alpha * F.cross_entropy(student_logits, labels),
            "kd": (1 - alpha) * kd_kl(student, teacher, temperature),
        }

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

        A FitNets regressor or an autoencoder's decoder serves the loss: the shared loop moves it
        to the device, adds its parameters to the optimiser, restores it to the student's best
        epoch, and returns the student alone. The method keeps a reference to use it in `loss`
        (XDistillation also attaches its decoder to the student as its own explainer). Called
        once per run, after `build_student`.
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
        return train_with_loss(ctx, self)

    @classmethod
    def describe(cls) -> str:
        """The first paragraph of the class docstring: what the report and `list` show."""
        return first_paragraph(cls.__doc__)


METHODS: Registry[type[Method]] = Registry("method")


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
        unknown = set(cls.modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"method {name!r}: unknown modalities {sorted(unknown)}")
        stray = (set(cls.paper_defaults) | set(cls.choices)) - set(cls.defaults)
        if stray:
            raise ValueError(
                f"method {name!r}: paper_defaults or choices name {sorted(stray)}, which are not "
                f"among its defaults {sorted(cls.defaults)}"
            )
        # A plugin's numpy scalars (`np.float32(0.5)`) become the Python numbers they hold: the
        # catalogue, the run ids and the records are JSON.
        cls.defaults = _plain_values(name, cls.defaults)
        cls.paper_defaults = _plain_values(name, cls.paper_defaults)
        check_choices(name, cls.defaults, cls.choices)
        check_choices(name, cls.paper_defaults, cls.choices)
        check_ranges(name, {**cls.defaults, **cls.paper_defaults}, cls.ranges)
        cls.name = name
        return METHODS.register(name, source_file(cls))(cls)

    return add


def _plain_values(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` with numpy scalars as Python numbers; anything not JSON-plain is refused."""
    plain = {}
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, str | int | float | bool) and value is not None:
            raise ValueError(
                f"method {method!r}: parameter {key!r} = {value!r} is a "
                f"{type(value).__name__}; defaults are numbers, strings, booleans or None"
            )
        plain[key] = value
    return plain


def train_with_loss(ctx: TrainContext, method: Method) -> nn.Module:
    """The default `Method.fit`: the shared loop over the method's named loss terms."""
    student = method.build_student(ctx).to(ctx.device)
    extra = method.trainable_modules(student, ctx)
    teacher = ctx.teacher
    if teacher is None:
        raise ValueError("train_with_loss needs a teacher in the context")
    teacher_layers = list(method.teacher_layers(teacher.module)) if teacher.module else []
    with FeatureHooks(student, method.student_layers(student)) as student_hooks:

        def step(batch: Batch) -> dict[str, torch.Tensor]:
            if method.input_requires_grad:  # a gathered copy: the split itself is untouched
                batch.x.requires_grad_(True)
            logits = student(batch.x)
            student_out = ModelOutput(logits, dict(student_hooks.features))
            teacher_out = teacher.outputs(batch, teacher_layers)
            return checked_terms(method, method.loss(batch, student_out, teacher_out, ctx))

        return ctx.fit(student, step, extra)


def checked_terms(method: Method, terms: object) -> dict[str, torch.Tensor]:
    """`terms` if it is what `Method.loss` promises (a dict of named scalar tensors); else an
    error naming the method and that contract, instead of a failure deep in the training loop."""
    contract = (
        f"method {method.name!r}: loss() must return a dict of named scalar tensors, "
        'e.g. {"ce": ..., "kd": ...}'
    )
    if not isinstance(terms, dict) or not terms:
        raise TypeError(f"{contract}; it returned {type(terms).__name__}")
    for key, value in terms.items():
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise TypeError(f"{contract}; term {key!r} is {shape}")
    return terms
