"""TreeSHAP explanations of LightGBM teachers, in raw-score space, per class.

LightGBM's `pred_contrib=True` returns exact TreeSHAP values plus a bias column; they add up to the
raw score (SHAP's efficiency property). We arrange them as (samples, classes, features) so that a
tree teacher and a network student are explained in the same terms:

- multiclass: class c's raw score is its logit z_c, explained as LightGBM gives it;
- binary: LightGBM models one raw score s = z_1 - z_0; class 1 is explained by s's contributions
  and class 0 by their negation (it is explained as z_0 - z_1 = -s). Students are explained with
  the same convention (`bench.explainers.ClassScores`).
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np


@dataclass(frozen=True)
class Contributions:
    """`values[n, c, f]`: feature f's contribution to class c's raw score on sample n."""

    values: np.ndarray
    bias: np.ndarray  # (samples, classes): the expected raw score the contributions start from

    def for_targets(self, targets: np.ndarray) -> np.ndarray:
        """One explanation per sample, for that sample's target class: (samples, features)."""
        return self.values[np.arange(len(targets)), targets]

    def raw_scores(self) -> np.ndarray:
        return self.values.sum(axis=2) + self.bias


def tree_contributions(booster: lgb.Booster, x: np.ndarray, num_classes: int) -> Contributions:
    raw = np.asarray(booster.predict(x, pred_contrib=True), dtype=np.float64)
    n, n_features = len(x), x.shape[1]
    if num_classes == 2:
        phi, bias = raw[:, :n_features], raw[:, n_features]
        values = np.stack([-phi, phi], axis=1)
        return Contributions(values.astype(np.float32), np.stack([-bias, bias], axis=1))
    per_class = raw.reshape(n, num_classes, n_features + 1)
    return Contributions(per_class[:, :, :n_features].astype(np.float32), per_class[:, :, -1])
