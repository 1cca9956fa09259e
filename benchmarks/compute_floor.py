"""How far each recorded student run's training is from its floating-point floor.

A run's training needs, at least, the student's forward and backward pass over every training
sample of every epoch, its forward pass over the validation split after every epoch (the best
epoch is chosen there), and the network teacher's forward pass over the training split once
(its outputs are computed once per run and looked up per batch, `bench.train.teachers`; on
augmented batches, once per epoch). This
counts those floating-point operations with torch's FLOP formulas (`flop_registry`, what
`FlopCounterMode` counts with: matrix products and convolutions, the bulk of it; element-wise
work is not counted) on the standard student
and teacher of the records' budget, measures this machine's float32 matrix-multiply rate on one
thread (the records ran one torch thread per worker), and divides each method's median
recorded training time (`timings.train`) by the floor's time at that rate:

    ratio = median train seconds / (floor FLOPs / measured FLOP/s)

A ratio near 1 is a run at the CPU's limit; a large one is time spent on anything else (Python,
small kernels, the method's own extra terms, which the floor leaves out: a connector's or a
relation loss's FLOPs are the method's, not the floor's; so is a student architecture of its own,
GBDT2NN's grouped networks or XDistillation's fused student, whose ratio includes its larger
network). The floor does not count a LightGBM
teacher (its trees are comparisons, not FLOPs; its outputs are computed once either way) nor
the scoring stage, whose time (`timings.score`) is printed beside it unfloored: its work depends
on each explainer and metric. Times come from the records, so they are as quiet as the machine
that made them (the reference sets' READMEs say how they were built).

Beside it, each method's own floor on a network teacher (`method_floor`): the FLOPs its real
`fit` performs, counted with the same counter while it trains on three small slices of the dataset
for one and for two epochs, then taken to the budget's split sizes (as c + a·n + b·n², `at_size`:
a memory bank makes the per-sample work grow with n) and epochs. It holds what the
standard floor leaves out (connectors, fusions, relation losses, a student of its own, the
teacher's features or maps), so a feature method's `own ratio` says how far its time is from its
own work. The slice keeps the splits' proportions, so validation scales with the training set;
the work done once per run (the teacher's outputs, their features) is the two-epoch count less
twice the per-epoch difference. Element-wise work stays uncounted here too.

Last, the whole set's floor: every student run's training floor and every recorded network
teacher's (its training steps over the images it learns from and its validation passes), summed,
and the least wall time that leaves for `--jobs` processes of one thread each. It leaves out the
`other_teacher` level's training (a teacher of one more seed per dataset) and all scoring, so it
is a lower bound: no schedule of the set's runs, however efficient, finishes below it.

    python benchmarks/compute_floor.py --results reference/default-v8
    python benchmarks/compute_floor.py --results reference/real-v1 --profile real
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections import defaultdict
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from bench.core.budgets import TRAIN_DEFAULTS, Architecture, TrainBudget
from bench.core.registry import load_builtins
from bench.core.specs import TeacherSpec
from bench.data.bundle import DATASETS, DatasetBundle, DatasetLoaderOptions, Split
from bench.models import build_model
from bench.results.folder import ResultsFolder
from bench.results.record import Record
from bench.train.loop import TrainContext
from bench.train.method import METHODS
from bench.train.teachers import NetworkTeacher

GEMM_SIZE = 512
GEMM_REPEATS = 40
# Training images of the three slices a method's floor is counted on (the validation slices keep
# the splits' proportion): whole batches, so that a per-batch cost is counted per batch.
SLICES = (128, 256, 512)


def matmul_rate() -> float:
    """float32 FLOP/s of one thread on a square matrix product, the best of five timings."""
    a, b = torch.randn(GEMM_SIZE, GEMM_SIZE), torch.randn(GEMM_SIZE, GEMM_SIZE)
    a @ b  # warm-up
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(GEMM_REPEATS):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * GEMM_SIZE**3 * GEMM_REPEATS / best


class FlopCount(TorchDispatchMode):
    """The FLOPs of every operator run inside it, by the formulas `FlopCounterMode` registers
    (`flop_registry`; its fallback through an operator's decomposition is left out: the
    convolutions and products counted here all have a formula).

    Not `FlopCounterMode` itself: its per-module breakdown hooks every module, and those hooks
    make `torch.autograd.grad` of a leaf input fail (jacobian_kd's teacher gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def flops(model: nn.Module, x: torch.Tensor, backward: bool) -> int:
    """FLOPs of one forward (and, if asked, backward) pass of `model` on the batch `x`."""
    with FlopCount() as counter:
        out = model(x)
        if backward:
            out.sum().backward()
    return counter.total


def network(architecture: dict, shape: tuple[int, ...], classes: int) -> nn.Module:
    """The network a record's budget names: {"model": name, "size": [[key, value], ...]}."""
    return build_model(architecture["model"], shape, classes, **dict(architecture["size"]))


def per_sample_flops(model: nn.Module, batch: torch.Tensor) -> tuple[float, float]:
    """FLOPs per sample of one training step (forward and backward) and of one forward pass."""
    step = flops(model.train(), batch, backward=True) / len(batch)
    return step, flops(model.eval(), batch, backward=False) / len(batch)


def floor_of(budget: dict, dataset: str) -> dict[str, float]:
    """The training floor of a run of `budget` on `dataset`, in FLOPs, part by part."""
    bundle = DATASETS.get(dataset).load(DatasetLoaderOptions())
    shape, classes = bundle.input_shape, bundle.num_classes
    training = budget["student_training"]
    batch = torch.as_tensor(bundle.train.x[: training["batch_size"]])
    step, forward = per_sample_flops(network(budget["student"], shape, classes), batch)
    parts = {
        "student training": step * len(bundle.train.x) * training["epochs"],
        "validation": forward * len(bundle.val.x) * training["epochs"],
        "teacher outputs": 0.0,
    }
    if budget.get("teacher_network"):
        teacher = network(budget["teacher_network"], shape, classes).eval()
        # Augmented batches are new inputs every epoch: the teacher sees each of them.
        augments = training.get("crop_padding", TRAIN_DEFAULTS["crop_padding"]) > 0
        passes = training["epochs"] if augments else 1
        with torch.no_grad():
            per_sample = flops(teacher, batch, backward=False) / len(batch)
        parts["teacher outputs"] = per_sample * len(bundle.train.x) * passes
    return parts


def teacher_floor(budget: dict, dataset: str) -> float:
    """The training floor of a network teacher of `budget` on `dataset`, in FLOPs: its steps
    over every image it learns from (`DatasetBundle.for_teacher`) and its validation passes.
    A LightGBM teacher's trees are comparisons, not FLOPs, and a teacher with published weights
    (`teacher_weights`) is not trained here: both count 0."""
    training = budget.get("teacher_training")
    if not budget.get("teacher_network") or training is None:
        return 0.0
    bundle = DATASETS.get(dataset).load(DatasetLoaderOptions())
    taught = bundle.for_teacher()
    batch = torch.as_tensor(bundle.train.x[: training["batch_size"]])
    teacher = network(budget["teacher_network"], bundle.input_shape, bundle.num_classes)
    step, forward = per_sample_flops(teacher, batch)
    return (step * len(taught.train.x) + forward * len(taught.val.x)) * training["epochs"]


def sliced(bundle: DatasetBundle, n_train: int) -> DatasetBundle:
    """The first `n_train` training images and the validation images in the same proportion."""
    n_val = max(1, round(n_train * len(bundle.val.x) / len(bundle.train.x)))
    train, val = bundle.train, bundle.val
    return replace(
        bundle,
        train=Split(train.x[:n_train], train.y[:n_train]),
        val=Split(val.x[:n_val], val.y[:n_val]),
        test=Split(val.x[:n_val], val.y[:n_val]),
        test_masks=None,
        teacher_train=None,
    )


def counted_fit(record: Record, bundle: DatasetBundle, epochs: int) -> int:
    """FLOPs of `record`'s method trained for `epochs` on `bundle`, the network teacher of its
    budget (untrained: FLOPs do not depend on the weights) built and queried inside the count."""
    budget = record.budget
    training = budget["student_training"]
    known = {f.name for f in fields(TrainBudget)}
    settings = {k: v for k, v in training.items() if k in known}
    settings.update(epochs=epochs, lr_milestones=())
    teacher_arch = budget["teacher_network"]
    spec = TeacherSpec(bundle.name, bundle.version, "image", teacher_arch["model"], {})
    torch.manual_seed(0)
    module = network(teacher_arch, bundle.input_shape, bundle.num_classes)
    student = Architecture(budget["student"]["model"], tuple(map(tuple, budget["student"]["size"])))
    method = METHODS.get(record.method["base"])(record.method["params"])
    with tempfile.TemporaryDirectory() as folder, FlopCount() as counter:
        teacher = NetworkTeacher(module, spec, bundle, torch.device("cpu"), {}, Path(folder))
        ctx = TrainContext(
            bundle, teacher, TrainBudget(**settings), student, torch.device("cpu"), seed=0
        )
        method.fit(ctx)
    return counter.total


def method_floor(record: Record, bundle: DatasetBundle) -> float:
    """The FLOPs of `record`'s run, its method's own work included (module docstring)."""
    n = len(bundle.train.x)
    once: dict[int, float] = {}
    per_epoch: dict[int, float] = {}
    for size in sorted({min(s, n) for s in SLICES}):
        part = sliced(bundle, size)
        one, two = (counted_fit(record, part, epochs) for epochs in (1, 2))
        per_epoch[size], once[size] = two - one, 2 * one - two
    epochs = record.budget["student_training"]["epochs"]
    return at_size(once, n) + epochs * at_size(per_epoch, n)


def at_size(counts: dict[int, float], n: int) -> float:
    """A count at `n` training images from its counts at the slice sizes, as c + a·n + b·n²
    through them: a memory bank of every training sample (CRD's) costs each sample work in
    proportion to the set's size, which a count on one slice scaled linearly would miss, and
    work done once whatever the size (CRD's shape probe on two images) is the constant. A set no
    larger than the slices is counted whole (`method_floor`): its count is its own."""
    if n in counts:
        return counts[n]
    sizes = sorted(counts)
    if len(sizes) < 3:
        raise ValueError(f"three slice sizes are needed to reach {n} images, not {sizes}")
    constant, linear, quadratic = np.polynomial.polynomial.polyfit(
        sizes, [counts[s] for s in sizes], 2
    )
    return constant + linear * n + quadratic * n * n


def report(results: Path, profile: str, jobs: int, own: bool = False) -> None:
    torch.set_num_threads(1)
    load_builtins()
    rate = matmul_rate()
    print(f"one thread, {GEMM_SIZE}x{GEMM_SIZE} float32 matmul: {rate / 1e9:.1f} GFLOP/s")
    runs: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    teachers: dict[str, list[Record]] = defaultdict(list)
    for record in ResultsFolder(results).iter_records(profile):
        if record.status != "ok" or not record.timings:
            continue
        if record.role == "student":
            runs[record.dataset["name"]][record.method["name"]].append(record)
        elif record.role == "teacher":
            teachers[record.dataset["name"]].append(record)
    if not runs:
        raise SystemExit(f"no finished student runs of profile {profile!r} under {results}")
    suite: dict[str, tuple[float, float]] = {}  # dataset: (floor seconds, recorded seconds)
    for dataset in sorted(runs):
        methods = runs[dataset]
        budget = next(iter(methods.values()))[0].budget
        parts = floor_of(budget, dataset)
        floor = sum(parts.values())
        seconds = floor / rate
        students = [r for records in methods.values() for r in records]
        taught = teachers[dataset]
        teachers_floor = teacher_floor(budget, dataset) * len(taught) if taught else 0.0
        suite[dataset] = (
            (floor * len(students) + teachers_floor) / rate,
            sum(r.timings["train"] for r in students + taught),
        )
        print(f"\n{dataset}: floor {floor / 1e9:.2f} GFLOP = {seconds:.3f} s at that rate")
        print("  (" + ", ".join(f"{k} {v / 1e9:.3f}" for k, v in parts.items()) + " GFLOP)")
        # A method's own floor needs a network teacher to train against.
        counts_own = own and bool(budget.get("teacher_network"))
        bundle = DATASETS.get(dataset).load(DatasetLoaderOptions()) if counts_own else None
        header = f"  {'method':<28}{'runs':>5}{'train s':>10}{'ratio':>9}{'score s':>10}"
        print(header + (f"{'own GFLOP':>11}{'own ratio':>11}" if counts_own else ""))
        for method in sorted(methods):
            records = methods[method]
            train = float(np.median([r.timings["train"] for r in records]))
            score = float(np.median([r.timings.get("score", math.nan) for r in records]))
            line = (
                f"  {method:<28}{len(records):>5}{train:>10.2f}{train / seconds:>9.1f}"
                f"{score:>10.2f}"
            )
            if bundle is not None:
                flop = method_floor(records[0], bundle)
                own_ratio = f"{train / (flop / rate):>11.1f}" if flop > 0 else f"{'–':>11}"
                line += f"{flop / 1e9:>11.1f}{own_ratio}"
            print(line)
    print_suite_floor(suite, jobs)


def print_suite_floor(suite: dict[str, tuple[float, float]], jobs: int) -> None:
    """Each dataset's share of the set's training floor, and the least wall time it allows."""
    total = sum(floor for floor, _ in suite.values())
    print("\nthe set's training floor (student runs and network teachers), one thread each:")
    print(f"  {'dataset':<28}{'floor s':>10}{'share':>8}{'recorded train s':>18}")
    for dataset, (floor, recorded) in sorted(suite.items(), key=lambda item: -item[1][0]):
        print(f"  {dataset:<28}{floor:>10.1f}{floor / total:>8.0%}{recorded:>18.1f}")
    print(
        f"  total {total:.0f} CPU-s: at least {total / jobs / 60:.1f} min of wall time on "
        f"{jobs} processes, before scoring"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="a results folder")
    parser.add_argument("--profile", default="default")
    parser.add_argument(
        "--jobs", type=int, default=2, help="processes the set's floor is shared by (default 2)"
    )
    parser.add_argument(
        "--own",
        action="store_true",
        help="also count each method's own floor on a network teacher (trains each method "
        "briefly: minutes)",
    )
    args = parser.parse_args()
    report(args.results, args.profile, args.jobs, args.own)


if __name__ == "__main__":
    main()
