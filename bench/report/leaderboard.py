"""Leaderboard statistics: per (profile, dataset, method, metric) mean, std, 95 % CI and n; the
exports' writer."""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench.core.atomic import write_atomic, write_json_atomic
from bench.core.vocabulary import (
    BASELINES,
    CATEGORY_ORDER,
    CONTROL_ROWS,
    OWN_EXPLAINER,
    OWN_FALLBACK,
    TEACHER_ROW,
)
from bench.results.table import Records, as_long_table

COLUMNS = [
    "profile", "dataset", "modality", "method", "role", "metric", "category",
    "higher_is_better", "mean", "std", "ci95_low", "ci95_high", "n",
]  # fmt: skip


@functools.lru_cache(maxsize=1024)
def t_quantile(df: int, level: float = 0.95) -> float:
    """Student-t quantile for a `level` two-sided interval; scipy's ppf costs ~0.1 ms a call,
    and a report asks for the same few thousands of times."""
    return float(stats.t.ppf(0.5 + level / 2, df))


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean; undefined (NaN) below two values."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean = float(values.mean())
    half = t_quantile(n - 1, level) * values.std(ddof=1) / math.sqrt(n)
    return mean - half, mean + half


def aggregate(data: Records | pd.DataFrame) -> pd.DataFrame:
    """One row per (profile, dataset, method, metric) over the `ok` records' seeds.

    `data`: records, or their long table (`bench.results.table`). A metric null on every seed
    keeps its row, with n = 0. The role, category and direction are the last record's. Means and
    spreads are numpy's, seed values in record order: the published tables' last digits depend on
    the order of the sums (`aggregate_seeds` sums as pandas does, for the derived rows).
    """
    table = as_long_table(data)
    ok = table[table.status == "ok"]
    keys = ("profile", "dataset", "method", "metric")
    described = ("modality", "role", "category", "higher_is_better")
    values: dict[tuple, list[float]] = {}
    info: dict[tuple, tuple] = {}
    columns = [ok[c].tolist() for c in (*keys, *described, "value")]
    for *fields, value in zip(*columns, strict=True):
        key = tuple(fields[:4])
        values.setdefault(key, [])
        if not math.isnan(value):
            values[key].append(value)
        info[key] = tuple(fields[4:])
    rows = []
    for key, vals in values.items():
        array = np.asarray(vals, dtype=float)
        low, high = t_interval(array)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                **dict(zip(described, info[key], strict=True)),
                "mean": float(array.mean()) if len(array) else math.nan,
                "std": float(array.std(ddof=1)) if len(array) > 1 else math.nan,
                "ci95_low": low,
                "ci95_high": high,
                "n": len(array),
            }
        )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values(list(keys), ignore_index=True)


def aggregate_seeds(seeds: pd.DataFrame) -> pd.DataFrame:
    """`aggregate`'s rows from per-seed values (`bench.report.statistics.seed_values` columns).

    For rows derived from the seed values rather than read from records, such as the excess over
    the control floor (`bench.report.statistics.explanation_excess`): the same statistics as `aggregate`,
    so that the two kinds of row sit in one leaderboard.
    """
    keys = ["profile", "dataset", "method", "metric"]
    if seeds.empty:
        return pd.DataFrame(columns=COLUMNS)
    grouped = seeds.groupby(keys, sort=True, dropna=False)
    first = grouped[["modality", "role", "category", "higher_is_better"]].first()
    summary = grouped["value"].agg(["mean", "std", "count"])
    n = summary["count"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.975, n - 1) * summary["std"].to_numpy() / np.sqrt(n)
    frame = first.join(summary).reset_index()
    frame["ci95_low"] = np.where(n > 1, frame["mean"] - half, math.nan)
    frame["ci95_high"] = np.where(n > 1, frame["mean"] + half, math.nan)
    frame["n"] = frame.pop("count").astype(int)
    return frame[COLUMNS]


def without_fallback_copies(table: pd.DataFrame) -> pd.DataFrame:
    """The long table without the `own` explainer's metrics on the (profile, dataset)s where they
    equal their Grad-CAM counterparts on every record: where no model has an explainer of its
    own (`bench.explain.explainers.explainer_for`), `expl_spearman_own` is
    `expl_spearman_gradcam` again, a column that would be shown and ranked twice."""
    suffix = f"_{OWN_EXPLAINER}"
    ours = table[table.metric.str.endswith(suffix)]
    if ours.empty:
        return table
    counterpart = ours.metric.str.slice(stop=-len(suffix)) + f"_{OWN_FALLBACK}"
    theirs = table.set_index(["record", "metric"]).value
    mirrored = theirs.reindex(list(zip(ours.record, counterpart, strict=True))).to_numpy()
    values = ours.value.to_numpy()
    same = (values == mirrored) | (np.isnan(values) & np.isnan(mirrored))
    copies = (
        pd.Series(same, index=ours.index).groupby([ours.profile, ours.dataset]).transform("all")
    )
    return table.drop(index=copies[copies].index).reset_index(drop=True)


def mean_coverage(table: pd.DataFrame) -> dict[tuple[str, str, str, str], float]:
    """The mean over seeds of each metric's coverage (`bench.metrics.aggregate_samples`), per
    (profile, dataset, method, metric) of the `ok` records in the long table."""
    shares: dict[tuple[str, str, str, str], list[float]] = {}
    kept = table[(table.status == "ok") & table.coverage.notna()]
    columns = [kept[c].tolist() for c in ("profile", "dataset", "method", "metric", "coverage")]
    for *key, share in zip(*columns, strict=True):
        shares.setdefault(tuple(key), []).append(share)
    return {key: float(np.mean(values)) for key, values in shares.items()}


def method_order(methods: Iterable[str]) -> list[str]:
    """Teacher first, then the control row, then the baselines, then the rest alphabetically."""
    first = (TEACHER_ROW, *CONTROL_ROWS, BASELINES[0], "label_smoothing", *BASELINES[1:])
    names = set(methods)
    return [m for m in first if m in names] + sorted(names - set(first))


def metric_order(frame: pd.DataFrame) -> list[str]:
    categories = frame.groupby("metric")["category"].first()

    def rank(metric: str) -> tuple[int, str]:
        category = categories[metric]
        index = (
            CATEGORY_ORDER.index(category) if category in CATEGORY_ORDER else len(CATEGORY_ORDER)
        )
        return index, metric

    return sorted(categories.index, key=rank)


# A spreadsheet reads a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every text cell that a spreadsheet would run as a formula prefixed by `'`.

    Names come from plugins and records, which anyone may write; numbers are left as they are.
    """

    def neutralise(value: object) -> object:
        if isinstance(value, str) and value.startswith(FORMULA_STARTS):
            return "'" + value
        return value

    return frame.map(neutralise)


def write_leaderboard(
    frame: pd.DataFrame, folder: Path, extras: Mapping[str, pd.DataFrame] | None = None
) -> tuple[Path, Path]:
    """`folder/leaderboard.csv` and `.json` (the same rows); the report's folder, beside its site.

    Each of `extras` (e.g. `comparisons`) is also written to `folder/<name>.csv` and stored
    under its name in the JSON file, beside `rows`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"rows": frame.to_dict(orient="records")}
    for name, extra in {"leaderboard": frame, **(extras or {})}.items():
        # Text quoted: pandas leaves a bare carriage return in a cell unquoted, which splits the row.
        text = spreadsheet_safe(extra).to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC)
        write_atomic(folder / f"{name}.csv", lambda handle, text=text: handle.write(text.encode()))
        if name != "leaderboard":
            payload[name] = extra.to_dict(orient="records")
    json_path = folder / "leaderboard.json"
    write_json_atomic(json_path, payload)
    return folder / "leaderboard.csv", json_path
