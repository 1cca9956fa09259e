"""The report written out: the static site and its exports, all under one folder.

- `index.html`: the Claims panel, then per (profile, track) the average ranks across datasets and
  one sortable leaderboard table per dataset (teacher, control row, then the methods).
- `dataset-<profile>-<dataset>.html`: the table again, paired comparisons with `scratch` and `kd`,
  accuracy vs. explanation agreement with the Pareto front, concept detectors, per-seed spread and
  a gallery of teacher vs. student attribution maps (SVG figures under `figures/`).
- `method-<name>.html`: description, citation, hyper-parameters and every run's provenance.
- The exports (`EXPORTS`): `leaderboard.csv` (one row per profile, dataset, method, metric, with
  `rank`; explanation metrics also as `<metric>_excess` over the control floor),
  `comparisons.csv`, `average_ranks.csv`, `claims.csv`, `separation.csv`, `metric_reliability.csv`, `friedman.csv`, `training.csv` (each
  trained model's optimum, `bench.report.convergence`), and `leaderboard.json` holding them all.

Nothing is written into the results folder: a report is a view of the records, and two reports of
the same records (say, one profile and all of them) must not overwrite each other's tables
beside the records. Everything is rendered with autoescaping, so a method or dataset name with
markup shows as text; file names made from such names go through `slug`. The pages load nothing
from the network: CSS and the sorting script are inline, figures are local files.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

import bench
from bench.core.atomic import write_atomic
from bench.core.vocabulary import TUNING_BUDGET
from bench.report.answer import verdict_line
from bench.report.compute import ReportData
from bench.report.convergence import convergence_summary, manipulation_check
from bench.report.leaderboard import write_leaderboard
from bench.report.numbers import format_p, format_value
from bench.report.pages import method_families
from bench.report.stability import RESAMPLES, STABLE
from bench.report.tables import dataset_page, method_page

# The tables exported beside `leaderboard.csv`, each also a key of `leaderboard.json`.
EXPORTS = (
    "comparisons", "average_ranks", "claims", "separation", "metric_reliability", "friedman",
    "training",
)  # fmt: skip


def _write(path: Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def render(data: ReportData, out: Path) -> Path:
    """Write the site, its figures and the exports under `out`; returns `out/index.html`."""
    env = Environment(
        loader=PackageLoader("bench.report", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
    )
    common = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": bench.__version__,
        "format_value": format_value,
        "format_p": format_p,
    }
    index = out / "index.html"
    _write(
        index,
        env.get_template("index.html.j2").render(
            tracks=data.tracks,
            summaries=data.summaries,
            reference=data.reference,
            differences=data.differences,
            dataset_page=dataset_page,
            claims=data.claim_panel,
            answers=data.answers,
            verdict_line=verdict_line(data.answers),
            best=data.best,
            resamples=RESAMPLES,
            tuning_budget=TUNING_BUDGET,
            stable=f"{STABLE:.0%}",
            problems=data.problems,
            convergence=convergence_summary(data.training).to_dict("records"),
            manipulation=manipulation_check(data.training).to_dict("records"),
            methods=data.methods,
            families=method_families(data.methods),
            n_records=data.n_records,
            completeness=[c for c in data.completeness if not c.complete or c.stale],
            **common,
        ),
    )
    dataset_template = env.get_template("dataset.html.j2")
    for page in data.pages:
        _write(out / page.table.page, dataset_template.render(page=page, **common))
        for figure in page.figures:
            figure.draw(out / figure.file)
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
                for c in data.metrics
            ],  # fmt: skip
            **common,
        ),
    )
    method_template = env.get_template("method.html.j2")
    for method in data.methods:
        _write(out / method_page(method.name), method_template.render(page=method, **common))
    write_leaderboard(data.leaderboard, out, {name: getattr(data, name) for name in EXPORTS})
    return index
