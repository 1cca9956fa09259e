"""The answer at the top of the index (`bench.report.answer`): which test decides a part, how the
claims are counted, and which methods are named best, and when none is."""

from __future__ import annotations

import math

import pandas as pd

from bench.report.answer import (
    ClaimAnswer,
    PartAnswer,
    _decisive,
    best_sets,
    verdict_line,
)
from bench.report.claims import ClaimTest, ComparisonResult

TEST = ClaimTest("kd", "scratch", "accuracy", "higher", "prediction")


def result(p_holm: float, verdict: str, mean: float = 0.01) -> ComparisonResult:
    stats = {"mean_diff": mean, "ci95_low": mean - 0.01, "ci95_high": mean + 0.01, "n": 12}
    return ComparisonResult(TEST, "accuracy", stats, p_holm=p_holm, verdict=verdict)


def test_a_part_that_holds_is_decided_by_its_weakest_test_and_a_broken_one_by_what_breaks_it():
    strong, weak = result(0.001, "supported"), result(0.04, "supported")
    assert _decisive([strong, weak], "supported") is weak
    wrong, unclear = result(0.002, "contradicted", -0.02), result(0.6, "inconclusive")
    assert _decisive([unclear, wrong], "contradicted") is wrong
    assert _decisive([result(math.nan, "inconclusive"), unclear], "inconclusive") is unclear
    assert _decisive([], "not measured") is None


def test_the_verdict_line_counts_both_readings_strongest_first() -> None:
    part = PartAnswer("prediction", "supported", "", "supported")
    answers = [
        ClaimAnswer("a", "", "contradicted", "supported", (part,)),
        ClaimAnswer("b", "", "supported", "supported", (part,)),
        ClaimAnswer("c", "", "partly supported", "inconclusive", (part,)),
    ]
    assert verdict_line(answers) == (
        "Claims: 1 supported, 1 partly supported, 1 contradicted; "
        "under the papers' own metrics: 2 supported, 1 inconclusive."
    )
    assert verdict_line([]) == "No claim could be tested on these records."


def board(dataset: str, ranks: dict[str, float | None], seeds: int = 12) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "profile": "real", "modality": "tabular", "dataset": dataset, "role": "student",
            "metric": "expl_spearman_shapley_excess", "method": list(ranks),
            "mean": [0.1 * i for i in range(len(ranks))],
            "rank": [math.nan if r is None else r for r in ranks.values()],
            "rank_seeds": [math.nan if r is None else seeds for r in ranks.values()],
        }
    )  # fmt: skip


def test_best_names_the_methods_none_beats_and_nobody_where_nothing_separates_them() -> None:
    frame = pd.concat(
        [
            board("adult", {"kd": 1, "ctkd": 1, "scratch": 2, "nkd": None}),
            board("letter", {"kd": 1, "ctkd": 1, "scratch": 1}),
            board("magic", {"kd": None, "scratch": None}),
            board("digits", {"kd": 1, "scratch": 1}, seeds=3),
        ]
    )
    found = {b.dataset: b.text for b in best_sets(frame)}
    assert found["adult"].startswith("ctkd, kd (2 of 3 ranked methods")
    assert found["letter"].startswith("nothing separates the 3 ranked methods")
    assert "ranks no method here" in found["magic"]
    # Three shared seeds cannot separate anything: said as such, not as a finding.
    assert found["digits"].startswith("too few shared seeds (3) to rank the 2 methods")
