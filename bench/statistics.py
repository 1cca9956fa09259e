"""Ranks, average ranks and paired comparisons: whether a difference on the leaderboard is real.

The per-seed values of every run are the raw material (`seed_values`); the leaderboard's means and
intervals come from `bench.leaderboard.aggregate`. Definitions, which the README repeats:

- **Rank** of a student row on one (profile, dataset, metric): 1 + the number of other student
  rows whose 95 % confidence interval lies entirely on the better side of its own (for a
  higher-is-better metric: their lower bound above its upper bound). Rows whose intervals overlap
  tie, so several rows can share rank 1 and ranks can skip. With fewer than two seeds the interval
  is undefined and collapses to the mean, which makes the rank a plain competition rank of means.
  The teacher and control rows are references, not competitors: they get no rank. Metrics without
  a direction get no rank.
- **Average rank**: per (profile, track, method, metric), the mean of the method's ranks over the
  track's datasets where it has one, with the number of datasets.
- **Paired comparison** of a method with a baseline on a dataset: over the seeds both have finished,
  the differences d = method − baseline; their mean, 95 % Student-t interval, Cohen's d_z =
  mean(d) / sd(d) and the two-sided p-value of the paired t-test (scipy's `ttest_1samp` on d, which
  is `ttest_rel`). Below two pairs all three are NaN. When every seed gives the same difference,
  the interval collapses to that difference, and d_z and the p-value are NaN (undefined).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bench.leaderboard import t_interval

SEED_COLUMNS = [
    "profile", "dataset", "modality", "method", "role", "metric", "category",
    "higher_is_better", "seed", "value",
]  # fmt: skip
COMPARISON_COLUMNS = [
    "profile", "dataset", "modality", "method", "baseline", "metric", "category",
    "higher_is_better", "n", "seeds", "mean_diff", "std_diff", "ci95_low", "ci95_high",
    "cohens_dz", "p_value", "outcome",
]  # fmt: skip
AVERAGE_RANK_COLUMNS = ["profile", "modality", "method", "metric", "mean_rank", "n_datasets"]
BASELINES = ("scratch", "kd")


def seed_values(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (run, metric) of the `ok` records: the raw per-seed values (nulls dropped)."""
    rows = []
    for record in records:
        if record["status"] != "ok":
            continue
        meta = record.get("metric_metadata") or {}
        for metric, value in (record.get("metrics") or {}).items():
            if value is None:
                continue
            rows.append(
                {
                    "profile": record["profile"],
                    "dataset": record["dataset"]["name"],
                    "modality": record["dataset"].get("modality"),
                    "method": record["method"]["name"],
                    "role": record.get("role", "student"),
                    "metric": metric,
                    "category": meta.get(metric, {}).get("category", "other"),
                    "higher_is_better": meta.get(metric, {}).get("higher_is_better"),
                    "seed": int(record["seed"]),
                    "value": float(value),
                }
            )
    return pd.DataFrame(rows, columns=SEED_COLUMNS)


def _interval(row: pd.Series) -> tuple[float, float]:
    low, high = row["ci95_low"], row["ci95_high"]
    if pd.isna(low) or pd.isna(high):
        return float(row["mean"]), float(row["mean"])
    return float(low), float(high)


def ci_ranks(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (from `aggregate`) with `rank` and `rank_of` (how many rows were ranked) added."""
    frame = frame.copy()
    frame["rank"] = math.nan
    frame["rank_of"] = math.nan
    ranked = frame[
        (frame.role == "student") & frame["mean"].notna() & frame.higher_is_better.notna()
    ]
    for _, group in ranked.groupby(["profile", "dataset", "metric"]):
        higher = bool(group.higher_is_better.iloc[0])
        intervals = {index: _interval(row) for index, row in group.iterrows()}
        for index, (low, high) in intervals.items():
            if higher:
                better = sum(other[0] > high for i, other in intervals.items() if i != index)
            else:
                better = sum(other[1] < low for i, other in intervals.items() if i != index)
            frame.loc[index, "rank"] = 1 + better
            frame.loc[index, "rank_of"] = len(intervals)
    return frame


def average_ranks(ranked: pd.DataFrame) -> pd.DataFrame:
    """Mean rank per (profile, track, method, metric) over the datasets where it was ranked."""
    rows = ranked[ranked["rank"].notna()]
    grouped = rows.groupby(["profile", "modality", "method", "metric"], as_index=False).agg(
        mean_rank=("rank", "mean"), n_datasets=("dataset", "nunique")
    )
    return grouped[AVERAGE_RANK_COLUMNS].sort_values(
        ["profile", "modality", "metric", "mean_rank", "method"], ignore_index=True
    )


def paired_difference(method: dict[int, float], baseline: dict[int, float]) -> dict[str, Any]:
    """Statistics of method − baseline over the seeds both have (see the module docstring)."""
    seeds = sorted(set(method) & set(baseline))
    diffs = np.asarray([method[s] - baseline[s] for s in seeds], dtype=float)
    result: dict[str, Any] = {
        "n": len(seeds),
        "seeds": " ".join(str(s) for s in seeds),
        "mean_diff": float(diffs.mean()) if len(diffs) else math.nan,
        "std_diff": math.nan,
        "ci95_low": math.nan,
        "ci95_high": math.nan,
        "cohens_dz": math.nan,
        "p_value": math.nan,
    }
    if len(diffs) < 2:
        return result
    sd = float(diffs.std(ddof=1))
    result["std_diff"] = sd
    result["ci95_low"], result["ci95_high"] = t_interval(diffs)
    if sd > 0:
        result["cohens_dz"] = result["mean_diff"] / sd
        # The paired t-test (scipy's ttest_rel) by its formula: t = d_z·√n on n − 1 degrees of
        # freedom, two-sided; the distribution call is far cheaper than ttest_rel's machinery,
        # which matters for thousands of comparisons.
        t = result["cohens_dz"] * math.sqrt(len(diffs))
        result["p_value"] = float(2 * stats.t.sf(abs(t), len(diffs) - 1))
    return result


def outcome(higher_is_better: Any, low: float, high: float) -> str:
    """`better` / `worse` when the interval of the difference excludes 0, else `inconclusive`."""
    if pd.isna(low) or pd.isna(high) or higher_is_better is None or pd.isna(higher_is_better):
        return "inconclusive"
    if low > 0:
        return "better" if higher_is_better else "worse"
    if high < 0:
        return "worse" if higher_is_better else "better"
    return "inconclusive"


def compare(seeds: pd.DataFrame, pairs: Sequence[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Paired comparisons per (profile, dataset, metric) of student methods with baselines.

    `pairs` lists (method, baseline); by default every student method against `scratch` and `kd`.
    A pair is compared on a dataset only where both rows exist.
    """
    # (profile, dataset) -> method -> metric -> {seed: value}, built in one pass: filtering the
    # frame per pair and metric would cost seconds on a default-profile result set.
    values: dict[tuple[str, str], dict[str, dict[str, dict[int, float]]]] = {}
    info: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}
    students = seeds[seeds.role == "student"]
    columns = ["profile", "dataset", "method", "metric", "seed", "value"]
    for profile, dataset, method, metric, seed, value in students[columns].itertuples(index=False):
        by_method = values.setdefault((profile, dataset), {})
        by_method.setdefault(method, {}).setdefault(metric, {})[int(seed)] = float(value)
    first = students.drop_duplicates(["profile", "dataset", "metric"])
    for row in first.itertuples(index=False):
        info[row.profile, row.dataset, row.metric] = (
            row.modality,
            row.category,
            row.higher_is_better,
        )
    rows = []
    for (profile, dataset), by_method in sorted(values.items()):
        wanted = pairs or [
            (m, b) for b in BASELINES if b in by_method for m in sorted(by_method) if m != b
        ]
        for method, baseline in wanted:
            if method not in by_method or baseline not in by_method:
                continue
            ours, theirs = by_method[method], by_method[baseline]
            for metric in sorted(set(ours) & set(theirs)):
                result = paired_difference(ours[metric], theirs[metric])
                if result["n"] == 0:
                    continue
                modality, category, hib = info[profile, dataset, metric]
                rows.append(
                    {
                        "profile": profile,
                        "dataset": dataset,
                        "modality": modality,
                        "method": method,
                        "baseline": baseline,
                        "metric": metric,
                        "category": category,
                        "higher_is_better": hib,
                        **result,
                        "outcome": outcome(hib, result["ci95_low"], result["ci95_high"]),
                    }
                )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
