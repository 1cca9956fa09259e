"""Records as one long table: a row per (record, metric), the one place records become rows.

The report reads records once (`bench.results.folder.ResultsFolder.iter_records`) and flattens
them here;
its per-seed values, leaderboard aggregates, coverage and separation check are all cut from this
table, so that no two of them can read a record differently (which metrics count, what a missing
direction or teacher seed means). A row holds the record's identity (its position among the
records, profile, dataset, row, role, status, seed, teacher seed) and one metric: its value (NaN
for null) and the metadata the report uses (category, direction, description, coverage and the
per-sample spread behind it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from bench.results.record import Record

# Records, or their JSON form (a test or a script may hold that): read through `Record.coerce`.
Records = Iterable[Record | Mapping[str, Any]]

COLUMNS = [
    "record", "profile", "dataset", "modality", "method", "role", "status", "seed",
    "teacher_seed", "metric", "category", "higher_is_better", "description", "value",
    "coverage", "sample_sd", "n_scored", "half_a", "half_b",
]  # fmt: skip


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def long_table(records: Records) -> pd.DataFrame:
    """One row per metric of every record (any status), in the records' order.

    `record` is the record's position in `records`, so that a row leads back to its record;
    `teacher_seed` is a nullable integer; `value`, `coverage`, `sample_sd`, `n_scored` and the
    split halves' means `half_a`, `half_b` are floats, NaN where the record holds null or nothing. A metric with no metadata has category
    `other` and no direction (None), as the statistics read it.
    """
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for index, item in enumerate(records):
        record = Record.coerce(item)
        metadata = record.metric_metadata
        identity = {
            "record": index,
            "profile": record.profile,
            "dataset": record.dataset_name,
            "modality": record.modality,
            "method": record.row,
            "role": str(record.role),
            "status": str(record.status),
            "seed": record.seed,
            "teacher_seed": record.teacher_seed,
        }
        for metric, value in record.metrics.items():
            meta = metadata.get(metric) or {}
            for name, cell in identity.items():
                columns[name].append(cell)
            columns["metric"].append(metric)
            columns["category"].append(meta.get("category", "other"))
            columns["higher_is_better"].append(meta.get("higher_is_better"))
            columns["description"].append(meta.get("description", ""))
            columns["value"].append(_number(value))
            columns["coverage"].append(_number(meta.get("coverage")))
            columns["sample_sd"].append(_number(meta.get("sample_sd")))
            columns["n_scored"].append(_number(meta.get("n_scored")))
            halves = meta.get("split_halves")
            if not isinstance(halves, list | tuple) or len(halves) != 2:
                halves = (None, None)
            columns["half_a"].append(_number(halves[0]))
            columns["half_b"].append(_number(halves[1]))
    frame = pd.DataFrame(columns, columns=COLUMNS)
    frame["teacher_seed"] = frame["teacher_seed"].astype("Int64")
    return frame


def as_long_table(data: Records | pd.DataFrame) -> pd.DataFrame:
    """`data` when it is a long table already, else the long table of the records in it.

    The report flattens its records once and hands the table on; a caller holding records (a
    test, a script) passes them as they are.
    """
    return data if isinstance(data, pd.DataFrame) else long_table(data)
