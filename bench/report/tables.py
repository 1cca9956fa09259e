"""The report's tables: leaderboard, rank, comparison and claims tables, how numbers are shown, and
the file names of the pages they link to (`slug`, `dataset_page`, `method_page`).

Plain data built from the statistics' frames (`bench.report.leaderboard`, `bench.report.statistics`,
`bench.report.claims`) by `bench.report.compute`; `bench.report.render` renders them into pages.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from bench.core.vocabulary import BASELINES
from bench.report.claims import UNRELIABLE, ClaimVerdict
from bench.report.leaderboard import (
    method_order,
    metric_order,
)
from bench.report.numbers import format_p, format_signed, format_spread, format_value
from bench.report.stability import stability_error
from bench.report.statistics import EXCESS_SUFFIX, POWER_CAP, TOO_FEW_SEEDS, decides

# The comparisons a dataset page shows (all of them are in the exported comparisons.csv).
HEADLINE_METRICS = (
    "accuracy",
    "teacher_agreement",
    "expl_spearman_{explainer}",
    "concept_detectors",
)


@dataclass
class Cell:
    text: str
    title: str
    value: str = ""  # the sort key: the unrounded number, or empty when there is none
    css: str = ""


@dataclass
class Column:
    name: str
    category: str
    higher_is_better: bool | None
    description: str
    group_start: bool = False
    # Average-rank tables sort by rank (lower is better) whatever the metric's own direction.
    is_rank: bool = False
    # Why the metric cannot be trusted on this dataset (it fails a check of
    # `bench.report.reliability`: it cannot rank the students), or "" when it passes them all.
    unreliable: str = ""
    # False when no paired test tells any two students apart on this dataset: every rank is 1.
    decided: bool = True

    @property
    def arrow(self) -> str:
        if self.higher_is_better is None or self.is_rank:
            return ""
        return "↑" if self.higher_is_better else "↓"

    @property
    def title(self) -> str:
        if self.is_rank:
            return (
                f"Mean rank on {self.name} over the datasets (1 is best; lower is better). "
                f"{self.description}"
            )
        direction = ""
        if self.higher_is_better is not None:
            direction = "; higher is better" if self.higher_is_better else "; lower is better"
        warning = (
            f" ⚠ Not reliable on this dataset ({self.unreliable}): greyed, no rank."
            if self.unreliable
            else ""
        )
        if not self.decided:
            warning += (
                " = No paired test tells any two students apart here: every student ranks 1, "
                "and no value is marked best."
            )
        return f"{self.description or self.name} ({self.category}{direction}){warning}"


@dataclass
class Row:
    method: str
    role: str
    link: str
    cells: list[Cell]
    # Beside a reference set, whose seeds the row holds (`bench.report.reference.source_label`).
    source: str = ""
    # A screen (`bench.report.statistics.ranking_scope`): fewer seeds than the ranked methods of
    # its table, so unranked there; the text says how many seeds each has.
    screen: str = ""
    # Runs of its planned seeds still to come (`bench.report.completeness`): not a screen's
    # design but an unfinished row, which will change as they land.
    incomplete: str = ""


@dataclass
class Table:
    """A sortable table: metric columns grouped by category, one row per leaderboard row."""

    profile: str
    dataset: str
    modality: str
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)
    page: str = ""

    def primary(self) -> Table:
        """The table cut to its primary columns (`is_primary`), for the index; the full table
        is one click away below it."""
        keep = [i for i, c in enumerate(self.columns) if is_primary(c.name)]
        if not keep:
            return self
        categories = [self.columns[i].category for i in keep]
        columns = [
            replace(self.columns[i], group_start=n == 0 or categories[n - 1] != categories[n])
            for n, i in enumerate(keep)
        ]
        rows = [replace(r, cells=[r.cells[i] for i in keep]) for r in self.rows]
        return replace(self, columns=columns, rows=rows)

    @property
    def groups(self) -> list[tuple[str, int]]:
        spans: list[tuple[str, int]] = []
        for column in self.columns:
            if spans and spans[-1][0] == column.category:
                spans[-1] = (column.category, spans[-1][1] + 1)
            else:
                spans.append((column.category, 1))
        return spans


# The columns the index shows of each dataset: accuracy, agreement with the teacher's predictions,
# explanation agreement above its floor, and the dissection's count and threshold-free score.
PRIMARY_METRICS = ("accuracy", "teacher_agreement", "concept_detectors", "mean_best_iou")


def is_primary(metric: str) -> bool:
    return metric in PRIMARY_METRICS or (
        metric.startswith("expl_spearman_") and metric.endswith("_excess")
    )


def table_columns(part: pd.DataFrame, descriptions: dict[str, str]) -> list[Column]:
    first = part.groupby("metric").first()
    columns = []
    for metric in metric_order(part):
        hib = first.loc[metric, "higher_is_better"]
        category = str(first.loc[metric, "category"])
        columns.append(
            Column(
                metric,
                category,
                None if hib is None or pd.isna(hib) else bool(hib),
                descriptions.get(metric, ""),
                group_start=not columns or columns[-1].category != category,
            )
        )
    return columns


def leaderboard_table(
    ranked: pd.DataFrame,
    profile: str,
    dataset: str,
    descriptions: dict[str, str],
    flagged: dict[tuple[str, str, str], str] | None = None,
    coverage: dict[tuple[str, str, str, str], float] | None = None,
    sources: dict[tuple[str, str, str], str] | None = None,
) -> Table:
    """The (profile, dataset) leaderboard: teacher, control rows, then methods; best per column.

    `flagged`: (profile, dataset, metric) → why it fails a reliability check
    (`bench.report.reliability`), greyed and marked in their headers; `coverage`: the mean share of samples scored per (profile, dataset, method,
    metric), shown in a cell's tooltip when below 1; `sources`: beside a reference set, whose
    seeds each (profile, dataset, row) holds, the user's, the reference's or some of each.
    """
    part = ranked[(ranked.profile == profile) & (ranked.dataset == dataset)]
    columns = table_columns(part, descriptions)
    for column in columns:
        base = column.name.removesuffix(EXCESS_SUFFIX)
        column.unreliable = (flagged or {}).get((profile, dataset, base), "")
        ranks = part[(part.metric == column.name) & part["rank"].notna()]
        column.decided = ranks.empty or decides(ranks)
    table = Table(
        profile, dataset, str(part.modality.iloc[0]), columns, page=dataset_page(profile, dataset)
    )
    # One lookup per cell: indexing the frame per cell cost a quarter of the report's time.
    keys = zip(part.method.tolist(), part.metric.tolist(), strict=True)
    indexed = dict(zip(keys, part.to_dict(orient="records"), strict=True))
    roles = part.groupby("method").role.first()
    best: dict[str, float] = {}
    # The best value is the best ranked one: a screen's mean of three seeds is not compared.
    competitors = part[(part.role == "student") & part["rank"].notna()]
    for column in columns:
        values = competitors[competitors.metric == column.name]["mean"].dropna()
        if len(values) and column.higher_is_better is not None and column.decided:
            best[column.name] = values.max() if column.higher_is_better else values.min()
    screens = screen_notes(part)
    for method in method_order(part.method.unique()):
        role = str(roles[method])
        cells = []
        for column in columns:
            row = indexed.get((method, column.name))
            if row is None:
                cells.append(Cell("", "not measured"))
                continue
            text = format_value(row["mean"])
            if not math.isnan(row["std"]):
                text += f" ± {format_spread(row['std'], row['mean'])}"
            title = (
                f"n={row['n']}; 95% CI [{format_value(row['ci95_low'])}, "
                f"{format_value(row['ci95_high'])}]"
            )
            share = (coverage or {}).get((profile, dataset, method, column.name))
            if share is not None and share < 1:
                title += f"; coverage {share:.0%} of the samples asked (the rest undefined)"
            css = ""
            if not math.isnan(row["rank"]):
                title += f"; rank {int(row['rank'])} of {int(row['rank_of'])}"
                if "rank_seeds" in row and not pd.isna(row["rank_seeds"]):
                    title += f" (paired tests on {int(row['rank_seeds'])} common seeds)"
                if column.name in best and row["mean"] == best[column.name]:
                    css = "best"
                elif row["rank"] == 1 and column.decided:
                    css = "tied"
            elif row.get("screen", False):
                title += "; a screen: not ranked against the methods with more seeds"
            value = "" if math.isnan(row["mean"]) else repr(float(row["mean"]))
            cells.append(Cell(text, title, value, css))
        source = (sources or {}).get((profile, dataset, method), "")
        table.rows.append(
            Row(method, role, method_page(method), cells, source, screens.get(method, ""))
        )
    return table


def screen_notes(part: pd.DataFrame) -> dict[str, str]:
    """method → why it is a screen, for the student rows of one (profile, dataset) that some
    metric left unranked as screens (`ci_ranks`' `screen`)."""
    if "screen" not in part:
        return {}
    screened = part[part.screen.astype(bool)]
    ranked_seeds = part["rank_seeds"].max()
    notes = {}
    for method, rows in screened.groupby("method"):
        notes[str(method)] = (
            f"a screen: {int(rows.n.max())} seeds, not ranked against the methods compared on "
            f"{int(ranked_seeds)} common seeds"
        )
    return notes


def rank_table(
    ranked: pd.DataFrame, averages: pd.DataFrame, profile: str, modality: str,
    descriptions: dict[str, str],
) -> Table | None:  # fmt: skip
    """Average rank of each method per metric across the track's datasets (lower is better)."""
    part = averages[(averages.profile == profile) & (averages.modality == modality)]
    if part.empty:
        return None
    source = ranked[(ranked.profile == profile) & (ranked.modality == modality)]
    columns = table_columns(source[source.metric.isin(part.metric)], descriptions)
    for column in columns:
        column.higher_is_better = False
        column.is_rank = True
    table = Table(profile, "", modality, columns)
    indexed = part.set_index(["method", "metric"])
    best = part.groupby("metric")["mean_rank"].min()
    for method in method_order(part.method.unique()):
        cells = []
        for column in columns:
            if (method, column.name) not in indexed.index:
                cells.append(Cell("", "not ranked"))
                continue
            row = indexed.loc[(method, column.name)]
            if pd.isna(row.mean_rank):
                # Missing on some dataset: averaging it over fewer would not be comparable.
                cells.append(Cell("–", str(row.note)))
                continue
            cells.append(
                Cell(
                    f"{row.mean_rank:.2f}".rstrip("0").rstrip("."),
                    f"mean of {int(row.n_datasets)} dataset rank(s) among the methods ranked on "
                    f"every dataset: {row.dataset_ranks}",
                    repr(float(row.mean_rank)),
                    "best" if row.mean_rank == best[column.name] else "",
                )
            )
        table.rows.append(Row(method, "student", method_page(method), cells))
    return table


@dataclass
class ComparisonTable:
    baseline: str
    metrics: list[str]
    rows: list[tuple[str, str, list[Cell]]]  # (method, link, cells)


def half_width(row: pd.Series | None) -> float:
    if row is None or pd.isna(row["ci95_low"]):
        return math.nan
    return (row["ci95_high"] - row["ci95_low"]) / 2


def comparison_tables(
    comparisons: pd.DataFrame, profile: str, dataset: str, explainer: str | None
) -> list[ComparisonTable]:
    part = comparisons[(comparisons.profile == profile) & (comparisons.dataset == dataset)]
    wanted = [m.replace("{explainer}", explainer or "?") for m in HEADLINE_METRICS]
    metrics = [m for m in wanted if m in set(part.metric)]
    tables = []
    for baseline in BASELINES:
        rows_of = part[part.baseline == baseline]
        if rows_of.empty:
            continue
        indexed = rows_of.set_index(["method", "metric"])
        rows = []
        for method in method_order(rows_of.method.unique()):
            cells = []
            for metric in metrics:
                if (method, metric) not in indexed.index:
                    cells.append(Cell("", "not measured"))
                    continue
                r = indexed.loc[(method, metric)]
                text = format_signed(r.mean_diff)
                if not pd.isna(r.ci95_low):
                    text += f" [{format_signed(r.ci95_low)}, {format_signed(r.ci95_high)}]"
                title = (
                    f"paired over seeds {r.seeds} (n={r.n}); Cohen's d_z "
                    f"{format_value(r.cohens_dz)}; sign-flip p = {format_p(r.p_value)}, "
                    f"Holm-adjusted over the methods vs. {baseline} = {format_p(r.p_holm)}; "
                    f"seeds for 80% power: {format_seeds(r.seeds_for_80_power)}"
                )
                cells.append(Cell(text, title, repr(float(r.mean_diff)), str(r.outcome)))
            rows.append((method, method_page(method), cells))
        tables.append(ComparisonTable(baseline, metrics, rows))
    return tables


def mean_row(part: pd.DataFrame, method: str, metric: str) -> pd.Series | None:
    rows = part[(part.method == method) & (part.metric == metric)]
    return None if rows.empty else rows.iloc[0]


def format_seeds(value: float | None) -> str:
    """Seeds for 80 % power: a count, `> 10000` past the cap, `–` when there is no effect."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return f"> {POWER_CAP}"
    return str(int(value))


def claim_rows(verdicts: list[ClaimVerdict]) -> list[dict[str, Any]]:
    """The claims as the template shows them: part by part, each part's primary tests first, one
    row per comparison."""
    shown = []
    for cv in verdicts:
        rows = []
        parts, paper_parts = cv.part_verdicts, cv.part_verdicts_of("paper")
        for dv, r in cv.results_in_order():
            s = r.stats
            ci = (
                f"[{format_signed(s['ci95_low'])}, {format_signed(s['ci95_high'])}]"
                if not math.isnan(s["ci95_low"])
                else "no CI (fewer than 2 paired seeds)"
            )
            if s["std_diff"] == 0:
                ci += " (zero width: every seed gives the same difference)"
            sizes = (
                f"{r.parameters[0]:,.0f} vs {r.parameters[1]:,.0f} parameters"
                if r.parameters
                else ""
            )
            rows.append(
                {
                    "part": r.test.part,
                    "part_verdict": (paper_parts if r.test.role == "paper" else parts)[r.test.part],
                    "role": r.test.role,
                    "note": r.test.note,
                    "sizes": sizes,
                    "mde": format_value(r.mde_80),
                    "dataset": dv.dataset,
                    "profile": dv.profile,
                    "page": dataset_page(dv.profile, dv.dataset),
                    "comparison": r.test.describe(r.metric),
                    "effect": format_signed(s["mean_diff"]),
                    "ci": ci,
                    "n": s["n"],
                    "p": format_p(s["p_value"]),
                    "p_holm": format_p(r.p_holm),
                    "p_title": (
                        f"{'one-sided' if r.test.expect == 'not_worse' else 'two-sided'} "
                        f"sign-flip p = {format_p(s['p_value'])} "
                        f"({s['p_method'] or 'no test'}); Holm over the {r.test.role} tests "
                        f"of the part '{r.test.part}' in profile {dv.profile}: "
                        + {
                            TOO_FEW_SEEDS: "none (too few seeds for any step of Holm to reject it)",
                            UNRELIABLE: "none (in the family at p = 1: unreliable metric)",
                        }.get(r.verdict, format_p(r.p_holm))
                    ),
                    "power_seeds": format_seeds(s["seeds_for_80_power"]),
                    "verdict": r.verdict,
                    "dataset_verdict": dv.verdict,
                }
            )
        shown.append(
            {
                "claim": cv.claim,
                "verdict": cv.called,
                "on_records": cv.verdict,
                "stability": cv.stability,
                "stability_error": stability_error(cv.stability),
                "paper_verdict": cv.paper_verdict,
                "parts": parts,
                "paper_parts": cv.paper_part_verdicts,
                "disagreements": cv.disagreements,
                "too_few_seeds": cv.too_few_seeds,
                "rows": rows,
                "missing": cv.missing,
            }
        )
    return shown


def slug(text: str) -> str:
    """A safe file-name part for any record string; a hash keeps altered names apart."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "x"
    if safe != text:
        safe += "-" + hashlib.sha1(text.encode()).hexdigest()[:6]
    return safe


def dataset_page(profile: str, dataset: str) -> str:
    return f"dataset-{slug(profile)}-{slug(dataset)}.html"


def method_page(method: str) -> str:
    return f"method-{slug(method)}.html"
