"""The answer, first: the few lines at the top of the index that say what the records show.

- **The claims**: how many hold, part by part, each part with its decisive figure, under the
  benchmark's held-out metric and under the paper's own.
- **The best methods**: per track and dataset, the methods no other is significantly better than
  on faithfulness to the teacher (the held-out explainer's agreement above the strongest floor,
  `bench.report.headline.faithfulness_metrics`). A set, not a winner: picking the top mean among
  methods the tests cannot tell apart is the winner's curse. Where nothing separates the methods,
  or the metric fails a reliability check there, the line says so instead of naming anyone.

The decisive figure of a part is its weakest link where the part holds (every primary test must
be supported: the one with the largest Holm-adjusted p), the test that breaks it where it is
contradicted (the smallest p on the wrong side), and otherwise the test closest to deciding.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import pandas as pd

from bench.report.claims import ClaimVerdict, ComparisonResult
from bench.report.completeness import profile_rank
from bench.report.headline import faithfulness_metrics
from bench.report.numbers import format_p, format_signed
from bench.report.statistics import TOO_FEW_SEEDS, can_separate

# The order verdicts are counted in, the strongest first.
VERDICT_ORDER = (
    "supported",
    "partly supported",
    "mixed",
    "unstable",
    "inconclusive",
    "contradicted",
    TOO_FEW_SEEDS,
    "not measured",
)


@dataclass(frozen=True)
class PartAnswer:
    part: str
    verdict: str
    figure: str  # the decisive test and its numbers
    paper_verdict: str


@dataclass(frozen=True)
class ClaimAnswer:
    key: str
    statement: str
    verdict: str
    paper_verdict: str
    parts: tuple[PartAnswer, ...]


@dataclass(frozen=True)
class BestSet:
    """The methods of one dataset that no other beats significantly on `metric`."""

    profile: str
    modality: str
    dataset: str
    metric: str
    text: str


def _decisive(results: list[ComparisonResult], verdict: str) -> ComparisonResult | None:
    if not results:
        return None
    if verdict == "contradicted":
        broken = [r for r in results if r.verdict == "contradicted"]
        return min(broken or results, key=lambda r: r.p_holm)
    return max(results, key=lambda r: -1.0 if math.isnan(r.p_holm) else r.p_holm)


def _figure(result: ComparisonResult | None, dataset: str) -> str:
    if result is None:
        return "no test could be made"
    s = result.stats
    interval = (
        f" [{format_signed(s['ci95_low'])}, {format_signed(s['ci95_high'])}]"
        if not math.isnan(s["ci95_low"])
        else ""
    )
    return (
        f"{result.test.describe(result.metric)} on {dataset}: Δ {format_signed(s['mean_diff'])}"
        f"{interval}, p (Holm) {format_p(result.p_holm)}, n = {s['n']}"
    )


def claim_answers(verdicts: list[ClaimVerdict]) -> list[ClaimAnswer]:
    answers = []
    for cv in verdicts:
        paper = cv.paper_part_verdicts
        parts = []
        for part, verdict in cv.part_verdicts.items():
            tests = [
                (dv.dataset, r)
                for dv in cv.datasets
                for r in dv.results
                if r.test.part == part and r.test.role == "primary"
            ]
            chosen = _decisive([r for _, r in tests], verdict)
            dataset = next((d for d, r in tests if r is chosen), "")
            parts.append(PartAnswer(part, verdict, _figure(chosen, dataset), paper[part]))
        answers.append(
            ClaimAnswer(cv.claim.key, cv.claim.statement, cv.called, cv.paper_verdict, tuple(parts))
        )
    return answers


def verdict_line(answers: list[ClaimAnswer]) -> str:
    """`Claims: 1 supported, 3 partly supported, 1 contradicted; under the papers' own metrics:
    ...`, in the order of `VERDICT_ORDER`."""

    def counted(verdicts: list[str]) -> str:
        counts = Counter(verdicts)
        order = [v for v in VERDICT_ORDER if v in counts] + sorted(set(counts) - set(VERDICT_ORDER))
        return ", ".join(f"{counts[v]} {v}" for v in order)

    if not answers:
        return "No claim could be tested on these records."
    ours = counted([a.verdict for a in answers])
    papers = counted([a.paper_verdict for a in answers])
    return f"Claims: {ours}; under the papers' own metrics: {papers}."


def best_sets(ranked: pd.DataFrame) -> list[BestSet]:
    """Per (profile, modality, dataset), the methods ranked first on faithfulness."""
    found = []
    students = ranked[ranked.role == "student"]
    for (profile, modality, dataset), part in students.groupby(
        ["profile", "modality", "dataset"], sort=True
    ):
        _, metric = faithfulness_metrics(str(modality))
        rows = part[part.metric == metric]
        ranked_rows = rows[rows["rank"].notna()]
        if rows.empty:
            text = f"{metric} was not measured"
        elif ranked_rows.empty:
            text = f"{metric} ranks no method here (it fails a reliability check, or too few seeds)"
        elif not can_separate(ranked_rows["rank_seeds"].max(), len(ranked_rows)):
            text = (
                f"too few shared seeds ({ranked_rows['rank_seeds'].max():.0f}) to rank the "
                f"{len(ranked_rows)} methods on {metric}: no paired test, Holm-corrected over "
                "their pairs, could tell two apart"
            )
        elif (ranked_rows["rank"] == 1).all():
            text = (
                f"nothing separates the {len(ranked_rows)} ranked methods on {metric}: "
                "no paired test tells any two apart"
            )
        else:
            best = ranked_rows[ranked_rows["rank"] == 1].sort_values("mean", ascending=False)
            text = (
                f"{', '.join(best.method)} ({len(best)} of {len(ranked_rows)} ranked methods; "
                f"each of the others has a method significantly better on {metric})"
            )
        found.append(BestSet(str(profile), str(modality), str(dataset), metric, text))
    # The real-data profile first, tables before images: the order of the index's tracks.
    return sorted(found, key=lambda b: (profile_rank(b.profile), b.modality != "tabular"))
