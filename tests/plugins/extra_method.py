"""An outside plugin file, as a user would write one: a method with a temperature-free soft loss."""

import torch
import torch.nn.functional as F

from bench import Batch, Method, ModelOutput, TrainContext, register_method


@register_method("soft_target")
class SoftTarget(Method):
    """Cross-entropy against the teacher's softmax only: no labels at all."""

    family = "logit"
    defaults = {"weight": 1.0}
    citation = "Test plugin: distillation on soft targets alone."

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        target = F.softmax(teacher_out.logits, dim=1)
        return {"soft_ce": self.params["weight"] * F.cross_entropy(student_out.logits, target)}
