"""The answer first: per track, every method's paired effect on accuracy and on faithfulness.

The index opens with one table per (profile, track): a row per method, two columns per dataset.
A cell is the method's paired difference from `scratch` (seeds paired, each with its own teacher,
as in `comparisons.csv`), and underneath its difference from `kd`, on the track's two primary
metrics:

- accuracy (`PRIMARY_ACCURACY`);
- faithfulness to the teacher: Spearman agreement of the student's explanation by the track's
  held-out explainer with the teacher's, in excess of the strongest control row of the same
  teacher seed (`faithfulness_metrics`). Held out because no method trains on it, so no method
  agrees by construction (the claims' primary metric too): integrated gradients on images, and
  interventional Shapley on tables, where IG agrees with the gradient × input that
  explanation-imitation methods train (`bench.explain.shapley`). The one exception in kind is
  `jacobian_kd`, which matches the input gradient that IG integrates, so its IG agreement is
  partly trained for and is read as such. The excess because raw agreement
  is meaningless without its floor. Paired differences of the excess equal those of the raw
  agreement, since both rows of a pair share their teacher seed's floor.

A difference is marked (bold, ▲ / ▼) when its Holm-adjusted sign-flip p is below α, the
correction `comparisons.csv` applies over the methods compared with one baseline on one metric.
`scratch` and the reference rows show their own levels instead: accuracy, and the excess (for
`scratch`) or the raw agreement (the teacher's own is 1; the strongest floor is what the excess
subtracts).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bench.core.vocabulary import FLOOR_ROWS, OTHER_TEACHER, TEACHER_ROW
from bench.report.completeness import profile_rank
from bench.report.numbers import format_fixed, format_p, format_signed, format_value
from bench.report.statistics import ALPHA

PRIMARY_ACCURACY = "accuracy"
# The held-out explainer of each track (the module docstring).
HELD_OUT_EXPLAINERS = {"tabular": "shapley", "image": "ig"}


def faithfulness_metrics(modality: str) -> tuple[str, str]:
    """The track's raw held-out agreement and its excess over the strongest floor."""
    raw = f"expl_spearman_{HELD_OUT_EXPLAINERS.get(modality, 'ig')}"
    return raw, f"{raw}_excess"


BASELINES = ("scratch", "kd")


@dataclass(frozen=True)
class SummaryCell:
    text: str
    below: str = ""  # the difference from kd, shown under the main text
    title: str = ""
    css: str = ""


@dataclass(frozen=True)
class SummaryRow:
    method: str
    role: str  # student, baseline, teacher or control
    cells: list[SummaryCell]


@dataclass(frozen=True)
class SummaryTable:
    profile: str
    modality: str
    datasets: list[str]
    rows: list[SummaryRow]
    faithfulness: str  # the faithfulness column's metric


COMPARISON_KEY = ["profile", "dataset", "method", "baseline", "metric"]
Differences = dict[tuple[str, str, str, str, str], pd.Series]


def _differences(comparisons: pd.DataFrame) -> Differences:
    """`comparisons.csv` rows by (profile, dataset, method, baseline, metric), indexed once for
    the whole summary rather than filtered again for every cell."""
    return {tuple(key): row for key, row in comparisons.set_index(COMPARISON_KEY).iterrows()}


def _effect_cell(
    differences: Differences, profile: str, dataset: str, method: str, metric: str
) -> SummaryCell:
    """Δ vs scratch as the text, Δ vs kd below it, both marked where significant after Holm."""
    parts, titles, css = [], [], ""
    for baseline in BASELINES:
        if method == baseline:
            parts.append("")
            continue
        row = differences.get((profile, dataset, method, baseline, metric))
        if row is None or pd.isna(row.mean_diff):
            parts.append("")
            continue
        significant = not pd.isna(row.p_holm) and row.p_holm < ALPHA
        mark = ("▲" if row.mean_diff > 0 else "▼") if significant else ""
        parts.append(
            f"{format_signed(row.mean_diff)}{mark}" + ("" if baseline == "scratch" else " vs kd")
        )
        titles.append(
            f"vs {baseline}: Δ {format_signed(row.mean_diff)} [{format_signed(row.ci95_low)}, "
            f"{format_signed(row.ci95_high)}], n = {int(row.n)}, p (Holm) = {format_p(row.p_holm)}"
        )
        if baseline == "scratch" and significant:
            css = "sig-better" if row.mean_diff > 0 else "sig-worse"
    return SummaryCell(parts[0], parts[1], "; ".join(titles), css)


def _level_cell(
    means: pd.DataFrame, profile: str, dataset: str, method: str, metric: str, note: str = ""
) -> SummaryCell:
    match = means[(means.profile == profile) & (means.dataset == dataset) & (means.method == method)
                  & (means.metric == metric)]  # fmt: skip
    if match.empty or pd.isna(match.iloc[0]["mean"]):
        return SummaryCell("")
    row = match.iloc[0]
    return SummaryCell(
        format_fixed(row["mean"]),
        note,
        f"{metric}: mean {format_value(row['mean'])} over n = {int(row.n)}",
    )


def _floor_cell(means: pd.DataFrame, profile: str, dataset: str, raw: str) -> SummaryCell:
    controls = means[(means.profile == profile) & (means.dataset == dataset)
                     & means.method.isin(FLOOR_ROWS) & (means.metric == raw)]  # fmt: skip
    if controls.empty:
        return SummaryCell("")
    strongest = controls.loc[controls["mean"].idxmax()]
    return SummaryCell(format_fixed(strongest["mean"]), strongest.method,
                       f"strongest control row of {raw}: {strongest.method}")  # fmt: skip


def track_summaries(means: pd.DataFrame, comparisons: pd.DataFrame) -> list[SummaryTable]:
    """One table per (profile, modality) of the aggregated rows `means` (leaderboard rows)."""
    differences = _differences(comparisons)
    tables = []
    for (profile, modality), part in means.groupby(["profile", "modality"], sort=True):
        raw, excess = faithfulness_metrics(modality)
        datasets = sorted(part.dataset.unique())
        students = sorted(set(part[part.role == "student"].method))
        ordered = [m for m in BASELINES if m in students] + [
            m for m in students if m not in BASELINES
        ]
        rows = []
        if (part.method == TEACHER_ROW).any():
            cells = []
            for d in datasets:
                cells += [
                    _level_cell(part, profile, d, TEACHER_ROW, PRIMARY_ACCURACY),
                    SummaryCell("1", "ceiling"),
                ]
            rows.append(SummaryRow(TEACHER_ROW, "teacher", cells))
        if part.method.isin(FLOOR_ROWS).any():
            cells = []
            for d in datasets:
                cells += [SummaryCell(""), _floor_cell(part, profile, d, raw)]
            rows.append(SummaryRow("strongest floor", "control", cells))
        if (part.method == OTHER_TEACHER.name).any():
            cells = []
            for d in datasets:
                cells += [
                    _level_cell(part, profile, d, OTHER_TEACHER.name, metric, "level")
                    for metric in (PRIMARY_ACCURACY, raw)
                ]
            rows.append(SummaryRow(OTHER_TEACHER.name, "control", cells))
        for method in ordered:
            cells = []
            for d in datasets:
                if method == "scratch":
                    cells += [
                        _level_cell(part, profile, d, method, PRIMARY_ACCURACY, "level"),
                        _level_cell(part, profile, d, method, excess, "level"),
                    ]
                else:
                    cells += [
                        _effect_cell(differences, profile, d, method, metric)
                        for metric in (PRIMARY_ACCURACY, excess)
                    ]
            role = "baseline" if method == "scratch" else "student"
            rows.append(SummaryRow(method, role, cells))
        tables.append(SummaryTable(profile, modality, datasets, rows, excess))
    # The real-data profile first, tabular then image, as the index orders its tracks.
    return sorted(
        tables, key=lambda t: (profile_rank(t.profile), t.modality != "tabular", t.modality)
    )
