"""A logit method: the student learns from the teacher's softmax alone, with no labels."""

import torch
import torch.nn.functional as F

from bench import Batch, Method, ModelOutput, TrainContext, register_method


@register_method("soft_target")
class SoftTarget(Method):
    """Cross-entropy against the teacher's softmax at temperature T: no labels at all."""

    family = "logit"  # how the report groups it: baseline, logit, feature, explanation, tabular
    defaults = {"temperature": 1.0}  # `--set soft_target.temperature=4` makes a variant row
    ranges = {"temperature": (0.1, 100.0)}  # a `--set` outside is refused before any run
    citation = "Example plugin of the xkd-bench plugin guide."

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        t = self.params["temperature"]
        target = F.softmax(teacher_out.logits / t, dim=1)  # (batch, classes)
        return {"soft_ce": t * t * F.cross_entropy(student_out.logits / t, target)}
