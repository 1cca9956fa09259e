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

import logging
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

import bench
from bench.core.atomic import write_atomic
from bench.core.errors import BenchError
from bench.plan.catalogue import Catalogue, load_catalogue
from bench.report.claims import claims_table, evaluate_all
from bench.report.headline import track_summaries
from bench.report.leaderboard import (
    aggregate,
    aggregate_seeds,
    mean_coverage,
    write_leaderboard,
)
from bench.report.pages import (
    DatasetPage,
    dataset_figures,
    first_explainers,
    method_families,
    method_pages,
)
from bench.report.reference import environment_differences, merge_with_reference
from bench.report.separation import not_separating, separation_table
from bench.report.statistics import (
    average_ranks,
    ci_ranks,
    compare,
    explanation_excess,
    seed_values,
)
from bench.report.tables import (
    claim_rows,
    comparison_tables,
    dataset_page,
    format_value,
    leaderboard_table,
    method_page,
    rank_table,
    table_columns,
)
from bench.results.records import (
    iter_records,
)

log = logging.getLogger(__name__)


def _write(path: Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


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
    named (`bench.report.reference`). The report reads records only; `catalogue` (default: the cached
    one, `bench.plan.catalogue`) describes the methods of records written before records described
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
            figs = dataset_figures(ranked, seeds, records, results, out, p, dataset, explainer)
            track_pages.append(
                DatasetPage(
                    table, figs, comparison_tables(comparisons, p, dataset, explainer), explainer
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
        loader=PackageLoader("bench.report", "templates"),
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
            claims=claim_rows(verdicts),
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
    metric_columns = table_columns(ranked, descriptions) if not ranked.empty else []
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
