"""The static report: `report/index.html`, one leaderboard table per (profile, dataset).

Everything is rendered with autoescaping, so a method or dataset name with markup shows as text.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

import bench
from bench.leaderboard import aggregate, method_order, metric_order, write_leaderboard
from bench.store import iter_records

log = logging.getLogger(__name__)


def format_value(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"


@dataclass
class Cell:
    text: str
    title: str
    best: bool = False


@dataclass
class Table:
    profile: str
    dataset: str
    modality: str
    metrics: list[dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)


def _table(frame: pd.DataFrame, profile: str, dataset: str) -> Table:
    part = frame[(frame.profile == profile) & (frame.dataset == dataset)]
    metrics = metric_order(part)
    first = part.groupby("metric").first()
    table = Table(
        profile,
        dataset,
        str(part.modality.iloc[0]),
        [
            {
                "name": m,
                "category": first.loc[m, "category"],
                "higher_is_better": first.loc[m, "higher_is_better"],
            }
            for m in metrics
        ],
    )
    indexed = part.set_index(["method", "metric"])
    best: dict[str, float] = {}
    students = part[part.role != "teacher"]
    for m in metrics:
        column = students[students.metric == m]["mean"].dropna()
        if len(column) and first.loc[m, "higher_is_better"] is not None:
            best[m] = column.max() if first.loc[m, "higher_is_better"] else column.min()
    for method in method_order(part.method.unique()):
        cells = []
        role = "student"
        for m in metrics:
            if (method, m) not in indexed.index:
                cells.append(Cell("", "not measured"))
                continue
            row = indexed.loc[(method, m)]
            role = row.role
            text = format_value(row["mean"])
            if not math.isnan(row["std"]):
                text += f" ± {format_value(row['std'])}"
            title = f"n={row['n']}; 95% CI [{format_value(row.ci95_low)}, {format_value(row.ci95_high)}]"
            is_best = role != "teacher" and m in best and row["mean"] == best[m]
            cells.append(Cell(text, title, is_best))
        table.rows.append({"method": method, "role": role, "cells": cells})
    return table


def render_report(results: Path, out: Path, profile: str | None = None) -> Path:
    """Write `results/leaderboard.{csv,json}` and `out/index.html`; returns the index path."""
    records = list(iter_records(results, profile))
    frame = aggregate(records)
    write_leaderboard(frame, results)
    descriptions: dict[str, str] = {}
    for record in records:
        for name, meta in (record.get("metric_metadata") or {}).items():
            descriptions.setdefault(name, meta.get("description", ""))
    tables = [
        _table(frame, p, d)
        for p, d in frame[["profile", "dataset"]].drop_duplicates().itertuples(index=False)
    ]
    problems = [r for r in records if r["status"] in ("failed", "diverged", "skipped")]
    env = Environment(
        loader=PackageLoader("bench", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
    )
    html = env.get_template("index.html.j2").render(
        tables=tables,
        descriptions=descriptions,
        problems=problems,
        n_records=len(records),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=bench.__version__,
    )
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.html"
    tmp = index.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(index)
    return index
