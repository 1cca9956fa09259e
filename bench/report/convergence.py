"""Did training converge, and what did it learn from? One row per trained model (`training.csv`).

A student (or network teacher) whose best validation epoch is its last was still improving when
its budget ran out, so its scores describe the budget as much as the method; a LightGBM teacher
whose best iteration is its cap was never stopped by early stopping. Both are flagged here
and counted on the index, so a reader sees how many rows are budget-bound.

The table also carries what a kd run measured about its soft targets (`training.diagnostics`:
their entropy, and their correlation with the classes' shared attributes), the manipulation
check of Han et al.'s dose–response claim, which `manipulation_check` summarises per method.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from bench.core.vocabulary import Role
from bench.results.record import Record

# What kd's runs measure about their soft targets (`bench.train.soft_labels.similarity_check`).
DIAGNOSTICS = ("soft_target_entropy", "similarity_correlation")
TRAINING_COLUMNS = (
    "profile", "dataset", "method", "role", "seed", "teacher_seed", "epochs", "best_epoch",
    "ends_on_last_epoch", "best_iteration", "iteration_cap", "stopped_early",
    "validation_log_loss", "test_log_loss", "accuracy", *DIAGNOSTICS,
)  # fmt: skip


def _network_row(record: Record, info: dict[str, Any]) -> dict[str, Any]:
    history = (record.training or {}).get("history") or {}
    epochs = len(history.get("val_accuracy") or ())
    best = info.get("best_epoch")
    return {
        "epochs": epochs or None,
        "best_epoch": best,
        "ends_on_last_epoch": bool(epochs) and best == epochs - 1,
    }


def _tree_row(record: Record) -> dict[str, Any]:
    teacher = record.teacher if isinstance(record.teacher, dict) else {}  # old: a key
    cap = (teacher.get("settings") or {}).get("n_estimators")
    best = teacher.get("best_iteration")
    return {
        "best_iteration": best,
        "iteration_cap": cap,
        # Records from before `stopped_early` was kept: derived from the cap.
        "stopped_early": teacher.get("stopped_early", best is not None and best < (cap or 0)),
        "validation_log_loss": teacher.get("validation_log_loss"),
    }


def _diagnostics(record: Record) -> dict[str, Any]:
    diagnostics = (record.training or {}).get("diagnostics")
    if not isinstance(diagnostics, dict):
        return {}
    return {name: diagnostics.get(name) for name in DIAGNOSTICS}


def training_table(records: Iterable[Record]) -> pd.DataFrame:
    """One row per `ok` teacher and student record: its optimum and whether it was budget-bound."""
    rows = []
    for record in records:
        if not record.ok or record.role not in (Role.TEACHER, Role.STUDENT):
            continue
        is_tree = record.role is Role.TEACHER and record.method.get("base") == "lightgbm"
        # A teacher keeps its optimum with its spec, a student with its training history.
        info = (record.teacher if record.role is Role.TEACHER else record.training) or {}
        rows.append(
            {
                "profile": record.profile,
                "dataset": record.dataset_name,
                "method": record.row,
                "role": str(record.role),
                "seed": record.seed,
                "teacher_seed": record.teacher_seed,
                **(_tree_row(record) if is_tree else _network_row(record, info)),
                "test_log_loss": record.metrics.get("log_loss"),
                "accuracy": record.metrics.get("accuracy"),
                **_diagnostics(record),
            }
        )
    frame = pd.DataFrame(rows, columns=list(TRAINING_COLUMNS))
    for name in DIAGNOSTICS:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame.sort_values(["profile", "dataset", "role", "method", "seed"], ignore_index=True)


def convergence_summary(training: pd.DataFrame) -> pd.DataFrame:
    """Per (profile, dataset, role): how many trained models were budget-bound, of how many."""
    if training.empty:
        return pd.DataFrame(columns=["profile", "dataset", "role", "budget_bound", "models"])
    bound = training.ends_on_last_epoch.eq(True) | training.stopped_early.eq(False)
    return (
        training.assign(budget_bound=bound)
        .groupby(["profile", "dataset", "role"], sort=True)
        .agg(budget_bound=("budget_bound", "sum"), models=("budget_bound", "size"))
        .reset_index()
    )


def manipulation_check(training: pd.DataFrame) -> pd.DataFrame:
    """Per (profile, dataset, method) with soft-label diagnostics: how many `models` (runs), and the
    mean and SD over them of each diagnostic (`DIAGNOSTICS`)."""
    measured = training[
        training.similarity_correlation.notna() | training.soft_target_entropy.notna()
    ]
    if measured.empty:
        return pd.DataFrame(columns=["profile", "dataset", "method", "models"])
    return (
        measured.groupby(["profile", "dataset", "method"], sort=True)
        .agg(
            models=("seed", "size"),
            **{f"{name}_{stat}": (name, stat) for name in DIAGNOSTICS for stat in ("mean", "std")},
        )
        .reset_index()
    )
