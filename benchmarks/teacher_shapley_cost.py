"""What the interventional Shapley game costs on a profile's tree teacher, per explained sample.

The game evaluates the teacher on every sampled coalition × background row of each explained
sample (`bench.explain.shapley`), and a LightGBM forest's prediction costs rows × trees: a
26-class forest (UCI Letter) holds 26 trees per boosting round. This trains (or reuses, in
`--results`) the profile's teacher of seed 0 as a run would, times the Shapley values of
`--samples` test rows on one thread, and prints the seconds per sample and the minutes per
teacher at the profile's `n_explain`, which is how `real` chose Letter's 64.

    python benchmarks/teacher_shapley_cost.py --profile real --dataset letter --samples 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.core.registry import load_builtins
from bench.data.bundle import DATASETS, DatasetLoaderOptions
from bench.explain.shapley import BACKGROUND_SIZE, background_sample, interventional_shapley
from bench.metrics import EXPLAIN_SUBSET_SEED
from bench.plan.planner import Selection, make_plan
from bench.results.folder import ResultsFolder
from bench.train.teachers import obtain_teacher

CPU = torch.device("cpu")


def measure(profile: str, dataset: str, samples: int, results: Path) -> None:
    plan = make_plan(
        Selection(profile=profile, datasets=(dataset,), methods=("scratch",), seeds=(0,))
    )
    (spec,) = plan.runs
    bundle = DATASETS.get(dataset).load(DatasetLoaderOptions())
    teacher = obtain_teacher(
        spec.teacher, bundle, ResultsFolder(results).teacher_folder(spec.teacher), CPU
    )
    x, targets = bundle.test.x[:samples], bundle.test.y[:samples]
    background = background_sample(bundle.train.x, seed=EXPLAIN_SUBSET_SEED)
    start = time.perf_counter()
    groups = np.asarray(bundle.feature_of_column) if bundle.feature_of_column else None
    interventional_shapley(
        teacher.predict_logits, x, targets, background, EXPLAIN_SUBSET_SEED, groups=groups
    )
    per_sample = (time.perf_counter() - start) / samples
    n_explain = spec.budget.n_explain
    print(
        f"{profile}/{dataset}: teacher of {teacher.n_params} parameters; {per_sample:.2f} s per "
        f"explained sample ({BACKGROUND_SIZE} background rows); {n_explain} samples: "
        f"{per_sample * n_explain / 60:.1f} min per teacher"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="real")
    parser.add_argument("--dataset", default="letter")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--results", type=Path, default=None, help="reuse teachers cached here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_builtins()
    with tempfile.TemporaryDirectory() as scratch:
        measure(args.profile, args.dataset, args.samples, args.results or Path(scratch))


if __name__ == "__main__":
    main()
