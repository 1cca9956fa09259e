"""Fidelity to the teacher on the test split: does the student predict what its teacher predicts?"""

import numpy as np

from bench.metrics import NON_NEGATIVE, UNIT, ScoringContext, register_metric
from bench.metrics.prediction import PROB_FLOOR


@register_metric("teacher_agreement", category="fidelity", higher_is_better=True, bounds=UNIT)
def teacher_agreement(ctx: ScoringContext) -> float:
    """Share of test samples whose top-1 class equals the teacher's."""
    return float((ctx.probs.argmax(1) == ctx.teacher_probs.argmax(1)).mean())


@register_metric(
    "teacher_kl",
    category="fidelity",
    higher_is_better=False,
    bounds=NON_NEGATIVE,
    settings={"temperature": 1},
)
def teacher_kl(ctx: ScoringContext) -> float:
    """Mean KL(teacher || student) of the predicted class distributions at temperature 1."""
    p = np.maximum(ctx.teacher_probs, PROB_FLOOR)
    q = np.maximum(ctx.probs, PROB_FLOOR)
    return float((p * (np.log(p) - np.log(q))).sum(1).mean())
