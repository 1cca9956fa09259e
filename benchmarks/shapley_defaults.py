"""The defaults of `bench.explain.shapley` (orders, background rows), measured; and how far the
explainer is from gradient × input.

On a table, the default profile's LightGBM teacher (trained into a scratch folder) and its
`scratch` student of each seed (an MLP 64×2, 60 epochs, trained as the suite trains it) are
explained on the test split's first `--samples`
rows. `grid` prints, per (pairs, background rows), the time per sample and the estimator's
error: three repeats, repeat r drawing background and orders with seed r; SE is the SD over
repeats per value over the mean |φ| of the reference (the whole training split as background,
32 pairs), in brackets with the background fixed and only the orders redrawn; ρ is the mean
per-sample Spearman between repeats and with the reference. `agreement` prints, at the defaults
and on every test row, the mean per-sample Spearman of the teacher's shapley with its TreeSHAP,
and of the student's shapley and IG with its gradient × input, per student seed.

    python benchmarks/shapley_defaults.py grid --dataset breast_cancer --samples 24
    python benchmarks/shapley_defaults.py agreement --dataset wine --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.core.registry import load_builtins
from bench.data.bundle import DATASETS, DatasetBundle, DatasetLoaderOptions
from bench.explain.explainers import ExplainSettings, explain
from bench.explain.shapley import background_sample, interventional_shapley
from bench.metrics.explanation import spearman_per_sample
from bench.plan.planner import Selection, make_plan
from bench.results.folder import ResultsFolder
from bench.run.student_stage import training_context
from bench.train.loop import network_logits
from bench.train.method import METHODS
from bench.train.teachers import Teacher, obtain_teacher

CPU = torch.device("cpu")
GRID = ((2, 128), (4, 128), (8, 128), (4, 32), (4, 64), (4, 256))
REPEATS = 3


def models(dataset: str, seed: int, scratch: Path) -> tuple[DatasetBundle, Teacher, nn.Module]:
    """The default profile's teacher of `dataset` and its `scratch` student of `seed`, trained
    as a run of the suite trains them."""
    plan = make_plan(
        Selection(profile="default", datasets=(dataset,), methods=("scratch",), seeds=(seed,))
    )
    (spec,) = plan.runs
    bundle = DATASETS.get(dataset).load(DatasetLoaderOptions())
    teacher = obtain_teacher(
        spec.teacher, bundle, ResultsFolder(scratch).teacher_folder(spec.teacher), CPU
    )
    ctx = training_context(spec, bundle, teacher, CPU)
    return bundle, teacher, METHODS.get("scratch")(dict(spec.params)).fit(ctx).eval()


def logits_of(module: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    return lambda rows: network_logits(module, rows, CPU)


def rho(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.nanmean(spearman_per_sample(a, b)))


def grid(dataset: str, samples: int, scratch: Path) -> None:
    bundle, teacher, student = models(dataset, 0, scratch)
    x, targets, train = bundle.test.x[:samples], bundle.test.y[:samples], bundle.train.x
    print("model,pairs,rows,ms_per_sample,se,se_orders,rho_repeats,rho_reference")
    for name, logits in (("teacher", teacher.predict_logits), ("student", logits_of(student))):
        reference = interventional_shapley(logits, x, targets, train, seed=100, pairs=32)
        scale = np.abs(reference).mean()
        for pairs, rows in GRID:
            runs, seconds = [], []
            for r in range(REPEATS):
                background = background_sample(train, seed=r, size=rows)
                start = time.perf_counter()
                runs.append(interventional_shapley(logits, x, targets, background, r, pairs))
                seconds.append(time.perf_counter() - start)
            fixed = background_sample(train, seed=0, size=rows)
            orders = [runs[0]] + [
                interventional_shapley(logits, x, targets, fixed, r, pairs)
                for r in range(1, REPEATS)
            ]
            se, se_orders = (np.stack(a).std(axis=0, ddof=1).mean() / scale for a in (runs, orders))
            repeats = np.mean([rho(a, b) for i, a in enumerate(runs) for b in runs[i + 1 :]])
            to_reference = np.mean([rho(run, reference) for run in runs])
            ms = 1000 * np.mean(seconds) / len(x)
            print(
                f"{name},{pairs},{rows},{ms:.1f},{se:.3f},{se_orders:.3f},"
                f"{repeats:.3f},{to_reference:.3f}",
                flush=True,
            )


def agreement(dataset: str, seeds: list[int], scratch: Path) -> None:
    print("seed,teacher_shapley_treeshap,student_shapley_gxi,student_ig_gxi,ms_teacher,ms_student")
    for seed in seeds:
        bundle, teacher, student = models(dataset, seed, scratch)
        x, targets, train = bundle.test.x, bundle.test.y, bundle.train.x
        settings = ExplainSettings(train.mean(axis=0), 32, 0, background_sample(train, 0))
        start = time.perf_counter()
        teacher_shapley = teacher.explain("shapley", x, targets, settings)
        ms_teacher = 1000 * (time.perf_counter() - start) / len(x)  # cached after the first seed
        treeshap = teacher.explain("ig", x, targets, settings)
        start = time.perf_counter()
        shapley = explain("shapley", student, x, targets, bundle.num_classes, settings, CPU)
        ms_student = 1000 * (time.perf_counter() - start) / len(x)
        gxi, ig = (
            explain(name, student, x, targets, bundle.num_classes, settings, CPU)
            for name in ("gxi", "ig")
        )
        print(
            f"{seed},{rho(teacher_shapley, treeshap):.3f},{rho(shapley, gxi):.3f},"
            f"{rho(ig, gxi):.3f},{ms_teacher:.1f},{ms_student:.1f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["grid", "agreement"])
    parser.add_argument("--dataset", default="breast_cancer")
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    load_builtins()
    with tempfile.TemporaryDirectory() as scratch:
        if args.mode == "grid":
            grid(args.dataset, args.samples, Path(scratch))
        else:
            agreement(args.dataset, args.seeds, Path(scratch))


if __name__ == "__main__":
    main()
