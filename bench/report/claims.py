"""The seed papers' claims, kept as data, and their verdicts on the records at hand.

A claim is restated as its paper makes it, then tested the way a referee would accept:

- **One primary metric** carries the claim; other metrics the paper mentions are *secondary*
  tests, reported but not deciding. A method trained to match the teacher's explanations under one
  explainer trivially agrees more under that explainer, so a claim about explanation agreement
  has its primary metric measured with another explainer (`Claim.trained_explainers` names the
  ones its methods train on; a test checks the primary metrics avoid them).
- Each test is a paired comparison `method` vs. `baseline` on a `metric` over matching seeds
  (`bench.report.statistics.paired_difference`), on every (profile, dataset) where both rows exist.
- **Holm correction** within each part of a claim: the p-values of a part's primary tests in one
  profile, across its datasets and comparisons, form one family; its `paper` tests another and
  its secondary tests a third, shown apart. Tests with too few seeds to reach α (below) are not
  counted in a family.
- Verdict of one test, with p_holm its Holm-adjusted p:
  - `higher` / `lower` (two-sided sign-flip p): *supported* when p_holm < 0.05 and the mean
    difference is on the claimed side, *contradicted* when p_holm < 0.05 and on the other side,
    else *inconclusive*;
  - `not_worse` with margin δ ("without hurting accuracy"; read with the metric's direction):
    *supported* when the one-sided sign-flip test of mean(d) + δ > 0 has p_holm < 0.05 **and**
    the lower bound of the 95 % t-interval of d is above −δ; *contradicted* when the upper bound
    of the interval is below −δ; else *inconclusive*. Its `p_value` is the one-sided p, and its
    `seeds_for_80_power` is computed at (mean(d) + δ) / sd.
  Identical differences on every seed (sd(d) = 0, which accuracy's discrete steps make common)
  decide both kinds of test alike: the interval is [d, d] and the exact sign-flip p is 1 / 2^n
  one-sided. A referee found a loss of exactly 2δ on ten seeds inconclusive while the same loss
  with 1e-4 of noise was contradicted, and a `higher` test decided where `not_worse` would not.
- **Parts.** A claim promises one or more things at once ("explanations *and* predictions"); each
  is a `part` with its own primary tests, and the claim is an intersection–union test: every part
  is tested at α (Holm within the part, across its datasets and comparisons, never between the
  parts), and the claim holds only where every part does. A referee found two-part claims called
  "supported" on their explanation half while every accuracy test was inconclusive.
- **Architecture.** A test whose two students differ in size (their `parameters` metric differs by
  more than `PARAMETER_TOLERANCE`) is *confounded*: its difference may be the architecture's, not
  the method's (XDistillation's extra encoder alone, with no explanation term, raised kd's IG
  agreement as much as the full method did). A confounded test never supports a part; a claim about a method that
  changes the network is tested against ablations of the same size (`xdistill_arch`,
  `kd_matched`).
- **Dataset verdict** (per claim, profile and dataset): from the primary tests there only (those
  with too few seeds or on an unreliable metric left out) — *contradicted* if any is,
  *supported* if all are, else *inconclusive*; `too few seeds` when every one had too few;
  `no primary test` when only secondary tests could be made there.
- **Part verdict**: from the part's primary tests, left out as above — *contradicted* if any is
  contradicted, *supported* if all are supported, *mixed* if some are supported and the others
  inconclusive or confounded, `too few seeds` when every one had too few, else *inconclusive*.
- **Claim verdict**: *supported* when every part is supported, *contradicted* when any part is,
  *partly supported* when some part is supported or mixed and none contradicted (a supported
  part beside one with too few seeds included), `too few seeds` when every measured part had
  too few, *inconclusive* otherwise, *not measured* when no primary test could be made (what is
  missing is named rather than the claim left out).
- **The paper's own question beside the benchmark's.** Tests of role `paper` restate the claim
  under the paper's own headline metrics and comparison (the distilled explainer, the paper's
  baseline); they have their own Holm families and give the claim's `paper_verdict`, shown beside
  its verdict and labelled, but they decide nothing: the primary tests, declared here before any
  run, do. A claim whose primary metric is already the paper's has no `paper` tests, and its
  paper verdict is its verdict. What the paper claims that no record here can test is listed in
  `Claim.unmeasured` and shown on the site.
- **Reliable metrics only**: a test on a metric that fails separation or test–retest on its
  dataset (`bench.report.reliability`) gets the verdict `unreliable metric` and is left out of
  its part's verdict, but keeps its place in its Holm family at p = 1 (dropping it after seeing
  the data would relax the correction of the others); it is shown.
- **Too few seeds to test**: a test whose paired seeds are too few for its sign-flip p ever to
  fall below α, whatever the values (`smallest_sign_flip_p`: 2 / 2^n two-sided needs n ≥ 6,
  1 / 2^n one-sided n ≥ 5), gets the verdict `too few seeds` (a `not_worse` test stays
  *contradicted* where its interval says so, which needs no p). It is shown, but is left out of
  its Holm family and of its part's verdict: which tests those are follows from the seeds run, not
  from their values. So does a test that no step of Holm could reject over its family's m tests,
  whatever the values (`holm_reachable`; two tests of 6 seeds: 2 / 64 is above 0.05 / 2), but it
  keeps its place in m (left out, it could become reachable again). A test on an unreliable
  metric rejects nothing and keeps its own verdict. A screen's three seeds on a dataset where the
  claim's methods were not run at the claim's twelve had made a supported part "mixed" (e2kd's
  prediction part, when `digits_28px` and a partly built `fashion_mnist:12000` joined the
  reference).
- **Underpowered is not "no effect"**: every test reports `mde_80`, the smallest true mean
  difference its seeds would detect with 80 % power at the observed spread.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from bench.report.stability import called, verdict_stability
from bench.report.statistics import (
    ALPHA,
    EXCESS_SUFFIX,
    TOO_FEW_SEEDS,
    StudentValues,
    holm,
    holm_reachable,
    minimum_detectable_effect,
    paired_difference,
    smallest_sign_flip_p,
    student_values,
)

Expectation = Literal["higher", "lower", "not_worse"]
Unreliable = set[tuple[str, str, str]] | frozenset[tuple[str, str, str]]
Role = Literal["primary", "secondary", "paper"]
ROLES: tuple[Role, ...] = ("primary", "paper", "secondary")
# A test on a metric that fails a reliability check on its dataset (`bench.report.reliability`)
# decides nothing: it is shown with this verdict and left out of its part's.
UNRELIABLE = "unreliable metric"
VERDICTS = ("supported", "contradicted", "inconclusive", "confounded", UNRELIABLE, TOO_FEW_SEEDS)
# Two students whose parameter counts differ by more than this fraction are different networks.
PARAMETER_TOLERANCE = 0.05


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
    # What of the claim the test checks ("explanation", "prediction", ...): each part has its own
    # verdict, and the claim holds only where every part does.
    part: str
    role: Role = "primary"
    margin: float = 0.0
    # What the metric is, where a reader could mistake it (the paper's own metric, or the
    # benchmark's held-out explainer).
    note: str = ""

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
    # What the paper claims that no record of this benchmark can test, said on the site.
    unmeasured: tuple[str, ...] = ()

    @property
    def primary(self) -> tuple[ClaimTest, ...]:
        return tuple(t for t in self.tests if t.role == "primary")

    @property
    def secondary(self) -> tuple[ClaimTest, ...]:
        return tuple(t for t in self.tests if t.role == "secondary")

    @property
    def paper(self) -> tuple[ClaimTest, ...]:
        """The tests under the paper's own metrics (none: the primary metric is the paper's)."""
        return tuple(t for t in self.tests if t.role == "paper")

    @property
    def parts(self) -> tuple[str, ...]:
        """The claim's parts, in the order its tests name them."""
        return tuple(dict.fromkeys(t.part for t in self.tests))


HELD_OUT = "the benchmark's question: agreement under an explainer the methods do not train on"
PAPERS_METRIC = "the paper's own metric: agreement under the explainer the method distils"
PAPERS_COMPARISON = "the paper's comparison: kd's student is smaller"
PAPERS_EXPLAINER = (
    "the paper's explanations, in our reading of its abstract: its decoder's maps (explainer "
    "`own`), kd's Grad-CAM, each against the teacher's Grad-CAM"
)
THRESHOLD_FREE = "threshold-free: the mean over units of the best IoU"
NEAR_TRAINED = "nominally held out: on tables IG agrees with the gradient × input the methods train"
# Huang et al.'s two students and the baselines they are compared with.
IMITATION_PAIRS = (("gbdt2nn_joint", "gbdt2nn"), ("kd_expl", "kd"))
# What each soft-label manipulation of the dose claim keeps besides removing the similarity.
ENTROPY_KEPT = "each sample's entropy kept, its target probability raised"
ENTROPY_RAISED = "confounded: made uniform, the targets' entropy rises"
NO_LABEL_NOISE = "one permutation per class"
LABEL_NOISE = "confounded: one permutation per sample adds label noise"
# The other IoU thresholds of the dissection's sweep, in hundredths (`SWEEP_THRESHOLDS` of
# `bench.explain.dissection`, which imports torch; a test checks each names a registered metric).
DETECTOR_SWEEP = (2, 3, 5, 6, 8, 10)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        key="explanation_imitation",
        source="Huang et al. 2020, arXiv:2005.11638",
        statement=(
            "Imitating the teacher's explanations improves the student's explanation agreement "
            "with the teacher and its prediction quality."
        ),
        # The held-out explainer of the tables is interventional Shapley, one game for the tree
        # teacher and the network student: IG, nominally held out, agrees with the gradient ×
        # input both methods train (`bench.explain.shapley`), so its tests are secondary.
        tests=(
            *(
                ClaimTest(method, baseline, "expl_spearman_shapley", "higher", "explanation",
                          note=HELD_OUT)
                for method, baseline in IMITATION_PAIRS
            ),
            *(
                ClaimTest(method, baseline, "accuracy", "higher", "prediction")
                for method, baseline in IMITATION_PAIRS
            ),
            *(
                ClaimTest(method, baseline, "expl_spearman_ig", "higher", "explanation",
                          role="secondary", note=NEAR_TRAINED)
                for method, baseline in IMITATION_PAIRS
            ),
            *(
                ClaimTest(method, baseline, "expl_spearman_gxi", "higher", "explanation",
                          role="paper", note=PAPERS_METRIC)
                for method, baseline in IMITATION_PAIRS
            ),
            *(
                ClaimTest(method, baseline, "accuracy", "higher", "prediction", role="paper")
                for method, baseline in IMITATION_PAIRS
            ),
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
        # XDistillation also enlarges the student: each part is tested against its architecture
        # without the explanation term and against kd at its parameter count; the paper's own
        # comparison with kd is shown, confounded.
        tests=(
            ClaimTest("xdistill", "xdistill_arch", "accuracy", "higher", "prediction"),
            ClaimTest("xdistill", "kd_matched", "accuracy", "higher", "prediction"),
            ClaimTest(
                "xdistill", "xdistill_arch", "expl_spearman_ig", "higher", "faithfulness",
                note=HELD_OUT,
            ),
            ClaimTest(
                "xdistill", "kd_matched", "expl_spearman_ig", "higher", "faithfulness",
                note=HELD_OUT,
            ),
            ClaimTest(
                "xdistill", "xdistill_arch", "expl_spearman_gradcam", "higher", "faithfulness",
                role="secondary", note=PAPERS_METRIC,
            ),
            ClaimTest(
                "xdistill", "kd", "expl_spearman_ig", "higher", "faithfulness", role="secondary",
                note=PAPERS_COMPARISON,
            ),
            # The paper: faithfulness to the teacher is agreement with its Grad-CAM, against kd.
            ClaimTest(
                "xdistill", "kd", "accuracy", "higher", "prediction", role="paper",
                note=PAPERS_COMPARISON,
            ),
            ClaimTest(
                "xdistill", "kd", "expl_spearman_gradcam", "higher", "faithfulness",
                role="paper", note=f"{PAPERS_METRIC}; {PAPERS_COMPARISON}",
            ),
            ClaimTest(
                "xdistill", "kd", "expl_spearman_own", "higher", "faithfulness",
                role="paper", note=f"{PAPERS_EXPLAINER}; {PAPERS_COMPARISON}",
            ),
        ),
        # `own` is xdistill's decoder, trained on the teacher's Grad-CAM.
        trained_explainers=("gradcam", "own"),
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
            ClaimTest("e2kd", "kd", "expl_spearman_ig", "higher", "explanation", note=HELD_OUT),
            ClaimTest(
                "e2kd", "kd", "accuracy", "not_worse", "prediction", margin=0.01,
            ),
            # The paper's headline: gains in accuracy, in top-1 agreement with the teacher and
            # in agreement with its explanations.
            ClaimTest(
                "e2kd", "kd", "expl_spearman_gradcam", "higher", "explanation",
                role="paper", note=PAPERS_METRIC,
            ),
            ClaimTest("e2kd", "kd", "accuracy", "higher", "prediction", role="paper"),
            ClaimTest(
                "e2kd", "kd", "teacher_agreement", "higher", "prediction", role="paper",
                note="the paper's own metric: top-1 agreement with the teacher",
            ),
        ),
        # `own` is Grad-CAM for e2kd's student, which has no explainer of its own.
        trained_explainers=("gradcam", "own"),
        unmeasured=(
            "that the gains are largest with little training data (each dataset's students "
            "learn from one amount of it; fashion_mnist:12000 is a limited-data regime, but no "
            "run compares e2kd's gain across amounts)",
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
            ClaimTest("kd", "scratch", "concept_detectors", "higher", "knowledge distillation"),
            ClaimTest("label_smoothing", "scratch", "concept_detectors", "lower", "label smoothing"),
            # Threshold-free: a count at IoU 0.04 can move with units hovering around it.
            ClaimTest(
                "kd", "scratch", "mean_best_iou", "higher", "knowledge distillation",
                role="secondary", note=THRESHOLD_FREE,
            ),
            ClaimTest(
                "label_smoothing", "scratch", "mean_best_iou", "lower", "label smoothing",
                role="secondary", note=THRESHOLD_FREE,
            ),
            # The count at the other thresholds of the sweep (0.04 is the count's own).
            *(
                ClaimTest(method, "scratch", f"concept_detectors_iou{percent:03d}", expect, part,
                          role="secondary", note=f"the count at IoU {percent / 100:.2f}")
                for method, expect, part in (
                    ("kd", "higher", "knowledge distillation"),
                    ("label_smoothing", "lower", "label smoothing"),
                )
                for percent in DETECTOR_SWEEP
            ),
        ),
    ),
    Claim(
        key="kd_similarity_dose",
        source="Han et al., ICML 2023, arXiv:2305.15734 (their explanation of the detector gain)",
        statement=(
            "KD's gain in concept detectors comes from the class-similarity information in the "
            "teacher's soft labels: KD's students beat students trained from scratch, and with "
            "that information erased or scrambled the gain shrinks."
        ),
        # The manipulations (`methods/kd_similarity.py`) that decide keep the entropy of each
        # sample's targets (erased) or add no per-sample noise (scrambled); the first versions,
        # which change those too, are shown beside them. Each run records whether the
        # similarity is there (`training.diagnostics`, the site's manipulation check). Without a
        # gain over scratch there is nothing to shrink, so the gain is a part of its own.
        tests=(
            ClaimTest("kd", "scratch", "mean_best_iou", "higher", "gain", note=THRESHOLD_FREE),
            ClaimTest(
                "kd", "kd_uniform_entropy_matched", "mean_best_iou", "higher",
                "similarity erased", note=f"{ENTROPY_KEPT}; {THRESHOLD_FREE}",
            ),
            ClaimTest(
                "kd", "kd_class_permuted_nontarget", "mean_best_iou", "higher",
                "similarity scrambled", note=f"{NO_LABEL_NOISE}; {THRESHOLD_FREE}",
            ),
            ClaimTest(
                "kd", "kd_uniform_nontarget", "mean_best_iou", "higher", "similarity erased",
                role="secondary", note=f"{ENTROPY_RAISED}; {THRESHOLD_FREE}",
            ),
            ClaimTest(
                "kd", "kd_permuted_nontarget", "mean_best_iou", "higher", "similarity scrambled",
                role="secondary", note=f"{LABEL_NOISE}; {THRESHOLD_FREE}",
            ),
            # The dose: a higher temperature exposes more of the non-target structure (and
            # more entropy: descriptive only).
            ClaimTest(
                "kd_temperature_8", "kd_temperature_1", "mean_best_iou", "higher", "gain",
                role="secondary", note=f"the dose; {THRESHOLD_FREE}",
            ),
            *(
                ClaimTest("kd", control, "concept_detectors", "higher", part, role="secondary")
                for control, part in (
                    ("kd_uniform_entropy_matched", "similarity erased"),
                    ("kd_class_permuted_nontarget", "similarity scrambled"),
                )
            ),
        ),
        unmeasured=(
            "that the entropy-matched erasure removes only the similarity: keeping the entropy "
            "with a uniform rest raises each target probability, so those targets lean towards "
            "the labels (towards scratch); a control keeping both the target probability and "
            "the entropy is not run",
            "a dose–response trend over temperatures against the measured similarity "
            "correlation (only temperatures 1 and 8 beside kd's 4 are run, and a temperature "
            "changes the entropy with the similarity)",
        ),
    ),
)  # fmt: skip


@dataclass
class ComparisonResult:
    """One test on one (profile, dataset): its statistics, Holm-adjusted p and verdict."""

    test: ClaimTest
    metric: str
    stats: dict[str, Any]
    higher_is_better: bool = True
    p_holm: float = math.nan
    verdict: str = "inconclusive"
    # The two students' parameter counts (median over seeds), where the records hold them.
    parameters: tuple[float, float] | None = None
    # The tests in its Holm family: the first step of Holm tests at α / family size.
    family_size: int = 1

    @property
    def confounded(self) -> bool:
        """The two students are networks of different sizes (`PARAMETER_TOLERANCE`)."""
        if self.parameters is None:
            return False
        ours, theirs = self.parameters
        return abs(ours - theirs) > PARAMETER_TOLERANCE * max(abs(theirs), 1.0)

    @property
    def mde_80(self) -> float:
        """The smallest true mean difference these seeds detect with 80 % power at the level the
        test's Holm family asks of its first step (α / family size), two-sided: a `not_worse` test
        needs its two-sided 95 % interval above −δ, so its value is measured from −δ. NaN where
        the seeds are too few for the test to be rejected at all: they detect nothing."""
        if self.verdict == TOO_FEW_SEEDS or not can_be_significant(self.test, self.stats["n"]):
            return math.nan
        return minimum_detectable_effect(
            self.stats["std_diff"], self.stats["n"], alpha=ALPHA / max(self.family_size, 1)
        )


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
    # The share of bootstrap resamples of the seeds that give the same verdict
    # (`bench.report.stability`); NaN where it was not measured.
    stability: float = math.nan

    @property
    def called(self) -> str:
        """The verdict the site calls: `unstable` where a deciding verdict does not survive
        resampling the seeds (`bench.report.stability.called`)."""
        return self.verdict if math.isnan(self.stability) else called(self.verdict, self.stability)

    def results_in_order(self) -> Iterator[tuple[DatasetVerdict, ComparisonResult]]:
        """Every test with its dataset, part by part: its primary tests, the paper's, then the
        secondary ones."""
        for part in self.claim.parts:
            for role in ROLES:
                for dv in self.datasets:
                    for r in dv.results:
                        if r.test.part == part and r.test.role == role:
                            yield dv, r

    def part_verdicts_of(self, role: Role) -> dict[str, str]:
        """Each part's verdict from its tests of `role`, in the claim's order (module docstring);
        `not measured` for a part none of whose tests could be made."""
        return {
            part: combine_part(
                [
                    r.verdict
                    for d in self.datasets
                    for r in d.results
                    if r.test.part == part and r.test.role == role
                ]
            )
            for part in self.claim.parts
        }

    @property
    def part_verdicts(self) -> dict[str, str]:
        """The parts' verdicts from the primary tests: the ones that decide."""
        return self.part_verdicts_of("primary")

    @property
    def paper_part_verdicts(self) -> dict[str, str]:
        """The parts' verdicts under the paper's own metrics (the primary ones where those are)."""
        return self.part_verdicts_of("paper" if self.claim.paper else "primary")

    @property
    def too_few_seeds(self) -> list[str]:
        """The (profile/dataset, seeds) where no primary test had seeds enough to reach α: the
        verdict rests on the other datasets ("real/digits_28px (3 seeds)")."""
        found = []
        for d in self.datasets:
            if d.verdict == TOO_FEW_SEEDS:
                n = max(r.stats["n"] for r in d.primary)
                found.append(f"{d.profile}/{d.dataset} ({n} seed{'' if n == 1 else 's'})")
        return found

    @property
    def disagreements(self) -> list[str]:
        """Per part whose primary tests are supported on some datasets and contradicted on
        others: which datasets say which ("explanation: supported on default/wine;
        contradicted on real/magic_telescope"). The claim's verdict combines the datasets; this
        says where a conclusion of one dataset (e.g. an embedded table) is reversed on another
        (a real one)."""
        lines = []
        for part in self.claim.parts:
            said: dict[str, list[str]] = {}
            for d in self.datasets:
                verdict = combine([r.verdict for r in d.primary if r.test.part == part])
                said.setdefault(verdict, []).append(f"{d.profile}/{d.dataset}")
            if {"supported", "contradicted"} <= set(said):
                lines.append(
                    f"{part}: "
                    + "; ".join(
                        f"{v} on {', '.join(said[v])}" for v in ("supported", "contradicted")
                    )
                )
        return lines

    @property
    def verdict(self) -> str:
        """The intersection of the primary parts (see the module docstring)."""
        return intersection(list(self.part_verdicts.values()))

    @property
    def paper_verdict(self) -> str:
        """The same intersection under the paper's own metrics: descriptive, never deciding."""
        return intersection(list(self.paper_part_verdicts.values()))


def smallest_p(test: ClaimTest, n: int) -> float:
    """The smallest sign-flip p `test` can give on `n` paired seeds, whatever their values: the
    `not_worse` tests are one-sided, the others two-sided (module docstring)."""
    return smallest_sign_flip_p(n, "greater" if test.expect == "not_worse" else "two-sided")


def can_be_significant(test: ClaimTest, n: int) -> bool:
    """Whether `test`'s sign-flip p could fall below α on `n` paired seeds, for some values."""
    return smallest_p(test, n) < ALPHA


def intersection(parts: list[str]) -> str:
    """A claim's verdict from its parts' verdicts: it holds only where every part does."""
    if all(v == "not measured" for v in parts):
        return "not measured"
    if all(v in ("not measured", TOO_FEW_SEEDS) for v in parts):
        return TOO_FEW_SEEDS
    if "contradicted" in parts:
        return "contradicted"
    if all(v == "supported" for v in parts):
        return "supported"
    if any(v in ("supported", "mixed") for v in parts):
        return "partly supported"
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
        low, high = stats["ci95_low"], stats["ci95_high"]
        if pd.isna(low):
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


def combine_part(verdicts: list[str]) -> str:
    """A part's verdict from its primary tests' verdicts on every dataset (tests on an unreliable
    metric or with too few seeds left out)."""
    deciding = [v for v in verdicts if v not in (UNRELIABLE, TOO_FEW_SEEDS)]
    if not deciding:
        return TOO_FEW_SEEDS if TOO_FEW_SEEDS in verdicts else "not measured"
    verdicts = deciding
    if "contradicted" in verdicts:
        return "contradicted"
    if all(v == "supported" for v in verdicts):
        return "supported"
    if "supported" in verdicts:
        return "mixed"
    return "inconclusive"


def combine(verdicts: list[str]) -> str:
    """A dataset's verdict from its primary tests' verdicts: as a part's, but a dataset where only
    some tests are supported is inconclusive there."""
    verdict = combine_part(verdicts)
    return {"not measured": "no primary test", "mixed": "inconclusive"}.get(verdict, verdict)


def _run_test(
    test: ClaimTest, by_method: dict[str, Any], higher_is_better: bool, power: bool = True
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
    # The resamples (power=False) take the sign-flip test's normal limit above 16 seeds.
    stats = paired_difference(
        ours, theirs, method_teachers=our_teachers, baseline_teachers=their_teachers,
        power=power, monte_carlo=power, **options,
    )  # fmt: skip
    return stats if stats["n"] else None


def _parameters(by_method: dict[str, Any] | None, test: ClaimTest) -> tuple[float, float] | None:
    """The median parameter count of the test's two students, when both records hold it."""
    if by_method is None or test.method not in by_method or test.baseline not in by_method:
        return None
    ours, theirs = (by_method[m][0] for m in (test.method, test.baseline))
    if not ours or not theirs:
        return None
    return _median(ours), _median(theirs)


def _median(values: dict[int, float]) -> float:
    """The median of the defined values (a pandas Series per call cost seconds over resamples)."""
    defined = [v for v in values.values() if v == v]
    return float(np.median(defined)) if defined else math.nan


def evaluate_values(
    claim: Claim,
    values: StudentValues,
    info: dict[tuple[str, str, str], Any],
    unreliable: Unreliable = frozenset(),
    power: bool = True,
) -> ClaimVerdict:
    """`evaluate` on `student_values`' maps: the tests, their Holm families and verdicts.

    `power=False` leaves `seeds_for_80_power` NaN and takes the sign-flip test's normal limit above
    16 seeds (the seed resamples of the stability check need only the verdicts, thousands of them)."""
    result = ClaimVerdict(claim)
    datasets = sorted({(p, d) for p, d, _ in values})
    for profile, dataset in datasets:
        results = []
        for test in claim.tests:
            by_method = values.get((profile, dataset, test.metric))
            if by_method is None:
                continue
            hib = info[profile, dataset, test.metric][2]
            higher = True if hib is None or pd.isna(hib) else bool(hib)
            stats = _run_test(test, by_method, higher, power)
            if stats is not None:
                sizes = _parameters(values.get((profile, dataset, "parameters")), test)
                results.append(ComparisonResult(test, test.metric, stats, higher, parameters=sizes))
        if results:
            # Primary tests first, in the claim's order.
            results.sort(key=lambda r: (r.test.role != "primary", claim.tests.index(r.test)))
            result.datasets.append(DatasetVerdict(profile, dataset, results))
    # Holm within each part of the claim: one family per (profile, part, role), across datasets
    # and comparisons; none between the parts (the claim is their intersection). A test on an
    # unreliable metric decides nothing but keeps its place in the family at p = 1, so that
    # dropping it after seeing the data does not relax the others' correction; a test with too
    # few seeds to reach α has no place in it (which those are, the seeds run decide).
    for d in result.datasets:
        for r in d.results:
            if not can_be_significant(r.test, r.stats["n"]):
                r.verdict = TOO_FEW_SEEDS
            elif (d.profile, d.dataset, r.metric.removesuffix(EXCESS_SUFFIX)) in unreliable:
                r.verdict = UNRELIABLE
    for profile in sorted({d.profile for d in result.datasets}):
        for part in claim.parts:
            for role in ROLES:
                tests = [
                    r
                    for d in result.datasets
                    if d.profile == profile
                    for r in d.results
                    if r.test.role == role and r.test.part == part
                ]
                family = [r for r in tests if r.verdict != TOO_FEW_SEEDS]
                # A test no step of Holm could reject over this family, whatever the values, has
                # too few seeds too; it keeps its place in the family (left out, it could become
                # reachable again).
                floors = [
                    1.0 if r.verdict == UNRELIABLE else smallest_p(r.test, r.stats["n"])
                    for r in family
                ]
                for r, reachable in zip(family, holm_reachable(floors), strict=True):
                    r.family_size = len(family)
                    if not reachable and r.verdict != UNRELIABLE:
                        r.verdict = TOO_FEW_SEEDS
                adjusted = holm(
                    [1.0 if r.verdict == UNRELIABLE else r.stats["p_value"] for r in family]
                )
                for r, p_adj in zip(family, adjusted, strict=True):
                    if r.verdict in (UNRELIABLE, TOO_FEW_SEEDS):
                        continue
                    r.p_holm = float(p_adj)
                    verdict = verdict_of(r.test, r.stats, r.p_holm, r.higher_is_better)
                    r.verdict = "confounded" if r.confounded and verdict == "supported" else verdict
                for r in tests:
                    # Its interval alone can still show a non-inferiority test's loss.
                    if r.verdict == TOO_FEW_SEEDS and (
                        verdict_of(r.test, r.stats, math.nan, r.higher_is_better) == "contradicted"
                    ):
                        r.verdict = "contradicted"
    for d in result.datasets:
        d.verdict = combine([r.verdict for r in d.primary])
    return result


def evaluate(
    claim: Claim, seeds: pd.DataFrame, unreliable: Unreliable = frozenset()
) -> ClaimVerdict:
    """Check `claim` on every (profile, dataset) of `seeds` (`bench.report.statistics.seed_values`).

    `unreliable`: (profile, dataset, metric) whose measurement fails a reliability check
    (`bench.report.reliability`); tests on them get the verdict `UNRELIABLE` and decide nothing.
    The verdict's stability over resampled seeds is measured too (`bench.report.stability`).
    """
    values, info = student_values(seeds)
    result = evaluate_values(claim, values, info, unreliable)
    # The resamples need the primary tests' metrics and methods only, and the students' sizes:
    # seeds are drawn from the claim's own methods, so that others' seeds do not thin its pairs.
    # Only the datasets it was tested on (each draws from its own generator, so this only saves
    # time). A verdict of too few seeds, or none, has no stability to measure.
    deciding = replace(claim, tests=claim.primary)
    needed = {t.metric for t in deciding.tests} | {"parameters"}
    methods = {m for t in deciding.tests for m in (t.method, t.baseline)}
    tested = {(d.profile, d.dataset) for d in result.datasets}
    used = {
        key: {m: v for m, v in by_method.items() if m in methods}
        for key, by_method in values.items()
        if key[2] in needed and key[:2] in tested
    }
    if result.verdict not in (TOO_FEW_SEEDS, "not measured"):
        result.stability = verdict_stability(
            lambda drawn: evaluate_values(deciding, drawn, info, unreliable, power=False).verdict,
            used,
            result.verdict,
        )
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


def evaluate_all(
    seeds: pd.DataFrame, claims: Sequence[Claim] = CLAIMS, unreliable: Unreliable = frozenset()
) -> list[ClaimVerdict]:
    """Every claim's verdict on the per-seed values `seeds` (`bench.report.statistics.seed_values`)."""
    return [evaluate(claim, seeds, unreliable) for claim in claims]


CLAIM_COLUMNS = [
    "claim", "source", "statement", "part", "role", "profile", "dataset", "method", "baseline",
    "metric", "note", "expect", "margin", "n", "mean_diff", "std_diff", "ci95_low", "ci95_high",
    "p_value", "p_method", "p_holm", "seeds_for_80_power", "mde_80", "method_parameters",
    "baseline_parameters", "test_verdict", "dataset_verdict", "part_verdict", "claim_verdict",
    "verdict_on_records", "verdict_stability", "paper_verdict", "missing",
]  # fmt: skip


STAT_KEYS = (
    "n", "mean_diff", "std_diff", "ci95_low", "ci95_high", "p_value", "p_method",
    "seeds_for_80_power",
)  # fmt: skip


def claims_table(verdicts: list[ClaimVerdict]) -> pd.DataFrame:
    """One row per (claim, test, profile, dataset), primary tests first; one per unmeasured claim.

    `test_verdict` is the row's own test, `dataset_verdict` the claim's on that dataset (its
    primary tests), `part_verdict` the verdict of the part the test belongs to (under the paper's
    metrics for a `paper` row), `claim_verdict` the claim's over all its parts, `paper_verdict`
    the same under the paper's own metrics; `claim_verdict` is the verdict called (`unstable` where
    `verdict_on_records`, the verdict of the records as they are, holds in fewer than
    `bench.report.stability.STABLE` of the seed resamples; `verdict_stability`); `missing` also names what the paper claims and no
    record tests (`Claim.unmeasured`).
    """
    rows = []
    for cv in verdicts:
        base = {
            "claim": cv.claim.key,
            "source": cv.claim.source,
            "statement": cv.claim.statement,
            "claim_verdict": cv.called,
            "verdict_on_records": cv.verdict,
            "verdict_stability": cv.stability,
            "paper_verdict": cv.paper_verdict,
            "missing": "; ".join([*cv.missing, *cv.claim.unmeasured]),
        }
        if not cv.datasets:
            rows.append(base)
        parts, paper_parts = cv.part_verdicts, cv.part_verdicts_of("paper")
        for dv, r in cv.results_in_order():
            s = r.stats
            sizes = r.parameters or (math.nan, math.nan)
            rows.append(
                {
                    **base,
                    "part": r.test.part,
                    "role": r.test.role,
                    "profile": dv.profile,
                    "dataset": dv.dataset,
                    "method": r.test.method,
                    "baseline": r.test.baseline,
                    "metric": r.metric,
                    "note": r.test.note,
                    "expect": r.test.expect,
                    "margin": r.test.margin,
                    **{k: s[k] for k in STAT_KEYS},
                    "p_holm": r.p_holm,
                    "mde_80": r.mde_80,
                    "method_parameters": sizes[0],
                    "baseline_parameters": sizes[1],
                    "test_verdict": r.verdict,
                    "dataset_verdict": dv.verdict,
                    "part_verdict": (paper_parts if r.test.role == "paper" else parts)[r.test.part],
                }
            )
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)
