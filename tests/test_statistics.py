"""Paired sign-flip tests, Holm, power, paired ranks, average ranks and the control floor.

Checked against values done by hand (or by brute force with exact fractions). Several tests pin
behaviour the interval-based statistics got wrong: a zero-width interval decided outcomes, three
seeds could "prove" a difference, and overlapping intervals hid consistent paired differences.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from bench.core.vocabulary import FLOOR_ROWS, OTHER_TEACHER
from bench.report.leaderboard import aggregate, aggregate_seeds
from bench.report.separation import separation_table
from bench.report.statistics import (
    average_ranks,
    ci_ranks,
    compare,
    explanation_excess,
    holm,
    outcome,
    paired_difference,
    paired_ranks,
    ranking_scope,
    seed_values,
    seeds_for_power,
    seeds_for_power_many,
    sign_flip_pvalue,
    sign_flip_pvalues,
    t_test_power,
)
from tests.recordkit import make_record, seeded

T_975_DF2 = 4.302653  # Student-t quantiles, from tables
T_975_DF1 = 12.706205


def with_teacher(records: list[dict], seed_of: dict[int, int] | int | None) -> list[dict]:
    """The records with `teacher.seed` set: a fixed seed, or per student seed."""
    for record in records:
        if seed_of is None:
            record["teacher"] = {"kind": "lightgbm"}
        else:
            seed = seed_of if isinstance(seed_of, int) else seed_of[record["seed"]]
            record["teacher"] = {"kind": "lightgbm", "seed": seed}
    return records


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


def ranks_of(records: list[dict]) -> pd.DataFrame:
    return ci_ranks(aggregate(records), seed_values(records))


def rank_of(ranked: pd.DataFrame, dataset: str, method: str, metric: str) -> float:
    row = ranked[
        (ranked.dataset == dataset) & (ranked.method == method) & (ranked.metric == metric)
    ]
    return float(row["rank"].iloc[0])


# --- the sign-flip test ---------------------------------------------------------------------------


def brute_force_p(diffs: list[float], alternative: str = "two-sided") -> float:
    """Every sign pattern, in exact rational arithmetic: no float ties to worry about."""
    exact = [Fraction(str(d)) for d in diffs]
    observed = sum(exact)
    hits = 0
    for signs in itertools.product((1, -1), repeat=len(exact)):
        total = sum(s * d for s, d in zip(signs, exact, strict=True))
        if alternative == "two-sided":
            hits += abs(total) >= abs(observed)
        elif alternative == "greater":
            hits += total >= observed
        else:
            hits += total <= observed
    return hits / 2 ** len(exact)


def test_three_positive_differences_give_p_one_quarter_exactly() -> None:
    # Only the observed pattern and its mirror image reach |mean| = 0.09: p = 2/8. Three seeds
    # cannot show a difference at 5 %, however large and consistent; that is the honest answer.
    assert sign_flip_pvalue([0.10, 0.09, 0.08]) == 0.25
    assert sign_flip_pvalue([5.0, 5.0, 5.0]) == 0.25  # identical differences: no better
    assert sign_flip_pvalue([0.10, 0.09, 0.08], "greater") == 0.125
    assert sign_flip_pvalue([0.10, 0.09, 0.08], "less") == 1.0
    # The smallest two-sided p with n seeds is 2 / 2^n.
    assert [sign_flip_pvalue([1.0] * n) for n in range(2, 7)] == [0.5, 0.25, 0.125, 0.0625, 0.03125]
    assert sign_flip_pvalue([0.0, 0.0, 0.0]) == 1.0


@pytest.mark.parametrize(
    "diffs",
    [
        [0.3, -0.1, 0.25, 0.05, -0.02, 0.4, 0.11],
        [0.1, 0.2, 0.3, -0.1],  # 0.1+0.2+0.3-0.1 and -0.1+0.2+0.3+0.1: a tie that floats may break
        [0.1, 0.2, -0.3, 0.7, 0.1, 0.3],
        [-1.5, -2.0, 0.5],
    ],
)
def test_exact_enumeration_matches_brute_force(diffs: list[float]) -> None:
    for alternative in ("two-sided", "greater", "less"):
        assert sign_flip_pvalue(diffs, alternative) == pytest.approx(
            brute_force_p(diffs, alternative), abs=1e-12
        ), alternative


def test_many_tests_at_once_match_one_at_a_time() -> None:
    rng = np.random.default_rng(3)
    diffs = rng.normal(0.2, 1.0, size=(25, 9))
    p, method = sign_flip_pvalues(diffs)
    assert method == "exact"
    assert p == pytest.approx([sign_flip_pvalue(row) for row in diffs])


def test_above_sixteen_pairs_a_seeded_monte_carlo_is_used() -> None:
    rng = np.random.default_rng(1)
    diffs = rng.normal(0.3, 1.0, size=30)
    p, method = sign_flip_pvalues(diffs[None, :])
    assert method == "monte_carlo"
    again, _ = sign_flip_pvalues(diffs[None, :])
    assert p[0] == again[0]  # fixed seed: the same records give the same p
    # With 30 pairs the permutation distribution is close to the t-test's.
    t = diffs.mean() / (diffs.std(ddof=1) / math.sqrt(30))
    from scipy import stats

    assert p[0] == pytest.approx(2 * stats.t.sf(abs(t), 29), abs=0.01)
    # All 20 differences positive: only the observed pattern (counted once) reaches it.
    tiny, _ = sign_flip_pvalues(np.ones((1, 20)))
    assert tiny[0] == pytest.approx(1 / 100_001, abs=3 / 100_001)
    result = paired_difference(dict(enumerate(diffs)), dict.fromkeys(range(30), 0.0))
    assert result["p_method"] == "monte_carlo"


def test_holm_by_hand() -> None:
    # Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → made monotone: 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN is no test: it stays NaN and m is 2.
    adjusted = holm([0.01, math.nan, 0.02])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.02)
    assert math.isnan(adjusted[1])
    assert holm([0.3, 0.6]) == pytest.approx([0.6, 0.6])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 2·0.8 capped at 1


# --- power ----------------------------------------------------------------------------------------


def test_seeds_for_80_percent_power_match_known_values() -> None:
    # G*Power, "means: difference from constant (one sample / matched pairs)", two-tailed,
    # α = 0.05, power 0.8: d_z = 1 needs 10 pairs (actual power 0.803), 0.5 needs 34, 0.8 needs 15.
    assert seeds_for_power(1.0) == 10
    assert t_test_power(1.0, [9, 10]) == pytest.approx([0.7480, 0.8031], abs=5e-4)
    assert seeds_for_power(0.5) == 34
    assert seeds_for_power(0.8) == 15
    assert seeds_for_power(-1.0) == 10  # the sign of the effect does not matter
    assert math.isnan(seeds_for_power(0.0)) and math.isnan(seeds_for_power(math.nan))
    assert seeds_for_power(0.001) == math.inf  # past the 10 000 cap


def test_power_in_bulk_equals_one_at_a_time() -> None:
    effects = np.concatenate([np.geomspace(0.01, 30, 300), [0.0, math.nan, -2.0]])
    bulk = seeds_for_power_many(effects)
    single = np.array([seeds_for_power(d) for d in effects])
    assert np.array_equal(bulk, single, equal_nan=True)
    # And the answer is the smallest n with power ≥ 0.8, by brute force.
    for dz in (0.3, 1.7, 4.0):
        n = np.arange(2, 200)
        assert seeds_for_power(dz) == n[np.argmax(t_test_power(dz, n) >= 0.8)]


# --- paired comparisons ---------------------------------------------------------------------------


def test_paired_comparison_by_hand(records: list[dict]) -> None:
    table = compare(seed_values(records))
    row = table[
        (table.dataset == "toy")
        & (table.method == "kd")
        & (table.baseline == "scratch")
        & (table.metric == "accuracy")
    ].iloc[0]
    # d = [0.10, 0.09, 0.08]: mean 0.09, sd 0.01, d_z 9; sign-flip p = 2/8 = 0.25 however large
    # d_z is. (The t-test's p, 0.004, was the old answer: with three seeds it rests on normality.)
    assert row.n == 3 and row.seeds == "0 1 2"
    assert row.mean_diff == pytest.approx(0.09)
    assert row.std_diff == pytest.approx(0.01)
    assert row.cohens_dz == pytest.approx(9.0)
    assert row.p_value == 0.25 and row.p_method == "exact"
    half = T_975_DF2 * 0.01 / math.sqrt(3)
    assert (row.ci95_low, row.ci95_high) == pytest.approx((0.09 - half, 0.09 + half), rel=1e-6)
    # The interval excludes 0, but the test is not significant: no outcome (it was "better").
    assert row.outcome == "inconclusive"
    # The t-test would need 3 seeds, but the sign-flip test that decides cannot below 6.
    assert seeds_for_power(9.0) == 3 and row.seeds_for_80_power == 6
    # Holm over a, b, kd vs scratch on toy accuracy: 0.25·3 = 0.75 for the smallest.
    assert row.p_holm == pytest.approx(0.75)


def test_paired_comparison_uses_only_matching_seeds(records: list[dict]) -> None:
    table = compare(seed_values(records))
    row = table[(table.method == "b") & (table.baseline == "scratch")].iloc[0]
    # Seeds 0 and 1 only: d = [0.06, 0.10], mean 0.08, sd 0.02828; both positive: p = 2/4.
    assert row.n == 2 and row.seeds == "0 1"
    assert row.mean_diff == pytest.approx(0.08)
    assert row.cohens_dz == pytest.approx(0.08 / (0.04 / math.sqrt(2)))
    assert row.p_value == 0.5
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
    for key in ("ci95_low", "ci95_high", "cohens_dz", "p_value", "seeds_for_80_power"):
        assert math.isnan(result[key]), key
    assert paired_difference({0: 1.0}, {1: 1.0})["n"] == 0


def test_a_zero_width_interval_does_not_decide() -> None:
    # Every seed gives the same difference: the interval is [1, 1] and excludes 0, but that is no
    # evidence beyond the sign test's: p = 2/8, no d_z, no power estimate, no outcome.
    same = paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.0, 1: 1.0, 2: 2.0})
    assert same["ci95_low"] == same["ci95_high"] == pytest.approx(1.0)
    assert same["std_diff"] == 0
    assert same["p_value"] == 0.25
    assert math.isnan(same["cohens_dz"]) and math.isnan(same["seeds_for_80_power"])
    records = [
        *seeded("p", "d", "scratch", {"accuracy": [0.5, 0.6, 0.7]}),
        *seeded("p", "d", "kd", {"accuracy": [0.6, 0.7, 0.8]}),
    ]
    row = compare(seed_values(records), [("kd", "scratch")]).iloc[0]
    assert row.ci95_low == pytest.approx(row.ci95_high)
    assert row.outcome == "inconclusive"  # was "better": the zero-width interval excluded 0


def test_differences_equal_up_to_rounding_count_as_identical() -> None:
    # 0.65 − 0.6, 0.55 − 0.5, … are 0.05 on paper but differ in the last bits: their float sd is
    # 5e-17, which made d_z 10^15 and "2 seeds for 80 % power". It is zero.
    ours = dict(enumerate([0.65, 0.55, 0.3, 0.7, 0.15]))
    theirs = dict(enumerate([0.6, 0.5, 0.25, 0.65, 0.1]))
    result = paired_difference(ours, theirs)
    assert result["std_diff"] == 0.0
    assert result["ci95_low"] == result["ci95_high"] == result["mean_diff"]
    assert math.isnan(result["cohens_dz"]) and math.isnan(result["seeds_for_80_power"])
    assert result["p_value"] == pytest.approx(2 / 32)


def test_outcome_comes_from_the_holm_adjusted_sign_flip_p() -> None:
    base = [0.5, 0.9, 0.6, 0.8, 0.55, 0.75]
    records = [
        *seeded("p", "d", "scratch", {"accuracy": base}),
        *seeded("p", "d", "kd", {"accuracy": [v + 0.01 for v in base]}),
    ]
    alone = compare(seed_values(records))
    kd = alone[(alone.method == "kd") & (alone.baseline == "scratch")].iloc[0]
    # Six consistent differences: p = 2/64 = 0.03125 < 0.05, a family of one.
    assert kd.p_value == pytest.approx(0.03125) and kd.p_holm == pytest.approx(0.03125)
    assert kd.outcome == "better"
    # Two more methods vs. scratch, just as consistent: Holm over three gives 3·0.03125 > 0.05.
    records += [
        *seeded("p", "d", "a", {"accuracy": [v + 0.02 for v in base]}),
        *seeded("p", "d", "b", {"accuracy": [v - 0.02 for v in base]}),
    ]
    table = compare(seed_values(records))
    vs_scratch = table[table.baseline == "scratch"].set_index("method")
    assert vs_scratch.p_holm.tolist() == pytest.approx([0.09375] * 3)
    assert set(vs_scratch.outcome) == {"inconclusive"}


def test_outcome_reads_the_p_value_with_the_metric_direction() -> None:
    assert outcome(True, 0.1, 0.01) == "better"
    assert outcome(False, 0.1, 0.01) == "worse"
    assert outcome(False, -0.1, 0.01) == "better"
    assert outcome(True, -0.1, 0.01) == "worse"
    assert outcome(True, 0.1, 0.05) == "inconclusive"
    assert outcome(None, 0.1, 0.01) == "inconclusive"
    assert outcome(True, 0.1, np.nan) == "inconclusive"


# --- teacher seeds --------------------------------------------------------------------------------


def test_seed_values_name_the_teacher_seed() -> None:
    with_seed = with_teacher(
        seeded("p", "d", "kd", {"accuracy": [0.1, 0.2, 0.3]}), {0: 0, 1: 1, 2: 0}
    )
    without = with_teacher(seeded("p", "d", "scratch", {"accuracy": [0.1]}), None)
    legacy = seeded("p", "d", "a", {"accuracy": [0.1]})
    legacy[0]["teacher"] = "wine-lightgbm-1a2b"  # a teacher key, not an object
    frame = seed_values(with_seed + without + legacy)
    assert "teacher_seed" in frame.columns
    by = frame.set_index(["method", "seed"]).teacher_seed
    assert [by["kd", s] for s in (0, 1, 2)] == [0, 1, 0]
    assert pd.isna(by["scratch", 0]) and pd.isna(by["a", 0])


def test_pairs_of_different_teacher_seeds_are_skipped() -> None:
    kd = with_teacher(seeded("p", "d", "kd", {"accuracy": [0.9, 0.8, 0.7]}), {0: 0, 1: 1, 2: 2})
    scratch = with_teacher(
        seeded("p", "d", "scratch", {"accuracy": [0.5, 0.5, 0.5]}), {0: 0, 1: 1, 2: 0}
    )
    row = compare(seed_values(kd + scratch)).query("method == 'kd'").iloc[0]
    assert row.seeds == "0 1" and row.n == 2 and row.teacher_mismatch == 1
    assert row.mean_diff == pytest.approx(0.35)


# --- ranks ----------------------------------------------------------------------------------------


def test_consistent_paired_differences_rank_apart_although_intervals_overlap() -> None:
    # Seeds vary a lot (0.5 … 0.9) but b beats a by 0.01 and c by 0.02 on every one of 8 seeds.
    base = [0.5, 0.9, 0.6, 0.8, 0.55, 0.75, 0.65, 0.7]
    records = [
        *seeded("p", "d", "a", {"accuracy": base, "log_loss": base}),
        *seeded("p", "d", "b", {"accuracy": [v + 0.01 for v in base],
                                "log_loss": [v + 0.01 for v in base]}),
        *seeded("p", "d", "c", {"accuracy": [v + 0.02 for v in base],
                                "log_loss": [v + 0.02 for v in base]}),
    ]  # fmt: skip
    frame = aggregate(records)
    acc = frame[frame.metric == "accuracy"].set_index("method")
    assert acc.loc["c", "ci95_low"] < acc.loc["a", "ci95_high"]  # the intervals overlap widely
    ranked = ci_ranks(frame, seed_values(records))
    # Every pair: p = 2/256, Holm over 3 pairs ≤ 0.0234 < 0.05. Intervals would tie all three.
    assert [rank_of(ranked, "d", m, "accuracy") for m in "abc"] == [3, 2, 1]
    assert [rank_of(ranked, "d", m, "log_loss") for m in "abc"] == [1, 2, 3]  # lower is better
    assert set(ranked.rank_of) == {3} and set(ranked.rank_seeds) == {8}


def test_ranks_use_only_the_seeds_every_method_has() -> None:
    base = [0.5, 0.9, 0.6, 0.8, 0.55, 0.75, 0.65, 0.7]
    values = {
        "a": dict(enumerate(base)),
        "b": {s: v + 0.01 for s, v in enumerate(base)},
        "c": {s: v + 0.5 for s, v in enumerate(base[:6])},  # two seeds fewer
    }
    ranks, n_seeds = paired_ranks({m: (v, {}) for m, v in values.items()}, True)
    # Six common seeds: each p = 2/64, Holm over 3 pairs: 0.094 — no pair is significant.
    assert n_seeds == 6 and ranks == {"a": 1, "b": 1, "c": 1}
    without_c, n_seeds = paired_ranks({m: (values[m], {}) for m in "ab"}, True)
    assert n_seeds == 8 and without_c == {"a": 2, "b": 1}


def test_three_seeds_rank_everyone_first(records: list[dict]) -> None:
    # With three seeds no pair can be significant (p ≥ 0.25): the table does not separate the
    # students, and says so by ranking them all 1. (Interval ranks put a third.)
    ranked = ranks_of(records)
    toy = ranked[(ranked.dataset == "toy") & (ranked.metric == "accuracy") & ranked["rank"].notna()]
    assert set(toy["rank"]) == {1} and set(toy.rank_of) == {3}
    # b has two seeds: a screen beside three methods of three seeds, which rank on their three.
    assert set(toy.rank_seeds) == {3} and "b" not in set(toy.method)
    b = ranked[(ranked.dataset == "toy") & (ranked.method == "b")]
    assert b.screen.all() and not toy.screen.any()
    assert rank_of(ranked, "one", "scratch", "accuracy") == 1  # one seed: no test


def test_screens_are_left_out_so_the_twelve_seed_methods_can_be_told_apart() -> None:
    # Three methods at twelve seeds that differ seed by seed, and two screens at three seeds.
    # Ranked on the three seeds all five share, nothing could be significant (p ≥ 0.25); ranked
    # on their own twelve, the three separate, and the screens get no rank and no Friedman row.
    base = np.linspace(0.70, 0.75, 12)
    values = {"a": base, "b": base + 0.01, "c": base + 0.02}
    by_method = {m: (dict(enumerate(v)), {}) for m, v in values.items()}
    by_method |= {s: (dict(enumerate(base[:3] + 0.1)), {}) for s in ("s1", "s2")}
    methods, seeds, scope = ranking_scope(by_method)
    assert methods == ["a", "b", "c"] and seeds == list(range(12))
    assert scope == "the 3 methods with 12 seeds"
    ranks, n_seeds = paired_ranks(by_method, higher_is_better=True)
    assert ranks == {"a": 3, "b": 2, "c": 1} and n_seeds == 12


def test_teacher_and_control_rows_are_not_ranked(records: list[dict]) -> None:
    ranked = ranks_of(records)
    references = ranked[ranked.method.isin(["teacher", "random_explainer"])]
    assert len(references) == 2 and references["rank"].isna().all()


def test_interval_values_match_the_hand_computation(records: list[dict]) -> None:
    ranked = ranks_of(records)
    kd = ranked[(ranked.dataset == "toy") & (ranked.method == "kd") & (ranked.metric == "accuracy")]
    half = T_975_DF2 * 0.01 / math.sqrt(3)
    assert (kd.ci95_low.iloc[0], kd.ci95_high.iloc[0]) == pytest.approx(
        (0.91 - half, 0.91 + half), rel=1e-6
    )
    scratch = ranked[(ranked.dataset == "toy") & (ranked.method == "scratch")]
    assert int(scratch[scratch.metric == "accuracy"].n.iloc[0]) == 3  # the failed seed 3 is out


def test_average_ranks_only_over_methods_present_on_every_dataset() -> None:
    base = [0.5, 0.9, 0.6, 0.8, 0.55, 0.75, 0.65, 0.7]
    shifted = {k: [v + k for v in base] for k in (0.0, 0.01, 0.02)}
    records = [
        # d1: c > b > a on every seed; d2: a > b; c never ran on d2.
        *seeded("p", "d1", "a", {"accuracy": shifted[0.0]}),
        *seeded("p", "d1", "b", {"accuracy": shifted[0.01]}),
        *seeded("p", "d1", "c", {"accuracy": shifted[0.02]}),
        *seeded("p", "d2", "a", {"accuracy": shifted[0.01]}),
        *seeded("p", "d2", "b", {"accuracy": shifted[0.0]}),
    ]
    seeds = seed_values(records)
    ranked = ci_ranks(aggregate(records), seeds)
    assert [rank_of(ranked, "d1", m, "accuracy") for m in "abc"] == [3, 2, 1]
    averages = average_ranks(ranked, seeds).set_index("method")
    # Among a and b alone: d1 b 1, a 2; d2 a 1, b 2. (With c counted on d1, a would average
    # (3 + 1)/2 = 2 and b (2 + 2)/2 = 2, and c 1 "on average" from one dataset.)
    assert averages.loc["a", "mean_rank"] == pytest.approx(1.5)
    assert averages.loc["b", "mean_rank"] == pytest.approx(1.5)
    assert (
        averages.loc["a", "n_datasets"] == 2 and averages.loc["a", "dataset_ranks"] == "d1 2, d2 1"
    )
    assert math.isnan(averages.loc["c", "mean_rank"]) and averages.loc["c", "n_datasets"] == 1
    assert "d2" in averages.loc["c", "note"]
    assert list(averages.index) == ["a", "b", "c"]  # the unranked row last


def test_average_rank_keeps_the_report_columns(records: list[dict]) -> None:
    seeds = seed_values(records)
    averages = average_ranks(ci_ranks(aggregate(records), seeds), seeds)
    assert {"profile", "modality", "method", "metric", "mean_rank", "n_datasets"} <= set(
        averages.columns
    )
    acc = averages[averages.metric == "accuracy"].set_index("method")
    assert "teacher" not in acc.index
    # Three seeds decide nothing: every student ranks 1 on both datasets, so no average is made
    # (averaging forced 1s would flatter whoever ranks low on a decided dataset).
    assert acc.mean_rank.isna().all() and (acc.n_datasets == 0).all()
    assert acc.note.str.startswith("too few shared seeds on every dataset of the track").all()


# --- excess over the control floor ----------------------------------------------------------------


def test_excess_over_the_strongest_floor_of_the_same_teacher_seed() -> None:
    def control(method: str, teacher_seed: int, value: float) -> dict:
        record = make_record(
            "p", "d", method, teacher_seed, {"expl_spearman_ig": value}, role="control"
        )
        record["teacher"] = {"seed": teacher_seed}
        return record

    students = with_teacher(
        seeded("p", "d", "kd", {"expl_spearman_ig": [0.50, 0.60, 0.70], "accuracy": [0.9] * 3}),
        {0: 0, 1: 1, 2: 2},
    )
    teacher = make_record("p", "d", "teacher", 0, {"expl_spearman_ig": 1.0}, role="teacher")
    records = [
        control("random_explainer", 0, 0.05),
        control("permuted_teacher", 0, 0.20),  # the strongest floor of teacher seed 0
        control("random_explainer", 1, 0.10),
        control("untrained_student", 1, 0.02),
        teacher,
        *students,
    ]
    excess = explanation_excess(seed_values(records))
    assert set(excess.metric) == {"expl_spearman_ig_excess"}
    assert set(excess.method) == {"kd"}  # students only: no teacher, control or accuracy rows
    assert set(excess.category) == {"explanation_excess"} and excess.higher_is_better.all()
    by_seed = excess.set_index("seed").value
    assert by_seed[0] == pytest.approx(0.50 - 0.20)
    assert by_seed[1] == pytest.approx(0.60 - 0.10)
    # No control row for teacher seed 2: the mean of the other teachers' floors, (0.2 + 0.1)/2.
    assert by_seed[2] == pytest.approx(0.70 - 0.15)
    assert list(excess.teacher_seed) == [0, 1, 2]


def test_excess_without_teacher_seeds_uses_the_control_rows_seed() -> None:
    records = [
        make_record("p", "d", "random_explainer", 0, {"expl_spearman_ig": 0.1}, role="control"),
        *seeded("p", "d", "kd", {"expl_spearman_ig": [0.5, 0.6]}),
        *seeded("p", "other", "kd", {"expl_spearman_ig": [0.5]}),  # no control: no excess
    ]
    excess = explanation_excess(seed_values(records))
    assert excess.value.tolist() == pytest.approx([0.4, 0.5])
    assert set(excess.dataset) == {"d"}
    assert explanation_excess(seed_values(records[1:])).empty


def test_aggregating_seed_values_equals_aggregating_records(records: list[dict]) -> None:
    from_records = aggregate(records)
    from_seeds = aggregate_seeds(seed_values(records))
    pd.testing.assert_frame_equal(
        from_seeds.reset_index(drop=True), from_records.reset_index(drop=True), check_dtype=False
    )


def test_average_ranks_use_only_the_datasets_that_decide_something() -> None:
    """On `decided` seven seeds put kd ahead of scratch; on `flat` three seeds tell no one apart:
    only `decided` enters the average (a forced 1 on `flat` would lift scratch to 1.5)."""
    gain = [0.50, 0.90, 0.60, 0.80, 0.55, 0.75, 0.65]
    records = [
        *seeded("p", "decided", "scratch", {"accuracy": gain}),
        *seeded("p", "decided", "kd", {"accuracy": [v + 0.05 for v in gain]}),
        *seeded("p", "flat", "scratch", {"accuracy": gain[:3]}),
        *seeded("p", "flat", "kd", {"accuracy": [v + 0.05 for v in gain[:3]]}),
    ]
    seeds = seed_values(records)
    averages = average_ranks(ci_ranks(aggregate(records), seeds), seeds)
    acc = averages[averages.metric == "accuracy"].set_index("method")
    assert acc.loc["kd", "mean_rank"] == 1.0 and acc.loc["scratch", "mean_rank"] == 2.0
    assert set(acc.n_datasets) == {1} and set(acc.dataset_ranks.str.split().str[0]) == {"decided"}


def test_another_teacher_seed_is_a_level_never_a_floor() -> None:
    """`other_teacher` (a control row by role) agrees with the teacher far above any floor; an
    excess or a separation check against it would call every student unfaithful."""
    floor = make_record("p", "d", "permuted_teacher", 0, {"expl_spearman_ig": 0.2}, role="control")
    level = make_record("p", "d", OTHER_TEACHER.name, 0, {"expl_spearman_ig": 0.99}, role="control")
    students = seeded("p", "d", "kd", {"expl_spearman_ig": [0.5, 0.6]})
    excess = explanation_excess(seed_values([floor, level, *students]))
    assert excess.value.tolist() == pytest.approx([0.3, 0.4])
    detectors = {"concept_detectors": 10}
    teacher = make_record("p", "d", "teacher", 0, detectors, role="teacher")
    untrained = make_record("p", "d", "untrained_student", 0, {"concept_detectors": 0},
                            role="control")  # fmt: skip
    other = make_record("p", "d", OTHER_TEACHER.name, 0, {"concept_detectors": 9},
                        role="control")  # fmt: skip
    (checked,) = separation_table([teacher, untrained, other]).itertuples()
    assert checked.control == "untrained_student" and checked.control in FLOOR_ROWS


def test_differences_that_cancel_up_to_rounding_have_a_mean_of_zero() -> None:
    # 0.65 − 0.6 and 0.55 − 0.6 cancel, but in floats their mean is 5.6e-17.
    assert np.mean([0.65 - 0.6, 0.55 - 0.6]) != 0
    stats = paired_difference({0: 0.65, 1: 0.55}, {0: 0.6, 1: 0.6})
    assert stats["mean_diff"] == 0.0 and stats["cohens_dz"] == 0.0
    assert math.isnan(stats["seeds_for_80_power"])  # no effect to detect


def test_a_table_can_separate_methods_only_where_holms_first_step_can_reject() -> None:
    from bench.report.statistics import can_separate, smallest_sign_flip_p

    assert smallest_sign_flip_p(17) == pytest.approx(1 / 100_001)  # drawn patterns above 16
    assert not can_separate(3, 2) and can_separate(6, 2)  # 2/64 < 0.05 for one pair
    # Twelve seeds: 2/4096 per pair; five methods (10 pairs) pass the first step, 32 (496) do not.
    assert can_separate(12, 5) and not can_separate(12, 32)
    assert not can_separate(float("nan"), 5) and not can_separate(12, 1)
