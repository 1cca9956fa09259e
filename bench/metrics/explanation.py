"""Explanation agreement with the teacher: does the student predict for the same reasons?

For every explainer a profile lists, the student's attributions on the explained test subset are
compared with the teacher's (TreeSHAP for tree teachers, the same explainer for network teachers),
sample by sample, and averaged.

- **Like with like.** Both sides are put in the explainer's form (`Explainer.sign`): signed
  explainers (IG, gradient×input) are compared with signed TreeSHAP φ; absolute ones (saliency,
  Grad-CAM) with |φ|. Measured on breast_cancer before this rule: kd_expl's saliency agreed with
  signed φ at Spearman 0.53 and with |φ| at 0.68. Each metric's settings name the form.
- **Only features that can speak.** For an explainer whose attribution is a product with
  (input − baseline) (IG, gradient × input), features where the input equals the baseline are 0
  for every model and are left out of both sides before ranking (`ScoringContext.at_baseline`):
  about half of the digits pixels are black, and left in, those shared zeros made the input image
  itself agree with the teacher's IG about as well as a trained student (FINDINGS N5). The
  control rows are scored the same way, so the floors are measured on the same features.
- **One attribution per original feature.** A table with one-hot encoded categories (UCI Adult)
  has each category's columns summed, signed, before the form is taken
  (`ScoringContext.per_feature`): the question is whether the models rely on the same features.
  Absolute explainers (saliency, |gradient| per column) are not scored there: a sum of absolute
  values grows with a feature's number of columns, and two untrained networks agreed at
  Spearman 0.84 on Adult's features that way (0.00 per column), native-country's 42 columns
  ranking first every time (a referee's measurement).
- **Nothing silently dropped.** A sample where a comparison is undefined (a constant explanation
  has no ranking, a zero map no direction) scores NaN; the run's value is the mean over the
  samples that are defined, and the share of those (`coverage` in the record's metric metadata,
  `bench.metrics.score`) says how much of the subset the value speaks for. Untrained students
  give constant Grad-CAM maps on 14–22 % of samples; their coverage shows it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from scipy.stats import rankdata

from bench.explain.explainers import EXPLAINERS, explanation_rules
from bench.metrics import CORRELATION, UNIT, Bounds, ScoringContext, register_metric

TOP_FRACTION = 0.2


# Every comparison takes two equally shaped arrays of explanations, one row per sample; a NaN
# feature (left out, `ScoringContext.at_baseline`) must be NaN on both sides and takes no part.


def _rows(a: np.ndarray) -> np.ndarray:
    # In their own dtype: ranks, orderings and top-k sets need no float64 copy of the maps.
    return a.reshape(len(a), -1)


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each row's dot product, accumulated in float64 without an (n, features) temporary."""
    return np.einsum("ij,ij->i", a, b, dtype=np.float64)


def _row_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson's r of each pair of rows over their defined features; NaN for constant rows."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row's mean: NaN, as wanted
        a = np.nan_to_num(a - np.nanmean(a, axis=1, keepdims=True), nan=0.0)
        b = np.nan_to_num(b - np.nanmean(b, axis=1, keepdims=True), nan=0.0)
    denominator = np.sqrt(_row_dot(a, a) * _row_dot(b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, _row_dot(a, b) / denominator, np.nan)


def spearman_per_sample(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each pair of rows (average ranks for ties); NaN for constant rows."""
    rank = partial(rankdata, axis=1, nan_policy="omit")
    return _row_correlation(rank(_rows(a)), rank(_rows(b)))


def pearson_per_sample(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson's r of each pair of rows: like Spearman, but on the values, not their ranks."""
    return _row_correlation(_rows(a), _rows(b))


def cosine_per_sample(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.nan_to_num(_rows(a), nan=0.0), np.nan_to_num(_rows(b), nan=0.0)
    norms = np.sqrt(_row_dot(a, a) * _row_dot(b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, _row_dot(a, b) / norms, np.nan)


def importance_order(a: np.ndarray) -> np.ndarray:
    """Each row's features by decreasing |attribution|: NaN (left out) last, ties by position."""
    return np.argsort(-np.nan_to_num(np.abs(a), nan=-np.inf), axis=1, kind="stable")


def top_k_size(a: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """k per row: `fraction` of its defined features, at least 1."""
    return np.maximum(1, np.ceil(fraction * (~np.isnan(a)).sum(axis=1))).astype(np.int64)


def has_no_order(a: np.ndarray) -> np.ndarray:
    """Rows constant in |attribution| over their defined features, or with none: their top k
    would be an arbitrary pick among ties, not a choice of the model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row: NaN, compared False
        magnitude = np.abs(a)
        return (np.nanmax(magnitude, axis=1) == np.nanmin(magnitude, axis=1)) | np.isnan(a).all(1)


def _top_k(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per row, whether each feature is among its k[row] most important."""
    position = np.empty(a.shape, dtype=np.int64)
    np.put_along_axis(position, importance_order(a), np.arange(a.shape[1])[None], axis=1)
    return position < k[:, None]


def top_k_intersection_per_sample(
    a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION
) -> np.ndarray:
    """Share of the k most important features (by |attribution|) the two explanations share, k
    a `fraction` of each sample's defined features; NaN where either has no order
    (`has_no_order`)."""
    a, b = _rows(a), _rows(b)
    k = top_k_size(a, fraction)
    shared = (_top_k(a, k) & _top_k(b, k)).sum(1) / k
    return np.where(has_no_order(a) | has_no_order(b), np.nan, shared)


COMPARISONS = {
    "spearman": (spearman_per_sample, "Spearman rank correlation", {}, CORRELATION),
    "topk": (
        top_k_intersection_per_sample,
        "top-20 % feature intersection",
        {"fraction": TOP_FRACTION},
        UNIT,
    ),
    "cosine": (cosine_per_sample, "cosine similarity", {}, CORRELATION),
    "pearson": (pearson_per_sample, "Pearson correlation", {}, CORRELATION),
}


Compare = Callable[[np.ndarray, np.ndarray], np.ndarray]


def register_agreement(
    name: str,
    explainer_name: str,
    compare: Compare,
    description: str,
    settings: dict[str, Any],
    bounds: Bounds,
) -> None:
    """Register `name`: `compare(student, teacher)` per sample on the two sides' `explainer_name`
    attributions, in the explainer's form and with the features at the baseline left out where
    the explainer is 0 there; it applies where the profile lists the explainer."""
    explainer = EXPLAINERS.get(explainer_name)

    def compute(ctx: ScoringContext) -> np.ndarray:
        student = explainer.in_form(ctx.per_feature(ctx.attributions(explainer_name)))
        teacher = explainer.in_form(ctx.per_feature(ctx.teacher_attributions(explainer_name)))
        if explainer.zero_at_baseline:
            student, teacher = (np.where(ctx.at_baseline, np.nan, a) for a in (student, teacher))
        return compare(student, teacher)

    compute.__doc__ = description
    register_metric(
        name,
        category="explanation",
        higher_is_better=True,
        bounds=bounds,
        modalities=explainer.modalities,
        settings={
            "explainer": explainer_name,
            "target": "true class",
            "form": explainer.sign,
            "rules": explanation_rules(explainer),
            "left_out": "input at baseline" if explainer.zero_at_baseline else "none",
            **settings,
        },
        # 2: features at the baseline left out for IG and gradient × input.
        version=2 if explainer.zero_at_baseline else 1,
        applies=lambda ctx: (
            ctx.explanation is not None
            and explainer_name in ctx.explanation.explainers
            and ctx.can_explain(explainer_name)
            and (explainer.sign == "signed" or not ctx.is_grouped)
        ),
    )(compute)


# What a tree teacher is explained by, per explainer: TreeSHAP, but for interventional Shapley,
# which it plays like a network (`bench.explain.shapley`).
TREE_TEACHERS = "TreeSHAP for tree teachers"
TEACHER_SIDE = {"shapley": "the same interventional Shapley game for tree teachers"}


def _register(explainer_name: str, kind: str) -> None:
    compare, label, settings, bounds = COMPARISONS[kind]
    explainer = EXPLAINERS.get(explainer_name)
    form = "|attribution|" if explainer.sign == "absolute" else "signed attribution"
    description = (
        f"{label[0].upper() + label[1:]} of the model's {explainer_name} attributions with the "
        f"teacher's explanation ({TEACHER_SIDE.get(explainer_name, TREE_TEACHERS)}), both as "
        f"{form} of the class score "
        "centred over classes, per explained test sample, averaged over the defined samples."
    )
    register_agreement(
        f"expl_{kind}_{explainer_name}", explainer_name, compare, description, settings, bounds
    )


for _name in EXPLAINERS.names():
    if _name != "random":
        for _kind in COMPARISONS:
            _register(_name, _kind)
