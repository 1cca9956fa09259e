"""Which metrics separate anything: the teacher from the control rows, checked on the records.

A metric that gives every model the same value (MPRT within ±0.08 for every model on the
default suite; the pointing game saturated at 1.0; every unit a concept detector in smoke)
cannot rank students, however its students' numbers look. Whether it separates is decided here,
by a stated rule, not by hand, and the report flags the metrics that do not.

The rule, per (profile, dataset, metric) of the Quantus and dissection categories: the teacher
must be better than a control row — random attributions of the teacher, or a randomly
initialised student — by more than twice the standard error of the difference, on every teacher
seed. The standard error comes from the per-sample spread each record keeps beside a metric
(`sample_sd`, `n_scored`; `bench.metrics.aggregate_samples`); a count without one (concept
detectors) must simply be better. A metric separates when some control row passes the rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

CHECKED_CATEGORIES = ("quantus_", "dissection")
COLUMNS = [
    "profile", "dataset", "metric", "category", "separates", "control", "teacher_seeds",
    "min_z", "rule",
]  # fmt: skip
RULE = "teacher better than a control row by > 2 standard errors on every teacher seed"
Z_MIN = 2.0


def _checked(category: str | None) -> bool:
    return bool(category) and category.startswith(CHECKED_CATEGORIES)


def _entry(record: dict[str, Any], metric: str) -> tuple[float, float] | None:
    """(value, squared standard error) of `metric` in `record`, or None if it has no value."""
    value = (record.get("metrics") or {}).get(metric)
    if value is None or not math.isfinite(value):
        return None
    meta = (record.get("metric_metadata") or {}).get(metric) or {}
    sd, n = meta.get("sample_sd"), meta.get("n_scored")
    variance = sd * sd / n if sd is not None and n else 0.0
    return float(value), variance


def _z(teacher: tuple[float, float], control: tuple[float, float], higher: bool) -> float:
    """The teacher's advantage over the control in standard errors (inf for exact counts)."""
    gain = teacher[0] - control[0] if higher else control[0] - teacher[0]
    se = math.sqrt(teacher[1] + control[1])
    if se == 0:
        return math.inf if gain > 0 else (0.0 if gain == 0 else -math.inf)
    return gain / se


def separation_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (profile, dataset, metric) checked: whether it separates, and by how much."""
    teachers: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    controls: dict[tuple[str, str], dict[str, dict[int, dict[str, Any]]]] = {}
    for record in records:
        if record.get("status") != "ok":
            continue
        key = (record["profile"], record["dataset"]["name"])
        seed = int(record["seed"])
        if record.get("role") == "teacher":
            teachers.setdefault(key, {})[seed] = record
        elif record.get("role") == "control":
            row = record["method"]["name"]
            controls.setdefault(key, {}).setdefault(row, {})[seed] = record
    rows = []
    for key, by_seed in sorted(teachers.items()):
        metadata = next(iter(by_seed.values())).get("metric_metadata") or {}
        for metric, meta in sorted(metadata.items()):
            if not _checked(meta.get("category")) or meta.get("higher_is_better") is None:
                continue
            best: tuple[float, str | None] = (-math.inf, None)
            for row, control_seeds in sorted(controls.get(key, {}).items()):
                zs = []
                for seed, teacher in by_seed.items():
                    ours = _entry(teacher, metric)
                    theirs = _entry(control_seeds.get(seed, {}), metric)
                    if ours is not None and theirs is not None:
                        zs.append(_z(ours, theirs, bool(meta["higher_is_better"])))
                if len(zs) == len(by_seed) and min(zs) > best[0]:
                    best = (min(zs), row)
            if best[1] is None:
                continue  # no control row has this metric: nothing to check against
            rows.append(
                {
                    "profile": key[0],
                    "dataset": key[1],
                    "metric": metric,
                    "category": meta.get("category"),
                    "separates": best[0] > Z_MIN,
                    "control": best[1],
                    "teacher_seeds": len(by_seed),
                    "min_z": best[0],
                    "rule": RULE,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def not_separating(table: pd.DataFrame) -> set[tuple[str, str, str]]:
    """(profile, dataset, metric) of the checked metrics that separate nothing."""
    flagged = table[~table.separates.astype(bool)]
    return set(zip(flagged.profile, flagged.dataset, flagged.metric, strict=True))
