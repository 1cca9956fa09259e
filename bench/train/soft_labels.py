"""What a distillation target says about class similarity: the manipulation check of the soft-label
methods (`methods/kd_similarity.py`), recorded by every kd run."""

from __future__ import annotations

import numpy as np


def shared_attributes(attributes: np.ndarray) -> np.ndarray:
    """(K, K): how many attributes two classes share, from (K, A) class attributes."""
    return (attributes[:, None, :] == attributes[None, :, :]).sum(axis=2).astype(np.float64)


def similarity_check(
    targets: np.ndarray, labels: np.ndarray, attributes: np.ndarray | None
) -> dict[str, float]:
    """What soft targets carry: their mean entropy (nats) and, where the classes have declared
    attributes (`extras["class_attributes"]`), the Pearson correlation between the class-mean
    targets' off-diagonal entries and how many attributes the two classes share. About 0 where
    the targets carry no similarity (made uniform, or scrambled); NaN only when every
    off-diagonal mean is equal."""
    entropy = -(targets * np.log(np.clip(targets, 1e-12, None))).sum(axis=1)
    check = {"soft_target_entropy": float(entropy.mean())}
    if attributes is None:
        return check
    k = targets.shape[1]
    means = np.stack([targets[labels == c].mean(axis=0) for c in range(k)])
    off_diagonal = ~np.eye(k, dtype=bool)
    ours, shared = means[off_diagonal], shared_attributes(attributes)[off_diagonal]
    correlated = np.std(ours) > 1e-12 * max(float(np.abs(ours).max()), 1.0)
    check["similarity_correlation"] = (
        float(np.corrcoef(ours, shared)[0, 1]) if correlated else float("nan")
    )
    return check
