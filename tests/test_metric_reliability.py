"""Which metrics may rank students and decide claims (`bench.report.reliability`), and how stable
a claim's verdict is over resampled seeds (`bench.report.stability`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.report.claims import UNRELIABLE, evaluate_all
from bench.report.leaderboard import aggregate
from bench.report.reliability import SPLIT_HALF_MIN, failing, reliability_table
from bench.report.stability import (
    STABLE,
    called,
    generators,
    resample,
    stability_error,
    verdict_stability,
)
from bench.report.statistics import ci_ranks, seed_values, student_values
from tests.recordkit import seeded

SEEDS = 8


def _with_halves(records: list[dict], metric: str, halves: list[tuple[float, float]]) -> None:
    for record, (a, b) in zip(records, halves, strict=True):
        record["metric_metadata"][metric]["split_halves"] = [a, b]


def _students(rng: np.random.Generator, reliable_halves: bool) -> list[dict]:
    """Three methods, eight seeds each: accuracy differs by method, IG agreement does not; IG's
    split halves agree across runs (a reliable measurement) or are unrelated noise."""
    records = []
    # Every method draws its agreement from one list, shuffled: no difference between them.
    agreement = list(0.5 + 0.05 * rng.standard_normal(SEEDS))
    for method, level in (("scratch", 0.70), ("kd", 0.80), ("label_smoothing", 0.75)):
        accuracy = list(level + 0.01 * rng.standard_normal(SEEDS))
        agreement = list(rng.permutation(agreement))
        runs = seeded("p", "wine", method, {"accuracy": accuracy, "expl_spearman_ig": agreement})
        noise = 0.002 if reliable_halves else 0.5
        _with_halves(
            runs,
            "expl_spearman_ig",
            [(v + noise * rng.standard_normal(), v + noise * rng.standard_normal())
             for v in agreement],
        )  # fmt: skip
        records += runs
    return records


def test_discrimination_and_split_halves_are_measured_by_their_stated_rules() -> None:
    rng = np.random.default_rng(0)
    table = reliability_table(_students(rng, reliable_halves=True)).set_index("metric")
    assert table.loc["accuracy", "discriminates"] and table.loc["accuracy", "friedman_p"] < 0.01
    assert not table.loc["expl_spearman_ig", "discriminates"]
    assert table.loc["expl_spearman_ig", "split_half"] > 0.99
    assert table.loc["expl_spearman_ig", "split_half_runs"] == 3 * SEEDS
    # Accuracy has no samples to split: the check does not apply, and it ranks.
    assert table.loc["accuracy", "split_half_holds"] == "n/a" and table.loc["accuracy", "ranks_it"]
    # No Quantus metric here: separation does not apply.
    assert (table.separates == "n/a").all()
    # IG agreement cannot rank students (it does not tell them apart) but may decide a claim.
    assert not table.loc["expl_spearman_ig", "ranks_it"]
    assert table.loc["expl_spearman_ig", "decides_verdicts"]
    assert "does not tell the students apart" in table.loc["expl_spearman_ig", "reason"]

    noisy = reliability_table(_students(rng, reliable_halves=False)).set_index("metric")
    assert noisy.loc["expl_spearman_ig", "split_half"] < SPLIT_HALF_MIN
    assert not noisy.loc["expl_spearman_ig", "decides_verdicts"]
    assert "split-half reliability" in noisy.loc["expl_spearman_ig", "reason"]


def test_discrimination_is_friedmans_test_and_undefined_below_three_methods() -> None:
    from scipy import stats

    rng = np.random.default_rng(1)
    records = _students(rng, reliable_halves=True)
    table = reliability_table(records).set_index("metric")
    seeds = seed_values(records)
    acc = seeds[seeds.metric == "accuracy"].sort_values(["method", "seed"])
    expected = stats.friedmanchisquare(*(g.value for _, g in acc.groupby("method")))
    assert table.loc["accuracy", "friedman_p"] == pytest.approx(expected.pvalue)
    # Two methods: no omnibus test, which is no failure (the paired ranks still decide).
    two = [r for r in records if r["method"]["name"] != "label_smoothing"]
    both = reliability_table(two).set_index("metric")
    assert both.loc["accuracy", "discriminates"] == "n/a" and both.loc["accuracy", "ranks_it"]
    assert both.loc["accuracy", "reason"] == ""
    # No student at all: an empty table, and the report does not stumble on it.
    teachers = [r for r in records if False]
    assert (
        reliability_table(teachers).empty
        and failing(reliability_table(teachers), "ranks_it") == set()
    )


def test_an_unreliable_metric_ranks_no_one_and_decides_no_claim() -> None:
    rng = np.random.default_rng(2)
    records = []
    for method, gain in (("gbdt2nn", 0.0), ("gbdt2nn_joint", 0.1)):
        values = list(0.5 + gain + 0.01 * rng.standard_normal(SEEDS))
        records += seeded(
            "p", "wine", method, {"expl_spearman_shapley": values, "accuracy": values}
        )
    seeds = seed_values(records)
    unreliable = {("p", "wine", "expl_spearman_shapley")}
    claim = next(v for v in evaluate_all(seeds, unreliable=unreliable)
                 if v.claim.key == "explanation_imitation")  # fmt: skip
    trusted = next(v for v in evaluate_all(seeds) if v.claim.key == "explanation_imitation")
    assert trusted.part_verdicts["explanation"] == "supported"
    held_out = [r for d in claim.datasets for r in d.results if r.metric == "expl_spearman_shapley"]
    assert held_out and all(r.verdict == UNRELIABLE for r in held_out)
    assert claim.part_verdicts["explanation"] == "not measured"
    ranked = ci_ranks(aggregate(records), seeds, unranked=unreliable)
    assert ranked[ranked.metric == "expl_spearman_shapley"]["rank"].isna().all()
    assert ranked[ranked.metric == "accuracy"]["rank"].notna().all()
    assert failing(pd.DataFrame({"profile": ["p"], "dataset": ["wine"], "metric": ["m"],
                                 "ranks_it": [False]}), "ranks_it") == {("p", "wine", "m")}  # fmt: skip


def _values(n: int, gain: float, spread: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    records = []
    for method, shift in (("a", 0.0), ("b", gain)):
        values = list(0.5 + shift + spread * rng.standard_normal(n))
        records += seeded("p", "wine", method, {"accuracy": values})
    for record in records:
        record["teacher"] = {"seed": record["seed"] % 3}
    values, _ = student_values(seed_values(records))
    return values


def test_a_resample_keeps_pairs_and_each_teachers_share() -> None:
    values = _values(12, 0.1, 0.01, 0)
    drawn = resample(values, generators(values))
    (a_values, a_teachers), (b_values, b_teachers) = drawn["p", "wine", "accuracy"].values()
    assert len(a_values) == len(b_values) == 12
    assert a_teachers == b_teachers  # every drawn seed keeps both students and one teacher
    assert sorted(a_teachers.values()).count(0) == 4  # four seeds per teacher, as drawn from
    original = values["p", "wine", "accuracy"]
    for k in a_values:
        # The two students of a drawn seed are one original seed's pair.
        pairs = {(original["a"][0][s], original["b"][0][s]) for s in original["a"][0]}
        assert (a_values[k], b_values[k]) in pairs


def _gain(values: dict) -> str:
    """Supported where b beats a by more than 0.05 on wine, on the seeds drawn."""
    a, b = (dict(m[0]) for m in values["p", "wine", "accuracy"].values())
    diffs = [b[s] - a[s] for s in a]
    return "supported" if np.mean(diffs) > 0.05 else "inconclusive"


def test_a_clear_effect_is_stable_and_a_marginal_one_is_not() -> None:
    verdict = _gain

    clear = _values(12, 0.2, 0.01, 1)
    assert verdict_stability(verdict, clear, "supported") == 1.0
    marginal = _values(12, 0.05, 0.05, 2)
    share = verdict_stability(verdict, marginal, verdict(marginal))
    assert 0 < share < 1
    assert called("supported", STABLE - 0.01) == "unstable"
    assert called("supported", STABLE) == "supported"
    assert called("inconclusive", 0.1) == "inconclusive"
    assert called("too few seeds", 0.1) == "too few seeds"
    # √(s(1 − s)/R): 0.8 over 1 000 resamples is known to about ±0.013.
    assert stability_error(0.8, 1000) == pytest.approx(0.012649, abs=1e-6)


def test_a_datasets_draws_do_not_depend_on_the_other_datasets_in_the_records() -> None:
    alone = _values(12, 0.05, 0.05, 2)
    beside = {**alone, **{("q", "other", k[2]): v for k, v in _values(12, 0.1, 0.01, 3).items()}}
    one, two = resample(alone, generators(alone)), resample(beside, generators(beside))
    assert one["p", "wine", "accuracy"] == two["p", "wine", "accuracy"]
    assert verdict_stability(_gain, alone, "supported") == verdict_stability(
        _gain, beside, "supported"
    )


def test_friedman_and_the_critical_difference_follow_demsar() -> None:
    from scipy import stats

    from bench.report.friedman import cliques, critical_difference, friedman_table

    # Demšar 2006, Table 5(a): q_0.05 = 2.569 for four classifiers, 2.850 for six.
    assert critical_difference(4, 10) == pytest.approx(2.569 * (4 * 5 / 60) ** 0.5, abs=1e-3)
    assert critical_difference(6, 12) == pytest.approx(2.850 * (6 * 7 / 72) ** 0.5, abs=1e-3)
    assert cliques(["a", "b", "c", "d"], np.array([1.0, 1.5, 3.0, 3.2]), 1.0) == [
        ["a", "b"], ["c", "d"],
    ]  # fmt: skip
    rng = np.random.default_rng(3)
    records = []
    for method, level in (("a", 0.5), ("b", 0.6), ("c", 0.7), ("d", 0.7)):
        records += seeded(
            "p", "wine", method, {"accuracy": list(level + 0.02 * rng.standard_normal(SEEDS))}
        )
    values, info = student_values(seed_values(records))
    table = friedman_table(values, info).iloc[0]
    by_method = values["p", "wine", "accuracy"]
    expected = stats.friedmanchisquare(*(list(by_method[m][0].values()) for m in "abcd"))
    assert table.chi2 == pytest.approx(expected.statistic) and table.differ
    assert table.scope == "every method" and table.seeds == SEEDS
    assert table.mean_ranks.startswith(("c", "d"))  # the best by accuracy ranks first
    assert friedman_table(values, {}).empty  # a metric without a direction is not tested


def test_the_resamples_normal_limit_of_the_sign_flip_test_agrees_with_its_patterns() -> None:
    from bench.report.statistics import sign_flip_pvalues

    rng = np.random.default_rng(4)
    diffs = rng.normal(0.3, 1.0, (6, 40))
    for alternative in ("two-sided", "greater", "less"):
        drawn, method = sign_flip_pvalues(diffs, alternative)
        limit, limit_method = sign_flip_pvalues(diffs, alternative, monte_carlo=False)
        assert (method, limit_method) == ("monte_carlo", "normal")
        assert limit == pytest.approx(drawn, abs=0.01)
    # Up to 16 pairs the test stays exact either way.
    assert sign_flip_pvalues(diffs[:, :8], monte_carlo=False)[1] == "exact"


def test_split_halves_are_the_same_samples_for_every_model() -> None:
    from bench.metrics import aggregate_samples

    # One undefined sample does not move the later ones into the other half.
    _, meta = aggregate_samples(np.array([1.0, np.nan, 3.0, 4.0, 5.0]))
    assert meta["split_halves"] == [3.0, 4.0]
    assert aggregate_samples(np.array([2.0, np.nan]))[1]["split_halves"] is None
