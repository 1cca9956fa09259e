"""What the report shows, computed from the records: every table and every figure's numbers.

`compute` reads the records once (`bench.results.folder.ResultsFolder`), flattens them once
(`bench.results.table.long_table`) and derives the statistics' frames from that table; it writes
nothing. `bench.report.render` turns its `ReportData` into the site and the exports, so that what
the report says and where it is written are separate questions, and the numbers can be checked
without a site (`tests/test_reference_tables.py` rebuilds the committed reference tables).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.core.errors import BenchError
from bench.plan.catalogue import Catalogue, load_catalogue
from bench.report.answer import BestSet, ClaimAnswer, best_sets, claim_answers
from bench.report.claims import claims_table, evaluate_all
from bench.report.completeness import Completeness, completeness, profile_rank
from bench.report.convergence import training_table
from bench.report.friedman import friedman_table
from bench.report.headline import SummaryTable, track_summaries
from bench.report.leaderboard import (
    aggregate,
    aggregate_seeds,
    mean_coverage,
    without_fallback_copies,
)
from bench.report.pages import (
    DatasetPage,
    FigureRef,
    MethodPage,
    dataset_figures,
    first_explainers,
    method_pages,
)
from bench.report.reference import environment_differences, merge_with_reference
from bench.report.reliability import failing, read_metaquantus, reasons, reliability_table
from bench.report.separation import separation_table
from bench.report.statistics import (
    average_ranks,
    ci_ranks,
    compare,
    explanation_excess,
    seed_values,
    student_values,
)
from bench.report.tables import (
    Column,
    Table,
    claim_rows,
    comparison_tables,
    leaderboard_table,
    rank_table,
    table_columns,
)
from bench.results.folder import ResultsFolder
from bench.results.record import PROBLEM_STATUSES, MetricBounds, Record
from bench.results.table import long_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Track:
    """One (profile, modality) section of the index: average ranks and a table per dataset."""

    profile: str
    modality: str
    ranks: Table | None
    tables: list[Table]
    tradeoffs: list[tuple[str, str, FigureRef]]  # (dataset, its page, its trade-off figure)


@dataclass(frozen=True)
class ReportData:
    """Everything the site and its exports hold, before anything is written.

    The frames are the exports (`leaderboard.csv` and the others, `render.EXPORTS`); the rest is
    what the pages show, already cut into tables, figures (with their numbers) and page models.
    """

    leaderboard: pd.DataFrame  # per (profile, dataset, method, metric), ranked
    comparisons: pd.DataFrame
    average_ranks: pd.DataFrame
    claims: pd.DataFrame
    separation: pd.DataFrame
    metric_reliability: pd.DataFrame
    friedman: pd.DataFrame
    training: pd.DataFrame  # one row per trained model: its optimum and whether budget-bound
    tracks: list[Track]
    pages: list[DatasetPage]
    summaries: list[SummaryTable]
    claim_panel: list[dict[str, Any]]
    answers: list[ClaimAnswer]  # the claims, part by part, for the index's first lines
    best: list[BestSet]  # per dataset, the methods no other beats on faithfulness
    methods: list[MethodPage]
    metrics: list[Column]
    problems: list[Record]  # the records of runs that failed, diverged or were skipped
    n_records: int
    reference: Path | None = None
    differences: tuple[str, ...] = ()
    # Per profile and planned dataset, its runs done of those planned (`bench.report.completeness`).
    completeness: tuple[Completeness, ...] = ()


def _descriptions(table: pd.DataFrame, metrics: list[str], known: dict[str, str]) -> dict[str, str]:
    """Metric → description: the current code's (`known`, from the catalogue), else the first
    record's that has the metric (a plugin's metric this process did not load): a description
    documents the metric, and its wording may be improved without rerunning anything. An
    `_excess` metric says what its base measures and what is subtracted."""
    first = table.drop_duplicates("metric")
    descriptions = {
        metric: known.get(metric) or (text if isinstance(text, str) else "")
        for metric, text in zip(first.metric.tolist(), first.description.tolist(), strict=True)
    }
    for name in metrics:
        base = name.removesuffix("_excess")
        if base != name and base in descriptions:
            descriptions[name] = (
                f"{descriptions[base]} Minus the strongest control row's value on the same "
                "teacher seed (the floor): above 0 beats every control."
            )
    return descriptions


def read_result_sets(
    folders: Sequence[Path], profile: str | None, bounds: MetricBounds | None = None
) -> tuple[list[Record], dict[tuple[str, str], Path], pd.DataFrame | None]:
    """The records of one or more result sets (of one profile, if given; read against the
    metrics' declared `bounds`), the folder each (profile, dataset) was read from (its
    attribution maps lie there), and their MetaQuantus tables together.

    Several sets make one site, e.g. the real-data reference set beside the embedded-data one.
    A (profile, dataset) found in two sets is refused: which set's runs it should show is the
    user's choice (one set, or `--reference` to rank one set's runs among another's).
    """
    records: list[Record] = []
    home: dict[tuple[str, str], Path] = {}
    tables = []
    for folder in folders:
        found = list(ResultsFolder(folder, bounds or {}).iter_records(profile))
        here = {(r.profile, r.dataset_name) for r in found}
        for key in sorted(here):
            if key in home:
                raise BenchError(
                    f"{key[0]}/{key[1]} has runs in both {home[key]} and {folder}: report one of "
                    "them, or rank one among the other's with --reference"
                )
            home[key] = folder
        records += found
        table = read_metaquantus(ResultsFolder(folder).metaquantus_file)
        if table is not None:
            tables.append(table)
    metaquantus = pd.concat(tables, ignore_index=True) if tables else None
    return records, home, metaquantus


def compute(
    results: Path | Sequence[Path],
    profile: str | None = None,
    reference: Path | None = None,
    catalogue: Catalogue | None = None,
) -> ReportData:
    """The report of the records under `<results>/runs` (of one profile, if given); `results`
    may name several result sets (`read_result_sets`).

    With `reference` (a reference result set), its records fill the leaderboard, the user's
    replace those of the same run, the user's rows are marked, and environments that differ are
    named (`bench.report.reference`). `catalogue` (default: the cached one,
    `bench.plan.catalogue`) describes the methods of records written before records described
    them and plans each registered profile for the site's completeness line; loading it reads
    its cache file, and only a stale cache is rebuilt (which imports torch).
    """
    source = (lambda: catalogue) if catalogue is not None else functools.cache(load_catalogue)
    bounds = source().metric_bounds()
    folders = [results] if isinstance(results, Path) else list(results)
    records, home, metaquantus = read_result_sets(folders, profile, bounds)
    sources: dict[tuple[str, str, str], str] = {}
    differences: list[str] = []
    if reference is not None:
        theirs = list(ResultsFolder(reference, bounds).iter_records(profile))
        if not theirs:
            raise BenchError(f"no readable records under {reference}/runs to compare with")
        differences = environment_differences(records, theirs)
        for line in differences:
            log.warning("your runs and the reference differ in %s", line)
        records, sources = merge_with_reference(records, theirs)
    table = without_fallback_copies(long_table(records))
    frame = aggregate(table)
    seeds = seed_values(table)
    # Explanation agreement above the strongest control floor: rows derived from the seed values,
    # aggregated, ranked and compared like the metrics read from the records.
    excess = explanation_excess(seeds)
    if not excess.empty:
        seeds = pd.concat([seeds, excess], ignore_index=True)
        frame = pd.concat([frame, aggregate_seeds(excess)], ignore_index=True).sort_values(
            ["profile", "dataset", "method", "metric"], ignore_index=True
        )
    # Metrics that fail a reliability check are greyed, get no rank, and (where the measurement
    # itself is in doubt) decide no claim (`bench.report.reliability`).
    separation = separation_table(table)
    if metaquantus is None and reference is not None:
        metaquantus = read_metaquantus(ResultsFolder(reference).metaquantus_file)
    friedman = friedman_table(*student_values(seeds))
    reliability = reliability_table(table, separation, metaquantus, friedman)
    flagged = reasons(reliability)
    ranked = ci_ranks(frame, seeds, unranked=failing(reliability, "ranks_it"))
    # How many seeds each row's profile plans for it: a row with fewer is unfinished, not a screen.
    status_of = {(c.profile, c.dataset): c for c in completeness(records, source)}
    planned = {(c.profile, c.dataset, row): n for c in status_of.values() for row, _, n in c.seeds}
    rows = list(zip(ranked.profile, ranked.dataset, ranked.method, strict=True))
    ranked["seeds_planned"] = [planned.get(row, math.nan) for row in rows]
    if reference is not None:  # whose seeds each row holds, in leaderboard.csv too
        ranked["source"] = [sources.get(row, "") for row in rows]
    comparisons = compare(seeds)
    averages = average_ranks(ranked, seeds)
    verdicts = evaluate_all(seeds, unreliable=failing(reliability, "decides_verdicts"))
    coverage = mean_coverage(table)
    explainers = first_explainers(records)
    known = {name: info.description for name, info in source().metrics.items()}
    descriptions = _descriptions(table, list(ranked.metric.unique()), known)

    tracks = []
    pages = []
    keys = ranked[["profile", "modality", "dataset"]].drop_duplicates()
    for (p, modality), part in keys.groupby(["profile", "modality"], sort=True):
        track_pages = []
        for dataset in sorted(part.dataset):
            board = leaderboard_table(ranked, p, dataset, descriptions, flagged, coverage, sources)
            status = status_of.get((p, dataset))
            short = status.short if status else {}
            for row in board.rows:
                row.incomplete = short.get(row.method, "")
            explainer = explainers.get((p, dataset))
            # The reference set's own datasets have their maps there.
            maps = home.get((p, dataset), reference or folders[0])
            figs = dataset_figures(ranked, seeds, records, maps, p, dataset, explainer)
            here = friedman[(friedman.profile == p) & (friedman.dataset == dataset)]
            track_pages.append(
                DatasetPage(
                    board,
                    figs,
                    comparison_tables(comparisons, p, dataset, explainer),
                    explainer,
                    here.to_dict("records"),
                    status.text if status and not status.complete else "",
                )
            )
        pages += track_pages
        tracks.append(
            Track(
                str(p),
                str(modality),
                rank_table(ranked, averages, p, modality, descriptions),
                [page.table for page in track_pages],
                [(pg.table.dataset, pg.table.page, pg.tradeoff)
                 for pg in track_pages if pg.tradeoff],
            )
        )  # fmt: skip
    # The real-data profile first; tabular, then image: the order of DESIGN's tracks.
    tracks.sort(key=lambda t: (profile_rank(t.profile), t.modality != "tabular", t.modality))
    return ReportData(
        leaderboard=ranked,
        comparisons=comparisons,
        average_ranks=averages,
        claims=claims_table(verdicts),
        separation=separation,
        metric_reliability=reliability,
        friedman=friedman,
        training=training_table(records),
        tracks=tracks,
        pages=pages,
        summaries=track_summaries(ranked, comparisons),
        claim_panel=claim_rows(verdicts),
        answers=claim_answers(verdicts),
        best=best_sets(ranked),
        methods=method_pages(records, source),
        metrics=table_columns(ranked, descriptions) if not ranked.empty else [],
        problems=[r for r in records if r.status in PROBLEM_STATUSES],
        n_records=len(records),
        reference=reference,
        differences=tuple(differences),
        completeness=tuple(status_of.values()),
    )
