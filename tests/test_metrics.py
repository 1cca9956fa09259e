"""Prediction and fidelity metrics against values computed by hand."""

import math

import numpy as np
import pytest

from bench.data.bundle import DatasetBundle, Split
from bench.metrics import ScoringContext
from bench.metrics.efficiency import compression
from bench.metrics.fidelity import teacher_agreement, teacher_kl
from bench.metrics.prediction import accuracy, expected_calibration_error, log_loss, roc_auc


class FixedModel:
    """A model whose logits are given: log-probabilities, so softmax gives back `probs`."""

    module = None
    device = None

    def __init__(self, probs: list[list[float]], n_params: int = 10) -> None:
        self._logits = np.log(np.asarray(probs))
        self.n_params = n_params

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        return self._logits


def context(model_probs, teacher_probs, labels) -> ScoringContext:
    n = len(labels)
    labels = np.asarray(labels)
    x = np.zeros((n, 2), dtype=np.float32)
    split = Split(x, labels)
    bundle = DatasetBundle("toy", "1", "tabular", split, split, split, ("a", "b"))
    model, teacher = FixedModel(model_probs, 10), FixedModel(teacher_probs, 40)
    return ScoringContext(bundle, model, teacher, train_seconds=1.0, n_explain=n)


PROBS = [[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]]
TEACHER = [[0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.1, 0.9]]
LABELS = [0, 1, 1, 1]


def test_accuracy_log_loss_and_auc() -> None:
    ctx = context(PROBS, TEACHER, LABELS)
    assert accuracy(ctx) == pytest.approx(0.75)
    expected = -(math.log(0.9) + math.log(0.6) + math.log(0.3) + math.log(0.8)) / 4
    assert log_loss(ctx) == pytest.approx(expected)
    # Positive scores 0.6, 0.3, 0.8 against the negative's 0.1: every pair is ranked right.
    assert roc_auc(ctx) == pytest.approx(1.0)


def test_expected_calibration_error_by_hand() -> None:
    ctx = context(PROBS, TEACHER, LABELS)
    # Confidences 0.9 (right), 0.6 (right), 0.7 (wrong), 0.8 (right), each alone in its bin.
    expected = (abs(1 - 0.9) + abs(1 - 0.6) + abs(0 - 0.7) + abs(1 - 0.8)) / 4
    assert expected_calibration_error(ctx) == pytest.approx(expected)


def test_fidelity_to_the_teacher() -> None:
    ctx = context(PROBS, TEACHER, LABELS)
    assert teacher_agreement(ctx) == pytest.approx(0.75)  # sample 3 disagrees
    p, q = np.asarray(TEACHER), np.asarray(PROBS)
    assert teacher_kl(ctx) == pytest.approx(float((p * np.log(p / q)).sum(1).mean()))
    assert compression(ctx) == pytest.approx(4.0)


def test_explained_subset_is_seeded_and_shared() -> None:
    labels = [0, 1] * 50
    probs = [[0.5, 0.5]] * 100
    first = context(probs, probs, labels)
    first.n_explain = 10
    second = context(probs, probs, labels)
    second.n_explain = 10
    assert len(first.explain_index) == 10
    assert np.array_equal(first.explain_index, second.explain_index)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"category": "explanations"}, "category 'explanations' is not one of prediction, "),
        ({"category": "explanation_excess"}, "is not one of"),  # derived by the report only
        ({"category": "fidelity", "modalities": frozenset({"text"})}, "unknown modalities"),
        ({"category": "fidelity", "bounds": (1.0, 0.0)}, r"bounds \(1.0, 0.0\) are not a range"),
    ],
)
def test_register_metric_refuses_an_unknown_category_modality_or_bounds(kwargs, message) -> None:
    from bench.core.errors import BenchError
    from bench.metrics import METRICS, UNIT, register_metric

    with pytest.raises(BenchError, match=message):
        register_metric("typo_metric", higher_is_better=True, **{"bounds": UNIT, **kwargs})
    assert "typo_metric" not in METRICS


def test_registered_categories_are_typed() -> None:
    from bench.core.vocabulary import Category
    from bench.metrics import METRICS

    categories = {METRICS.get(name).category for name in METRICS}
    assert all(isinstance(c, Category) for c in categories)
    assert Category.EXPLANATION_EXCESS not in categories  # derived by the report only
    assert Category.QUANTUS_ROBUSTNESS.rates_explanations
    assert not Category.DISSECTION.rates_explanations
