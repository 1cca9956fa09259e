"""Prediction quality on the whole test split: accuracy, balanced accuracy, macro-F1, ROC-AUC,
log-loss, calibration."""

import math

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from bench.metrics import UNIT, ScoringContext, register_metric

ECE_BINS = 15
PROB_FLOOR = 1e-12


@register_metric("accuracy", category="prediction", higher_is_better=True, bounds=UNIT)
def accuracy(ctx: ScoringContext) -> float:
    """Top-1 accuracy on the test split."""
    return float((ctx.probs.argmax(1) == ctx.labels).mean())


# Tables only: the image datasets are balanced, where it equals accuracy, and a metric added to
# a modality changes the run ids of all its runs (concept_shapes' took four CPU-hours).
@register_metric(
    "balanced_accuracy",
    category="prediction",
    higher_is_better=True,
    bounds=UNIT,
    modalities=frozenset({"tabular"}),
)
def balanced_accuracy(ctx: ScoringContext) -> float:
    """Recall averaged over classes: accuracy as if the classes were equally frequent, which a
    skewed table (UCI Adult: 24 % above $50k) needs beside plain accuracy."""
    return float(balanced_accuracy_score(ctx.labels, ctx.probs.argmax(1)))


@register_metric("macro_f1", category="prediction", higher_is_better=True, bounds=UNIT)
def macro_f1(ctx: ScoringContext) -> float:
    """F1 averaged over classes with equal weight, so rare classes count as much as common ones."""
    return float(f1_score(ctx.labels, ctx.probs.argmax(1), average="macro", zero_division=0))


@register_metric(
    "roc_auc",
    category="prediction",
    higher_is_better=True,
    bounds=UNIT,
    applies=lambda ctx: ctx.bundle.num_classes == 2,
)
def roc_auc(ctx: ScoringContext) -> float:
    """Area under the ROC curve of the positive class (binary tasks only)."""
    return float(roc_auc_score(ctx.labels, ctx.probs[:, 1]))


# At most -log of the probability floor: every sample certain of a wrong class.
@register_metric(
    "log_loss",
    category="prediction",
    higher_is_better=False,
    bounds=(0.0, -math.log(PROB_FLOOR)),
)
def log_loss(ctx: ScoringContext) -> float:
    """Mean negative log-likelihood of the true class (probabilities floored at 10⁻¹²)."""
    true_class = ctx.probs[np.arange(len(ctx.labels)), ctx.labels]
    return float(-np.log(np.maximum(true_class, PROB_FLOOR)).mean())


@register_metric(
    "ece", category="prediction", higher_is_better=False, bounds=UNIT, settings={"bins": ECE_BINS}
)
def expected_calibration_error(ctx: ScoringContext) -> float:
    """Expected calibration error: |accuracy - confidence| over 15 equal-width confidence bins,
    weighted by the share of samples in each bin (Guo et al. 2017)."""
    confidence = ctx.probs.max(1)
    correct = ctx.probs.argmax(1) == ctx.labels
    # Bin i holds confidences in (i/B, (i+1)/B]; confidence is never below 1/C > 0.
    bins = np.minimum(np.ceil(confidence * ECE_BINS).astype(int) - 1, ECE_BINS - 1)
    error = 0.0
    for b in np.unique(bins):
        members = bins == b
        error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)
