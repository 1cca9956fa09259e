"""The claims panel's verdicts: supported, contradicted, inconclusive, and not measured."""

from __future__ import annotations

import math

import pytest

from bench.claims import CLAIMS, claims_table, combine, evaluate_all, verdict_of
from bench.statistics import seed_values
from tests.recordkit import seeded

T_975_DF2 = 4.302653


def verdicts_for(records: list[dict]) -> dict:
    seeds = seed_values(records)
    explainers = {(r["profile"], r["dataset"]["name"]): "ig" for r in records}
    return {v.claim.key: v for v in evaluate_all(seeds, explainers)}


def imitation_records(joint_accuracy: list[float]) -> list[dict]:
    return [
        *seeded(
            "p",
            "wine",
            "gbdt2nn",
            {"expl_spearman_ig": [0.50, 0.52, 0.54], "accuracy": [0.90, 0.91, 0.92]},
        ),
        *seeded(
            "p",
            "wine",
            "gbdt2nn_joint",
            {"expl_spearman_ig": [0.70, 0.71, 0.72], "accuracy": joint_accuracy},
        ),
    ]


def test_explanation_imitation_supported_with_its_effect_and_interval() -> None:
    verdicts = verdicts_for(imitation_records([0.90, 0.92, 0.91]))
    claim = verdicts["explanation_imitation"]
    assert claim.verdict == "supported"
    (dataset,) = claim.datasets
    agreement = next(r for r in dataset.results if r.metric == "expl_spearman_ig")
    # d = [0.20, 0.19, 0.18]: mean 0.19, sd 0.01
    half = T_975_DF2 * 0.01 / math.sqrt(3)
    assert agreement.stats["mean_diff"] == pytest.approx(0.19)
    assert agreement.stats["ci95_low"] == pytest.approx(0.19 - half, rel=1e-6)
    assert agreement.verdict == "supported"
    accuracy = next(r for r in dataset.results if r.metric == "accuracy")
    assert accuracy.verdict == "supported"  # d = [0, 0.01, -0.01]: no measurable loss
    # kd_expl and kd are absent: named as not measured, not silently dropped.
    assert "method kd_expl" in claim.missing and "method kd" in claim.missing


def test_a_clear_accuracy_loss_contradicts_the_imitation_claim() -> None:
    verdicts = verdicts_for(imitation_records([0.80, 0.805, 0.81]))  # d = [-0.1, -0.105, -0.11]
    claim = verdicts["explanation_imitation"]
    assert claim.verdict == "contradicted"
    accuracy = next(r for r in claim.datasets[0].results if r.metric == "accuracy")
    assert accuracy.verdict == "contradicted"
    assert accuracy.stats["mean_diff"] == pytest.approx(-0.105)


def test_concept_detector_claim_needs_both_directions() -> None:
    records = [
        *seeded("p", "shapes", "scratch", {"concept_detectors": [10, 11, 12]}, modality="image"),
        *seeded("p", "shapes", "kd", {"concept_detectors": [15, 17, 16]}, modality="image"),
        *seeded("p", "shapes", "label_smoothing", {"concept_detectors": [10, 12, 11]},
                modality="image"),
    ]  # fmt: skip
    claim = verdicts_for(records)["kd_concept_detectors"]
    (dataset,) = claim.datasets
    by_method = {r.test.method: r for r in dataset.results}
    assert by_method["kd"].verdict == "supported"  # d = [5, 6, 4]
    assert by_method["label_smoothing"].stats["mean_diff"] == pytest.approx(0.0)
    assert by_method["label_smoothing"].verdict == "inconclusive"
    assert dataset.verdict == "inconclusive" and claim.verdict == "inconclusive"


def test_claims_without_their_methods_or_metrics_say_not_measured() -> None:
    records = seeded("p", "wine", "scratch", {"accuracy": [0.9, 0.91]})
    verdicts = verdicts_for(records)
    assert [v.verdict for v in verdicts.values()] == ["not measured"] * len(CLAIMS)
    assert "metric concept_detectors" in verdicts["kd_concept_detectors"].missing
    assert "method xdistill" in verdicts["explanation_distillation"].missing
    table = claims_table(list(verdicts.values()))
    assert list(table.claim) == [c.key for c in CLAIMS]
    assert set(table.verdict) == {"not measured"}


def test_single_seed_is_inconclusive_not_supported() -> None:
    records = [
        *seeded("p", "digits", "kd", {"expl_spearman_gradcam": [0.1]}, modality="image"),
        *seeded("p", "digits", "e2kd", {"expl_spearman_gradcam": [0.9]}, modality="image"),
    ]
    claim = verdicts_for(records)["explanation_distillation"]
    assert claim.datasets[0].results[0].stats["mean_diff"] == pytest.approx(0.8)
    assert claim.verdict == "inconclusive"


def test_verdict_rules() -> None:
    assert verdict_of("higher", 0.1, 0.3) == "supported"
    assert verdict_of("higher", -0.3, -0.1) == "contradicted"
    assert verdict_of("lower", -0.3, -0.1) == "supported"
    assert verdict_of("lower", 0.1, 0.3) == "contradicted"
    assert verdict_of("higher", -0.1, 0.3) == "inconclusive"
    assert verdict_of("not_lower", -0.1, 0.3) == "supported"
    assert verdict_of("not_lower", -0.3, -0.1) == "contradicted"
    assert verdict_of("higher", math.nan, math.nan) == "inconclusive"
    assert combine(["supported", "supported"]) == "supported"
    assert combine(["supported", "inconclusive"]) == "inconclusive"
    assert combine(["supported", "contradicted"]) == "contradicted"
