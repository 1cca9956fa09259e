"""GBDT2NN with explanation imitation (Huang et al. 2020) on top of DeepGBM's GBDT2NN."""

from __future__ import annotations

import torch

from bench.methods.gbdt2nn import GBDT2NN, GBDT2NNStudent
from bench.train.explanation_losses import ExplanationImitation
from bench.train.loop import TrainContext
from bench.train.method import Batch, register_method


@register_method("gbdt2nn_joint")
class GBDT2NNJoint(GBDT2NN):
    """GBDT2NN plus λ·‖φ_S − φ_T‖²/‖φ_T‖²: the student imitates the teacher's TreeSHAP.

    Huang et al. ask whether a distilled GBDT2NN predicts for the same reasons as its GBDT teacher
    and train explanation imitation as an auxiliary task of the distillation. Our reading (the
    paper's exact loss could not be confirmed): φ_T is the teacher's TreeSHAP for the sample's
    label class, φ_S the student's gradient × (input − training mean) for the same raw score, with
    the gradient kept in the graph (`bench.train.explanation_losses`). The term is added to GBDT2NN's stage
    2 with weight `lambda`; to bound its cost on large tables it applies to at most
    `imitation_rows` training rows (a fixed seeded subset).
    """

    family = "explanation"
    defaults = {**GBDT2NN.defaults, "lambda": 1.0, "imitation_rows": 4096}
    citation = (
        "Huang, Li, Yan, Luo and Li, Joint learning of interpretation and distillation, "
        "arXiv:2005.11638, 2020; with GBDT2NN from Ke et al., DeepGBM, KDD 2019."
    )

    def prepare(self, ctx: TrainContext) -> None:
        self.imitation = ExplanationImitation(ctx, self.params["imitation_rows"])

    def extra_terms(
        self, student: GBDT2NNStudent, batch: Batch, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        term = self.imitation.loss(student, batch.x, batch.y, batch.index)
        return {"imitation": self.params["lambda"] * term}
