"""Which metrics can be trusted to rank students and decide claims, measured on the records.

A referee found a third of the (dataset, Quantus metric) cells unable to tell any two students
apart, and most Quantus metrics unable to tell the teacher from a control row (FINDINGS N8, N9).
Each (profile, dataset, metric) of the student rows gets these checks, each with a stated rule,
and `metric_reliability.csv` holds them:

- **discrimination** — do the student methods differ at all? Friedman's test with the seeds as
  blocks (`bench.report.friedman`: the seeds the methods share, each from one teacher, so that
  the design's pairing is kept and the screens' three seeds are not pooled with the claims'
  twelve): it discriminates when p < `ALPHA`. `n/a` with fewer than three methods or two shared
  seeds; then the paired ranks alone decide. A referee noted that a one-way ANOVA, used first,
  treated paired, teacher-nested seeds as independent.
- **separation** — does the teacher beat every floor (control row) by more than two standard
  errors, on every teacher seed (`bench.report.separation`; Quantus and dissection metrics only, elsewhere
  `n/a`: explanation agreement has its floors subtracted in the `_excess` rows instead).
- **split-half reliability** — does the metric give a model the same value on two disjoint halves
  of the samples it scores? The Pearson correlation across student runs between the means over
  the even and the odd explained samples (`split_halves` in the records' metadata), stepped up to
  the whole sample by Spearman–Brown (2r / (1 + r)); it holds when that is at least
  `SPLIT_HALF_MIN`. The runs are pooled over methods on purpose: the differences between methods
  are the signal the metric is asked to rank, and the halves' disagreement is its sampling noise.
  It is internal consistency over test samples, not a retraining: that is the seeds' business.
  `n/a` for a metric with no samples (accuracy, a count), or fewer than `SPLIT_HALF_RUNS` runs.
- **MetaQuantus** (Quantus metrics) — is it resilient to minor perturbations of the models and
  their inputs and reactive to disruptive ones (Hedström et al. 2023, with models as the ranked
  set)? These need trained networks, which records do not keep: `python -m bench metaquantus`
  retrains the teacher's and two students' seed 0 and writes `metaquantus.csv` into the results
  folder (`bench.run.metaquantus`); where it is absent the table says so in `not_measured`.

A check that could not be made (`n/a`) is not a failure, and `not_measured` says what is missing.
What a failure means for the site: a metric that fails any check is shown greyed with the reason
and gets no rank (`ranks_it`); one that fails separation, split-half reliability or a MetaQuantus
test decides no claim (`decides_verdicts`). A metric that only fails discrimination may still
decide a claim: a claim's paired test measures the difference itself, and for "not worse" an
absence of difference is what it claims.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.core.errors import BenchError
from bench.report.friedman import friedman_table
from bench.report.separation import separation_table
from bench.report.statistics import ALPHA, seed_values, student_values
from bench.results.table import Records, as_long_table

SPLIT_HALF_MIN = 0.7
SPLIT_HALF_RUNS = 6
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
    "profile", "dataset", "metric", "category", "methods", "student_runs", "friedman_p",
    "discriminates", "separates", "split_half", "split_half_runs", "split_half_holds",
    "noise_resilient", "adversarially_reactive", "ranks_it", "decides_verdicts", "reason",
    "not_measured",
]  # fmt: skip


def _split_half(halves: pd.DataFrame) -> tuple[float, int]:
    """(Spearman–Brown split-half reliability, runs used); nan when it cannot be measured."""
    both = halves[np.isfinite(halves.half_a) & np.isfinite(halves.half_b)]
    n = len(both)
    if n < SPLIT_HALF_RUNS or np.ptp(both.half_a) == 0 or np.ptp(both.half_b) == 0:
        return math.nan, n
    r = float(np.corrcoef(both.half_a, both.half_b)[0, 1])
    return (2 * r / (1 + r) if r > -1 else -math.inf), n


def _reason(
    discriminates: bool | None, separates: bool | None, split: float, meta: tuple[bool, bool] | None
) -> str:
    failures = []
    if discriminates is False:
        failures.append(f"does not tell the students apart (Friedman, p ≥ {ALPHA:g})")
    if separates is False:
        failures.append("does not beat every floor (separation)")
    if not math.isnan(split) and split < SPLIT_HALF_MIN:
        failures.append(f"split-half reliability {split:.2f} < {SPLIT_HALF_MIN}")
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
    friedman: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (profile, dataset, metric) of the `ok` student rows with a direction.

    `separation`, `friedman`: the records' `separation_table` and `friedman_table`, when the
    caller has them already; `metaquantus`: the MetaQuantus tests (`read_metaquantus`), when
    there are any."""
    table = as_long_table(data)
    students = table[
        (table.status == "ok") & (table.role == "student") & table.higher_is_better.notna()
    ]
    if separation is None:
        separation = separation_table(table)
    if friedman is None:
        friedman = friedman_table(*student_values(seed_values(table)))
    omnibus = {
        (p, d, m): (float(pv), bool(differ))
        for p, d, m, pv, differ in zip(
            friedman.profile, friedman.dataset, friedman.metric, friedman.p_value,
            friedman.differ, strict=True,
        )
    }  # fmt: skip
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
        friedman_p, discriminates = omnibus.get((profile, dataset, metric), (math.nan, None))
        separated = separates.get((profile, dataset, metric))
        split, split_runs = _split_half(cell)
        split_holds = None if math.isnan(split) else bool(split >= SPLIT_HALF_MIN)
        quantus = str(cell.category.iloc[0]).startswith("quantus_")
        tested = meta.get((profile, dataset, metric))
        valid = (
            separated is not False and split_holds is not False and (tested is None or all(tested))
        )
        rows.append(
            {
                "profile": profile,
                "dataset": dataset,
                "metric": metric,
                "category": cell.category.iloc[0],
                "methods": finite.method.nunique(),
                "student_runs": len(finite),
                "friedman_p": friedman_p,
                "discriminates": "n/a" if discriminates is None else discriminates,
                "separates": "n/a" if separated is None else separated,
                "split_half": split,
                "split_half_runs": split_runs,
                "split_half_holds": "n/a" if split_holds is None else split_holds,
                "noise_resilient": "n/a" if tested is None else tested[0],
                "adversarially_reactive": "n/a" if tested is None else tested[1],
                "ranks_it": valid and discriminates is not False,
                "decides_verdicts": valid,
                "reason": _reason(discriminates, separated, split, tested),
                "not_measured": NOT_MEASURED if quantus and tested is None else "",
            }
        )  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def failing(reliability: pd.DataFrame, column: str) -> set[tuple[str, str, str]]:
    """(profile, dataset, metric) whose `column` (`ranks_it` or `decides_verdicts`) is False."""
    flagged = reliability[~reliability[column].astype(bool)] if len(reliability) else reliability
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
