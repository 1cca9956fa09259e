"""Models seen through a teacher's interface (`predict_logits`, `explain`, `n_params`), so that the
metrics score a trained student, an untrained one and a permuted teacher alike."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from torch import nn

from bench.data.bundle import DatasetBundle
from bench.explain.class_scores import centre_over_classes
from bench.explain.explainers import ExplainSettings, explain, reference_point
from bench.models import count_parameters
from bench.train.loop import network_logits
from bench.train.teachers import Teacher


class StudentPredictor:
    """A student network (trained or not) seen through the same interface as a teacher."""

    def __init__(self, module: nn.Module, device: torch.device, num_classes: int) -> None:
        self.module = module.eval()
        self.device = device
        self.num_classes = num_classes

    @property
    def n_params(self) -> int:
        return count_parameters(self.module)

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        return network_logits(self.module, x, self.device)

    def explain(
        self, explainer: str, x: np.ndarray, targets: np.ndarray, settings: ExplainSettings
    ) -> np.ndarray:
        return explain(explainer, self.module, x, targets, self.num_classes, settings, self.device)


class TeacherStandIn:
    """The teacher's predictions and network, with explanations of another kind: the control rows
    that stand in for an explainer (`bench.run.controls`). Only explanation agreement is scored
    on them: they have no predictions of their own."""

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher
        self.module = teacher.module
        self.device = teacher.device

    @property
    def n_params(self) -> int:
        return self.teacher.n_params

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        return self.teacher.predict_logits(x)


class PermutedExplanations(TeacherStandIn):
    """The teacher, except that each explained sample gets the teacher's explanation of another.

    The permutation is a fixed derangement (no sample keeps its own explanation) of however many
    samples are explained, so the row is the same for every run and is cached with the teacher's
    explanations.
    """

    def explain(
        self, explainer: str, x: np.ndarray, targets: np.ndarray, settings: ExplainSettings
    ) -> np.ndarray:
        return self.teacher.explain(explainer, x, targets, settings)[derangement(len(x))]


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A seeded permutation of range(n) with no fixed point (a random order, shifted by one)."""
    order = np.random.default_rng(seed).permutation(n)
    result = np.empty(n, dtype=np.int64)
    result[order] = np.roll(order, 1)
    return result


def _as_maps(attributions: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Attributions shaped like the inputs, in the explainers' form: an image's channels summed
    into one map (`bench.explain.explainers.explain`), a table's rows as they are."""
    shaped = attributions.reshape(like.shape).astype(np.float32)
    return shaped.sum(axis=1, keepdims=True) if shaped.ndim == 4 else shaped


class InputExplanations(TeacherStandIn):
    """The teacher, except that every explanation is the input itself, input − baseline: the
    floor of agreement that needs no model (on digits, the ink against a black baseline)."""

    def explain(
        self, explainer: str, x: np.ndarray, targets: np.ndarray, settings: ExplainSettings
    ) -> np.ndarray:
        return _as_maps(x - settings.baseline, x)


class LinearModelExplanations(TeacherStandIn):
    """The teacher, except that every explanation is gradient × (input − reference) of a logistic
    regression fitted to the training split: an explainer that knows only the data and labels.

    The regression's class scores are centred over classes like every model's
    (`bench.explain.class_scores`), so its attribution of class c is (w_c − mean_k w_k) ⊙
    (x − reference), exactly what IG and gradient × input give for a linear model from the
    baseline, and interventional Shapley values from the background's mean
    (`bench.explain.explainers.reference_point`).
    """

    def __init__(self, teacher: Teacher, bundle: DatasetBundle) -> None:
        super().__init__(teacher)
        train = bundle.train
        # One BLAS thread: the fit's sums otherwise split by the worker's thread count, which the
        # executors set differently (Ray's tasks get one), and the row moved with the executor
        # (smoke digits: IG cosine 0.6441 under Ray, 0.6443 under --jobs 2). threadpoolctl comes
        # with scikit-learn.
        with threadpool_limits(limits=1):
            fitted = LogisticRegression(max_iter=2000).fit(
                train.x.reshape(len(train.x), -1), train.y
            )
        # Two classes: sklearn keeps one weight row, the score of class 1 against a class 0 at 0.
        weights = (
            fitted.coef_ if bundle.num_classes > 2 else np.vstack([0 * fitted.coef_, fitted.coef_])
        )
        self.class_weights = centre_over_classes(weights.T).T

    def explain(
        self, explainer: str, x: np.ndarray, targets: np.ndarray, settings: ExplainSettings
    ) -> np.ndarray:
        difference = (x - reference_point(explainer, settings)).reshape(len(x), -1)
        return _as_maps(self.class_weights[targets] * difference, x)
