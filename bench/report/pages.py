"""The report's pages: what a dataset page and a method page show, and a dataset's figures and
gallery.

Built from records and the statistics' frames by `bench.report.compute`; nothing here writes a
file: a figure is what it will draw (`FigureRef.draw`), and `bench.report.render` draws it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.core.sealed import read_array_sealed
from bench.core.vocabulary import (
    FAMILIES,
    FLOOR_ROWS,
    REFERENCES,
    TEACHER_ROW,
    Role,
)
from bench.plan.catalogue import Catalogue
from bench.report import figures
from bench.report.headline import faithfulness_metrics
from bench.report.leaderboard import (
    method_order,
)
from bench.report.numbers import format_exact
from bench.report.tables import (
    ComparisonTable,
    Table,
    dataset_page,
    format_value,
    half_width,
    mean_row,
    method_page,
    slug,
)
from bench.results.folder import ResultsFolder
from bench.results.record import Record

REFERENCE_DESCRIPTIONS = {row.name: row.report_text for row in REFERENCES}


@dataclass(frozen=True)
class FigureRef:
    """A figure of a dataset page: its file under the site, caption, and what draws it there
    (one of `bench.report.figures`' functions with its numbers, taking the path)."""

    kind: str  # tradeoff, concepts, seeds or gallery
    file: str
    caption: str
    draw: Callable[[Path], Path]


@dataclass
class DatasetPage:
    table: Table
    figures: list[FigureRef]
    comparisons: list[ComparisonTable]
    explainer: str | None
    # The dataset's rows of `friedman.csv` (`bench.report.friedman`), as dicts.
    friedman: list[dict] = field(default_factory=list)
    # "412 of 501 planned runs done" while its profile's plan is not complete, else "".
    completeness: str = ""

    @property
    def has_gallery(self) -> bool:
        return any(f.kind == "gallery" for f in self.figures)

    @property
    def tradeoff(self) -> FigureRef | None:
        """The accuracy vs. agreement figure with its Pareto front, which the index shows too."""
        return next((f for f in self.figures if f.kind == "tradeoff"), None)


def first_explainers(records: list[Record]) -> dict[tuple[str, str], str]:
    """(profile, dataset) → the first explainer of the profile whose agreement was measured."""
    found: dict[tuple[str, str], str] = {}
    for record in records:
        key = (record.profile, record.dataset_name)
        if key in found or not record.ok:
            continue
        metrics = record.metrics
        budget = record.budget.get("explanation") or {}
        listed = [e for e in budget.get("explainers") or [] if f"expl_spearman_{e}" in metrics]
        measured = sorted(
            m.removeprefix("expl_spearman_") for m in metrics if m.startswith("expl_spearman_")
        )
        if listed or measured:
            found[key] = (listed or measured)[0]
    return found


def dataset_figures(
    ranked: pd.DataFrame,
    seeds: pd.DataFrame,
    records: list[Record],
    results: Path,
    profile: str,
    dataset: str,
    explainer: str | None,
) -> list[FigureRef]:
    """The figures of one dataset's page, with the numbers they show; the gallery's maps are read
    from `results` here."""
    part = ranked[(ranked.profile == profile) & (ranked.dataset == dataset)]
    order = method_order(part.method.unique())
    roles = part.groupby("method").role.first()
    stem = f"figures/{slug(profile)}-{slug(dataset)}"
    made: list[FigureRef] = []

    # The held-out explainer when it was measured: no method trains on it, while one trained on
    # the profile's first explainer (Grad-CAM on images) would sit on the front by construction.
    held_out, _ = faithfulness_metrics(str(part.modality.iloc[0])) if len(part) else ("", "")
    agreement = held_out if held_out in set(part.metric) else None
    agreement = agreement or (f"expl_spearman_{explainer}" if explainer else None)
    if agreement and agreement in set(part.metric) and "accuracy" in set(part.metric):
        points = []
        for method in order:
            acc, agr = mean_row(part, method, "accuracy"), mean_row(part, method, agreement)
            if acc is None or agr is None or pd.isna(acc["mean"]) or pd.isna(agr["mean"]):
                continue
            points.append(
                figures.Point(
                    method,
                    str(roles[method]),
                    float(agr["mean"]),
                    float(acc["mean"]),
                    half_width(agr),
                    half_width(acc),
                )
            )
        floors = [mean_row(part, row, agreement) for row in FLOOR_ROWS]
        means = [float(f["mean"]) for f in floors if f is not None and pd.notna(f["mean"])]
        floor = max(means) if means else None
        if points:
            front = ", ".join(p.name for p in figures.pareto_front(
                [p for p in points if p.role == "student"]))  # fmt: skip
            made.append(
                FigureRef(
                    "tradeoff",
                    f"{stem}-tradeoff.svg",
                    f"Accuracy vs. explanation agreement ({agreement}), means with 95 % CI "
                    f"half-widths; the line joins the students no other student beats on both "
                    f"(Pareto front: {front}).",
                    partial(figures.tradeoff_plot, points, agreement, "accuracy", floor_x=floor),
                )
            )

    if "concept_detectors" in set(part.metric):
        rows = [(m, mean_row(part, m, "concept_detectors")) for m in order]
        rows = [(m, r) for m, r in rows if r is not None and not pd.isna(r["mean"])]
        if rows:
            made.append(
                FigureRef(
                    "concepts",
                    f"{stem}-concepts.svg",
                    "Concept detectors per model (network dissection), means with 95 % CI.",
                    partial(
                        figures.bar_chart,
                        [m for m, _ in rows],
                        [float(r["mean"]) for _, r in rows],
                        [half_width(r) for _, r in rows],
                        [str(roles[m]) for m, _ in rows],
                        "concept detectors (units)",
                        metric="concept_detectors",
                    ),
                )
            )

    spread = seeds[
        (seeds.profile == profile) & (seeds.dataset == dataset) & (seeds.metric == "accuracy")
    ]
    if not spread.empty:
        names = [m for m in order if m in set(spread.method)]
        values = [spread[spread.method == m].sort_values("seed").value.tolist() for m in names]
        made.append(
            FigureRef(
                "seeds",
                f"{stem}-seeds.svg",
                "Accuracy of every seed (dots) and its mean (bar).",
                partial(
                    figures.strip_plot, names, values, [str(roles[m]) for m in names], "accuracy"
                ),
            )
        )

    gallery = _gallery(records, results, profile, dataset, order)
    if gallery is not None:
        inputs, rows, explainer_name = gallery
        made.append(
            FigureRef(
                "gallery",
                f"{stem}-gallery.svg",
                f"{explainer_name} attributions of the teacher and each student (lowest seed) on "
                "the first explained test images; each map scaled to its own largest magnitude.",
                partial(figures.gallery, inputs, rows, explainer_name),
            )
        )
    return made


def _gallery(
    records: list[Record], results: Path, profile: str, dataset: str, order: list[str]
) -> tuple[np.ndarray | None, list[tuple[str, np.ndarray]], str] | None:
    """The teacher's stored maps and inputs, then each student's maps of the same test rows."""
    folder = ResultsFolder(results)
    stored: dict[str, tuple[Record, dict[str, Any]]] = {}
    for record in records:
        entry = record.attribution_maps
        if (
            not record.ok
            or record.profile != profile
            or record.dataset_name != dataset
            or not isinstance(entry, dict)
        ):
            continue
        if record.row not in stored or record.seed < stored[record.row][0].seed:
            stored[record.row] = (record, entry)
    if TEACHER_ROW not in stored:
        return None
    teacher, reference = stored[TEACHER_ROW]

    def load(record: Record, file_name: object) -> np.ndarray | None:
        # Only a bare file name beside the record is trusted, never a path from the record.
        path = folder.beside(record, file_name)
        return None if path is None else read_array_sealed(path, folder.root)

    teacher_maps = load(teacher, reference.get("file"))
    if teacher_maps is None:
        return None
    inputs = load(teacher, reference.get("inputs_file"))
    rows = [(TEACHER_ROW, teacher_maps)]
    for method in order:
        if method == TEACHER_ROW or method not in stored:
            continue
        record, entry = stored[method]
        seed = record.seed
        if entry.get("test_index") != reference.get("test_index"):
            continue  # another explained subset: not the same images
        if entry.get("explainer") != reference.get("explainer"):
            continue
        maps = load(record, entry.get("file"))
        if maps is not None and maps.shape == teacher_maps.shape:
            rows.append((f"{method} (seed {seed})", maps))
    return inputs, rows, str(reference.get("explainer"))


@dataclass
class MethodPage:
    name: str
    role: str
    family: str  # a `bench.core.vocabulary.Family`, or "reference" for teacher and control rows
    description: str
    citations: list[str]
    params: list[tuple[str, list[tuple[str, str]]]]  # (where, [(key, value)])
    datasets: list[tuple[str, str, str]]  # (profile, dataset, page)
    runs: list[dict[str, Any]]
    # A plugin's (file, SHA-256 of its code) for each version of it the records were run with.
    code: list[tuple[str, str]] = field(default_factory=list)

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
    return [(prefix.rstrip("."), format_exact(params))]


# The catalogue, asked for only when a record does not describe its row: building it imports the
# registries (torch) when its cache is cold, which a report of recent records never needs.
CatalogueSource = Callable[[], Catalogue]


def _describe(record: Record, catalogue: CatalogueSource) -> str:
    """The record's description of its row (records written before descriptions were: the
    catalogue's, for a method it still holds)."""
    if record.row in REFERENCE_DESCRIPTIONS and record.role is not Role.STUDENT:
        return REFERENCE_DESCRIPTIONS[record.row]
    if record.description is not None:
        return record.description
    base, methods = record.method.get("base"), catalogue().methods
    return methods[base].description if base in methods else ""


def _family(record: Record, catalogue: CatalogueSource) -> str:
    """The record's family (records before families existed: the catalogue's)."""
    if record.role is not Role.STUDENT:
        return "reference"
    if record.family is not None:
        return record.family
    base, methods = record.method.get("base"), catalogue().methods
    return methods[base].family if base in methods else "other"


def method_families(pages: list[MethodPage]) -> list[tuple[str, list[MethodPage]]]:
    """The method pages grouped by family, in `FAMILIES` order, reference rows last."""
    titles = {**FAMILIES, "reference": "Reference rows: the teacher and the controls"}
    return [
        (title, [p for p in pages if p.family == key])
        for key, title in titles.items()
        if any(p.family == key for p in pages)
    ]


def method_pages(records: list[Record], catalogue: CatalogueSource) -> list[MethodPage]:
    """One page per leaderboard row name, from the records' `method` objects and provenance;
    `catalogue` is called only for a row whose records do not describe it."""
    by_method: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_method[record.row].append(record)
    pages = []
    for name in method_order(by_method):
        group = by_method[name]
        role = str(group[0].role)
        citations = sorted({str(r.method["citation"]) for r in group if r.method.get("citation")})
        code = sorted(
            {
                (str(c.get("file")), str(c.get("sha256")))
                for r in group
                if (c := r.method.get("code"))
            }
        )
        where: dict[tuple[tuple[str, str], ...], list[str]] = defaultdict(list)
        for r in group:
            flat = tuple(_flatten(r.method.get("params") or {}))
            label = f"{r.profile}/{r.dataset_name}"
            if label not in where[flat]:
                where[flat].append(label)
        params = [(", ".join(labels), list(flat)) for flat, labels in where.items()]
        datasets = sorted({(r.profile, r.dataset_name) for r in group})
        runs = []
        for r in sorted(group, key=lambda r: (r.profile, r.dataset_name, r.seed)):
            env, timings = r.environment, r.timings
            versions = env.get("versions") or {}
            runs.append(
                {
                    "profile": r.profile,
                    "dataset": r.dataset_name,
                    "seed": r.seed,
                    "status": str(r.status),
                    "run_id": r.run_id,
                    "started": r.started,
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
                    "error": (r.error or {}).get("message") or "",
                }
            )
        pages.append(
            MethodPage(
                name,
                role,
                _family(group[0], catalogue),
                _describe(group[0], catalogue),
                citations,
                params,
                [(p, d, dataset_page(p, d)) for p, d in datasets],
                runs,
                code,
            )
        )
    return pages
