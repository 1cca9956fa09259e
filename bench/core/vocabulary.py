"""Names every layer shares, typed: modalities, record roles, method families, metric categories
and the baseline rows.

A leaf module (it imports nothing of bench), so that planning, `list`, `status` and the report use
these names without importing the modules that train and score, and torch with them.
"""

from __future__ import annotations

from enum import StrEnum


class Modality(StrEnum):
    """The kinds of data: tables (samples, features) and images (samples, channels, H, W).

    A `StrEnum`, as every name here: written to records and run ids as the plain string, and equal
    to it, so records and profiles keyed by "tabular" read back unchanged.
    """

    TABULAR = "tabular"
    IMAGE = "image"


MODALITIES: tuple[Modality, ...] = tuple(Modality)


class Role(StrEnum):
    """What a record's row is: a distilled student, a teacher, or a control row (a floor)."""

    STUDENT = "student"
    TEACHER = "teacher"
    CONTROL = "control"


# How methods are grouped in the report, in this order: what a method distils from its teacher.
FAMILIES = {
    "baseline": "Baselines without a teacher signal",
    "logit": "Logit-based distillation",
    "feature": "Feature-based distillation",
    "explanation": "Explanation-aware distillation",
    "tabular": "Tree-to-network distillation (tables)",
    "other": "Other methods (plugins)",
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
