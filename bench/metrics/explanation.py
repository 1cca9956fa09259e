"""Explanation agreement with the teacher: does the student predict for the same reasons?

For every explainer a profile lists, the student's attributions on the explained test subset are
compared with the teacher's (TreeSHAP for tree teachers, the same explainer for network teachers),
sample by sample, and averaged.

- **Like with like.** Both sides are put in the explainer's form (`Explainer.sign`): signed
  explainers (IG, gradient×input) are compared with signed TreeSHAP φ; absolute ones (saliency,
  Grad-CAM) with |φ|. Measured on breast_cancer before this rule: kd_expl's saliency agreed with
  signed φ at Spearman 0.53 and with |φ| at 0.68. Each metric's settings name the form.
- **Nothing silently dropped.** A sample where a comparison is undefined (a constant explanation
  has no ranking, a zero map no direction) scores NaN; the run's value is the mean over the
  samples that are defined, and the share of those (`coverage` in the record's metric metadata,
  `bench.metrics.score`) says how much of the subset the value speaks for. Untrained students
  give constant Grad-CAM maps on 14–22 % of samples; their coverage shows it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

from bench.explain.explainers import EXPLAINERS, EXPLANATION_RULES
from bench.metrics import ScoringContext, register_metric

TOP_FRACTION = 0.2


def _rows(a: np.ndarray) -> np.ndarray:
    # In their own dtype: ranks, orderings and top-k sets need no float64 copy of the maps.
    return a.reshape(len(a), -1)


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each row's dot product, accumulated in float64 without an (n, features) temporary."""
    return np.einsum("ij,ij->i", a, b, dtype=np.float64)


def _row_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt(_row_dot(a, a) * _row_dot(b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, _row_dot(a, b) / denominator, np.nan)


def spearman_per_sample(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each pair of rows (average ranks for ties); NaN for constant rows."""
    return _row_correlation(rankdata(_rows(a), axis=1), rankdata(_rows(b), axis=1))


def cosine_per_sample(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = _rows(a), _rows(b)
    norms = np.sqrt(_row_dot(a, a) * _row_dot(b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, _row_dot(a, b) / norms, np.nan)


def top_k_intersection_per_sample(
    a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION
) -> np.ndarray:
    """Share of the k most important features (by |attribution|) the two explanations share.

    NaN where either explanation is constant in |attribution|: its top k would be an arbitrary
    pick among ties, not a choice of the model.
    """
    a, b = np.abs(_rows(a)), np.abs(_rows(b))
    k = max(1, math.ceil(fraction * a.shape[1]))
    in_a = np.zeros(a.shape, dtype=bool)
    in_b = np.zeros(b.shape, dtype=bool)
    np.put_along_axis(in_a, np.argpartition(-a, k - 1, axis=1)[:, :k], True, axis=1)
    np.put_along_axis(in_b, np.argpartition(-b, k - 1, axis=1)[:, :k], True, axis=1)
    shared = (in_a & in_b).sum(1) / k
    constant = (a.max(axis=1) == a.min(axis=1)) | (b.max(axis=1) == b.min(axis=1))
    return np.where(constant, np.nan, shared)


COMPARISONS = {
    "spearman": (spearman_per_sample, "Spearman rank correlation", {}),
    "topk": (
        top_k_intersection_per_sample,
        "top-20 % feature intersection",
        {"fraction": TOP_FRACTION},
    ),
    "cosine": (cosine_per_sample, "cosine similarity", {}),
}


def _register(explainer_name: str, kind: str) -> None:
    compare, label, settings = COMPARISONS[kind]
    explainer = EXPLAINERS.get(explainer_name)

    def compute(ctx: ScoringContext) -> np.ndarray:
        student = explainer.in_form(ctx.attributions(explainer_name))
        teacher = explainer.in_form(ctx.teacher_attributions(explainer_name))
        return compare(student, teacher)

    form = "|attribution|" if explainer.sign == "absolute" else "signed attribution"
    compute.__doc__ = (
        f"{label[0].upper() + label[1:]} of the model's {explainer_name} attributions with the "
        f"teacher's explanation (TreeSHAP for tree teachers), both as {form} of the class score "
        "centred over classes, per explained test sample, averaged over the defined samples."
    )
    register_metric(
        f"expl_{kind}_{explainer_name}",
        category="explanation",
        higher_is_better=True,
        modalities=explainer.modalities,
        settings={
            "explainer": explainer_name,
            "target": "true class",
            "form": explainer.sign,
            "rules": EXPLANATION_RULES,
            **settings,
        },
        applies=lambda ctx: (
            ctx.explanation is not None
            and explainer_name in ctx.explanation.explainers
            and ctx.can_explain(explainer_name)
        ),
    )(compute)


for _name in EXPLAINERS.names():
    if _name != "random":
        for _kind in COMPARISONS:
            _register(_name, _kind)
