"""Ranks with CI ties, average ranks and paired comparisons, checked against values done by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.leaderboard import aggregate
from bench.statistics import (
    average_ranks,
    ci_ranks,
    compare,
    outcome,
    paired_difference,
    seed_values,
)
from tests.recordkit import make_record, seeded

T_975_DF2 = 4.302653  # Student-t quantiles, from tables
T_975_DF1 = 12.706205


@pytest.fixture(scope="module")
def records() -> list[dict]:
    """Dataset `toy` (3 seeds, b only 2) and dataset `one` (1 seed), plus reference rows."""
    toy = [
        *seeded("p", "toy", "scratch", {"accuracy": [0.80, 0.82, 0.84], "log_loss": [0.5] * 3}),
        *seeded("p", "toy", "kd", {"accuracy": [0.90, 0.91, 0.92], "log_loss": [0.3, 0.31, 0.32]}),
        *seeded("p", "toy", "a", {"accuracy": [0.60, 0.61, 0.62]}),
        *seeded("p", "toy", "b", {"accuracy": [0.86, 0.92]}),
        make_record("p", "toy", "teacher", 0, {"accuracy": 0.99}, role="teacher"),
        make_record("p", "toy", "random_explainer", 0, {"expl_spearman_ig": 0.0}, role="control"),
        make_record("p", "toy", "scratch", 3, {"accuracy": 0.1}, status="failed"),
    ]
    one = [
        make_record("p", "one", "scratch", 0, {"accuracy": 0.8}),
        make_record("p", "one", "kd", 0, {"accuracy": 0.9}),
        make_record("p", "one", "a", 0, {"accuracy": 0.9}),
    ]
    return toy + one


@pytest.fixture(scope="module")
def ranked(records: list[dict]) -> pd.DataFrame:
    return ci_ranks(aggregate(records))


def rank_of(ranked: pd.DataFrame, dataset: str, method: str, metric: str) -> float:
    row = ranked[
        (ranked.dataset == dataset) & (ranked.method == method) & (ranked.metric == metric)
    ]
    return float(row["rank"].iloc[0])


def test_rank_counts_methods_whose_interval_lies_entirely_better(ranked: pd.DataFrame) -> None:
    # toy accuracy intervals (mean ± t·sd/√n):
    #   kd      0.91 ± 4.302653·0.01/√3 = [0.8852, 0.9348]
    #   scratch 0.82 ± 4.302653·0.02/√3 = [0.7703, 0.8697]
    #   a       0.61 ± 0.0248           = [0.5852, 0.6348]
    #   b       0.89 ± 12.706·0.04243/√2 = [0.5088, 1.2712]  (two seeds: wide, overlaps all)
    assert rank_of(ranked, "toy", "kd", "accuracy") == 1
    assert rank_of(ranked, "toy", "b", "accuracy") == 1  # tied with kd: the intervals overlap
    assert rank_of(ranked, "toy", "scratch", "accuracy") == 2  # kd lies entirely above it
    assert rank_of(ranked, "toy", "a", "accuracy") == 3  # scratch and kd above; b overlaps
    assert set(
        ranked[(ranked.dataset == "toy") & (ranked.metric == "accuracy")].rank_of.dropna()
    ) == {4}


def test_rank_direction_follows_the_metric(ranked: pd.DataFrame) -> None:
    # log_loss is lower-is-better: kd [0.2852, 0.3348] lies entirely below scratch's [0.5, 0.5].
    assert rank_of(ranked, "toy", "kd", "log_loss") == 1
    assert rank_of(ranked, "toy", "scratch", "log_loss") == 2


def test_single_seed_ranks_are_competition_ranks_of_means(ranked: pd.DataFrame) -> None:
    assert rank_of(ranked, "one", "kd", "accuracy") == 1
    assert rank_of(ranked, "one", "a", "accuracy") == 1  # equal means tie
    assert rank_of(ranked, "one", "scratch", "accuracy") == 3


def test_teacher_and_control_rows_are_not_ranked(ranked: pd.DataFrame) -> None:
    references = ranked[ranked.method.isin(["teacher", "random_explainer"])]
    assert len(references) == 2 and references["rank"].isna().all()


def test_interval_values_match_the_hand_computation(ranked: pd.DataFrame) -> None:
    kd = ranked[(ranked.dataset == "toy") & (ranked.method == "kd") & (ranked.metric == "accuracy")]
    half = T_975_DF2 * 0.01 / math.sqrt(3)
    assert (kd.ci95_low.iloc[0], kd.ci95_high.iloc[0]) == pytest.approx(
        (0.91 - half, 0.91 + half), rel=1e-6
    )
    scratch = ranked[(ranked.dataset == "toy") & (ranked.method == "scratch")]
    assert int(scratch[scratch.metric == "accuracy"].n.iloc[0]) == 3  # the failed seed 3 is out


def test_average_rank_is_the_mean_over_the_track_datasets(ranked: pd.DataFrame) -> None:
    averages = average_ranks(ranked)
    acc = averages[averages.metric == "accuracy"].set_index("method")
    assert acc.loc["kd", "mean_rank"] == 1.0 and acc.loc["kd", "n_datasets"] == 2
    assert acc.loc["scratch", "mean_rank"] == pytest.approx((2 + 3) / 2)
    assert acc.loc["a", "mean_rank"] == pytest.approx((3 + 1) / 2)
    assert acc.loc["b", "mean_rank"] == 1.0 and acc.loc["b", "n_datasets"] == 1
    assert "teacher" not in acc.index


def test_paired_comparison_by_hand(records: list[dict]) -> None:
    table = compare(seed_values(records))
    row = table[
        (table.dataset == "toy")
        & (table.method == "kd")
        & (table.baseline == "scratch")
        & (table.metric == "accuracy")
    ].iloc[0]
    # d = [0.10, 0.09, 0.08]: mean 0.09, sd 0.01, t = 0.09 / (0.01/√3) = 15.588 on 2 df, whose
    # two-sided p-value has the closed form 1 − t/√(t² + 2).
    t = 0.09 / (0.01 / math.sqrt(3))
    assert row.n == 3 and row.seeds == "0 1 2"
    assert row.mean_diff == pytest.approx(0.09)
    assert row.std_diff == pytest.approx(0.01)
    assert row.cohens_dz == pytest.approx(9.0)
    assert row.p_value == pytest.approx(1 - t / math.sqrt(t**2 + 2), rel=1e-6)
    half = T_975_DF2 * 0.01 / math.sqrt(3)
    assert (row.ci95_low, row.ci95_high) == pytest.approx((0.09 - half, 0.09 + half), rel=1e-6)
    assert row.outcome == "better"
    loss = table[(table.dataset == "toy") & (table.method == "kd") & (table.metric == "log_loss")]
    assert loss.iloc[0].outcome == "better"  # lower log-loss is better


def test_paired_comparison_uses_only_matching_seeds(records: list[dict]) -> None:
    table = compare(seed_values(records))
    row = table[(table.method == "b") & (table.baseline == "scratch")].iloc[0]
    # Seeds 0 and 1 only: d = [0.06, 0.10], mean 0.08, sd 0.02828, t = 4 on 1 df, whose two-sided
    # p-value is 1 − 2·atan(t)/π.
    assert row.n == 2 and row.seeds == "0 1"
    assert row.mean_diff == pytest.approx(0.08)
    assert row.cohens_dz == pytest.approx(0.08 / (0.04 / math.sqrt(2)))
    assert row.p_value == pytest.approx(1 - 2 * math.atan(4.0) / math.pi, rel=1e-6)
    half = T_975_DF1 * 0.02828427 / math.sqrt(2)
    assert row.ci95_low == pytest.approx(0.08 - half, rel=1e-5)
    assert row.outcome == "inconclusive"


def test_each_method_is_compared_with_scratch_and_kd_but_not_itself(records: list[dict]) -> None:
    table = compare(seed_values(records))
    toy = table[(table.dataset == "toy") & (table.metric == "accuracy")]
    pairs = set(zip(toy.method, toy.baseline, strict=True))
    assert pairs == {
        ("a", "scratch"), ("b", "scratch"), ("kd", "scratch"),
        ("a", "kd"), ("b", "kd"), ("scratch", "kd"),
    }  # fmt: skip
    assert "teacher" not in set(table.method)


def test_fewer_than_two_pairs_give_nan() -> None:
    result = paired_difference({0: 0.9}, {0: 0.8})
    assert result["n"] == 1 and result["mean_diff"] == pytest.approx(0.1)
    assert all(math.isnan(result[k]) for k in ("ci95_low", "ci95_high", "cohens_dz", "p_value"))
    assert paired_difference({0: 1.0}, {1: 1.0})["n"] == 0
    # No spread in the differences: no effect size or test, but a (zero-width) interval.
    same = paired_difference({0: 1.0, 1: 2.0}, {0: 0.0, 1: 1.0})
    assert math.isnan(same["cohens_dz"]) and math.isnan(same["p_value"])
    assert same["ci95_low"] == same["ci95_high"] == pytest.approx(1.0)


def test_outcome_reads_the_interval_with_the_metric_direction() -> None:
    assert outcome(True, 0.1, 0.2) == "better"
    assert outcome(False, 0.1, 0.2) == "worse"
    assert outcome(False, -0.2, -0.1) == "better"
    assert outcome(True, -0.1, 0.2) == "inconclusive"
    assert outcome(None, 0.1, 0.2) == "inconclusive"
    assert outcome(True, np.nan, np.nan) == "inconclusive"
