"""The seed papers' claims, kept as data, and their verdicts on the records at hand.

A claim is restated as its paper makes it, then tested the way a referee would accept:

- **One primary metric** carries the claim; other metrics the paper mentions are *secondary*
  tests, reported but not deciding. A method trained to match the teacher's explanations under one
  explainer trivially agrees more under that explainer, so a claim about explanation agreement
  has its primary metric measured with another explainer (`Claim.trained_explainers` names the
  ones its methods train on; a test checks the primary metrics avoid them).
- Each test is a paired comparison `method` vs. `baseline` on a `metric` over matching seeds
  (`bench.report.statistics.paired_difference`), on every (profile, dataset) where both rows exist.
- **Holm correction** within each claim: the p-values of its primary tests across its datasets
  and comparisons form one family per profile; its secondary tests another, shown apart. Tests
  with fewer than two paired seeds have no p-value and are not counted in a family.
- Verdict of one test, with p_holm its Holm-adjusted p:
  - `higher` / `lower` (two-sided sign-flip p): *supported* when p_holm < 0.05 and the mean
    difference is on the claimed side, *contradicted* when p_holm < 0.05 and on the other side,
    else *inconclusive*;
  - `not_worse` with margin δ ("without hurting accuracy"; read with the metric's direction):
    *supported* when the one-sided sign-flip test of mean(d) + δ > 0 has p_holm < 0.05 **and**
    the lower bound of the 95 % t-interval of d is above −δ **and** sd(d) > 0; *contradicted*
    when sd(d) > 0 and the upper bound of the interval is below −δ; else *inconclusive*. Its
    `p_value` is the one-sided p, and its `seeds_for_80_power` is computed at (mean(d) + δ) / sd.
  No verdict rests on an interval of zero width: with sd(d) = 0 the interval is [d, d] and only the
  sign-flip p (2 / 2^n for n identical differences) can decide a `higher` / `lower` test.
- **Dataset verdict** (per claim, profile and dataset): from the primary tests there only —
  *contradicted* if any is, *supported* if all are, else *inconclusive*; `no primary test` when
  only secondary tests could be made there.
- **Claim verdict**: from all its primary tests — *contradicted* if any is contradicted,
  *supported* if all are supported, *mixed* if some are supported and the others inconclusive,
  *inconclusive* if none is supported or contradicted, *not measured* when none could be made
  (what is missing is named rather than the claim left out).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from bench.report.statistics import ALPHA, holm, paired_difference, student_values

Expectation = Literal["higher", "lower", "not_worse"]
Role = Literal["primary", "secondary"]
VERDICTS = ("supported", "contradicted", "inconclusive")


@dataclass(frozen=True)
class ClaimTest:
    """One comparison a claim predicts: `method` vs. `baseline` on `metric`.

    `expect` is `higher` / `lower` (the sign of method − baseline) or `not_worse` (no loss larger
    than `margin`, in the metric's own units, on the metric's better side).
    """

    method: str
    baseline: str
    metric: str
    expect: Expectation
    role: Role = "primary"
    margin: float = 0.0

    def describe(self, metric: str | None = None) -> str:
        """E.g. `kd > scratch on concept_detectors`, `e2kd ≥ kd − 0.01 on accuracy`."""
        metric = metric or self.metric
        if self.expect == "not_worse":
            return f"{self.method} not worse than {self.baseline} − {self.margin:g} on {metric}"
        relation = {"higher": ">", "lower": "<"}[self.expect]
        return f"{self.method} {relation} {self.baseline} on {metric}"


@dataclass(frozen=True)
class Claim:
    """A seed paper's claim: a sentence, its source, its tests and the explainers it trains on."""

    key: str
    source: str
    statement: str
    tests: tuple[ClaimTest, ...]
    # Explainers the claim's methods are trained to match: agreement measured with them is
    # circular, so no primary metric may use them.
    trained_explainers: tuple[str, ...] = ()

    @property
    def primary(self) -> tuple[ClaimTest, ...]:
        return tuple(t for t in self.tests if t.role == "primary")

    @property
    def secondary(self) -> tuple[ClaimTest, ...]:
        return tuple(t for t in self.tests if t.role == "secondary")


CLAIMS: tuple[Claim, ...] = (
    Claim(
        key="explanation_imitation",
        source="Huang et al. 2020, arXiv:2005.11638",
        statement=(
            "Imitating the teacher's explanations improves the student's explanation agreement "
            "with the teacher and its prediction quality."
        ),
        tests=(
            ClaimTest("gbdt2nn_joint", "gbdt2nn", "expl_spearman_ig", "higher"),
            ClaimTest("kd_expl", "kd", "expl_spearman_ig", "higher"),
            ClaimTest("gbdt2nn_joint", "gbdt2nn", "accuracy", "higher", role="secondary"),
            ClaimTest("kd_expl", "kd", "accuracy", "higher", role="secondary"),
        ),
        # Both match the teacher's TreeSHAP with the student's gradient × input.
        trained_explainers=("gxi",),
    ),
    Claim(
        key="explanation_distillation",
        source="XDistillation (Alharbi et al. 2021, arXiv:2111.06945)",
        statement=(
            "Distilling the teacher's explanations gives a student of better accuracy and "
            "faithfulness than plain knowledge distillation."
        ),
        tests=(
            ClaimTest("xdistill", "kd", "expl_spearman_ig", "higher"),
            ClaimTest("xdistill", "kd", "accuracy", "higher", role="secondary"),
            ClaimTest("xdistill", "kd", "expl_spearman_gradcam", "higher", role="secondary"),
        ),
        trained_explainers=("gradcam",),
    ),
    Claim(
        key="e2kd",
        source=(
            "Parchami et al. 2024, “Good Teachers Explain: Explanation-Enhanced Knowledge "
            "Distillation” (ECCV 2024)"
        ),
        statement=(
            "Explanation-enhanced distillation makes students agree more with the teacher's "
            "explanations while keeping their accuracy."
        ),
        tests=(
            ClaimTest("e2kd", "kd", "expl_spearman_ig", "higher"),
            ClaimTest("e2kd", "kd", "expl_spearman_gradcam", "higher", role="secondary"),
            ClaimTest("e2kd", "kd", "accuracy", "not_worse", role="secondary", margin=0.01),
        ),
        trained_explainers=("gradcam",),
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
            # Threshold-free: a count at IoU 0.04 can move with units hovering around it.
            ClaimTest("kd", "scratch", "mean_best_iou", "higher", role="secondary"),
            ClaimTest("label_smoothing", "scratch", "mean_best_iou", "lower", role="secondary"),
        ),
    ),
)


@dataclass
class ComparisonResult:
    """One test on one (profile, dataset): its statistics, Holm-adjusted p and verdict."""

    test: ClaimTest
    metric: str
    stats: dict[str, Any]
    higher_is_better: bool = True
    p_holm: float = math.nan
    verdict: str = "inconclusive"


@dataclass
class DatasetVerdict:
    profile: str
    dataset: str
    results: list[ComparisonResult]
    verdict: str = "inconclusive"

    @property
    def primary(self) -> list[ComparisonResult]:
        return [r for r in self.results if r.test.role == "primary"]

    @property
    def secondary(self) -> list[ComparisonResult]:
        return [r for r in self.results if r.test.role == "secondary"]


@dataclass
class ClaimVerdict:
    claim: Claim
    datasets: list[DatasetVerdict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def results_in_order(self) -> Iterator[tuple[DatasetVerdict, ComparisonResult]]:
        """Every test with its dataset: the primary tests first, then the secondary ones."""
        for role in ("primary", "secondary"):
            for dv in self.datasets:
                for r in dv.results:
                    if r.test.role == role:
                        yield dv, r

    @property
    def verdict(self) -> str:
        """From every primary test (see the module docstring); `not measured` when there is none."""
        verdicts = [r.verdict for d in self.datasets for r in d.primary]
        if not verdicts:
            return "not measured"
        if "contradicted" in verdicts:
            return "contradicted"
        if all(v == "supported" for v in verdicts):
            return "supported"
        if "supported" in verdicts:
            return "mixed"
        return "inconclusive"


def verdict_of(
    test: ClaimTest,
    stats: dict[str, Any],
    p_holm: float,
    higher_is_better: bool = True,
    alpha: float = ALPHA,
) -> str:
    """The verdict of one test from its statistics and Holm-adjusted p (module docstring)."""
    mean = stats["mean_diff"]
    if test.expect == "not_worse":
        sd, low, high = stats["std_diff"], stats["ci95_low"], stats["ci95_high"]
        if pd.isna(sd) or sd <= 0 or pd.isna(low):
            return "inconclusive"
        # Read on the metric's better side: for a lower-is-better metric, −d is the gain.
        if not higher_is_better:
            low, high = -high, -low
        if high < -test.margin:
            return "contradicted"
        if not pd.isna(p_holm) and p_holm < alpha and low > -test.margin:
            return "supported"
        return "inconclusive"
    if pd.isna(p_holm) or p_holm >= alpha or pd.isna(mean) or mean == 0:
        return "inconclusive"
    claimed = mean > 0 if test.expect == "higher" else mean < 0
    return "supported" if claimed else "contradicted"


def combine(verdicts: list[str]) -> str:
    """A dataset's verdict from its primary tests' verdicts."""
    if not verdicts:
        return "no primary test"
    if "contradicted" in verdicts:
        return "contradicted"
    if all(v == "supported" for v in verdicts):
        return "supported"
    return "inconclusive"


def _run_test(
    test: ClaimTest, by_method: dict[str, Any], higher_is_better: bool
) -> dict[str, Any] | None:
    if test.method not in by_method or test.baseline not in by_method:
        return None
    (ours, our_teachers), (theirs, their_teachers) = (
        by_method[test.method],
        by_method[test.baseline],
    )
    options: dict[str, Any] = {}
    if test.expect == "not_worse":
        # H1: the loss is smaller than the margin, on the metric's better side.
        options = (
            {"alternative": "greater", "margin": test.margin}
            if higher_is_better
            else {"alternative": "less", "margin": -test.margin}
        )
    stats = paired_difference(
        ours, theirs, method_teachers=our_teachers, baseline_teachers=their_teachers, **options
    )
    return stats if stats["n"] else None


def evaluate(claim: Claim, seeds: pd.DataFrame) -> ClaimVerdict:
    """Check `claim` on every (profile, dataset) of `seeds` (`bench.report.statistics.seed_values`)."""
    result = ClaimVerdict(claim)
    values, info = student_values(seeds)
    datasets = sorted({(p, d) for p, d, _ in values})
    for profile, dataset in datasets:
        results = []
        for test in claim.tests:
            by_method = values.get((profile, dataset, test.metric))
            if by_method is None:
                continue
            hib = info[profile, dataset, test.metric][2]
            higher = True if hib is None or pd.isna(hib) else bool(hib)
            stats = _run_test(test, by_method, higher)
            if stats is not None:
                results.append(ComparisonResult(test, test.metric, stats, higher))
        if results:
            # Primary tests first, in the claim's order.
            results.sort(key=lambda r: (r.test.role != "primary", claim.tests.index(r.test)))
            result.datasets.append(DatasetVerdict(profile, dataset, results))
    # Holm within the claim: one family per (profile, role), across datasets and comparisons.
    for profile in sorted({d.profile for d in result.datasets}):
        for role in ("primary", "secondary"):
            family = [
                r
                for d in result.datasets
                if d.profile == profile
                for r in d.results
                if r.test.role == role
            ]
            adjusted = holm([r.stats["p_value"] for r in family])
            for r, p_adj in zip(family, adjusted, strict=True):
                r.p_holm = float(p_adj)
                r.verdict = verdict_of(r.test, r.stats, r.p_holm, r.higher_is_better)
    for d in result.datasets:
        d.verdict = combine([r.verdict for r in d.primary])
    students = seeds[seeds.role == "student"]
    seen_methods, seen_metrics = set(students.method), set(students.metric)
    for test in claim.tests:
        for label in (f"method {test.method}", f"method {test.baseline}"):
            if label.removeprefix("method ") not in seen_methods and label not in result.missing:
                result.missing.append(label)
        label = f"metric {test.metric}"
        if test.metric not in seen_metrics and label not in result.missing:
            result.missing.append(label)
    return result


def evaluate_all(seeds: pd.DataFrame, claims: Sequence[Claim] = CLAIMS) -> list[ClaimVerdict]:
    """Every claim's verdict on the per-seed values `seeds` (`bench.report.statistics.seed_values`)."""
    return [evaluate(claim, seeds) for claim in claims]


CLAIM_COLUMNS = [
    "claim", "source", "statement", "role", "profile", "dataset", "method", "baseline", "metric",
    "expect", "margin", "n", "mean_diff", "std_diff", "ci95_low", "ci95_high", "p_value",
    "p_method", "p_holm", "seeds_for_80_power", "test_verdict", "dataset_verdict",
    "claim_verdict", "missing",
]  # fmt: skip


STAT_KEYS = (
    "n", "mean_diff", "std_diff", "ci95_low", "ci95_high", "p_value", "p_method",
    "seeds_for_80_power",
)  # fmt: skip


def claims_table(verdicts: list[ClaimVerdict]) -> pd.DataFrame:
    """One row per (claim, test, profile, dataset), primary tests first; one per unmeasured claim.

    `test_verdict` is the row's own test, `dataset_verdict` the claim's on that dataset (its
    primary tests), `claim_verdict` the claim's over everything.
    """
    rows = []
    for cv in verdicts:
        base = {
            "claim": cv.claim.key,
            "source": cv.claim.source,
            "statement": cv.claim.statement,
            "claim_verdict": cv.verdict,
            "missing": "; ".join(cv.missing),
        }
        if not cv.datasets:
            rows.append(base)
        for dv, r in cv.results_in_order():
            s = r.stats
            rows.append(
                {
                    **base,
                    "role": r.test.role,
                    "profile": dv.profile,
                    "dataset": dv.dataset,
                    "method": r.test.method,
                    "baseline": r.test.baseline,
                    "metric": r.metric,
                    "expect": r.test.expect,
                    "margin": r.test.margin,
                    **{k: s[k] for k in STAT_KEYS},
                    "p_holm": r.p_holm,
                    "test_verdict": r.verdict,
                    "dataset_verdict": dv.verdict,
                }
            )
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)
