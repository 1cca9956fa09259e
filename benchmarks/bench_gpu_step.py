"""The harness's training step against a bare PyTorch loop on the same device: the CIFAR-100
recipe's kd step, resnet32x4 → resnet8x4, in images per second.

Run: python -m pytest benchmarks/bench_gpu_step.py --benchmark-only -q
On a GPU this is the fast path of the `cifar100` profiles: data resident on the device, crop and
flip on the device in batches, channels-last layout, bfloat16 autocast, SGD with momentum, batch
64. The bare loop is what a careful person writes by hand for the same step (the same
augmentation function, the teacher's forward pass under `no_grad`, α·CE + (1−α)·KD, one SGD
step); the harness adds its named loss terms, their per-epoch logging and finiteness check, and
its model selection (a validation split of one batch, scored after each epoch). Target: the
harness's throughput at least 0.9 of the bare loop's. On a CPU the same comparison runs in float32
on the recipe's resnet56 → resnet20 pair (a tenth of resnet32x4's cost) for one epoch of one
batch, where the harness's per-epoch model selection weighs far more than on a GPU epoch;
`benchmarks/gpu_check.sh` runs it on a GPU, and `--dry-run` on a CPU.

Environment: XKD_STEP_IMAGES (training images per epoch; default 64·48 on a GPU, 64 on a CPU),
XKD_STEP_EPOCHS (default 2 on a GPU, 1 on a CPU), XKD_STEP_COMPILE=1 (`torch.compile` both loops'
student), XKD_STEP_TEACHER / XKD_STEP_STUDENT (architectures; default resnet32x4 / resnet8x4 on
a GPU, resnet56 / resnet20 on a CPU), XKD_STEP_ROUNDS (timed rounds of each loop; default 3).
Figures land in `extra_info`: images_per_second_harness, images_per_second_bare, step_ratio.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.core.budgets import Architecture
from bench.core.specs import TeacherSpec
from bench.data.augment import crop_and_flip
from bench.data.bundle import DatasetBundle, Split
from bench.models import build_model
from bench.plan.profiles import cifar100_recipe
from bench.train.loop import TrainContext, seed_everything
from bench.train.losses import kd_kl
from bench.train.method import METHODS
from bench.train.teachers import NetworkTeacher

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"
IMAGES = int(os.environ.get("XKD_STEP_IMAGES", 64 * (48 if ON_GPU else 1)))
EPOCHS = int(os.environ.get("XKD_STEP_EPOCHS", 2 if ON_GPU else 1))
COMPILE = os.environ.get("XKD_STEP_COMPILE") == "1"
TEACHER = os.environ.get("XKD_STEP_TEACHER", "resnet32x4" if ON_GPU else "resnet56")
STUDENT = os.environ.get("XKD_STEP_STUDENT", "resnet8x4" if ON_GPU else "resnet20")
ROUNDS = int(os.environ.get("XKD_STEP_ROUNDS", 3))
CLASSES, SHAPE = 100, (3, 32, 32)
ALPHA, TEMPERATURE = 0.5, 4.0  # kd's defaults
BUDGET = replace(cifar100_recipe(0.05), epochs=EPOCHS, lr_milestones=(), compile=COMPILE)
# As the harness lays data out (`TrainContext.uses_channels_last`).
CHANNELS_LAST = BUDGET.channels_last


def images(n: int, seed: int) -> Split:
    """Random CIFAR-shaped images: what a step costs does not depend on what they show."""
    rng = np.random.default_rng(seed)
    return Split(rng.standard_normal((n, *SHAPE), dtype=np.float32), np.arange(n) % CLASSES)


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetBundle, NetworkTeacher]:
    val = images(BUDGET.batch_size, 1)
    names = tuple(f"class{i}" for i in range(CLASSES))
    bundle = DatasetBundle("random", "0", "image", images(IMAGES, 0), val, val, names)
    torch.manual_seed(0)
    module = build_model(TEACHER, SHAPE, CLASSES).to(DEVICE)
    if CHANNELS_LAST and ON_GPU:  # the harness converts a shared teacher on CUDA only
        module.to(memory_format=torch.channels_last)
    spec = TeacherSpec("random", "0", "image", TEACHER, {})
    folder = tmp_path_factory.mktemp("teacher")
    return bundle, NetworkTeacher(module, spec, bundle, DEVICE, {}, folder)


def synchronised() -> None:
    if ON_GPU:
        torch.cuda.synchronize()


def harness(bundle: DatasetBundle, teacher: NetworkTeacher) -> TrainContext:
    """What a student run of the cifar100 profile does, up to scoring."""
    seed_everything(0)
    ctx = TrainContext(bundle, teacher, BUDGET, Architecture(STUDENT), DEVICE, seed=0)
    METHODS.get("kd")({"alpha": ALPHA, "temperature": TEMPERATURE}).fit(ctx)
    synchronised()
    return ctx


def bare(bundle: DatasetBundle, teacher: NetworkTeacher) -> list[float]:
    """The same epochs written by hand; returns each epoch's mean loss."""
    seed_everything(0)
    model = build_model(STUDENT, SHAPE, CLASSES).to(DEVICE)
    if CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    if COMPILE and ON_GPU:
        model.compile()
    optimiser = torch.optim.SGD(
        model.parameters(), lr=BUDGET.lr, momentum=BUDGET.momentum, weight_decay=BUDGET.weight_decay
    )
    x = torch.as_tensor(bundle.train.x, device=DEVICE)
    y = torch.as_tensor(bundle.train.y, device=DEVICE)
    generator = torch.Generator().manual_seed(0)
    mixed = ON_GPU and BUDGET.mixed_precision
    losses = []
    for _ in range(BUDGET.epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator).to(DEVICE)
        epoch = []
        for start in range(0, len(y), BUDGET.batch_size):
            index = order[start : start + BUDGET.batch_size]
            batch = crop_and_flip(x[index], BUDGET.crop_padding, generator)
            if CHANNELS_LAST:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=mixed):
                with torch.no_grad():
                    soft = teacher.module(batch)
                logits = model(batch)
                loss = ALPHA * F.cross_entropy(logits, y[index]) + (1 - ALPHA) * kd_kl(
                    logits, soft, TEMPERATURE
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            epoch.append(loss.detach())
        losses.append(torch.stack(epoch).float().mean().item())
    synchronised()
    return losses


def interleaved_seconds(bundle: DatasetBundle, teacher: NetworkTeacher) -> dict[str, float]:
    """Median wall seconds of each loop over `ROUNDS`, run in turn after one warm-up of each
    (cuDNN's algorithm search, compilation), so that a change of load hits both."""
    loops = {"bare": bare, "harness": harness}
    for loop in loops.values():
        loop(bundle, teacher)
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(ROUNDS):
        for name, loop in loops.items():
            started = time.perf_counter()
            loop(bundle, teacher)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def test_both_loops_train(setting) -> None:
    bundle, teacher = setting
    ctx = harness(bundle, teacher)
    losses = bare(bundle, teacher)
    summed = [
        ce + kd for ce, kd in zip(ctx.history["loss/ce"], ctx.history["loss/kd"], strict=True)
    ]
    # Same initial weights, batches, augmentation and loss: the first epoch agrees up to
    # the kernels' summation order (bfloat16 on a GPU).
    assert summed[0] == pytest.approx(losses[0], rel=0.05 if ON_GPU else 1e-4)


@pytest.mark.benchmark(group="gpu-step")
def test_harness_step_against_the_bare_loop(benchmark, setting) -> None:
    bundle, teacher = setting
    ctx = benchmark.pedantic(harness, args=setting, rounds=1, warmup_rounds=0)
    assert len(ctx.history["val_accuracy"]) == EPOCHS
    seconds = interleaved_seconds(bundle, teacher)
    seen = IMAGES * EPOCHS
    figures = {
        "device": torch.cuda.get_device_name() if ON_GPU else "cpu",
        "pair": f"{TEACHER} -> {STUDENT}",
        "images_per_epoch": IMAGES,
        "epochs": EPOCHS,
        "compiled": COMPILE and ON_GPU,
        "images_per_second_harness": round(seen / seconds["harness"], 1),
        "images_per_second_bare": round(seen / seconds["bare"], 1),
        "step_ratio": round(seconds["bare"] / seconds["harness"], 3),
    }
    benchmark.extra_info.update(figures)
    print(f"\n{figures} (target step_ratio >= 0.9)")
