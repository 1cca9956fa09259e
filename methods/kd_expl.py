"""Knowledge distillation plus explanation imitation, with the default MLP student."""

from __future__ import annotations

import torch
from torch import nn

from bench.core.parameters import MIXING_FRACTION
from bench.train.explanation_losses import ExplanationImitation
from bench.train.loop import TrainContext
from bench.train.method import Batch, Method, register_method


@register_method("kd_expl")
class KDWithExplanationImitation(Method):
    """kd (α·CE + (1−α)·T²·KL) plus λ·‖φ_S − φ_T‖²/‖φ_T‖², with the standard MLP student.

    The same explanation-imitation term as `gbdt2nn_joint` (Huang et al. 2020, our reading: the
    teacher's TreeSHAP against the student's gradient × (input − training mean), trained through
    the gradient), added to Hinton et al.'s KD with this benchmark's `kd` defaults, so kd_expl − kd
    isolates the term and gbdt2nn_joint − kd_expl the student. Imitation applies to at most
    `imitation_rows` training rows (a fixed seeded subset) to bound its cost on large tables. A
    teacher norm below 1e-3 × the batch's mean is floored (`bench.train.explanation_losses`), so a row the
    teacher explains with zeros cannot blow the term up.
    """

    family = "explanation"
    modalities = frozenset({"tabular"})
    defaults = {"alpha": 0.5, "temperature": 4.0, "lambda": 1.0, "imitation_rows": 4096}
    ranges = MIXING_FRACTION
    citation = (
        "Hinton, Vinyals and Dean, Distilling the Knowledge in a Neural Network, arXiv:1503.02531, "
        "2015; explanation imitation after Huang, Li, Yan, Luo and Li, Joint learning of "
        "interpretation and distillation, arXiv:2005.11638, 2020."
    )

    def fit(self, ctx: TrainContext) -> nn.Module:
        teacher = ctx.teacher
        if teacher is None:
            raise ValueError("kd_expl needs a teacher in the context")
        imitation = ExplanationImitation(ctx, self.params["imitation_rows"])
        student = self.build_student(ctx).to(ctx.device)

        def step(batch: Batch) -> dict[str, torch.Tensor]:
            logits = student(batch.x)
            return {
                **self.hinton_terms(logits, teacher.train_logits[batch.index], batch.y),
                "imitation": self.params["lambda"]
                * imitation.loss(student, batch.x, batch.y, batch.index),
            }

        return ctx.fit(student, step)
