"""Quantus metrics through the harness: a faithful explanation beats the random control."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bench.core.budgets import ExplanationBudget
from bench.data.bundle import DatasetBundle, Split
from bench.metrics import METRICS, ScoringContext, aggregate_samples, metric_settings
from bench.metrics.quantus_metrics import _replace_by_baseline
from bench.run.predictors import StudentPredictor

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def linear_task() -> tuple[DatasetBundle, StudentPredictor]:
    """Labels made by a known linear model, which gradient x input explains exactly."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(3, 8)).astype(np.float32)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    y = (x @ weights.T).argmax(1)
    split = Split(x, y)
    bundle = DatasetBundle("linear", "1", "tabular", split, split, split, ("a", "b", "c"))
    model = nn.Linear(8, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(weights))
    return bundle, StudentPredictor(model, CPU, 3)


def context(linear_task, override: str | None = None) -> ScoringContext:
    bundle, predictor = linear_task
    budget = ExplanationBudget(("gxi",), "gxi", ig_steps=8, n_quantus=40, perturbations=20)
    return ScoringContext(bundle, predictor, predictor, 0.0, 100, budget, override)


def test_faithful_explanation_correlates_better_than_random(linear_task) -> None:
    metric = METRICS.get("faithfulness_correlation_gxi")
    # Per-sample scores, averaged as `bench.metrics.score` does.
    faithful = aggregate_samples(metric.compute(context(linear_task)))[0]
    control = aggregate_samples(metric.compute(context(linear_task, override="random")))[0]
    assert faithful > 0.5
    assert faithful > control + 0.3


def test_random_explanations_are_far_less_robust(linear_task) -> None:
    metric = METRICS.get("max_sensitivity_gxi")
    faithful = aggregate_samples(metric.compute(context(linear_task)))[0]
    control = aggregate_samples(metric.compute(context(linear_task, override="random")))[0]
    assert faithful * 3 < control


def test_only_the_profiles_quantus_explainer_is_scored(linear_task) -> None:
    ctx = context(linear_task)
    assert METRICS.get("sparseness_gxi").applies_to(ctx)
    assert not METRICS.get("sparseness_ig").applies_to(ctx)
    assert "random_logit_gxi" not in METRICS  # centred class scores decide it (module docstring)
    value = aggregate_samples(METRICS.get("sparseness_gxi").compute(ctx))[0]
    assert 0.0 < value < 1.0  # a Gini index


def test_deletion_gain_is_bounded_and_ranks_the_true_explanation_above_random(linear_task) -> None:
    metric = METRICS.get("deletion_gain_gxi")
    faithful = metric.compute(context(linear_task))
    control = metric.compute(context(linear_task, override="random"))
    assert np.all(np.abs(faithful) <= 1) and np.all(np.abs(control) <= 1)
    assert np.mean(faithful) > 0.05
    assert abs(np.mean(control)) < np.mean(faithful) / 3


def test_perturbations_take_the_explainers_baseline_not_the_samples_minimum() -> None:
    arr = np.array([[5.0, 6.0, 7.0], [1.0, 2.0, 3.0]])
    baseline = np.array([0.5, 0.25, -1.0])
    perturbed = _replace_by_baseline(arr, np.array([[0, 2], [1, 1]]), baseline)
    np.testing.assert_array_equal(perturbed, [[0.5, 6.0, -1.0], [1.0, 0.25, 3.0]])
    np.testing.assert_array_equal(arr, [[5.0, 6.0, 7.0], [1.0, 2.0, 3.0]])  # not in place


def test_a_changed_metric_definition_changes_what_run_ids_hash() -> None:
    settings = metric_settings("tabular")
    assert settings["faithfulness_correlation_gxi"]["version"] == 2
    assert settings["deletion_gain_gxi"]["version"] == 1
    assert settings["expl_spearman_ig"]["version"] == 2  # features at the baseline left out
    assert settings["expl_spearman_saliency"]["version"] == 1


def test_deletion_gain_scores_every_sample_of_a_test_split_smaller_than_asked(linear_task) -> None:
    bundle, predictor = linear_task
    budget = ExplanationBudget(("gxi",), "gxi", ig_steps=8, n_quantus=64, perturbations=20)
    ctx = ScoringContext(bundle, predictor, predictor, 0.0, 30, budget)  # 30 explained rows
    assert len(METRICS.get("deletion_gain_gxi").compute(ctx)) == 30


def test_a_methods_own_explainer_cannot_be_the_quantus_explainer() -> None:
    """Quantus' MPRT randomises a network's layers and would leave the decoder that XDistillation
    keeps outside its network untouched: a profile naming `own` is refused where it is built."""
    with pytest.raises(ValueError, match="quantus_explainer 'own'.*MPRT"):
        ExplanationBudget(("gradcam", "own"), "own", ig_steps=8, n_quantus=8, perturbations=3)
