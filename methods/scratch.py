"""The baseline: the student trained on the labels alone."""

import torch
import torch.nn.functional as F

from bench.train.loop import TrainContext
from bench.train.method import Batch, Method, ModelOutput, register_method


@register_method("scratch")
class Scratch(Method):
    """Student trained from scratch with cross-entropy on the labels; the teacher is ignored.

    Every other method is compared with this row: a distillation method earns its place by
    beating it.
    """

    family = "baseline"
    citation = "Baseline: supervised training with cross-entropy, no teacher."

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(student_out.logits, batch.y)}
