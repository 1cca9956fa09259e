"""The shared training loop: data on the device as tensors, seeded shuffling, best epoch on val.

Small datasets live on the device as whole tensors and are sliced into batches, so there is no
DataLoader worker overhead; model selection only ever looks at the validation split.
"""

from __future__ import annotations

import copy
import functools
import math
import operator
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.budgets import Architecture, TrainBudget
from bench.core.contracts import Batch, TeacherModel
from bench.core.errors import BenchError, Diverged
from bench.data.augment import black_fill, crop_and_flip
from bench.data.bundle import DatasetBundle
from bench.models import EVAL_BATCH, build_model
from bench.train.checkpoints import EpochCheckpoints, global_generators, restore_global_generators

StepLoss = Callable[[Batch], dict[str, torch.Tensor]]


def seed_everything(seed: int) -> None:
    """Seed torch and numpy; with deterministic kernels the same seed gives the same numbers."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class TrainContext:
    """Everything a method may use while training one student."""

    bundle: DatasetBundle
    teacher: TeacherModel | None
    budget: TrainBudget
    student_architecture: Architecture
    device: torch.device
    seed: int
    epoch: int = 0
    # Per-epoch mean of every named loss term, and the validation accuracy: kept in the record.
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = -1
    last_epoch_test_accuracy: float | None = None
    # Named numbers a method measures about its own training (e.g. what kd's soft targets carry
    # about class similarity): kept in the record's `training.diagnostics`.
    diagnostics: dict[str, float] = field(default_factory=dict)
    # Told (epoch from 1, epochs) as each epoch begins: the progress display shows it.
    on_epoch: Callable[[int, int], None] | None = None
    # Where `fit` keeps its state after an epoch (when one is due) and resumes from (None: none).
    checkpoints: EpochCheckpoints | None = None
    # The epoch (from 0) an interrupted `fit` resumed at, when it did, and the seconds its epochs
    # before took: kept in the record, the seconds added to its training time.
    resumed_at_epoch: int | None = None
    seconds_before_resuming: float = 0.0

    def __post_init__(self) -> None:
        to = self.device
        self.x_train = torch.as_tensor(self.bundle.train.x, device=to)
        self.y_train = torch.as_tensor(self.bundle.train.y, device=to)
        self.x_val = torch.as_tensor(self.bundle.val.x, device=to)
        self.y_val = torch.as_tensor(self.bundle.val.y, device=to)
        self.generator = torch.Generator().manual_seed(self.seed)
        if self.budget.augments and self.x_train.dim() != 4:
            raise BenchError(
                f"dataset {self.bundle.name!r}: crop-and-flip augmentation needs images, "
                f"not {self.bundle.modality} data"
            )
        self._fill = black_fill(self.bundle.extras)
        teacher_module = self.teacher.module if self.teacher is not None else None
        if self.uses_channels_last and self.device.type == "cuda" and teacher_module is not None:
            # The teacher reads the same NHWC batches; in its own layout it would convert them.
            # Only on CUDA, whose numbers are not bitwise reproducible anyway: on a CPU a shared
            # teacher converted by one run would compute the next run's features in another
            # summation order than a freshly loaded one, and a worker's history would show.
            teacher_module.to(memory_format=torch.channels_last)

    @property
    def num_epochs(self) -> int:
        return self.budget.epochs

    def warmup_ramp(self, fraction: float) -> float:
        """min((epoch + 1) / (fraction · epochs), 1): a linear warm-up over `fraction` of the
        epoch budget, epochs counted from 1 as mdistiller counts them (1 when `fraction` is 0).

        Methods that ramp their terms (DKD, ReviewKD) keep their authors' share of the schedule
        (e.g. 20 of 240 epochs) rather than their epoch count, so the ramp scales with the budget.
        """
        span = fraction * self.num_epochs
        return min((self.epoch + 1) / span, 1.0) if span > 0 else 1.0

    @property
    def uses_mixed_precision(self) -> bool:
        """Autocast (`autocast_dtype`; float16 with loss scaling) when the budget asks for it and
        a GPU runs the loop."""
        return self.budget.mixed_precision and self.device.type == "cuda"

    @property
    def uses_channels_last(self) -> bool:
        """The NHWC layout for the trained network and its batches, when the budget asks for it.

        On CUDA its tensor cores prefer it; on a CPU it trains the 32-pixel image networks 15-22 %
        faster (one thread: the four-block student 4.2 → 3.3 s an epoch of concept_shapes, the
        ResNet-8 teacher 11.1 → 9.6 s). It changes float32 summation order (resnet20's logits
        by ~2e-6), so a budget that asks for it has run ids of its own.
        """
        return self.budget.channels_last

    def default_student(self) -> nn.Module:
        return self.default_student_of(self.student_architecture)

    def default_student_of(self, arch: Architecture) -> nn.Module:
        """A student of `arch` for this dataset (an ablation may resize the standard one)."""
        return build_model(
            arch.model, self.bundle.input_shape, self.bundle.num_classes, **arch.kwargs()
        )

    def batches(self):
        """The training split in a fresh seeded order, as device-resident slices.

        A last batch of a single sample joins the one before it: batch norm in train mode cannot
        normalise one sample on a 1x1 map, and batch-relation losses (RKD's distances, DIST's
        intra-class correlation, ReviewKD's pooled level) have nothing to relate. None of the
        default profile's splits ends so, so their batches are unchanged.
        """
        order = torch.randperm(len(self.y_train), generator=self.generator).to(self.device)
        size = self.budget.batch_size
        starts = list(range(0, len(order), size))
        if len(starts) > 1 and len(order) - starts[-1] == 1:
            starts.pop()
        augments = self.budget.augments
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else len(order)
            index = order[start:end]
            x = self.x_train[index]
            if augments:
                x = crop_and_flip(x, self.budget.crop_padding, self.generator, self._fill)
            if self.uses_channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield Batch(x, self.y_train[index], index, augmented=augments)

    def fit(
        self, model: nn.Module, step_loss: StepLoss, extra: nn.Module | None = None
    ) -> nn.Module:
        """Train `model` by the budget's optimiser, together with `extra` (modules the loss uses,
        e.g. a regressor).

        Returns the model with the weights of its best validation-accuracy epoch, in eval mode;
        `extra` is trained alongside, not returned, and restored to the same epoch (a decoder
        kept as the student's own explainer must read the features of the weights scored). The
        test accuracy of the last epoch's weights is kept too (`last_epoch_test_accuracy`), never
        used to choose: papers of the CIFAR recipe report either that or the best epoch's.
        Raises `Diverged` at the end of the first epoch with a non-finite loss. With
        `checkpoints`, the state after an epoch is saved when one is due, and a saved state of
        this run is resumed from (`bench.train.checkpoints`).
        """
        model.to(self.device)
        # One container so that the optimiser and train/eval switches reach both.
        trained = nn.ModuleList([model] if extra is None else [model, extra.to(self.device)])
        if self.uses_channels_last:
            trained.to(memory_format=torch.channels_last)
        compiled = self.budget.compile and self.device.type == "cuda"
        if compiled:
            model.compile()  # in place: hooks, state-dict keys and the caller's handle stay
        optimiser = self.make_optimiser(trained.parameters())
        schedule = torch.optim.lr_scheduler.MultiStepLR(
            optimiser, list(self.budget.lr_milestones), gamma=self.budget.lr_decay
        )
        # Disabled, autocast and the scaler are pass-throughs: the float32 path is unchanged.
        mixed = self.uses_mixed_precision
        dtype = getattr(torch, self.budget.autocast_dtype)
        # bfloat16 has float32's exponent range: its gradients need no scaling.
        scaler = torch.amp.GradScaler(self.device.type, enabled=mixed and dtype == torch.float16)
        parts: dict[str, Any] = {
            "trained": trained, "optimiser": optimiser, "schedule": schedule, "scaler": scaler
        }  # fmt: skip
        checkpoint = self.checkpoints.next_file() if self.checkpoints else None
        first, best_accuracy, best_state = self._resume(checkpoint, parts)
        started = time.perf_counter() - self.seconds_before_resuming
        for epoch in range(first, self.budget.epochs):
            self.epoch = epoch
            if self.on_epoch is not None:
                self.on_epoch(epoch + 1, self.budget.epochs)
            trained.train()
            logged: list[dict[str, torch.Tensor]] = []
            for batch in self.batches():
                with torch.autocast(self.device.type, dtype=dtype, enabled=mixed):
                    terms = step_loss(batch)
                    total = functools.reduce(operator.add, terms.values())
                optimiser.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                scaler.step(optimiser)
                scaler.update()
                # Kept where they are and read once per epoch: reading a loss (or testing it for
                # NaN) at every step would make the CPU wait for the device at every step.
                logged.append({key: value.detach() for key, value in terms.items()})
            schedule.step()
            means = _epoch_means(logged)
            bad = [key for key, value in means.items() if not math.isfinite(value)]
            if bad:
                # NaN propagates into the mean: a non-finite step anywhere in the epoch shows.
                raise Diverged(f"non-finite loss at epoch {epoch}: terms {bad}")
            for key, value in means.items():
                self.history.setdefault(f"loss/{key}", []).append(value)
            accuracy = self.validation_accuracy(model)
            self.history.setdefault("val_accuracy", []).append(accuracy)
            if accuracy > best_accuracy:
                best_accuracy, self.best_epoch = accuracy, epoch
                best_state = copy.deepcopy(trained.state_dict())
            if self.checkpoints is not None and checkpoint is not None and self.checkpoints.due():
                seconds = time.perf_counter() - started
                self._save(
                    self.checkpoints, checkpoint, parts, epoch, best_accuracy, best_state, seconds
                )
        test = self.bundle.test
        self.last_epoch_test_accuracy = top1_accuracy(
            model,
            torch.as_tensor(test.x, device=self.device),
            torch.as_tensor(test.y, device=self.device),
        )
        if best_state is not None:
            trained.load_state_dict(best_state)
        if self.uses_channels_last:
            # Returned in the layout a model loaded from the cache has, so that a teacher's
            # outputs do not depend on whether it was trained in this process or loaded.
            trained.to(memory_format=torch.contiguous_format)
        if compiled:
            # Scoring runs the eager module: explainers hook layers and differentiate through
            # them, each of which would recompile the graph (`nn.Module.compile` keeps the
            # compiled call here, and `__call__` falls back to eager without it).
            model._compiled_call_impl = None
        trained.eval()
        return model

    def _resume(
        self, checkpoint: Path | None, parts: dict[str, Any]
    ) -> tuple[int, float, dict[str, Any] | None]:
        """Restore the state `checkpoint` holds, if it holds this run's; returns the epoch to
        start at, the best validation accuracy so far and the best epoch's weights."""
        store = self.checkpoints
        saved = store.load(checkpoint, self.device) if store and checkpoint else None
        if saved is None:
            return 0, -1.0, None
        for name, part in parts.items():
            part.load_state_dict(saved[name])
        self.generator.set_state(saved["generator"])
        restore_global_generators(saved["global_generators"], self.device)
        self.history, self.diagnostics = saved["history"], saved["diagnostics"]
        self.best_epoch, self.epoch = saved["best_epoch"], saved["epoch"]
        self.resumed_at_epoch = saved["epoch"] + 1
        self.seconds_before_resuming = saved["seconds"]
        return self.resumed_at_epoch, saved["best_accuracy"], saved["best_state"]

    def _save(
        self,
        checkpoints: EpochCheckpoints,
        checkpoint: Path,
        parts: dict[str, Any],
        epoch: int,
        best_accuracy: float,
        best_state: dict[str, Any] | None,
        seconds: float,
    ) -> None:
        """Keep everything that decides the epochs after `epoch` (`bench.train.checkpoints`)."""
        state = {name: part.state_dict() for name, part in parts.items()}
        checkpoints.save(
            checkpoint,
            {
                **state,
                "generator": self.generator.get_state(),
                "global_generators": global_generators(self.device),
                "history": self.history,
                "diagnostics": self.diagnostics,
                "best_epoch": self.best_epoch,
                "best_accuracy": best_accuracy,
                "best_state": best_state,
                "epoch": epoch,
                "seconds": seconds,
            },
            self.device,
        )

    def make_optimiser(self, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """The budget's optimiser over `parameters`: SGD with momentum, or Adam."""
        budget = self.budget
        if budget.optimiser == "sgd":
            return torch.optim.SGD(
                parameters, lr=budget.lr, momentum=budget.momentum, weight_decay=budget.weight_decay
            )
        return torch.optim.Adam(parameters, lr=budget.lr, weight_decay=budget.weight_decay)

    def validation_accuracy(self, model: nn.Module) -> float:
        return top1_accuracy(model, self.x_val, self.y_val)


@torch.no_grad()
def top1_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of `model` (left in eval mode) on device-resident `x`, `y`."""
    model.eval()
    correct = 0
    for start in range(0, len(y), EVAL_BATCH):
        logits = model(x[start : start + EVAL_BATCH])
        correct += int((logits.argmax(1) == y[start : start + EVAL_BATCH]).sum())
    return correct / len(y)


def _epoch_means(logged: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Each loss term's mean over an epoch's steps, read from the device in one transfer."""
    keys = list(dict.fromkeys(key for terms in logged for key in terms))
    if not keys:
        return {}
    stacked = [torch.stack([terms[key] for terms in logged if key in terms]) for key in keys]
    means = torch.stack([values.float().mean() for values in stacked]).tolist()
    return dict(zip(keys, means, strict=True))


@torch.no_grad()
def network_logits(module: nn.Module, x: np.ndarray, device: torch.device) -> np.ndarray:
    """Logits of a network in eval mode for a whole array, in device-sized chunks."""
    module.eval()
    parts = [
        module(torch.as_tensor(x[start : start + EVAL_BATCH], device=device)).float().cpu().numpy()
        for start in range(0, len(x), EVAL_BATCH)
    ]
    return np.concatenate(parts)


def cross_entropy_step(model: nn.Module) -> StepLoss:
    """Plain supervised training, as for network teachers."""

    def step(batch: Batch) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(model(batch.x), batch.y)}

    return step
