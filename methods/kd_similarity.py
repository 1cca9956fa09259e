"""Knowledge distillation with the class-similarity information in the teacher's soft labels
erased, scrambled or graded: the dose–response of Han et al. 2023's explanation.

Han et al. attribute KD's extra concept detectors to what the teacher's soft labels say about how
similar the classes are. If that is the cause, the gain should shrink when the information is
removed while everything else about the targets stays:

- `kd_uniform_nontarget`: each sample's non-target probabilities replaced by their mean, so the
  target probability (how confident the teacher is) stays and which classes it finds similar is
  gone;
- `kd_permuted_nontarget`: each sample's non-target probabilities permuted among the non-target
  classes (one fixed permutation per training sample, drawn from the run's seed), so the sharpness
  of the distribution stays and its meaning is removed;
- `kd_temperature_1`, `kd_temperature_8`: kd at other temperatures (kd runs at 4), which expose
  more or less of the non-target structure.

Each run measures that the manipulation did what it says (`similarity_check`, in the record's
`training.diagnostics`): the correlation of the class-mean soft targets with the classes' shared
attributes, where the dataset declares them (concept_shapes: colour and shape), and the mean entropy
of the soft targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.methods.kd import KnowledgeDistillation
from bench.train.loop import TrainContext
from bench.train.method import Batch, ModelOutput, register_method

HAN_CITATION = (
    "A manipulation of KD's soft labels testing Han et al., On the Impact of Knowledge "
    "Distillation for Model Interpretability, ICML 2023 (Hinton et al. 2015's loss otherwise)."
)


class SoftLabelKD(KnowledgeDistillation):
    """kd whose teacher distribution passes through `soft_targets` before the KL."""

    family = "logit"
    standardisable = False
    paper_defaults = {}
    citation = HAN_CITATION

    def fit(self, ctx: TrainContext) -> nn.Module:
        self.prepare(ctx)
        return super().fit(ctx)

    def prepare(self, ctx: TrainContext) -> None:
        """Anything drawn once per run, before the targets are first asked for."""

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        """kd's two terms, the KL against the manipulated targets (`kd_kl` on raw logits)."""
        temperature, alpha = self.params["temperature"], self.params["alpha"]
        targets = self.soft_targets(F.softmax(teacher_out.logits / temperature, dim=1), batch)
        log_student = F.log_softmax(student_out.logits / temperature, dim=1)
        log_targets = targets.clamp_min(1e-12).log()
        kl = F.kl_div(log_student, log_targets, reduction="batchmean", log_target=True)
        return {
            "ce": alpha * F.cross_entropy(student_out.logits, batch.y),
            "kd": (1 - alpha) * kl * temperature**2,
        }


@register_method("kd_uniform_nontarget")
class UniformNonTargetKD(SoftLabelKD):
    """kd with each sample's non-target probabilities made equal: the teacher's confidence kept,
    its class similarity erased."""

    def soft_targets(self, probabilities: torch.Tensor, batch: Batch) -> torch.Tensor:
        target = probabilities.gather(1, batch.y[:, None])
        others = (1 - target) / (probabilities.shape[1] - 1)
        return others.expand_as(probabilities).scatter(1, batch.y[:, None], target)


@register_method("kd_permuted_nontarget")
class PermutedNonTargetKD(SoftLabelKD):
    """kd with each sample's non-target probabilities shuffled among the non-target classes (a
    fixed permutation per training sample): the distribution's sharpness kept, its meaning gone."""

    def prepare(self, ctx: TrainContext) -> None:
        # One permutation of the class axis per training sample that leaves its label in place:
        # drawn from the run's own generator (not the loop's, so the batches stay kd's).
        generator = torch.Generator().manual_seed(ctx.seed)
        n, k = len(ctx.y_train), ctx.bundle.num_classes
        order = torch.argsort(torch.rand(n, k, generator=generator), dim=1)
        labels, rows = ctx.y_train.cpu(), torch.arange(n)
        where = (order == labels[:, None]).int().argmax(dim=1)
        order[rows, where] = order[rows, labels]
        order[rows, labels] = labels
        self.order = order.to(ctx.device)

    def soft_targets(self, probabilities: torch.Tensor, batch: Batch) -> torch.Tensor:
        return probabilities.gather(1, self.order[batch.index])


def _temperature_variant(temperature: float) -> None:
    """kd at another temperature: a registered row of its own, so that a claim can name it."""

    class TemperatureKD(KnowledgeDistillation):
        __doc__ = (
            f"kd at temperature {temperature:g} (kd runs at 4): the soft labels' non-target "
            "structure exposed more or less."
        )
        defaults = {**KnowledgeDistillation.defaults, "temperature": temperature}
        standardisable = False
        paper_defaults = {}
        citation = HAN_CITATION

    TemperatureKD.__name__ = TemperatureKD.__qualname__ = f"TemperatureKD{temperature:g}"
    register_method(f"kd_temperature_{temperature:g}")(TemperatureKD)


TEMPERATURE_SWEEP = (1.0, 8.0)
for _temperature in TEMPERATURE_SWEEP:
    _temperature_variant(_temperature)
