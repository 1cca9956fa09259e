"""The seed papers' claims, kept as data, and their verdicts on the records at hand.

Each claim is one sentence and a few paired comparisons (`method` vs. `baseline` on a `metric`,
with the direction the paper predicts). On every dataset where both rows exist, a comparison's
verdict comes from the 95 % interval of the paired mean difference over seeds
(`bench.statistics.paired_difference`):

- `higher` / `lower` (the claimed effect): *supported* when the interval excludes 0 on the claimed
  side, *contradicted* when it excludes 0 on the other side, else *inconclusive* (also below two
  paired seeds, where no interval exists);
- `not_lower` (a guard such as "without hurting accuracy"): *contradicted* when the interval lies
  entirely below 0, else *supported* — absence of a measurable loss, not proof of equality.

A claim's verdict on a dataset is *contradicted* if any of its comparisons there is, *supported*
if all are, else *inconclusive*. A claim none of whose comparisons can be made on the records is
shown as *not measured*, naming what is missing, rather than left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from bench.statistics import paired_difference

Expectation = Literal["higher", "lower", "not_lower"]
FIRST_EXPLAINER = "{explainer}"


@dataclass(frozen=True)
class ClaimTest:
    """One comparison a claim predicts. `metric` may contain `{explainer}`: the dataset's first."""

    method: str
    baseline: str
    metric: str
    expect: Expectation

    def describe(self, metric: str | None = None) -> str:
        """E.g. `kd > scratch on concept_detectors`; `metric` is the resolved metric name."""
        relation = {"higher": ">", "lower": "<", "not_lower": "≥"}[self.expect]
        metric = metric or self.metric.replace(FIRST_EXPLAINER, "<first explainer>")
        return f"{self.method} {relation} {self.baseline} on {metric}"


@dataclass(frozen=True)
class Claim:
    key: str
    source: str
    statement: str
    tests: tuple[ClaimTest, ...]


CLAIMS: tuple[Claim, ...] = (
    Claim(
        key="explanation_imitation",
        source="Huang et al. 2020, arXiv:2005.11638",
        statement=(
            "Training the student to imitate the teacher's explanations raises the agreement of "
            "its explanations with the teacher's without hurting accuracy."
        ),
        tests=(
            ClaimTest("gbdt2nn_joint", "gbdt2nn", f"expl_spearman_{FIRST_EXPLAINER}", "higher"),
            ClaimTest("gbdt2nn_joint", "gbdt2nn", "accuracy", "not_lower"),
            ClaimTest("kd_expl", "kd", f"expl_spearman_{FIRST_EXPLAINER}", "higher"),
            ClaimTest("kd_expl", "kd", "accuracy", "not_lower"),
        ),
    ),
    Claim(
        key="kd_concept_detectors",
        source="Han et al., ICML 2023, arXiv:2305.15734",
        statement=(
            "Knowledge-distilled students have more concept detectors than students trained from "
            "scratch, and label smoothing leaves fewer."
        ),
        tests=(
            ClaimTest("kd", "scratch", "concept_detectors", "higher"),
            ClaimTest("label_smoothing", "scratch", "concept_detectors", "lower"),
        ),
    ),
    Claim(
        key="explanation_distillation",
        source=(
            "XDistillation (Alharbi et al. 2021, arXiv:2111.06945); "
            "e2KD (Parchami et al. 2024, “Good Teachers Explain”)"
        ),
        statement=(
            "Distilling the teacher's Grad-CAM explanations raises the Grad-CAM agreement of the "
            "student with the teacher over plain knowledge distillation."
        ),
        tests=(
            ClaimTest("xdistill", "kd", "expl_spearman_gradcam", "higher"),
            ClaimTest("e2kd", "kd", "expl_spearman_gradcam", "higher"),
        ),
    ),
)


@dataclass
class ComparisonResult:
    test: ClaimTest
    metric: str
    stats: dict[str, Any]
    verdict: str


@dataclass
class DatasetVerdict:
    profile: str
    dataset: str
    results: list[ComparisonResult]
    verdict: str


@dataclass
class ClaimVerdict:
    claim: Claim
    datasets: list[DatasetVerdict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """Across datasets: the common verdict, `mixed` when they differ, or `not measured`."""
        verdicts = {d.verdict for d in self.datasets}
        if not verdicts:
            return "not measured"
        return verdicts.pop() if len(verdicts) == 1 else "mixed"


def verdict_of(expect: Expectation, low: float, high: float) -> str:
    """The verdict of one comparison from the interval [low, high] of method − baseline."""
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if expect == "not_lower":
        return "contradicted" if high < 0 else "supported"
    sign = 1 if expect == "higher" else -1
    if (low > 0 and sign > 0) or (high < 0 and sign < 0):
        return "supported"
    if (low > 0 and sign < 0) or (high < 0 and sign > 0):
        return "contradicted"
    return "inconclusive"


def combine(verdicts: list[str]) -> str:
    if "contradicted" in verdicts:
        return "contradicted"
    if verdicts and all(v == "supported" for v in verdicts):
        return "supported"
    return "inconclusive"


def evaluate(
    claim: Claim, seeds: pd.DataFrame, first_explainers: dict[tuple[str, str], str]
) -> ClaimVerdict:
    """Check `claim` on every (profile, dataset) of `seeds` (from `bench.statistics.seed_values`).

    `first_explainers` maps (profile, dataset) to the first explainer of its profile, which fills
    `{explainer}` in a test's metric name.
    """
    result = ClaimVerdict(claim)
    students = seeds[seeds.role == "student"]
    seen_methods = set(students.method)
    seen_metrics = set(students.metric)
    for (profile, dataset), part in students.groupby(["profile", "dataset"], sort=True):
        results = []
        for test in claim.tests:
            explainer = first_explainers.get((profile, dataset))
            if FIRST_EXPLAINER in test.metric and explainer is None:
                continue
            metric = test.metric.replace(FIRST_EXPLAINER, explainer or "")
            rows = part[part.metric == metric]
            ours = rows[rows.method == test.method]
            theirs = rows[rows.method == test.baseline]
            if ours.empty or theirs.empty:
                continue
            stats = paired_difference(
                dict(zip(ours.seed, ours.value, strict=True)),
                dict(zip(theirs.seed, theirs.value, strict=True)),
            )
            if stats["n"] == 0:
                continue
            verdict = verdict_of(test.expect, stats["ci95_low"], stats["ci95_high"])
            results.append(ComparisonResult(test, metric, stats, verdict))
        if results:
            verdict = combine([r.verdict for r in results])
            result.datasets.append(DatasetVerdict(profile, dataset, results, verdict))
    for test in claim.tests:
        for name in (test.method, test.baseline):
            if name not in seen_methods and f"method {name}" not in result.missing:
                result.missing.append(f"method {name}")
        pattern = test.metric.replace(FIRST_EXPLAINER, "")
        if not any(m.startswith(pattern) for m in seen_metrics):
            label = f"metric {test.metric.replace(FIRST_EXPLAINER, '<explainer>')}"
            if label not in result.missing:
                result.missing.append(label)
    return result


def evaluate_all(
    seeds: pd.DataFrame, first_explainers: dict[tuple[str, str], str]
) -> list[ClaimVerdict]:
    return [evaluate(claim, seeds, first_explainers) for claim in CLAIMS]


def claims_table(verdicts: list[ClaimVerdict]) -> pd.DataFrame:
    """One row per (claim, dataset, comparison), plus one `not measured` row per unmeasured claim."""
    rows = []
    for cv in verdicts:
        base = {"claim": cv.claim.key, "source": cv.claim.source, "statement": cv.claim.statement}
        if not cv.datasets:
            rows.append({**base, "verdict": "not measured", "missing": "; ".join(cv.missing)})
        for dv in cv.datasets:
            for r in dv.results:
                rows.append(
                    {
                        **base,
                        "profile": dv.profile,
                        "dataset": dv.dataset,
                        "method": r.test.method,
                        "baseline": r.test.baseline,
                        "metric": r.metric,
                        "expect": r.test.expect,
                        "n": r.stats["n"],
                        "mean_diff": r.stats["mean_diff"],
                        "ci95_low": r.stats["ci95_low"],
                        "ci95_high": r.stats["ci95_high"],
                        "p_value": r.stats["p_value"],
                        "test_verdict": r.verdict,
                        "verdict": dv.verdict,
                    }
                )
    columns = [
        "claim", "source", "statement", "profile", "dataset", "method", "baseline", "metric",
        "expect", "n", "mean_diff", "ci95_low", "ci95_high", "p_value", "test_verdict", "verdict",
        "missing",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
