"""The harness's student training loop against a bare PyTorch loop: same model, data, batch size.

Run: python -m pytest benchmarks/bench_training.py --benchmark-only -q
Both train the default profile's student with kd (alpha 0.5, T 4) for the profile's epochs, from
the same initial weights, in the same batch order, with the same optimiser. On top of the bare
loop the harness sums a dict of named loss terms, logs each term per epoch, checks the loss is
finite, and selects the model: it scores the validation split after each epoch and keeps the best
epoch's weights. A third loop is the bare one plus that model selection written by hand, so that
the harness's own overhead shows apart from the selection every careful run needs.
Target: the harness's throughput at least 90 % of the bare loop's. Machine load drifts, so the
ratios are measured on CPU time with the loops interleaved, and kept in `extra_info`
(`throughput_ratio`: vs the bare loop; `throughput_ratio_same_selection`: vs bare + selection).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core import registry
from bench.core.specs import teacher_spec_for
from bench.data.bundle import DATASETS, DatasetBundle, DatasetLoaderOptions
from bench.models import build_model
from bench.plan.profiles import PROFILES
from bench.results.folder import ResultsFolder
from bench.train.loop import TrainContext, seed_everything
from bench.train.losses import kd_kl
from bench.train.method import METHODS
from bench.train.teachers import Teacher, obtain_teacher

registry.load_plugins()
CPU = torch.device("cpu")
ALPHA, TEMPERATURE = 0.5, 4.0
RATIO_ROUNDS = 5


@pytest.fixture(scope="module", params=["breast_cancer", "digits"])
def setting(request, tmp_path_factory) -> tuple[DatasetBundle, Teacher, object]:
    entry = DATASETS.get(request.param)
    bundle = entry.load(DatasetLoaderOptions())
    # The smoke teacher: its quality does not change what a student's step costs.
    spec = teacher_spec_for(PROFILES.get("smoke"), entry.name, entry.version, entry.modality)
    teacher = obtain_teacher(
        spec, bundle, ResultsFolder(tmp_path_factory.mktemp("teacher")).teacher_folder(spec), CPU
    )
    return bundle, teacher, PROFILES.get("default").budget(entry.name, entry.modality)


def harness(bundle: DatasetBundle, teacher: Teacher, budget) -> tuple[TrainContext, nn.Module]:
    """What `bench.run.student_stage._run_one` does to train a kd student, up to scoring."""
    seed_everything(0)
    ctx = TrainContext(bundle, teacher, budget.student_training, budget.student, CPU, seed=0)
    model = METHODS.get("kd")({"alpha": ALPHA, "temperature": TEMPERATURE}).fit(ctx)
    return ctx, model


def bare(bundle: DatasetBundle, teacher: Teacher, budget, select: bool = False):
    """The loop a person would write by hand; returns each epoch's mean loss and the model.

    `select`: also score the validation split after every epoch and keep the best epoch's weights.
    """
    seed_everything(0)
    arch, train = budget.student, budget.student_training
    model = build_model(arch.model, bundle.input_shape, bundle.num_classes, **arch.kwargs())
    # The images' layout of the budget, as the harness lays them out (channels-last for images).
    layout = torch.channels_last if train.channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    optimiser = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    x, y = torch.as_tensor(bundle.train.x), torch.as_tensor(bundle.train.y)
    soft = teacher.train_logits
    generator = torch.Generator().manual_seed(0)
    x_val, y_val = torch.as_tensor(bundle.val.x), torch.as_tensor(bundle.val.y)
    losses: list[float] = []
    best_accuracy, best_state = -1.0, None
    for _ in range(train.epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        total, steps = 0.0, 0
        for start in range(0, len(y), train.batch_size):
            index = order[start : start + train.batch_size]
            logits = model(x[index].contiguous(memory_format=layout))
            loss = ALPHA * F.cross_entropy(logits, y[index]) + (1 - ALPHA) * kd_kl(
                logits, soft[index], TEMPERATURE
            )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
            steps += 1
        losses.append(total / steps)
        if select:
            model.eval()
            with torch.no_grad():
                accuracy = int((model(x_val).argmax(1) == y_val).sum()) / len(y_val)
            if accuracy > best_accuracy:
                best_accuracy, best_state = accuracy, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format)
    return losses, model


def bare_selecting(bundle: DatasetBundle, teacher: Teacher, budget):
    return bare(bundle, teacher, budget, select=True)


def interleaved_cpu_times(loops: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median CPU seconds of each loop, run in turn so that a change of load hits them all.

    CPU time, not wall time: on a shared machine the other processes' load inflates wall time
    by whatever share of the cores they take at that moment.
    """
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(RATIO_ROUNDS):
        for name, loop in loops.items():
            started = time.process_time()
            loop()
            times[name].append(time.process_time() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def test_the_loops_do_the_same_work(setting) -> None:
    bundle, teacher, budget = setting
    ctx, model = harness(bundle, teacher, budget)
    summed = [
        ce + kd for ce, kd in zip(ctx.history["loss/ce"], ctx.history["loss/kd"], strict=True)
    ]
    losses, _ = bare(bundle, teacher, budget)
    # Same weights, batches and loss: the epochs' losses agree (up to float summation order)...
    assert summed == pytest.approx(losses, rel=1e-4)
    # ...and with the same model selection the same epoch's weights come out, bit for bit.
    _, selected = bare_selecting(bundle, teacher, budget)
    for name, tensor in selected.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


@pytest.mark.benchmark(group="student-training")
def test_bare_pytorch_loop(benchmark, setting) -> None:
    losses, _ = benchmark.pedantic(bare, args=setting, rounds=3, warmup_rounds=1)
    assert losses[-1] < losses[0]


@pytest.mark.benchmark(group="student-training")
def test_bare_loop_with_model_selection(benchmark, setting) -> None:
    losses, _ = benchmark.pedantic(bare_selecting, args=setting, rounds=3, warmup_rounds=1)
    assert losses[-1] < losses[0]


@pytest.mark.benchmark(group="student-training")
def test_harness_training_loop(benchmark, setting) -> None:
    bundle, teacher, budget = setting
    ctx, _ = benchmark.pedantic(harness, args=setting, rounds=3, warmup_rounds=1)
    assert ctx.history["val_accuracy"][ctx.best_epoch] > 1.5 / bundle.num_classes
    cpu = interleaved_cpu_times(
        {
            "bare": lambda: bare(*setting),
            "bare_selecting": lambda: bare_selecting(*setting),
            "harness": lambda: harness(*setting),
        }
    )
    ratio = cpu["bare"] / cpu["harness"]
    same_selection = cpu["bare_selecting"] / cpu["harness"]
    benchmark.extra_info["throughput_ratio"] = round(ratio, 3)
    benchmark.extra_info["throughput_ratio_same_selection"] = round(same_selection, 3)
    print(
        f"\n{bundle.name}: harness throughput / bare loop = {ratio:.3f} (target >= 0.9); "
        f"/ bare loop with the same model selection = {same_selection:.3f}; "
        f"CPU s per run: {', '.join(f'{k} {v:.3f}' for k, v in cpu.items())}"
    )
