"""Names every layer shares: modalities, method families and the reference rows of a leaderboard.

A leaf module (it imports nothing of bench), so that planning, `list`, `status` and the report use
these names without importing the modules that train and score, and torch with them.
"""

from __future__ import annotations

from typing import Literal, get_args

Modality = Literal["tabular", "image"]
MODALITIES: tuple[str, ...] = get_args(Modality)

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
