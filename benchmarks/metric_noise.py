"""How much of a Quantus metric's value is its own random draws: the standard error behind the
profile's `perturbations` (FaithfulnessCorrelation's `nr_runs`, MaxSensitivity's `nr_samples`).

Both metrics draw random perturbations, so one model scored twice with other draws gets another
value. A setting is enough when that noise is small beside what the metric is asked to tell
apart: the spread of the students' values over their seeds in the records. Per dataset, the
teacher and two students of seed 0 (`bench.run.metaquantus.seed_zero_models`, from the results
folder's cached teachers) are scored at each setting with `METRIC_SEEDS` seeds of the draws; the
SD of a model's value over those seeds, averaged over the models, is the metric's noise, and the
setting passes when it is at most `ENOUGH` of the between-seed SD of the students' records.

Run (after a default suite has filled the results folder):

    python benchmarks/metric_noise.py --results results --out metric_noise.csv

The reference set keeps its output (`metric_noise.csv`); the README cites that file.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from bench.core.registry import load_builtins
from bench.metrics import aggregate_samples
from bench.plan.planner import Selection, make_plan
from bench.results.folder import ResultsFolder
from bench.results.table import long_table
from bench.run.context import RunOptions
from bench.run.environment import resolve_device
from bench.run.metaquantus import STUDENTS, quantus_scores, seed_zero_models

SETTINGS = (5, 10, 20)
METRIC_SEEDS = 4
ENOUGH = 0.25
METRICS = ("faithfulness_correlation", "max_sensitivity")


def student_spread(results: Path, profile: str) -> dict[tuple[str, str], float]:
    """(dataset, metric) → the SD of the students' record values within a method, pooled over
    methods: what the metric must resolve."""
    table = long_table(ResultsFolder(results).iter_records(profile))
    students = table[(table.role == "student") & (table.status == "ok")]
    spread = {}
    for (dataset, metric), cell in students.groupby(["dataset", "metric"]):
        variances = cell.groupby("method").value.var().dropna()
        if len(variances):
            spread[dataset, metric] = float(np.sqrt(variances.mean()))
    return spread


def measure(results: Path, profile: str, datasets: tuple[str, ...] | None) -> pd.DataFrame:
    load_builtins()
    plan = make_plan(Selection(profile=profile, datasets=datasets, methods=STUDENTS, seeds=(0,)))
    options = RunOptions(results=results, device=resolve_device("auto"))
    spread = student_spread(results, profile)
    rows = []
    for trained in seed_zero_models(plan, options):
        explainer = trained.budget.explanation.quantus_explainer
        names = [f"{metric}_{explainer}" for metric in METRICS]
        for setting in SETTINGS:
            budget = replace(
                trained.budget,
                explanation=replace(trained.budget.explanation, perturbations=setting),
            )
            values: dict[str, list[list[float]]] = {name: [] for name in names}
            for model in trained.models.values():
                by_seed = [
                    quantus_scores(trained.bundle, model, trained.teacher, budget, seed, names)
                    for seed in range(METRIC_SEEDS)
                ]
                for name in names:
                    values[name].append([aggregate_samples(scores[name])[0] for scores in by_seed])
            for name in names:
                noise = float(np.mean([np.std(v, ddof=1) for v in values[name]]))
                students = spread.get((trained.dataset, name), float("nan"))
                rows.append(
                    {
                        "dataset": trained.dataset,
                        "metric": name,
                        "setting": setting,
                        "metric_seeds": METRIC_SEEDS,
                        "noise_sd": noise,
                        "student_seed_sd": students,
                        "ratio": noise / students if students else float("nan"),
                        "enough": bool(noise <= ENOUGH * students),
                    }
                )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--profile", default="default")
    parser.add_argument("--dataset", nargs="+")
    parser.add_argument("--out", type=Path, default=Path("metric_noise.csv"))
    args = parser.parse_args()
    table = measure(args.results, args.profile, tuple(args.dataset) if args.dataset else None)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
