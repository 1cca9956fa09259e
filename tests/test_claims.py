"""The claims panel's verdicts: parts, primary and secondary tests, Holm, non-inferiority,
architecture confounds, not measured.

Several tests pin what interval-based verdicts got wrong: three identical differences (a
zero-width interval) "supported" a claim, a loss inside the stated margin "contradicted" one, and
no correction was made for testing a claim on many datasets.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from bench.core.registry import load_builtins
from bench.metrics import METRICS
from bench.report.claims import (
    CLAIM_COLUMNS,
    CLAIMS,
    ClaimTest,
    can_be_significant,
    claims_table,
    combine,
    combine_part,
    evaluate_all,
    intersection,
    verdict_of,
)
from bench.report.statistics import (
    fewest_seeds,
    holm_reachable,
    minimum_detectable_effect,
    paired_difference,
    seed_values,
    seeds_for_power,
    sign_flip_pvalue,
    smallest_sign_flip_p,
)
from tests.recordkit import seeded

T_975_DF2 = 4.302653
BASE = [0.50, 0.90, 0.60, 0.80, 0.55, 0.75, 0.65, 0.70]  # seeds that vary a lot


def verdicts_for(records: list[dict]) -> dict:
    return {v.claim.key: v for v in evaluate_all(seed_values(records))}


def shifted(by: float | list[float], n: int = 8) -> list[float]:
    steps = by if isinstance(by, list) else [by] * n
    return [b + s for b, s in zip(BASE, steps, strict=False)]


def imitation(
    dataset: str, n: int, explanation_gain: float, accuracy_gain: float = 0.0
) -> list[dict]:
    """gbdt2nn_joint against gbdt2nn on the held-out explainer of tables (interventional Shapley)."""
    return [
        *seeded(
            "p", dataset, "gbdt2nn",
            {"expl_spearman_shapley": BASE[:n], "accuracy": BASE[:n]},
        ),
        *seeded(
            "p", dataset, "gbdt2nn_joint",
            {"expl_spearman_shapley": shifted(explanation_gain, n),
             "accuracy": shifted(accuracy_gain, n)},
        ),
    ]  # fmt: skip


def result_of(claim, method: str, metric: str, dataset: str | None = None):
    for d in claim.datasets:
        if dataset is not None and d.dataset != dataset:
            continue
        for r in d.results:
            if r.test.method == method and r.metric == metric:
                return r
    raise LookupError((method, metric, dataset))


def test_identical_differences_on_three_seeds_no_longer_support_a_claim() -> None:
    # d = [5, 5, 5]: the interval is [5, 5] and used to "exclude 0"; the sign-flip p is 2/8.
    records = [
        *seeded("p", "shapes", "scratch", {"concept_detectors": [10, 11, 12]}, modality="image"),
        *seeded("p", "shapes", "kd", {"concept_detectors": [15, 16, 17]}, modality="image"),
    ]
    claim = verdicts_for(records)["kd_concept_detectors"]
    kd = result_of(claim, "kd", "concept_detectors")
    assert kd.stats["ci95_low"] == kd.stats["ci95_high"] == pytest.approx(5.0)
    # Three seeds cannot reach p < 0.05 whatever the values: the test is outside its Holm family.
    assert kd.stats["p_value"] == 0.25 and math.isnan(kd.p_holm)
    assert math.isnan(kd.stats["seeds_for_80_power"])  # no d_z when sd = 0
    assert kd.verdict == claim.verdict == "too few seeds"


def test_a_consistent_gain_on_enough_seeds_is_supported() -> None:
    claim = verdicts_for(imitation("wine", 6, 0.05))["explanation_imitation"]
    ig = result_of(claim, "gbdt2nn_joint", "expl_spearman_shapley")
    # Six positive differences: p = 2/64; the only primary test, so Holm leaves it.
    assert ig.stats["mean_diff"] == pytest.approx(0.05)
    assert ig.stats["p_value"] == pytest.approx(0.03125) and ig.p_holm == pytest.approx(0.03125)
    assert ig.verdict == "supported"
    # The claim promises better predictions too, and accuracy did not move: half supported.
    assert claim.part_verdicts == {"explanation": "supported", "prediction": "inconclusive"}
    assert claim.verdict == "partly supported"
    # kd_expl and kd are absent: named as not measured, not silently dropped.
    assert "method kd_expl" in claim.missing and "method kd" in claim.missing


def test_holm_corrects_across_a_claims_datasets() -> None:
    # The same six-seed gain on two datasets: each p = 0.03125 could pass 0.05 alone, but Holm's
    # first step asks 0.05 / 2, which no six seeds reach: the family has too few seeds.
    claim = verdicts_for(imitation("wine", 6, 0.05) + imitation("breast_cancer", 6, 0.05))[
        "explanation_imitation"
    ]
    explanation = [r for d in claim.datasets for r in d.primary if r.test.part == "explanation"]
    assert [r.stats["p_value"] for r in explanation] == pytest.approx([0.03125, 0.03125])
    assert all(can_be_significant(r.test, 6) for r in explanation)
    assert [r.verdict for r in explanation] == ["too few seeds"] * 2
    assert all(math.isnan(r.p_holm) and math.isnan(r.mde_80) for r in explanation)
    assert claim.part_verdicts["explanation"] == "too few seeds"
    # Seven seeds each: 2·(2/128) = 0.03125 < 0.05 on both, in each part's own family.
    both = imitation("wine", 7, 0.05, 0.05) + imitation("breast_cancer", 7, 0.05, 0.05)
    claim = verdicts_for(both)["explanation_imitation"]
    assert {d.verdict for d in claim.datasets} == {"supported"} and claim.verdict == "supported"
    assert [r.p_holm for d in claim.datasets for r in d.primary] == pytest.approx([1 / 32] * 4)


def test_a_two_part_claim_is_contradicted_by_either_part() -> None:
    # Better explanations, clearly worse accuracy: the "and better predictions" half fails.
    claim = verdicts_for(imitation("wine", 7, 0.05, accuracy_gain=-0.03))["explanation_imitation"]
    accuracy = result_of(claim, "gbdt2nn_joint", "accuracy")
    assert accuracy.test.role == "primary" and accuracy.test.part == "prediction"
    assert accuracy.verdict == "contradicted"
    assert claim.part_verdicts == {"explanation": "supported", "prediction": "contradicted"}
    assert claim.verdict == "contradicted"
    table = claims_table([claim])
    primary = table[table.role == "primary"]
    assert list(primary.part) == ["explanation", "prediction"]
    assert list(primary.test_verdict) == ["supported", "contradicted"]
    assert list(primary.part_verdict) == ["supported", "contradicted"]
    assert set(table.claim_verdict) == {"contradicted"}
    # The paper's own accuracy test sees the same loss; its explanation metric (gxi) is absent.
    paper = table[table.role == "paper"]
    assert list(paper.metric) == ["accuracy"] and list(paper.test_verdict) == ["contradicted"]
    assert set(table.paper_verdict) == {"contradicted"}


def test_a_part_supported_on_one_dataset_and_contradicted_on_another_is_named() -> None:
    # Wine gains, breast_cancer loses, seven seeds each (Holm over two: 1/32 < 0.05 for both).
    records = imitation("wine", 7, 0.05) + imitation("breast_cancer", 7, -0.05)
    claim = verdicts_for(records)["explanation_imitation"]
    assert claim.part_verdicts["explanation"] == "contradicted"
    assert claim.disagreements == [
        "explanation: supported on p/wine; contradicted on p/breast_cancer"
    ]
    # The same direction everywhere: nothing to name.
    agreeing = imitation("wine", 7, 0.05) + imitation("breast_cancer", 7, 0.05)
    assert verdicts_for(agreeing)["explanation_imitation"].disagreements == []


def test_the_papers_own_metric_has_its_own_verdict_that_decides_nothing() -> None:
    """e2KD under the distilled explainer (Grad-CAM) gains, under the held-out IG it does not:
    the claim is judged on IG, the paper's verdict is shown beside it."""
    gradcam_gain = {"expl_spearman_gradcam": shifted(0.1, 8), "accuracy": [0.9] * 8}
    flat = {"expl_spearman_ig": [0.3, 0.31] * 4, "teacher_agreement": [0.95] * 8}
    kd = {"expl_spearman_gradcam": BASE, "accuracy": [0.9] * 8}
    kd |= {"expl_spearman_ig": [0.31, 0.3] * 4, "teacher_agreement": [0.95] * 8}
    records = [
        *seeded("p", "digits", "kd", kd, modality="image"),
        *seeded("p", "digits", "e2kd", gradcam_gain | flat, modality="image"),
    ]
    claim = verdicts_for(records)["e2kd"]
    assert claim.part_verdicts["explanation"] == "inconclusive"
    assert claim.paper_part_verdicts["explanation"] == "supported"
    # Accuracy identical on every seed: not worse (decided on the exact sign-flip p) in the
    # claim's part, no gain in the paper's.
    assert result_of(claim, "e2kd", "accuracy").verdict == "supported"
    assert claim.part_verdicts["prediction"] == "supported"
    assert claim.verdict == "partly supported"
    assert claim.paper_verdict == "partly supported"
    assert claim.claim.unmeasured  # the little-data claim is said, not dropped
    table = claims_table([claim])
    assert "little training data" in table.missing.iloc[0]


def test_identical_differences_decide_non_inferiority_as_noisy_ones_do() -> None:
    """A loss of exactly 2δ on every seed is contradicted, as the same loss with noise is."""
    test = ClaimTest("e2kd", "kd", "accuracy", "not_worse", "prediction", margin=0.01)
    for noise in (0.0, 1e-4):
        diffs = np.full(10, -0.02) + noise * np.random.default_rng(0).standard_normal(10)
        stats = paired_difference(
            dict(enumerate(diffs)), dict.fromkeys(range(10), 0.0),
            alternative="greater", margin=0.01,
        )  # fmt: skip
        assert verdict_of(test, stats, stats["p_value"]) == "contradicted"


def xdistill_records(ablation_params: float = 5938.0) -> list[dict]:
    """xdistill seven seeds ahead of kd and of its ablations on every metric; `parameters` as on
    digits (FusedStudent 5 938, kd's SmallCNN 5 178), the ablations' as given."""
    metrics = ("expl_spearman_ig", "expl_spearman_gradcam", "accuracy")
    image = {"modality": "image"}

    def rows(method: str, gain: float, parameters: float) -> list[dict]:
        values = {m: shifted(gain, 7) for m in metrics} | {"parameters": [parameters] * 7}
        return seeded("p", "digits", method, values, **image)

    return [
        *rows("kd", 0.0, 5178.0),
        *rows("xdistill_arch", 0.0, ablation_params),
        *rows("kd_matched", 0.0, ablation_params),
        *rows("xdistill", 0.1, 5938.0),
    ]


def test_primary_and_secondary_are_separate_holm_families_within_each_part() -> None:
    claim = verdicts_for(xdistill_records())["explanation_distillation"]
    # Each part's primary family: vs xdistill_arch and vs kd_matched, 2·(2/128) each.
    for metric in ("accuracy", "expl_spearman_ig"):
        primary = [r for d in claim.datasets for r in d.primary if r.metric == metric]
        assert [r.test.baseline for r in primary] == ["xdistill_arch", "kd_matched"]
        assert [r.p_holm for r in primary] == pytest.approx([1 / 32, 1 / 32])
    # Secondary, faithfulness: Grad-CAM vs xdistill_arch and IG vs kd, a family of two.
    secondary = [r for d in claim.datasets for r in d.secondary if r.test.part == "faithfulness"]
    assert [r.p_holm for r in secondary] == pytest.approx([1 / 32, 1 / 32])
    assert claim.part_verdicts == {"prediction": "supported", "faithfulness": "supported"}
    assert claim.verdict == "supported"


def test_a_comparison_of_networks_of_different_size_is_confounded() -> None:
    claim = verdicts_for(xdistill_records())["explanation_distillation"]
    versus_kd = [r for d in claim.datasets for r in d.results if r.test.baseline == "kd"]
    assert versus_kd and all(r.parameters == (5938.0, 5178.0) for r in versus_kd)
    assert all(r.confounded and r.verdict == "confounded" for r in versus_kd)
    # Ablations that are not the same size cannot support the claim either.
    claim = verdicts_for(xdistill_records(ablation_params=5178.0))["explanation_distillation"]
    assert {r.verdict for d in claim.datasets for r in d.primary} == {"confounded"}
    assert claim.verdict == "inconclusive"
    table = claims_table([claim])
    assert set(table.method_parameters) == {5938.0}
    assert set(table[table.baseline == "kd_matched"].baseline_parameters) == {5178.0}


@pytest.mark.parametrize(
    ("steps", "verdict"),
    [
        # A loss of half a point, well inside the 1-point margin: non-inferior. (The old rule,
        # "contradicted when the accuracy interval lies below 0", called this a contradiction.)
        ([-0.005, -0.006, -0.004, -0.005, -0.0055, -0.0045, -0.005], "supported"),
        # No difference at all on any seed: nothing lost, decided as a tiny noise would be
        # (exact one-sided p = 1/128; N10 of the second referee round).
        ([0.0] * 7, "supported"),
        # Too noisy to rule out a loss beyond the margin (was "supported").
        ([0.03, -0.04, 0.02, -0.03, 0.01, -0.02, 0.0], "inconclusive"),
        # A loss of two points, beyond the margin: contradicted.
        ([-0.02, -0.021, -0.019, -0.02, -0.022, -0.018, -0.02], "contradicted"),
    ],
)
def test_accuracy_not_worse_with_a_one_point_margin(steps: list[float], verdict: str) -> None:
    records = [
        *seeded("p", "cifar", "kd", {"expl_spearman_ig": BASE[:7], "accuracy": BASE[:7]},
                modality="image"),
        *seeded("p", "cifar", "e2kd", {"expl_spearman_ig": BASE[:7], "accuracy": shifted(steps)},
                modality="image"),
    ]  # fmt: skip
    claim = verdicts_for(records)["e2kd"]
    accuracy = result_of(claim, "e2kd", "accuracy")
    assert accuracy.test.expect == "not_worse" and accuracy.test.margin == 0.01
    assert accuracy.verdict == verdict


def test_non_inferiority_p_is_one_sided_and_shifted_by_the_margin() -> None:
    steps = [-0.005, -0.006, -0.004, -0.005, -0.0055, -0.0045, -0.005]
    records = [
        *seeded("p", "cifar", "kd", {"accuracy": BASE[:7]}, modality="image"),
        *seeded("p", "cifar", "e2kd", {"accuracy": shifted(steps)}, modality="image"),
    ]
    accuracy = result_of(verdicts_for(records)["e2kd"], "e2kd", "accuracy")
    # d + 0.01 > 0 on all seven seeds: one-sided p = 1/128 (two-sided on d alone would be 2/128).
    assert accuracy.stats["p_value"] == pytest.approx(1 / 128)
    s = accuracy.stats
    # The t-test would need 3 seeds; the one-sided sign-flip test cannot decide below 5.
    assert seeds_for_power((s["mean_diff"] + 0.01) / s["std_diff"]) == 3
    assert s["seeds_for_80_power"] == 5
    # Only the prediction part was measured: the explanation part has no verdict.
    claim = verdicts_for(records)["e2kd"]
    assert claim.part_verdicts == {"explanation": "not measured", "prediction": "supported"}
    assert claim.verdict == "partly supported"


def test_concept_detector_claim_holm_over_both_directions() -> None:
    image = {"modality": "image"}
    records = [
        *seeded("p", "shapes", "scratch", {"concept_detectors": [10, 14, 11, 13, 12, 15, 9]},
                **image),
        *seeded("p", "shapes", "kd", {"concept_detectors": [15, 20, 17, 17, 16, 19, 15]}, **image),
        *seeded("p", "shapes", "label_smoothing",
                {"concept_detectors": [10, 14, 11, 13, 12, 15, 9]}, **image),
    ]  # fmt: skip
    claim = verdicts_for(records)["kd_concept_detectors"]
    kd = result_of(claim, "kd", "concept_detectors")
    smoothing = result_of(claim, "label_smoothing", "concept_detectors")
    # Each direction is a part of its own, tested at α: no Holm between them.
    assert kd.stats["p_value"] == pytest.approx(2 / 128) and kd.p_holm == pytest.approx(2 / 128)
    assert kd.verdict == "supported"
    assert smoothing.stats["mean_diff"] == 0 and smoothing.verdict == "inconclusive"
    assert claim.datasets[0].verdict == "inconclusive"
    assert claim.part_verdicts == {
        "knowledge distillation": "supported",
        "label smoothing": "inconclusive",
    }
    assert claim.verdict == "partly supported"
    # An inconclusive test says how large an effect its seeds could have seen.
    assert math.isnan(smoothing.mde_80)  # every seed gives the same difference: no spread
    # A family of one: tested at α.
    assert kd.mde_80 == pytest.approx(minimum_detectable_effect(kd.stats["std_diff"], 7))


def test_claims_without_their_methods_or_metrics_say_not_measured() -> None:
    records = seeded("p", "wine", "scratch", {"accuracy": [0.9, 0.91]})
    verdicts = verdicts_for(records)
    assert [v.verdict for v in verdicts.values()] == ["not measured"] * len(CLAIMS)
    assert "metric concept_detectors" in verdicts["kd_concept_detectors"].missing
    assert "method xdistill" in verdicts["explanation_distillation"].missing
    assert "method e2kd" in verdicts["e2kd"].missing
    table = claims_table(list(verdicts.values()))
    assert list(table.claim) == [c.key for c in CLAIMS]
    assert set(table.claim_verdict) == {"not measured"}


def test_claims_table_columns_and_order() -> None:
    claim = verdicts_for(imitation("wine", 7, 0.05) + imitation("iris", 7, 0.05))
    table = claims_table([claim["explanation_imitation"]])
    for column in (
        "claim", "part", "role", "dataset", "method", "baseline", "metric", "expect", "margin",
        "n", "mean_diff", "ci95_low", "ci95_high", "p_value", "p_holm", "seeds_for_80_power",
        "mde_80", "test_verdict", "dataset_verdict", "part_verdict", "claim_verdict",
    ):  # fmt: skip
        assert column in table.columns, column
    assert "verdict" not in table.columns  # it read like the row's verdict but was the dataset's
    assert list(table.columns) == CLAIM_COLUMNS
    primary = table[table.role == "primary"]
    assert list(primary.part) == ["explanation"] * 2 + ["prediction"] * 2
    assert list(primary.role) == ["primary"] * 4
    assert list(primary.dataset) == ["iris", "wine", "iris", "wine"]
    assert (primary.n == 7).all() and (primary.margin == 0).all()
    assert primary.p_holm.tolist() == pytest.approx([1 / 32] * 2 + [1.0, 1.0])


def test_single_seed_is_inconclusive_not_supported() -> None:
    records = [
        *seeded("p", "digits", "kd", {"expl_spearman_ig": [0.1]}, modality="image"),
        *seeded("p", "digits", "e2kd", {"expl_spearman_ig": [0.9]}, modality="image"),
    ]
    claim = verdicts_for(records)["e2kd"]
    (result,) = claim.datasets[0].results
    assert result.stats["mean_diff"] == pytest.approx(0.8)
    assert math.isnan(result.stats["p_value"]) and math.isnan(result.p_holm)
    assert result.verdict == claim.verdict == "too few seeds"


def test_students_of_different_teacher_seeds_are_not_paired() -> None:
    records = imitation("wine", 7, 0.05)
    for record in records:
        seed = record["seed"]
        # gbdt2nn_joint's seed 6 used teacher 1, gbdt2nn's teacher 0.
        mismatch = record["method"]["name"] == "gbdt2nn_joint" and seed == 6
        record["teacher"] = {"seed": 1 if mismatch else 0}
    ig = result_of(verdicts_for(records)["explanation_imitation"], "gbdt2nn_joint",
                   "expl_spearman_shapley")  # fmt: skip
    assert ig.stats["n"] == 6 and ig.stats["teacher_mismatch"] == 1


def test_verdict_rules() -> None:
    higher = ClaimTest("a", "b", "m", "higher", "x")
    lower = ClaimTest("a", "b", "m", "lower", "x")
    stats = {"mean_diff": 0.2, "std_diff": 0.1, "ci95_low": 0.1, "ci95_high": 0.3}
    negative = {"mean_diff": -0.2, "std_diff": 0.1, "ci95_low": -0.3, "ci95_high": -0.1}
    assert verdict_of(higher, stats, 0.01) == "supported"
    assert verdict_of(higher, negative, 0.01) == "contradicted"
    assert verdict_of(lower, negative, 0.01) == "supported"
    assert verdict_of(lower, stats, 0.01) == "contradicted"
    # The interval excludes 0 but the adjusted p does not reach 0.05: no verdict.
    assert verdict_of(higher, stats, 0.06) == "inconclusive"
    assert verdict_of(higher, stats, math.nan) == "inconclusive"
    guard = ClaimTest("a", "b", "m", "not_worse", "x", margin=0.05)
    small_loss = {"mean_diff": -0.02, "std_diff": 0.01, "ci95_low": -0.03, "ci95_high": -0.01}
    assert verdict_of(guard, small_loss, 0.01) == "supported"
    assert verdict_of(guard, small_loss, 0.2) == "inconclusive"
    big_loss = {"mean_diff": -0.1, "std_diff": 0.01, "ci95_low": -0.11, "ci95_high": -0.09}
    assert verdict_of(guard, big_loss, 1.0) == "contradicted"
    flat = {"mean_diff": -0.1, "std_diff": 0.0, "ci95_low": -0.1, "ci95_high": -0.1}
    assert verdict_of(guard, flat, 0.0) == "contradicted"  # zero width: [d, d] below −δ
    # Lower-is-better metric: a rise of the metric is the loss.
    assert verdict_of(guard, {**big_loss, "ci95_low": 0.09, "ci95_high": 0.11}, 1.0, False) == (
        "contradicted"
    )
    assert combine(["supported", "supported"]) == "supported"
    assert combine(["supported", "inconclusive"]) == "inconclusive"
    assert combine(["supported", "contradicted"]) == "contradicted"
    assert combine([]) == "no primary test"
    assert combine_part(["supported", "confounded"]) == "mixed"
    assert combine_part(["confounded", "inconclusive"]) == "inconclusive"
    assert combine_part([]) == "not measured"


def test_minimum_detectable_effect_is_the_power_analysis_inverted() -> None:
    """At the effect `minimum_detectable_effect` names, `seeds_for_power` asks for those seeds."""
    for n, sd in ((10, 0.02), (7, 1.3), (30, 0.5)):
        mde = minimum_detectable_effect(sd, n)
        assert abs(seeds_for_power(mde / sd) - n) <= 1
    assert math.isnan(minimum_detectable_effect(0.1, 1))
    assert math.isnan(minimum_detectable_effect(0.0, 10))
    # A stricter level (the first Holm step of a family of two) needs a larger effect.
    assert minimum_detectable_effect(0.1, 10, alpha=0.025) > minimum_detectable_effect(0.1, 10)


def test_every_claim_names_registered_methods_and_metrics() -> None:
    load_builtins()
    from bench.train.method import METHODS

    for claim in CLAIMS:
        for part in claim.parts:
            primary = {t.metric for t in claim.primary if t.part == part}
            assert len(primary) == 1, f"{claim.key}, {part}: one primary metric per part"
        for test in claim.tests:
            assert test.method in METHODS, (claim.key, test.method)
            assert test.baseline in METHODS, (claim.key, test.baseline)
            assert test.metric in METRICS, (claim.key, test.metric)
            assert test.expect in ("higher", "lower", "not_worse")
            assert (test.margin > 0) == (test.expect == "not_worse"), (claim.key, test)


def test_no_primary_metric_uses_an_explainer_the_claims_methods_train_on() -> None:
    load_builtins()
    trained = {c.key: set(c.trained_explainers) for c in CLAIMS}
    # What the methods' losses match (see methods/*.py): gradient × input against TreeSHAP, and
    # Grad-CAM maps, which XDistillation's own explainer (`own`) is trained to draw and which
    # `own` is for e2kd's student.
    assert trained["explanation_imitation"] == {"gxi"}
    assert trained["explanation_distillation"] == trained["e2kd"] == {"gradcam", "own"}
    for claim in CLAIMS:
        for test in claim.primary:
            match = re.fullmatch(r"expl_(spearman|topk|cosine)_(\w+)", test.metric)
            if match:
                assert METRICS.get(test.metric).category == "explanation"
                assert match.group(2) not in claim.trained_explainers, (claim.key, test.metric)


def test_claim_table_of_records_round_trips_through_csv(tmp_path) -> None:
    table = claims_table(list(verdicts_for(imitation("wine", 7, 0.05)).values()))
    table.to_csv(tmp_path / "claims.csv", index=False)
    back = pd.read_csv(tmp_path / "claims.csv")
    assert list(back.columns) == CLAIM_COLUMNS
    row = back[(back.claim == "explanation_imitation") & (back.part == "explanation")].iloc[0]
    assert row.test_verdict == "supported" and row.part_verdict == "supported"
    assert row.claim_verdict == "partly supported"


@pytest.mark.parametrize("n", range(2, 10))
def test_the_smallest_sign_flip_p_is_that_of_identical_differences(n: int) -> None:
    # Every seed's difference on the claimed side: no sign pattern is more extreme.
    same = [0.3] * n
    assert sign_flip_pvalue(same) == pytest.approx(smallest_sign_flip_p(n))
    assert sign_flip_pvalue(same, "greater") == pytest.approx(smallest_sign_flip_p(n, "greater"))


def test_a_test_can_be_significant_from_six_seeds_or_five_one_sided() -> None:
    higher = ClaimTest("e2kd", "kd", "expl_spearman_ig", "higher", "explanation")
    not_worse = ClaimTest("e2kd", "kd", "accuracy", "not_worse", "prediction", margin=0.01)
    assert [n for n in range(1, 9) if can_be_significant(higher, n)] == [6, 7, 8]
    assert [n for n in range(1, 9) if can_be_significant(not_worse, n)] == [5, 6, 7, 8]
    assert (fewest_seeds(), fewest_seeds("greater")) == (6, 5)


def twelve_seeds_and_a_screen() -> list[dict]:
    """e2kd a little more accurate than kd on twelve seeds of digits, and on three of fashion."""
    gain = [0.002 * (1 + i % 3) for i in range(12)]
    base = [0.80 + 0.01 * i for i in range(12)]
    return [
        *seeded("p", "digits", "kd", {"accuracy": base}, modality="image"),
        *seeded("p", "digits", "e2kd", {"accuracy": np.add(base, gain).tolist()}, modality="image"),
        *seeded("p", "fashion", "kd", {"accuracy": base[:3]}, modality="image"),
        *seeded("p", "fashion", "e2kd", {"accuracy": np.add(base[:3], gain[:3]).tolist()},
                modality="image"),
    ]  # fmt: skip


def test_a_screen_beside_twelve_seeds_neither_dilutes_the_part_nor_joins_its_holm_family() -> None:
    # e2kd keeps kd's accuracy on twelve seeds of one dataset; a screen of three seeds on another
    # cannot be supported whatever its values, and once made the part "mixed".
    records = twelve_seeds_and_a_screen()
    claim = verdicts_for(records)["e2kd"]
    decided = result_of(claim, "e2kd", "accuracy", "digits")
    screen = result_of(claim, "e2kd", "accuracy", "fashion")
    assert screen.stats["n"] == 3 and screen.verdict == "too few seeds"
    # Outside the family, detecting nothing, and never said to need fewer seeds than it can use.
    assert math.isnan(screen.p_holm) and math.isnan(screen.mde_80)
    assert screen.stats["seeds_for_80_power"] >= 5
    assert claim.too_few_seeds == ["p/fashion (3 seeds)"]
    assert decided.family_size == 1 and decided.p_holm == pytest.approx(decided.stats["p_value"])
    assert decided.verdict == "supported"
    assert claim.part_verdicts["prediction"] == "supported"
    assert {d.dataset: d.verdict for d in claim.datasets}["fashion"] == "too few seeds"


@pytest.mark.parametrize(
    ("floors", "reachable"),
    [
        ([2 / 64, 2 / 64], [False, False]),
        ([2 / 256, 2 / 64], [True, True]),
        ([2 / 256, 2 / 64, 2 / 64], [True, False, False]),
        ([1.0, 2 / 256], [False, True]),  # an unreliable test keeps its place in m
        ([2 / 256, math.nan], [True, False]),
        ([], []),
    ],
)
def test_holm_reaches_a_test_only_if_some_step_can_reject_it(floors, reachable) -> None:
    assert holm_reachable(floors) == reachable


def test_a_test_beyond_every_reachable_step_of_its_family_has_too_few_seeds() -> None:
    # e2kd agrees more with the teacher on every seed of three datasets: 8 seeds on a, 6 on b
    # and c. Holm over the three: a at 3 × 2/256 < 0.05; b and c need 2/64 < 0.05 / 2 at the
    # second step, out of reach whatever their values. Without c, b is reached at that step.
    def gains(n: int) -> list[float]:
        return [0.02 + 0.01 * (i % 4) for i in range(n)]

    def records(sizes: dict[str, int]) -> list[dict]:
        return [
            record
            for dataset, n in sizes.items()
            for method, shift in (("kd", [0.0] * n), ("e2kd", gains(n)))
            for record in seeded("p", dataset, method,
                                 {"expl_spearman_ig": np.add(BASE[:n], shift).tolist()},
                                 modality="image")
        ]  # fmt: skip

    claim = verdicts_for(records({"a": 8, "b": 6, "c": 6}))["e2kd"]
    a, b, c = (result_of(claim, "e2kd", "expl_spearman_ig", d) for d in "abc")
    assert a.verdict == "supported" and a.p_holm == pytest.approx(3 * 2 / 256)
    assert [b.verdict, c.verdict] == ["too few seeds"] * 2
    assert all(r.family_size == 3 for r in (a, b, c))
    assert math.isnan(b.mde_80) and b.stats["std_diff"] > 0 and not math.isnan(a.mde_80)
    assert claim.part_verdicts["explanation"] == "supported"
    claim = verdicts_for(records({"a": 8, "b": 6}))["e2kd"]
    b = result_of(claim, "e2kd", "expl_spearman_ig", "b")
    assert b.verdict == "supported" and b.p_holm == pytest.approx(2 / 64)
    assert not math.isnan(b.mde_80)


def test_three_seeds_still_contradict_a_non_inferiority_their_interval_rules_out() -> None:
    # A loss of 5 points on each of three seeds, against a margin of 1: the interval needs no p.
    base = [0.80, 0.85, 0.90]
    lost = np.subtract(base, [0.05, 0.051, 0.049]).tolist()
    records = [
        *seeded("p", "digits", "kd", {"accuracy": base}, modality="image"),
        *seeded("p", "digits", "e2kd", {"accuracy": lost}, modality="image"),
    ]
    accuracy = result_of(verdicts_for(records)["e2kd"], "e2kd", "accuracy")
    assert accuracy.stats["ci95_high"] < -0.01 and math.isnan(accuracy.p_holm)
    assert accuracy.verdict == "contradicted"


def test_a_test_with_too_few_seeds_on_an_unreliable_metric_has_no_place_in_the_family() -> None:
    # Twelve seeds on digits, three on fashion whose metric also fails a reliability check.
    records = twelve_seeds_and_a_screen()
    (claim,) = [
        v
        for v in evaluate_all(seed_values(records), unreliable={("p", "fashion", "accuracy")})
        if v.claim.key == "e2kd"
    ]
    assert result_of(claim, "e2kd", "accuracy", "fashion").verdict == "too few seeds"
    assert result_of(claim, "e2kd", "accuracy", "digits").family_size == 1


def test_a_supported_part_beside_one_with_too_few_seeds_makes_the_claim_partly_supported() -> None:
    assert intersection(["supported", "too few seeds"]) == "partly supported"
    assert intersection(["too few seeds", "not measured"]) == "too few seeds"
    assert intersection(["inconclusive", "too few seeds"]) == "inconclusive"
    assert combine_part(["too few seeds", "unreliable metric"]) == "too few seeds"


def test_a_claim_with_too_few_seeds_everywhere_has_no_stability() -> None:
    records = [
        *seeded("p", "digits", "kd", {"expl_spearman_ig": [0.1, 0.2, 0.3]}, modality="image"),
        *seeded("p", "digits", "e2kd", {"expl_spearman_ig": [0.4, 0.5, 0.6]}, modality="image"),
    ]
    claim = verdicts_for(records)["e2kd"]
    assert claim.verdict == claim.called == "too few seeds" and math.isnan(claim.stability)
