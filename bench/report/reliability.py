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

- **MetaQuantus** (Quantus metrics) — is it resilient to minor perturbations of the models and
  their inputs and reactive to disruptive ones (Hedström et al. 2023, with models as the ranked
  set)? These need trained networks, which records do not keep: `python -m bench metaquantus`
  retrains the teacher's and two students' seed 0 and writes `metaquantus.csv` into the results
  folder (`bench.run.metaquantus`); where it is absent the table says so in `not_measured`.

What a failure means for the site: a metric that fails any check is shown greyed with the reason
and gets no rank (`ranks_it`); one that fails separation, test–retest or a MetaQuantus test
decides no claim (`decides_verdicts`). A metric that only fails discrimination may still decide a claim: a claim's
paired test measures the difference itself, and for "not worse" an absence of difference is what
it claims.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench.core.errors import BenchError
from bench.report.separation import separation_table
from bench.report.statistics import ALPHA
from bench.results.table import Records, as_long_table

RETEST_MIN = 0.7
RETEST_RUNS = 6
NOT_MEASURED = (
    "MetaQuantus noise-resilience and adversarial-reactivity tests: no metaquantus.csv in the "
    "results folder (`python -m bench metaquantus` writes it)"
)
# The columns of `metaquantus.csv` the checks read, with their types.
METAQUANTUS_COLUMNS = {
    "profile": str, "dataset": str, "metric": str, "noise_resilient": bool,
    "adversarially_reactive": bool,
}  # fmt: skip
COLUMNS = [
    "profile", "dataset", "metric", "category", "methods", "student_runs", "f_statistic", "p_value",
    "discriminates", "separates", "test_retest", "retest_runs", "retest_holds",
    "noise_resilient", "adversarially_reactive", "ranks_it", "decides_verdicts", "reason",
    "not_measured",
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


def _reason(
    discriminates: bool, separates: bool | None, retest: float, meta: tuple[bool, bool] | None
) -> str:
    failures = []
    if not discriminates:
        failures.append("does not tell the students apart (ANOVA over methods, p ≥ 0.05)")
    if separates is False:
        failures.append("does not beat every control row (separation)")
    if not math.isnan(retest) and retest < RETEST_MIN:
        failures.append(f"split-half reliability {retest:.2f} < {RETEST_MIN}")
    if meta is not None and not meta[0]:
        failures.append("reorders or changes the models under minor perturbations (MetaQuantus)")
    if meta is not None and not meta[1]:
        failures.append("does not react to disruptive perturbations (MetaQuantus)")
    return "; ".join(failures)


def read_metaquantus(path: Path) -> pd.DataFrame | None:
    """The MetaQuantus tests written by `python -m bench metaquantus`, or None when there are
    none; a file that is not such a table is refused with one line naming it."""
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: not a MetaQuantus table ({exc})") from exc
    missing = set(METAQUANTUS_COLUMNS) - set(table.columns)
    flags = table[["noise_resilient", "adversarially_reactive"]] if not missing else None
    if missing or not flags.isin(["True", "False"]).all().all():
        what = f"columns {sorted(missing)} missing" if missing else "flags not True/False"
        raise BenchError(f"{path}: not a MetaQuantus table ({what}); rerun `bench metaquantus`")
    for column in ("noise_resilient", "adversarially_reactive"):
        table[column] = table[column] == "True"
    return table[list(METAQUANTUS_COLUMNS)]


def reliability_table(
    data: Records | pd.DataFrame,
    separation: pd.DataFrame | None = None,
    metaquantus: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (profile, dataset, metric) of the `ok` student rows with a direction.

    `separation`: the records' `separation_table`, when the caller has it already; `metaquantus`:
    the MetaQuantus tests (`read_metaquantus`), when there are any."""
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
    meta = {}
    if metaquantus is not None:
        meta = {
            (p, d, m): (bool(nr), bool(ar))
            for p, d, m, nr, ar in zip(*(metaquantus[c] for c in METAQUANTUS_COLUMNS), strict=True)
        }
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
        quantus = str(cell.category.iloc[0]).startswith("quantus_")
        tested = meta.get((profile, dataset, metric))
        valid = (
            separated is not False and retest_holds is not False and (tested is None or all(tested))
        )
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
                "noise_resilient": "n/a" if tested is None else tested[0],
                "adversarially_reactive": "n/a" if tested is None else tested[1],
                "ranks_it": valid and discriminates,
                "decides_verdicts": valid,
                "reason": _reason(discriminates, separated, retest, tested),
                "not_measured": NOT_MEASURED if quantus and tested is None else "",
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
