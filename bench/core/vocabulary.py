"""Names every layer shares, typed: modalities, record roles, method families, metric categories,
the baseline rows, and the reference rows (the teacher and the control rows), each described once.

A leaf module (it imports nothing of bench), so that planning, `list`, `status` and the report use
these names without importing the modules that train and score, and torch with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Modality(StrEnum):
    """The kinds of data: tables (samples, features) and images (samples, channels, H, W).

    A `StrEnum`, as every name here: written to records and run ids as the plain string, and equal
    to it, so records and profiles keyed by "tabular" read back unchanged.
    """

    TABULAR = "tabular"
    IMAGE = "image"


MODALITIES: tuple[Modality, ...] = tuple(Modality)

# The explainer that is a method's own where it trains one (XDistillation's decoder), and the one
# it falls back to for every other network (`bench.explain.explainers`).
OWN_EXPLAINER = "own"
OWN_FALLBACK = "gradcam"


class Role(StrEnum):
    """What a record's row is: a distilled student, a teacher, or a control row (a floor)."""

    STUDENT = "student"
    TEACHER = "teacher"
    CONTROL = "control"


class Family(StrEnum):
    """What a method distils from its teacher: how the report groups methods, in this order."""

    BASELINE = "baseline"
    LOGIT = "logit"
    FEATURE = "feature"
    EXPLANATION = "explanation"
    TABULAR = "tabular"
    OTHER = "other"


FAMILIES: dict[Family, str] = {
    Family.BASELINE: "Baselines without a teacher signal",
    Family.LOGIT: "Logit-based distillation",
    Family.FEATURE: "Feature-based distillation",
    Family.EXPLANATION: "Explanation-aware distillation",
    Family.TABULAR: "Tree-to-network distillation (tables)",
    Family.OTHER: "Other methods (plugins)",
}


class Category(StrEnum):
    """What a metric measures; the report shows categories in this order."""

    PREDICTION = "prediction"
    FIDELITY = "fidelity"
    EXPLANATION = "explanation"
    # Derived by the report, not registered: explanation agreement above the control floor.
    EXPLANATION_EXCESS = "explanation_excess"
    QUANTUS_FAITHFULNESS = "quantus_faithfulness"
    QUANTUS_ROBUSTNESS = "quantus_robustness"
    QUANTUS_COMPLEXITY = "quantus_complexity"
    QUANTUS_RANDOMISATION = "quantus_randomisation"
    QUANTUS_LOCALISATION = "quantus_localisation"
    DISSECTION = "dissection"
    EFFICIENCY = "efficiency"

    @property
    def is_quantus(self) -> bool:
        return self.startswith("quantus_")

    @property
    def rates_explanations(self) -> bool:
        """Scored on a model's explanations alone: what a control row without predictions gets."""
        return self is Category.EXPLANATION or self.is_quantus


CATEGORY_ORDER: tuple[Category, ...] = tuple(Category)

# The rows every method is compared with, paired by seed: training without a teacher, and
# classic knowledge distillation.
BASELINES = ("scratch", "kd")


# --- The reference rows: the teacher and the control rows, each described once -------------------
# Every teacher seed gets, beside its students, the teacher's own row and the control rows that show
# each explanation metric's floor (DESIGN §6). Random attributions are the floor of an explainer
# that ignores the model; the teacher's explanation of another test sample is the floor of one that
# knows the data but not the sample (on concept_shapes it already agrees with the teacher at
# Spearman 0.37); a randomly initialised student of the standard architecture is the floor of a
# student that learned nothing (its architecture alone shapes its maps). Another teacher of the same
# recipe, trained with a seed no listed teacher has, is a level, not a floor (`ReferenceRow.floor`).
#
# A row's name, what its record says it is, what the report says of it, what of it is scored and its
# colour in the figures live here, torch-free, so the run (`bench.run.controls` builds each control's
# model), the records and the report all read the same description. No method may take these names.


@dataclass(frozen=True)
class ReferenceRow:
    """One reference row.

    `record_text` is the record's `method.citation` (`{architecture}` is filled in by the run);
    `report_text` is the report's legend. `categories`: the metric categories scored on the row,
    None for every metric (the teacher, and a control row that is a whole model scored as a
    student). `explainer`: the explainer that replaces the scored one (the random control).
    """

    name: str
    record_text: str
    report_text: str
    colour: str
    categories: frozenset[Category] | None = None
    explainer: str | None = None
    # Whether the row is a floor, a level a student must beat to show it learned the teacher's
    # reasons: every excess score and separation check is taken against the floors only.
    floor: bool = True


# A control row that stands in for an explainer has no predictions of its own: only its
# explanations are scored.
EXPLANATION_CATEGORIES = frozenset(c for c in Category if c.rates_explanations)
CONTROL_COLOUR = "#888888"

TEACHER = ReferenceRow(
    name="teacher",
    record_text="",
    report_text=(
        "Reference row: the dataset's teacher, scored with the same metrics as the students. Its "
        "explanation agreement with itself is the ceiling (1)."
    ),
    colour="#1f4e9c",
)
RANDOM_EXPLAINER = ReferenceRow(
    name="random_explainer",
    record_text="Control: uniform random attributions, explaining the teacher.",
    report_text=(
        "Control row: uniform random attributions explaining the teacher. It has no predictions "
        "of its own; its explanation metrics are the floor of an explainer that ignores the model."
    ),
    colour=CONTROL_COLOUR,
    categories=EXPLANATION_CATEGORIES,
    explainer="random",
)
PERMUTED_TEACHER = ReferenceRow(
    name="permuted_teacher",
    record_text=(
        "Control: the teacher's explanation of another test sample (a fixed derangement of the "
        "explained subset), compared with its explanation of this one."
    ),
    report_text=(
        "Control row: the teacher's explanation of another test sample, compared with its "
        "explanation of this one. Agreement this high comes from what all samples share (layout, "
        "feature scales), not from the sample: the floor of explanation agreement."
    ),
    colour=CONTROL_COLOUR,
    categories=frozenset({Category.EXPLANATION}),
)
UNTRAINED_STUDENT = ReferenceRow(
    name="untrained_student",
    record_text=(
        "Control: a randomly initialised student of the standard architecture "
        "({architecture}), seeded with the teacher's seed, scored as a student."
    ),
    report_text=(
        "Control row: a randomly initialised student of the standard architecture, scored as a "
        "student: the floor of a student that learned nothing."
    ),
    colour=CONTROL_COLOUR,
)

INPUT_EXPLAINER = ReferenceRow(
    name="input_explainer",
    record_text=(
        "Control: the input itself as the explanation (input − the explainer's baseline, summed "
        "over channels), compared with the teacher's explanation."
    ),
    report_text=(
        "Control row: the input itself (input − baseline) as the explanation. Agreement this high "
        "needs no model at all: the floor of what the image or the feature values alone give."
    ),
    colour=CONTROL_COLOUR,
    categories=frozenset({Category.EXPLANATION}),
)
LINEAR_EXPLAINER = ReferenceRow(
    name="linear_explainer",
    record_text=(
        "Control: gradient × (input − baseline) of a logistic regression fitted to the training "
        "split, an explainer that knows only the data, compared with the teacher's explanation."
    ),
    report_text=(
        "Control row: gradient × (input − baseline) of a logistic regression on the training "
        "data. It knows the data and the labels but not the teacher: the floor of an explainer "
        "that learned which features matter from the data alone."
    ),
    colour=CONTROL_COLOUR,
    categories=frozenset({Category.EXPLANATION}),
)

OTHER_TEACHER = ReferenceRow(
    name="other_teacher",
    record_text=(
        "Reference level: a teacher of the same recipe and data trained with seed {other_seed}, "
        "one not among the listed teachers, scored as a student of this one."
    ),
    report_text=(
        "Reference row: another teacher of the same recipe and data, trained with another seed, "
        "scored as a student of this one: how far two equally trained teachers agree. A level, "
        "not a floor and not a ceiling: a student trained on this teacher's outputs or "
        "explanations may exceed it."
    ),
    colour="#6a8fd0",
    floor=False,
)

CONTROLS = (
    RANDOM_EXPLAINER, PERMUTED_TEACHER, UNTRAINED_STUDENT, INPUT_EXPLAINER, LINEAR_EXPLAINER,
    OTHER_TEACHER,
)  # fmt: skip
REFERENCES = (TEACHER, *CONTROLS)
TEACHER_ROW = TEACHER.name
RANDOM_CONTROL_ROW = RANDOM_EXPLAINER.name
PERMUTED_CONTROL_ROW = PERMUTED_TEACHER.name
UNTRAINED_CONTROL_ROW = UNTRAINED_STUDENT.name
CONTROL_ROWS = tuple(row.name for row in CONTROLS)
# The control rows that are floors (`ReferenceRow.floor`): what excess scores and separation use.
FLOOR_ROWS = tuple(row.name for row in CONTROLS if row.floor)
REFERENCE_ROWS = (TEACHER_ROW, *CONTROL_ROWS)

# The tuning budget every method gets, declared before any run and shown on the site: a method
# compared after a search its rivals did not get would win by the search.
TUNING_BUDGET = (
    "None, the same for every method: each runs at its registered defaults, which its docstring "
    "gives and justifies (where they depart from its authors' released values it says so, and "
    "`--preset paper` runs those), with the profile's epochs, optimiser, learning rate and batch "
    "size, shared by all; no method's hyper-parameters are searched on any split."
)
