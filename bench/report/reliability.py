"""Which metrics can be trusted to rank students and decide claims, measured on the records.

A referee found a third of the (dataset, Quantus metric) cells unable to tell any two students
apart, and most Quantus metrics unable to tell the teacher from a control row (FINDINGS N8, N9).
Each (profile, dataset, metric) of the student rows gets three checks here, each with a stated
rule, and `metric_reliability.csv` holds them:

- **discrimination** — do the student methods differ more than their seeds do? One-way ANOVA of
  the per-seed values with the method as the factor (the F ratio of between-method to
  within-method variance; `scipy.stats.f_oneway`): it discriminates when p < `ALPHA`. Metrics
  every student scores identically (no variance at all) do not.
- **separation** — does the teacher beat every control row by more than two standard errors, on
  every teacher seed (`bench.report.separation`; Quantus and dissection metrics only, elsewhere
  `n/a`: explanation agreement has its floors subtracted in the `_excess` rows instead).
- **test–retest** — does the metric give a model the same value on two disjoint halves of the
  scored samples? The Pearson correlation across student runs between the means of the even and
  the odd scored samples (`split_halves` in the records' metadata), stepped up to the full sample
  by Spearman–Brown (2r / (1 + r)); it holds when that is at least `RETEST_MIN`. `n/a` for a metric
  with no samples (accuracy, a count), or with fewer than `RETEST_RUNS` runs that have halves.

Not measured here: MetaQuantus's noise-resilience and adversarial-reactivity tests (Hedström et
al. 2023) with students as the ranked set; they need the trained students, which records do not
keep, and the table says so in its `not_measured` column.

What a failure means for the site: a metric that fails any check is shown greyed with the reason
and gets no rank (`ranks_it`); one that fails separation or test–retest decides no claim
(`decides_verdicts`). A metric that only fails discrimination may still decide a claim: a claim's
paired test measures the difference itself, and for "not worse" an absence of difference is what
it claims.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from bench.report.separation import separation_table
from bench.report.statistics import ALPHA
from bench.results.table import Records, as_long_table

RETEST_MIN = 0.7
RETEST_RUNS = 6
NOT_MEASURED = (
    "MetaQuantus noise-resilience and adversarial-reactivity tests: they need trained students, "
    "which the records do not keep"
)
COLUMNS = [
    "profile", "dataset", "metric", "category", "methods", "student_runs", "f_statistic", "p_value",
    "discriminates", "separates", "test_retest", "retest_runs", "retest_holds", "ranks_it",
    "decides_verdicts", "reason", "not_measured",
]  # fmt: skip


def _discrimination(groups: list[np.ndarray]) -> tuple[float, float]:
    """(F, p) of the one-way ANOVA over methods; (nan, nan) where it is undefined."""
    groups = [g for g in groups if len(g) > 0]
    if len(groups) < 2 or sum(len(g) for g in groups) <= len(groups):
        return math.nan, math.nan
    values = np.concatenate(groups)
    if np.ptp(values) == 0:
        return math.nan, 1.0  # every student scores the same: nothing to tell apart
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on zero within-group variance
        result = stats.f_oneway(*groups)
    f, p = float(result.statistic), float(result.pvalue)
    if math.isinf(f) or (math.isnan(p) and np.isfinite(f)):
        return f, 0.0  # no spread within methods, some between: they differ
    return f, p


def _retest(halves: pd.DataFrame) -> tuple[float, int]:
    """(Spearman–Brown split-half reliability, runs used); nan when it cannot be measured."""
    both = halves[np.isfinite(halves.half_a) & np.isfinite(halves.half_b)]
    n = len(both)
    if n < RETEST_RUNS or np.ptp(both.half_a) == 0 or np.ptp(both.half_b) == 0:
        return math.nan, n
    r = float(np.corrcoef(both.half_a, both.half_b)[0, 1])
    return (2 * r / (1 + r) if r > -1 else -math.inf), n


def _reason(discriminates: bool, separates: bool | None, retest: float) -> str:
    failures = []
    if not discriminates:
        failures.append("does not tell the students apart (ANOVA over methods, p ≥ 0.05)")
    if separates is False:
        failures.append("does not beat every control row (separation)")
    if not math.isnan(retest) and retest < RETEST_MIN:
        failures.append(f"split-half reliability {retest:.2f} < {RETEST_MIN}")
    return "; ".join(failures)


def reliability_table(
    data: Records | pd.DataFrame, separation: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per (profile, dataset, metric) of the `ok` student rows with a direction.

    `separation`: the records' `separation_table`, when the caller has it already."""
    table = as_long_table(data)
    students = table[
        (table.status == "ok") & (table.role == "student") & table.higher_is_better.notna()
    ]
    if separation is None:
        separation = separation_table(table)
    separates = {
        (p, d, m): bool(s)
        for p, d, m, s in zip(
            separation.profile, separation.dataset, separation.metric, separation.separates,
            strict=True,
        )
    }  # fmt: skip
    rows = []
    for (profile, dataset, metric), cell in students.groupby(
        ["profile", "dataset", "metric"], sort=True
    ):
        finite = cell[np.isfinite(cell.value)]
        groups = [g.value.to_numpy() for _, g in finite.groupby("method", sort=True)]
        f, p = _discrimination(groups)
        discriminates = bool(p < ALPHA) if not math.isnan(p) else False
        separated = separates.get((profile, dataset, metric))
        retest, retest_runs = _retest(cell)
        retest_holds = None if math.isnan(retest) else bool(retest >= RETEST_MIN)
        valid = separated is not False and retest_holds is not False
        rows.append(
            {
                "profile": profile,
                "dataset": dataset,
                "metric": metric,
                "category": cell.category.iloc[0],
                "methods": len(groups),
                "student_runs": len(finite),
                "f_statistic": f,
                "p_value": p,
                "discriminates": discriminates,
                "separates": "n/a" if separated is None else separated,
                "test_retest": retest,
                "retest_runs": retest_runs,
                "retest_holds": "n/a" if retest_holds is None else retest_holds,
                "ranks_it": valid and discriminates,
                "decides_verdicts": valid,
                "reason": _reason(discriminates, separated, retest),
                "not_measured": NOT_MEASURED if cell.category.iloc[0].startswith("quantus_")
                else "",
            }
        )  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def failing(reliability: pd.DataFrame, column: str) -> set[tuple[str, str, str]]:
    """(profile, dataset, metric) whose `column` (`ranks_it` or `decides_verdicts`) is False."""
    flagged = reliability[~reliability[column].astype(bool)]
    return set(zip(flagged.profile, flagged.dataset, flagged.metric, strict=True))


def reasons(reliability: pd.DataFrame) -> dict[tuple[str, str, str], str]:
    """(profile, dataset, metric) → why it is greyed, for every metric that fails a check."""
    flagged = reliability[reliability.reason != ""]
    return dict(
        zip(
            zip(flagged.profile, flagged.dataset, flagged.metric, strict=True),
            flagged.reason,
            strict=True,
        )
    )
