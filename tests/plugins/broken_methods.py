"""Plugin methods that go wrong on purpose: one raises, one produces NaN losses."""

import torch
import torch.nn.functional as F

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
