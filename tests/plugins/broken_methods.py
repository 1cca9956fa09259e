"""Plugin methods that go wrong on purpose: raising, NaN losses, sys.exit(), a bare tensor for a
loss, and a teacher cache deleted under a running suite."""

import shutil
import sys

import torch
import torch.nn.functional as F
from torch import nn

from bench import Batch, Method, ModelOutput, TrainContext, register_method


@register_method("raises")
class Raises(Method):
    """Fails in its first training step."""

    citation = "Test plugin."

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        raise RuntimeError("deliberate failure inside loss()")


@register_method("nan_loss")
class NanLoss(Method):
    """Its loss is NaN from the first step: the run must be recorded as diverged."""

    citation = "Test plugin."

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(student_out.logits, batch.y)
        return {"ce": ce * float("nan")}


@register_method("exits")
class Exits(Method):
    """Calls sys.exit() in training: the run must fail alone, not end the suite."""

    citation = "Test plugin."

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        sys.exit(3)


@register_method("returns_tensor")
class ReturnsTensor(Method):
    """Returns a bare tensor from loss() instead of a dict of named terms."""

    citation = "Test plugin."

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        return F.cross_entropy(student_out.logits, batch.y)  # type: ignore[return-value]


@register_method("drops_teacher_cache")
class DropsTeacherCache(Method):
    """Deletes its teacher's cache folder before training, as a user cleaning a disk might."""

    citation = "Test plugin."

    def fit(self, ctx: TrainContext) -> nn.Module:
        shutil.rmtree(ctx.teacher.folder)
        return super().fit(ctx)

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(student_out.logits, batch.y)}
