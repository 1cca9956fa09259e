"""A method that reads a tree teacher's TreeSHAP contributions and the student's input gradients:
KD plus a term that turns the student's gradient × input towards the teacher's explanation."""

import torch
import torch.nn.functional as F
from torch import nn

from bench import Batch, BenchError, Method, TrainContext, register_method


@register_method("treeshap_cosine")
class TreeShapCosine(Method):
    """α·CE + (1−α)·T²·KL, plus λ·(1 − cos(gradient × input, TreeSHAP)) per training row.

    Both explanations are of the true class's centred score (the class's logit minus the mean
    logit), the gauge the benchmark explains every model in; the features are standardised, so
    the training mean, the explainers' baseline, is zero and gradient × input is gradient ×
    (input − baseline).
    """

    family = "explanation"
    modalities = frozenset({"tabular"})  # a tree teacher: only tables have one
    defaults = {"alpha": 0.5, "temperature": 4.0, "lambda": 1.0}
    citation = "Example plugin of the xkd-bench plugin guide."

    def fit(self, ctx: TrainContext) -> nn.Module:
        teacher = ctx.teacher
        train = ctx.bundle.train  # numpy: x (rows, features) float32, y (rows,) int64
        # TreeSHAP once for every training row: values[n, c, f] (rows, classes, features).
        contributions = teacher.contributions(train.x) if teacher is not None else None
        if contributions is None:
            raise BenchError("treeshap_cosine needs a tree teacher (LightGBM)")
        shap = torch.from_numpy(contributions.for_targets(train.y)).to(ctx.device)  # (rows, f)
        student = self.build_student(ctx).to(ctx.device)

        def step(batch: Batch) -> dict[str, torch.Tensor]:
            x = batch.x.detach().requires_grad_(True)  # (batch, features)
            logits = student(x)  # (batch, classes)
            centred = logits - logits.mean(dim=1, keepdim=True)
            score = centred.gather(1, batch.y[:, None]).sum()
            (gradient,) = torch.autograd.grad(score, x, create_graph=True)  # trains through it
            agreement = F.cosine_similarity(gradient * x, shap[batch.index], dim=1, eps=1e-8)
            return {
                **self.hinton_terms(logits, teacher.train_logits[batch.index], batch.y),
                "explanation": self.params["lambda"] * (1 - agreement).mean(),
            }

        return ctx.fit(student, step)
