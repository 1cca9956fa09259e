"""The static report under `report/`: an index, one page per dataset and per method, figures.

- `index.html`: the Claims panel, then per (profile, track) the average ranks across datasets and
  one sortable leaderboard table per dataset (teacher, control row, then the methods).
- `dataset-<profile>-<dataset>.html`: the table again, paired comparisons with `scratch` and `kd`,
  accuracy vs. explanation agreement with the Pareto front, concept detectors, per-seed spread and
  a gallery of teacher vs. student attribution maps.
- `method-<name>.html`: description, citation, hyper-parameters and every run's provenance.

Everything is rendered with autoescaping, so a method or dataset name with markup shows as text;
file names made from such names go through `slug`. The pages load nothing from the network: CSS
and the sorting script are inline, figures are local PNGs.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

import bench
from bench import figures
from bench.catalogue import Catalogue, load_catalogue
from bench.claims import ClaimVerdict, claims_table, evaluate_all
from bench.errors import BenchError
from bench.integrity import read_array_sealed
from bench.leaderboard import (
    aggregate,
    aggregate_seeds,
    mean_coverage,
    method_order,
    metric_order,
    write_leaderboard,
)
from bench.records import (
    CONTROL_ROWS,
    PERMUTED_CONTROL_ROW,
    RANDOM_CONTROL_ROW,
    TEACHER_ROW,
    UNTRAINED_CONTROL_ROW,
    iter_records,
    record_path,
)
from bench.reference import environment_differences, merge_with_reference
from bench.separation import RULE as SEPARATION_RULE
from bench.separation import not_separating, separation_table
from bench.statistics import (
    POWER_CAP,
    average_ranks,
    ci_ranks,
    compare,
    explanation_excess,
    seed_values,
)
from bench.store import write_atomic
from bench.summary import track_summaries
from bench.vocabulary import BASELINES, FAMILIES

log = logging.getLogger(__name__)

REFERENCE_DESCRIPTIONS = {
    TEACHER_ROW: (
        "Reference row: the dataset's teacher, scored with the same metrics as the students. Its "
        "explanation agreement with itself is the ceiling (1)."
    ),
    RANDOM_CONTROL_ROW: (
        "Control row: uniform random attributions explaining the teacher. It has no predictions "
        "of its own; its explanation metrics are the floor of an explainer that ignores the model."
    ),
    PERMUTED_CONTROL_ROW: (
        "Control row: the teacher's explanation of another test sample, compared with its "
        "explanation of this one. Agreement this high comes from what all samples share (layout, "
        "feature scales), not from the sample: the floor of explanation agreement."
    ),
    UNTRAINED_CONTROL_ROW: (
        "Control row: a randomly initialised student of the standard architecture, scored as a "
        "student: the floor of a student that learned nothing."
    ),
}
# The comparisons a dataset page shows (all of them are in results/comparisons.csv).
HEADLINE_METRICS = (
    "accuracy",
    "teacher_agreement",
    "expl_spearman_{explainer}",
    "concept_detectors",
)


def format_value(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    # Four significant digits, positional down to 1e-4 (0.005064 reads better than 5.06e-03).
    return f"{value:.4g}"


def format_spread(std: float, mean: float) -> str:
    """A standard deviation to two significant digits; `0` where it is rounding noise (the same
    value on every seed gives 1e-16, not a spread)."""
    if abs(std) <= 1e-9 * max(1.0, abs(mean)):
        return "0"
    return f"{std:.2g}"


def format_signed(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.3g}"


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
    # False when the metric does not separate the teacher from the control rows on this dataset
    # (`bench.separation`): its students' numbers cannot rank them.
    separates: bool = True

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
            ""
            if self.separates
            else " ⚠ Does not separate the teacher from the control rows on this dataset "
            f"({SEPARATION_RULE}): it cannot rank the students."
        )
        return f"{self.description or self.name} ({self.category}{direction}){warning}"


@dataclass
class Row:
    method: str
    role: str
    link: str
    cells: list[Cell]
    yours: bool = False  # produced by the user, beside a reference set


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


def _columns(part: pd.DataFrame, descriptions: dict[str, str]) -> list[Column]:
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
    flagged: set[tuple[str, str, str]] | None = None,
    coverage: dict[tuple[str, str, str, str], float] | None = None,
    yours: set[tuple[str, str, str]] | None = None,
) -> Table:
    """The (profile, dataset) leaderboard: teacher, control rows, then methods; best per column.

    `flagged`: (profile, dataset, metric) that separate nothing (`bench.separation`), marked in
    their headers; `coverage`: the mean share of samples scored per (profile, dataset, method,
    metric), shown in a cell's tooltip when below 1; `yours`: the (profile, dataset, row) a user
    produced beside a reference set, marked as theirs.
    """
    part = ranked[(ranked.profile == profile) & (ranked.dataset == dataset)]
    columns = _columns(part, descriptions)
    for column in columns:
        column.separates = (profile, dataset, column.name) not in (flagged or set())
    table = Table(
        profile, dataset, str(part.modality.iloc[0]), columns, page=dataset_page(profile, dataset)
    )
    indexed = part.set_index(["method", "metric"])
    roles = part.groupby("method")["role"].first()
    best: dict[str, float] = {}
    competitors = part[part.role == "student"]
    for column in columns:
        values = competitors[competitors.metric == column.name]["mean"].dropna()
        if len(values) and column.higher_is_better is not None:
            best[column.name] = values.max() if column.higher_is_better else values.min()
    for method in method_order(part.method.unique()):
        role = str(roles[method])
        cells = []
        for column in columns:
            if (method, column.name) not in indexed.index:
                cells.append(Cell("", "not measured"))
                continue
            row = indexed.loc[(method, column.name)]
            text = format_value(row["mean"])
            if not math.isnan(row["std"]):
                text += f" ± {format_spread(row['std'], row['mean'])}"
            title = (
                f"n={row['n']}; 95% CI [{format_value(row.ci95_low)}, "
                f"{format_value(row.ci95_high)}]"
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
                elif row["rank"] == 1:
                    css = "tied"
            value = "" if math.isnan(row["mean"]) else repr(float(row["mean"]))
            cells.append(Cell(text, title, value, css))
        mine = (profile, dataset, method) in (yours or set())
        table.rows.append(Row(method, role, method_page(method), cells, mine))
    return table


def rank_table(
    ranked: pd.DataFrame, averages: pd.DataFrame, profile: str, modality: str,
    descriptions: dict[str, str],
) -> Table | None:  # fmt: skip
    """Average rank of each method per metric across the track's datasets (lower is better)."""
    part = averages[(averages.profile == profile) & (averages.modality == modality)]
    if part.empty:
        return None
    source = ranked[(ranked.profile == profile) & (ranked.modality == modality)]
    columns = _columns(source[source.metric.isin(part.metric)], descriptions)
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
class FigureRef:
    file: str
    caption: str


@dataclass
class ComparisonTable:
    baseline: str
    metrics: list[str]
    rows: list[tuple[str, str, list[Cell]]]  # (method, link, cells)


@dataclass
class DatasetPage:
    table: Table
    figures: list[FigureRef]
    comparisons: list[ComparisonTable]
    explainer: str | None

    @property
    def has_gallery(self) -> bool:
        return any(f.file.endswith("-gallery.png") for f in self.figures)

    @property
    def tradeoff(self) -> FigureRef | None:
        """The accuracy vs. agreement figure with its Pareto front, which the index shows too."""
        return next((f for f in self.figures if f.file.endswith("-tradeoff.png")), None)


def first_explainers(records: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(profile, dataset) → the first explainer of the profile whose agreement was measured."""
    found: dict[tuple[str, str], str] = {}
    for record in records:
        key = (record["profile"], record["dataset"]["name"])
        if key in found or record["status"] != "ok":
            continue
        metrics = record.get("metrics") or {}
        budget = (record.get("budget") or {}).get("explanation") or {}
        listed = [e for e in budget.get("explainers") or [] if f"expl_spearman_{e}" in metrics]
        measured = sorted(
            m.removeprefix("expl_spearman_") for m in metrics if m.startswith("expl_spearman_")
        )
        if listed or measured:
            found[key] = (listed or measured)[0]
    return found


def _half_width(row: pd.Series | None) -> float:
    if row is None or pd.isna(row["ci95_low"]):
        return math.nan
    return (row["ci95_high"] - row["ci95_low"]) / 2


def _comparison_tables(
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
                    f"{format_value(r.cohens_dz)}; sign-flip p = {format_value(r.p_value)}, "
                    f"Holm-adjusted over the methods vs. {baseline} = {format_value(r.p_holm)}; "
                    f"seeds for 80% power: {format_seeds(r.seeds_for_80_power)}"
                )
                cells.append(Cell(text, title, repr(float(r.mean_diff)), str(r.outcome)))
            rows.append((method, method_page(method), cells))
        tables.append(ComparisonTable(baseline, metrics, rows))
    return tables


def _mean_row(part: pd.DataFrame, method: str, metric: str) -> pd.Series | None:
    rows = part[(part.method == method) & (part.metric == metric)]
    return None if rows.empty else rows.iloc[0]


def _dataset_figures(
    ranked: pd.DataFrame,
    seeds: pd.DataFrame,
    records: list[dict[str, Any]],
    results: Path,
    out: Path,
    profile: str,
    dataset: str,
    explainer: str | None,
) -> list[FigureRef]:
    part = ranked[(ranked.profile == profile) & (ranked.dataset == dataset)]
    order = method_order(part.method.unique())
    roles = part.groupby("method")["role"].first()
    stem = f"figures/{slug(profile)}-{slug(dataset)}"
    made: list[FigureRef] = []

    agreement = f"expl_spearman_{explainer}" if explainer else None
    if agreement and agreement in set(part.metric) and "accuracy" in set(part.metric):
        points = []
        for method in order:
            acc, agr = _mean_row(part, method, "accuracy"), _mean_row(part, method, agreement)
            if acc is None or agr is None or pd.isna(acc["mean"]) or pd.isna(agr["mean"]):
                continue
            points.append(
                figures.Point(
                    method,
                    str(roles[method]),
                    float(agr["mean"]),
                    float(acc["mean"]),
                    _half_width(agr),
                    _half_width(acc),
                )
            )
        floors = [_mean_row(part, row, agreement) for row in CONTROL_ROWS]
        means = [float(f["mean"]) for f in floors if f is not None and pd.notna(f["mean"])]
        floor = max(means) if means else None
        if points:
            figures.tradeoff_plot(
                points,
                agreement,
                "accuracy",
                out / f"{stem}-tradeoff.png",
                floor_x=floor,
            )
            front = ", ".join(p.name for p in figures.pareto_front(
                [p for p in points if p.role == "student"]))  # fmt: skip
            made.append(
                FigureRef(
                    f"{stem}-tradeoff.png",
                    f"Accuracy vs. explanation agreement ({agreement}), means with 95 % CI "
                    f"half-widths; the line joins the students no other student beats on both "
                    f"(Pareto front: {front}).",
                )
            )

    if "concept_detectors" in set(part.metric):
        rows = [(m, _mean_row(part, m, "concept_detectors")) for m in order]
        rows = [(m, r) for m, r in rows if r is not None and not pd.isna(r["mean"])]
        if rows:
            figures.bar_chart(
                [m for m, _ in rows],
                [float(r["mean"]) for _, r in rows],
                [_half_width(r) for _, r in rows],
                [str(roles[m]) for m, _ in rows],
                "concept detectors (units)",
                out / f"{stem}-concepts.png",
                metric="concept_detectors",
            )
            made.append(
                FigureRef(
                    f"{stem}-concepts.png",
                    "Concept detectors per model (network dissection), means with 95 % CI.",
                )
            )

    spread = seeds[
        (seeds.profile == profile) & (seeds.dataset == dataset) & (seeds.metric == "accuracy")
    ]
    if not spread.empty:
        names = [m for m in order if m in set(spread.method)]
        figures.strip_plot(
            names,
            [spread[spread.method == m].sort_values("seed").value.tolist() for m in names],
            [str(roles[m]) for m in names],
            "accuracy",
            out / f"{stem}-seeds.png",
        )
        made.append(
            FigureRef(f"{stem}-seeds.png", "Accuracy of every seed (dots) and its mean (bar).")
        )

    gallery = _gallery(records, results, profile, dataset, order)
    if gallery is not None:
        inputs, rows, explainer_name = gallery
        figures.gallery(inputs, rows, explainer_name, out / f"{stem}-gallery.png")
        made.append(
            FigureRef(
                f"{stem}-gallery.png",
                f"{explainer_name} attributions of the teacher and each student (lowest seed) on "
                "the first explained test images; each map scaled to its own largest magnitude.",
            )
        )
    return made


def _gallery(
    records: list[dict[str, Any]], results: Path, profile: str, dataset: str, order: list[str]
) -> tuple[np.ndarray | None, list[tuple[str, np.ndarray]], str] | None:
    """The teacher's stored maps and inputs, then each student's maps of the same test rows."""
    stored: dict[str, tuple[int, dict[str, Any], dict[str, Any]]] = {}
    for record in records:
        entry = record.get("attribution_maps")
        if (
            record["status"] != "ok"
            or record["profile"] != profile
            or record["dataset"]["name"] != dataset
            or not isinstance(entry, dict)
        ):
            continue
        name, seed = record["method"]["name"], int(record["seed"])
        if name not in stored or seed < stored[name][0]:
            stored[name] = (seed, record, entry)
    if TEACHER_ROW not in stored:
        return None
    seed, _, reference = stored[TEACHER_ROW]

    def load(name: str, seed: int, file_name: Any) -> np.ndarray | None:
        if not isinstance(file_name, str):
            return None
        folder = record_path(results, profile, dataset, name, seed).parent
        # Only a bare file name beside the record is trusted, never a path from the record.
        return read_array_sealed(folder / Path(file_name).name)

    teacher_maps = load(TEACHER_ROW, seed, reference.get("file"))
    if teacher_maps is None:
        return None
    inputs = load(TEACHER_ROW, seed, reference.get("inputs_file"))
    rows = [(TEACHER_ROW, teacher_maps)]
    for method in order:
        if method == TEACHER_ROW or method not in stored:
            continue
        seed, _, entry = stored[method]
        if entry.get("test_index") != reference.get("test_index"):
            continue  # another explained subset: not the same images
        if entry.get("explainer") != reference.get("explainer"):
            continue
        maps = load(method, seed, entry.get("file"))
        if maps is not None and maps.shape == teacher_maps.shape:
            rows.append((f"{method} (seed {seed})", maps))
    return inputs, rows, str(reference.get("explainer"))


@dataclass
class MethodPage:
    name: str
    role: str
    family: str  # a key of `bench.method.FAMILIES`, or "reference" for teacher and control rows
    description: str
    citations: list[str]
    params: list[tuple[str, list[tuple[str, str]]]]  # (where, [(key, value)])
    datasets: list[tuple[str, str, str]]  # (profile, dataset, page)
    runs: list[dict[str, Any]]

    @property
    def page(self) -> str:
        return method_page(self.name)


def _flatten(params: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(params, dict):
        items: list[tuple[str, str]] = []
        for key, value in params.items():
            items += _flatten(
                value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"
            )
        return items
    return [(prefix.rstrip("."), str(params))]


def _describe(name: str, method: dict[str, Any], role: str, catalogue: Catalogue) -> str:
    """The record's description of its row (records written before descriptions were: the
    catalogue's, for a method it still holds)."""
    if name in REFERENCE_DESCRIPTIONS and role != "student":
        return REFERENCE_DESCRIPTIONS[name]
    if isinstance(method.get("description"), str):
        return method["description"]
    base = method.get("base")
    return catalogue.methods[base].description if base in catalogue.methods else ""


def _family(method: dict[str, Any], role: str, catalogue: Catalogue) -> str:
    """The record's family (records before families existed: the catalogue's)."""
    if role != "student":
        return "reference"
    family = method.get("family")
    if family in FAMILIES:
        return str(family)
    base = method.get("base")
    return catalogue.methods[base].family if base in catalogue.methods else "other"


def method_families(pages: list[MethodPage]) -> list[tuple[str, list[MethodPage]]]:
    """The method pages grouped by family, in `FAMILIES` order, reference rows last."""
    titles = {**FAMILIES, "reference": "Reference rows: the teacher and the controls"}
    return [
        (title, [p for p in pages if p.family == key])
        for key, title in titles.items()
        if any(p.family == key for p in pages)
    ]


def method_pages(records: list[dict[str, Any]], catalogue: Catalogue) -> list[MethodPage]:
    """One page per leaderboard row name, from the records' `method` objects and provenance."""
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if isinstance(record.get("method"), dict) and "name" in record["method"]:
            by_method[str(record["method"]["name"])].append(record)
    pages = []
    for name in method_order(by_method):
        group = by_method[name]
        role = str(group[0].get("role") or "student")
        citations = sorted(
            {str(r["method"]["citation"]) for r in group if r["method"].get("citation")}
        )
        where: dict[tuple[tuple[str, str], ...], list[str]] = defaultdict(list)
        for r in group:
            flat = tuple(_flatten(r["method"].get("params") or {}))
            label = f"{r['profile']}/{r['dataset']['name']}"
            if label not in where[flat]:
                where[flat].append(label)
        params = [(", ".join(labels), list(flat)) for flat, labels in where.items()]
        datasets = sorted({(r["profile"], r["dataset"]["name"]) for r in group})
        runs = []
        for r in sorted(group, key=lambda r: (r["profile"], r["dataset"]["name"], r["seed"])):
            env = r.get("environment") or {}
            timings = r.get("timings") or {}
            versions = env.get("versions") or {}
            runs.append(
                {
                    "profile": r["profile"],
                    "dataset": r["dataset"]["name"],
                    "seed": r["seed"],
                    "status": r["status"],
                    "run_id": r["run_id"],
                    "started": r.get("started") or "",
                    "timings": ", ".join(
                        f"{k} {format_value(v)} s" for k, v in timings.items() if v is not None
                    ),
                    "device": " / ".join(
                        str(x) for x in (env.get("device"), env.get("gpu") or env.get("cpu")) if x
                    ),
                    "versions": ", ".join(
                        f"{k} {v}"
                        for k, v in [("python", env.get("python")), ("bench", env.get("bench"))]
                        + list(versions.items())
                        if v
                    ),
                    "git": (env.get("git_revision") or "")[:10],
                    "error": (r.get("error") or {}).get("message", "") if r.get("error") else "",
                }
            )
        pages.append(
            MethodPage(
                name,
                role,
                _family(group[0]["method"], role, catalogue),
                _describe(name, group[0]["method"], role, catalogue),
                citations,
                params,
                [(p, d, dataset_page(p, d)) for p, d in datasets],
                runs,
            )
        )
    return pages


def _write(path: Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def format_seeds(value: float | None) -> str:
    """Seeds for 80 % power: a count, `> 10000` past the cap, `–` when there is no effect."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return f"> {POWER_CAP}"
    return str(int(value))


def _claim_rows(verdicts: list[ClaimVerdict]) -> list[dict[str, Any]]:
    """The claims as the template shows them: primary tests first, one row per comparison."""
    shown = []
    for cv in verdicts:
        rows = []
        for dv, r in cv.results_in_order():
            s = r.stats
            ci = (
                f"[{format_signed(s['ci95_low'])}, {format_signed(s['ci95_high'])}]"
                if not math.isnan(s["ci95_low"])
                else "no CI (fewer than 2 paired seeds)"
            )
            if s["std_diff"] == 0:
                ci += " (zero width: every seed gives the same difference)"
            rows.append(
                {
                    "role": r.test.role,
                    "dataset": dv.dataset,
                    "profile": dv.profile,
                    "page": dataset_page(dv.profile, dv.dataset),
                    "comparison": r.test.describe(r.metric),
                    "effect": format_signed(s["mean_diff"]),
                    "ci": ci,
                    "n": s["n"],
                    "p": format_value(s["p_value"]),
                    "p_holm": format_value(r.p_holm),
                    "p_title": (
                        f"{'one-sided' if r.test.expect == 'not_worse' else 'two-sided'} "
                        f"sign-flip p = {format_value(s['p_value'])} "
                        f"({s['p_method'] or 'no test'}); Holm over the claim's "
                        f"{r.test.role} tests: {format_value(r.p_holm)}"
                    ),
                    "power_seeds": format_seeds(s["seeds_for_80_power"]),
                    "verdict": r.verdict,
                    "dataset_verdict": dv.verdict,
                }
            )
        shown.append(
            {"claim": cv.claim, "verdict": cv.verdict, "rows": rows, "missing": cv.missing}
        )
    return shown


def render_report(
    results: Path,
    out: Path,
    profile: str | None = None,
    reference: Path | None = None,
    catalogue: Catalogue | None = None,
) -> Path:
    """Write the statistics under `results/` and the site under `out`; returns `out/index.html`.

    Files written to `results/`: `leaderboard.csv` (one row per profile, dataset, method, metric,
    with `rank`; explanation metrics also as `<metric>_excess` over the control floor),
    `comparisons.csv`, `average_ranks.csv`, `claims.csv`, and `leaderboard.json` holding all four.
    With `reference` (a reference result set), its records fill the leaderboard, the user's
    replace those of the same run, the user's rows are marked, and environments that differ are
    named (`bench.reference`). The report reads records only; `catalogue` (default: the cached
    one, `bench.catalogue`) describes the methods of records written before records described
    them.
    """
    records = list(iter_records(results, profile))
    yours: set[tuple[str, str, str]] = set()
    differences: list[str] = []
    if reference is not None:
        theirs = list(iter_records(reference, profile))
        if not theirs:
            raise BenchError(f"no readable records under {reference}/runs to compare with")
        differences = environment_differences(records, theirs)
        for line in differences:
            log.warning("your runs and the reference differ in %s", line)
        records, yours = merge_with_reference(records, theirs)
    frame = aggregate(records)
    seeds = seed_values(records)
    # Explanation agreement above the strongest control floor: rows derived from the seed values,
    # aggregated, ranked and compared like the metrics read from the records.
    excess = explanation_excess(seeds)
    if not excess.empty:
        seeds = pd.concat([seeds, excess], ignore_index=True)
        frame = pd.concat([frame, aggregate_seeds(excess)], ignore_index=True).sort_values(
            ["profile", "dataset", "method", "metric"], ignore_index=True
        )
    ranked = ci_ranks(frame, seeds)
    comparisons = compare(seeds)
    averages = average_ranks(ranked, seeds)
    explainers = first_explainers(records)
    verdicts = evaluate_all(seeds)
    separation = separation_table(records)
    flagged = not_separating(separation)
    coverage = mean_coverage(records)
    write_leaderboard(
        ranked,
        results,
        {
            "comparisons": comparisons,
            "average_ranks": averages,
            "claims": claims_table(verdicts),
            "separation": separation,
        },
    )
    descriptions: dict[str, str] = {}
    for record in records:
        for name, meta in (record.get("metric_metadata") or {}).items():
            descriptions.setdefault(name, meta.get("description", ""))
    for name in ranked.metric.unique():
        base = name.removesuffix("_excess")
        if base != name and base in descriptions:
            descriptions[name] = (
                f"{descriptions[base]} Minus the strongest control row's value on the same "
                "teacher seed (the floor): above 0 beats every control."
            )

    tracks = []
    pages = []
    keys = ranked[["profile", "modality", "dataset"]].drop_duplicates()
    for (p, modality), part in keys.groupby(["profile", "modality"], sort=True):
        track_pages = []
        for dataset in sorted(part.dataset):
            table = leaderboard_table(ranked, p, dataset, descriptions, flagged, coverage, yours)
            explainer = explainers.get((p, dataset))
            figs = _dataset_figures(ranked, seeds, records, results, out, p, dataset, explainer)
            track_pages.append(
                DatasetPage(
                    table, figs, _comparison_tables(comparisons, p, dataset, explainer), explainer
                )
            )
        pages += track_pages
        tracks.append(
            {
                "profile": p,
                "modality": modality,
                "ranks": rank_table(ranked, averages, p, modality, descriptions),
                "tables": [page.table for page in track_pages],
                "tradeoffs": [(pg.table.dataset, pg.table.page, pg.tradeoff)
                              for pg in track_pages if pg.tradeoff],
            }
        )  # fmt: skip
    # Tabular first, then image: the order of DESIGN's tracks.
    tracks.sort(key=lambda t: (t["profile"], t["modality"] != "tabular", t["modality"]))
    summaries = track_summaries(ranked, comparisons)
    problems = [r for r in records if r["status"] in ("failed", "diverged", "skipped")]
    methods = method_pages(records, catalogue or load_catalogue())

    env = Environment(
        loader=PackageLoader("bench", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
    )
    common = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": bench.__version__,
        "format_value": format_value,
    }
    index = out / "index.html"
    _write(
        index,
        env.get_template("index.html.j2").render(
            tracks=tracks,
            summaries=summaries,
            reference=reference,
            differences=differences,
            dataset_page=dataset_page,
            claims=_claim_rows(verdicts),
            problems=problems,
            methods=methods,
            families=method_families(methods),
            n_records=len(records),
            **common,
        ),
    )
    dataset_template = env.get_template("dataset.html.j2")
    for page in pages:
        _write(out / page.table.page, dataset_template.render(page=page, **common))
    metric_columns = _columns(ranked, descriptions) if not ranked.empty else []
    _write(
        out / "metrics.html",
        env.get_template("metrics.html.j2").render(
            metrics=[
                {
                    "name": c.name,
                    "category": c.category,
                    "arrow": c.arrow,
                    "description": c.description,
                }
                for c in metric_columns
            ],  # fmt: skip
            **common,
        ),
    )
    method_template = env.get_template("method.html.j2")
    for method in methods:
        _write(out / method_page(method.name), method_template.render(page=method, **common))
    return index
