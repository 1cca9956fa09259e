"""Classic knowledge distillation (Hinton et al. 2015)."""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.parameters import MIXING_FRACTION
from bench.train.loop import TrainContext
from bench.train.method import Batch, Method, ModelOutput, register_method
from bench.train.soft_labels import similarity_check


@register_method("kd")
class KnowledgeDistillation(Method):
    """α·CE(labels) + (1−α)·T²·KL(teacher ‖ student) on temperature-softened class distributions.

    The teacher's soft labels carry how similar it finds the classes, which the hard labels lack.
    Departure: α = 0.5 weighs CE and KD equally, where RepDistiller and mdistiller use 0.1·CE +
    0.9·KD at T = 4 on CIFAR-100 (`paper_defaults`, run by `--preset paper`;
    `tests/test_authors_logit.py` checks both). The validation split cannot tell the two apart:
    best validation accuracy on digits (default profile, seeds 0–2 over three teachers; `python -m
    bench run --dataset digits wine breast_cancer --method kd --set kd.alpha=A --seeds 0 1 2`, the
    maximum of each record's `training.history.val_accuracy`) is 0.9711 ± 0.0042 at α = 0.1,
    0.9745 ± 0.0023 at 0.5 and 0.9745 ± 0.0012 at 0.9 (± the standard error over seeds; 0.1 − 0.5
    paired by seed: −0.0034 ± 0.0020), and 1.0 on wine and breast_cancer at every α and seed but
    one (breast_cancer, α = 0.9, seed 0: 0.989). So 0.5 stays: it is what the committed reference
    set and the claims measured, and `e2kd`, `xdistill` and `kd_expl` add their terms to this same
    α so that their difference from `kd` isolates the term.

    `--set kd.standardise=true` z-scores both networks' logits before the KL (logit
    standardisation, Sun et al. 2024; the authors pair it with T = 2 and a KD weight of 9).
    """

    family = "logit"
    standardisable = True
    defaults = {"alpha": 0.5, "temperature": 4.0}
    ranges = MIXING_FRACTION
    paper_defaults = {"alpha": 0.1, "temperature": 4.0}
    citation = (
        "Hinton, Vinyals and Dean, Distilling the Knowledge in a Neural Network, "
        "NeurIPS Deep Learning Workshop 2015, arXiv:1503.02531."
    )

    def soft_targets(self, probabilities: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The distribution the manipulation check measures, from the teacher's at the method's
        temperature: itself, which kd's own KL (`hinton_terms`) matches; the soft-label
        manipulations of `kd_similarity` change it and train on what they return."""
        return probabilities

    def fit(self, ctx: TrainContext) -> nn.Module:
        """Train as every method does, after recording what the soft targets carry about class
        similarity (`similarity_check`, in the record's `training.diagnostics`): the manipulation
        check of Han et al.'s dose–response claim."""
        if ctx.teacher is not None:
            index = torch.arange(len(ctx.y_train), device=ctx.device)
            # The teacher's logits as the KL reads them (z-scored under `standardise`).
            _, logits = self.distilled_logits(ctx.teacher.train_logits, ctx.teacher.train_logits)
            probabilities = F.softmax(logits / self.params["temperature"], dim=1)
            targets = self.soft_targets(probabilities, Batch(ctx.x_train, ctx.y_train, index))
            attributes = ctx.bundle.extras.get("class_attributes")
            ctx.diagnostics.update(
                similarity_check(
                    targets.double().cpu().numpy(),
                    ctx.y_train.cpu().numpy(),
                    None if attributes is None else np.asarray(attributes),
                )
            )
        return super().fit(ctx)

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        return self.hinton_terms(student_out.logits, teacher_out.logits, batch.y)
