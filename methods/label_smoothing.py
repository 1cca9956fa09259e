"""Label smoothing: the teacher-free control of Han et al. 2023."""

import torch
import torch.nn.functional as F

from bench.train.loop import TrainContext
from bench.train.method import Batch, Method, ModelOutput, register_method


@register_method("label_smoothing")
class LabelSmoothing(Method):
    """Cross-entropy against labels smoothed by ε towards the uniform distribution.

    Han et al. (ICML 2023) use it as the control that softens targets like KD does but carries no
    class similarity; they report it lowers the number of concept detectors.
    """

    family = "baseline"
    defaults = {"epsilon": 0.1}
    paper_defaults = defaults  # Szegedy et al. 2016 and Han et al. 2023: ε = 0.1
    citation = (
        "Szegedy et al., Rethinking the Inception Architecture for Computer Vision, CVPR 2016; "
        "as a control in Han et al., On the Impact of Knowledge Distillation for Model "
        "Interpretability, ICML 2023."
    )

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        smoothed = F.cross_entropy(
            student_out.logits, batch.y, label_smoothing=self.params["epsilon"]
        )
        return {"ce_smoothed": smoothed}
