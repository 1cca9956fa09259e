"""TreeSHAP explanations of LightGBM teachers, per class, of the class scores centred over classes.

LightGBM's `pred_contrib=True` returns exact TreeSHAP values plus a bias column; they add up to the
raw score (SHAP's efficiency property). We arrange them as (samples, classes, features) so that a
tree teacher and a network student are explained in the same terms (`bench.explain.class_scores`):

- multiclass: LightGBM's per-class raw scores z_c, centred: TreeSHAP is linear in the model's
  output, so the contributions to z_c − mean_k z_k are φ_c − mean_k φ_k;
- binary: LightGBM models one raw score s (logits [0, s]); centred, class 1's score is s / 2 and
  class 0's is −s / 2, explained by φ / 2 and −φ / 2.
Students are explained in the same convention (`bench.explain.explainers.ClassScores`).
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from bench.core.contracts import Contributions
from bench.explain.class_scores import centre_over_classes


def tree_contributions(booster: lgb.Booster, x: np.ndarray, num_classes: int) -> Contributions:
    """TreeSHAP of every class's centred score (the module docstring), bias included."""
    raw = np.asarray(booster.predict(x, pred_contrib=True), dtype=np.float64)
    n, n_features = len(x), x.shape[1]
    if num_classes == 2:
        # LightGBM's logits are [0, s]: class 0 contributes nothing before centring.
        per_class = np.stack([np.zeros_like(raw), raw], axis=1)
    else:
        per_class = raw.reshape(n, num_classes, n_features + 1)
    centred = centre_over_classes(per_class)
    return Contributions(centred[:, :, :n_features].astype(np.float32), centred[:, :, -1])
