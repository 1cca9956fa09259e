"""Which metrics separate anything: the teacher from the control rows, checked on the records.

A metric that gives every model the same value (MPRT within ±0.08 for every model on the
default suite; the pointing game saturated at 1.0; every unit a concept detector in smoke)
cannot rank students, however its students' numbers look. Whether it separates is decided here,
by a stated rule, not by hand, and the report flags the metrics that do not.

The rule, per (profile, dataset, metric) of the Quantus and dissection categories: the teacher
must be better than **every** floor that has the metric — random attributions of the teacher, a
randomly initialised student; not another teacher seed, a level (`FLOOR_ROWS`) — by more than twice the standard error of the
difference, on every teacher seed. The standard error comes from the per-sample spread each record
keeps beside a metric (`sample_sd`, `n_scored`; `bench.metrics.aggregate_samples`); a count
without one (concept detectors) must simply be better. Beating any one control was too permissive:
complexity "separated" on concept_shapes by beating uniform noise while the untrained student beat
the teacher (FINDINGS N8). `control` names the control row closest to the teacher.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.core.vocabulary import FLOOR_ROWS
from bench.results.table import Records, as_long_table

CHECKED_CATEGORIES = ("quantus_", "dissection")
COLUMNS = [
    "profile", "dataset", "metric", "category", "separates", "control", "teacher_seeds",
    "min_z", "rule",
]  # fmt: skip
RULE = "teacher better than every floor (control row) by > 2 standard errors on every teacher seed"
Z_MIN = 2.0


def _checked(category: str | None) -> bool:
    return isinstance(category, str) and category.startswith(CHECKED_CATEGORIES)


Entry = tuple[float, float]  # (value, squared standard error)


def _entry(value: float, sample_sd: float, n_scored: float) -> Entry | None:
    """(value, squared standard error) of one metric of one record, or None if it has no value."""
    if not math.isfinite(value):
        return None
    known = pd.notna(sample_sd) and pd.notna(n_scored) and n_scored != 0
    return value, sample_sd * sample_sd / n_scored if known else 0.0


def _z(teacher: Entry, control: Entry, higher: bool) -> float:
    """The teacher's advantage over the control in standard errors (inf for exact counts)."""
    gain = teacher[0] - control[0] if higher else control[0] - teacher[0]
    se = math.sqrt(teacher[1] + control[1])
    if se == 0:
        return math.inf if gain > 0 else (0.0 if gain == 0 else -math.inf)
    return gain / se


def separation_table(data: Records | pd.DataFrame) -> pd.DataFrame:
    """One row per (profile, dataset, metric) checked: whether it separates, and by how much.

    `data`: records, or their long table (`bench.results.table`). The metrics checked, their
    category and direction are those of the dataset's first teacher record.
    """
    table = as_long_table(data)
    # The floors only: another teacher seed is a level the teacher need not beat.
    floors = (table.role == "control") & table.method.isin(FLOOR_ROWS)
    ok = table[(table.status == "ok") & ((table.role == "teacher") | floors)]
    # (profile, dataset) → teacher seed → metric → entry, in record order; the first teacher
    # record's metrics with their metadata; (profile, dataset) → control row → seed → metrics.
    teachers: dict[tuple[str, str], dict[int, dict[str, Entry | None]]] = {}
    metadata: dict[tuple[str, str], dict[str, tuple[str, bool | None]]] = {}
    first: dict[tuple[str, str], int] = {}
    controls: dict[tuple[str, str], dict[str, dict[int, dict[str, Entry | None]]]] = {}
    columns = ("record", "profile", "dataset", "method", "role", "seed", "metric", "category",
               "higher_is_better", "value", "sample_sd", "n_scored")  # fmt: skip
    for record, profile, dataset, row, role, seed, metric, category, higher, value, sd, n in zip(
        *(ok[c].tolist() for c in columns), strict=True
    ):
        key = (profile, dataset)
        if role == "teacher":
            # A later record of the same seed replaces an earlier one, as a dict of records would.
            by_metric = teachers.setdefault(key, {}).setdefault(seed, {})
            if first.setdefault(key, record) == record:
                metadata.setdefault(key, {})[metric] = (category, higher)
        else:
            by_metric = controls.setdefault(key, {}).setdefault(row, {}).setdefault(seed, {})
        by_metric[metric] = _entry(value, sd, n)
    rows = []
    for key, by_seed in sorted(teachers.items()):
        for metric, (category, higher) in sorted(metadata.get(key, {}).items()):
            if not _checked(category) or higher is None or pd.isna(higher):
                continue
            closest: tuple[float, str | None] = (math.inf, None)
            for row, control_seeds in sorted(controls.get(key, {}).items()):
                zs = []
                for seed, ours in by_seed.items():
                    theirs = control_seeds.get(seed, {}).get(metric)
                    if theirs is not None:
                        mine = ours.get(metric)
                        zs.append(-math.inf if mine is None else _z(mine, theirs, bool(higher)))
                if zs and (closest[1] is None or min(zs) < closest[0]):
                    closest = (min(zs), row)
            if closest[1] is None:
                continue  # no control row has this metric: nothing to check against
            rows.append(
                {
                    "profile": key[0],
                    "dataset": key[1],
                    "metric": metric,
                    "category": category,
                    "separates": closest[0] > Z_MIN,
                    "control": closest[1],
                    "teacher_seeds": len(by_seed),
                    "min_z": closest[0],
                    "rule": RULE,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def not_separating(table: pd.DataFrame) -> set[tuple[str, str, str]]:
    """(profile, dataset, metric) of the checked metrics that separate nothing."""
    flagged = table[~table.separates.astype(bool)]
    return set(zip(flagged.profile, flagged.dataset, flagged.metric, strict=True))
