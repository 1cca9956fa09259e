"""The agreement measures of the explanation-disagreement literature (Krishna et al. 2022, "The
Disagreement Problem in Explainable Machine Learning"), student against teacher.

Of the k most important features of each explanation (by |attribution|):
- **feature agreement**: the share both top-k sets hold (chance: k/F);
- **rank agreement**: the share of ranks 1..k held by the same feature in both (chance: 1/F);
- **sign agreement**: the share both hold with the same sign (signed explainers only; chance
  k/(2F) for signs independent of the feature);
- **signed rank agreement**: the same feature at the same rank with the same sign (signed
  explainers only; chance 1/(2F));
and over all features, **pairwise rank agreement**: the share of feature pairs whose order the
two explanations agree on (chance 1/2). Their rank correlation is `expl_spearman_*`
(`bench.metrics.explanation`). The chance levels assume a random order; the `random_explainer`
control row measures each floor on the data.

Stated rules, where the paper leaves them open:
- k is `TOP_FRACTION` of each sample's defined features, at least 1, as for `expl_topk_*`.
- Ties in |attribution| are broken by feature position, the same way on both sides; in the
  pairwise measure a pair tied on both sides agrees, a pair tied on one side only does not.
- Images are compared on patches, not pixels: a pixel's rank among thousands is noise, and
  Krishna et al. compare superpixels. Each map is summed over a `PATCH_GRID` × `PATCH_GRID` grid
  of cells (images smaller than two pixels per cell, the 8 × 8 digits, stay pixels). Features left
  out of both sides (`ScoringContext.at_baseline`) are left out of the cells' sums; a cell with none
  left is left out.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from bench.explain.explainers import EXPLAINERS
from bench.metrics import UNIT
from bench.metrics.explanation import (
    TOP_FRACTION,
    has_no_order,
    importance_order,
    register_agreement,
    top_k_size,
)

PATCH_GRID = 8


def patches(maps: np.ndarray) -> np.ndarray:
    """Rows of features: a table as it is; an image map (N, 1, H, W) summed over a grid of
    `PATCH_GRID` × `PATCH_GRID` cells (NaN where a cell has no defined pixel)."""
    if maps.ndim != 4 or min(maps.shape[2:]) < 2 * PATCH_GRID:
        return maps.reshape(len(maps), -1)
    rows = np.array_split(np.arange(maps.shape[2]), PATCH_GRID)
    cols = np.array_split(np.arange(maps.shape[3]), PATCH_GRID)
    starts_r, starts_c = [r[0] for r in rows], [c[0] for c in cols]
    values = np.nan_to_num(maps[:, 0], nan=0.0).astype(np.float64)
    defined = (~np.isnan(maps[:, 0])).astype(np.int64)
    summed = np.add.reduceat(np.add.reduceat(values, starts_r, axis=1), starts_c, axis=2)
    counts = np.add.reduceat(np.add.reduceat(defined, starts_r, axis=1), starts_c, axis=2)
    return np.where(counts > 0, summed, np.nan).reshape(len(maps), -1)


def _top_measures(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    order_a, order_b, k = importance_order(a), importance_order(b), top_k_size(a)
    features = a.shape[1]
    within = np.arange(features)[None] < k[:, None]  # positions 1..k of the ranking
    in_a = np.zeros(a.shape, dtype=bool)
    in_b = np.zeros(b.shape, dtype=bool)
    np.put_along_axis(in_a, order_a, within, axis=1)
    np.put_along_axis(in_b, order_b, within, axis=1)
    same_sign = np.sign(np.nan_to_num(a)) == np.sign(np.nan_to_num(b))
    same_rank = (order_a == order_b) & within
    sign_at = np.take_along_axis(same_sign, order_a, axis=1)
    return {
        "feature_agreement": (in_a & in_b).sum(1) / k,
        "rank_agreement": same_rank.sum(1) / k,
        "sign_agreement": (in_a & in_b & same_sign).sum(1) / k,
        "signed_rank_agreement": (same_rank & sign_at).sum(1) / k,
    }


def pairwise_rank_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of pairs of defined features that the two rows order the same way by importance
    (|attribution|, as every rank here: the sign is the sign measures' question)."""
    upper = np.triu(np.ones((a.shape[1], a.shape[1]), dtype=bool), k=1)
    result = np.empty(len(a))
    for i, (row_a, row_b) in enumerate(zip(np.abs(a), np.abs(b), strict=True)):
        order_a = np.sign(row_a[:, None] - row_a[None])
        order_b = np.sign(row_b[:, None] - row_b[None])
        pairs = upper & ~np.isnan(order_a) & ~np.isnan(order_b)
        result[i] = (order_a == order_b)[pairs].mean() if pairs.any() else math.nan
    return result


MEASURES = {
    "feature_agreement": ("feature agreement", False),
    "rank_agreement": ("rank agreement", False),
    "sign_agreement": ("sign agreement", True),
    "signed_rank_agreement": ("signed rank agreement", True),
    "pairwise_rank_agreement": ("pairwise rank agreement", False),
}


def disagreement_measure(name: str, student: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """One of `MEASURES` per sample, on the two sides' maps (NaN where undefined)."""
    a, b = patches(student), patches(teacher)
    if name == "pairwise_rank_agreement":
        values = pairwise_rank_agreement(a, b)
    else:
        values = _top_measures(a, b)[name]
    return np.where(has_no_order(a) | has_no_order(b), np.nan, values)


def _register(explainer_name: str, measure: str) -> None:
    label, needs_sign = MEASURES[measure]
    if needs_sign and EXPLAINERS.get(explainer_name).sign != "signed":
        return
    register_agreement(
        f"expl_{measure}_{explainer_name}",
        explainer_name,
        partial(disagreement_measure, measure),
        f"Krishna et al. 2022's {label} of the model's {explainer_name} attributions with the "
        "teacher's explanation, on patches of images, per explained test sample "
        "(`bench.metrics.disagreement`).",
        {"fraction": TOP_FRACTION, "patch_grid": PATCH_GRID},
        UNIT,
    )


for _name in EXPLAINERS.names():
    if _name != "random":
        for _measure in MEASURES:
            _register(_name, _measure)
