"""Curriculum temperature for knowledge distillation (Li et al. 2023)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.train.loop import TrainContext
from bench.train.losses import kd_kl
from bench.train.method import Batch, Method, ModelOutput, register_method


class _ReverseGradient(torch.autograd.Function):
    """The identity forward; backward multiplies the incoming gradient by −λ (Ganin & Lempitsky
    2015), so whatever sits before it ascends the loss that everything after it descends."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, strength: float):
        ctx.strength = strength
        return x.clone()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float) -> torch.Tensor:
    """`x` unchanged, with its gradient multiplied by −`strength` on the way back."""
    return _ReverseGradient.apply(x, strength)


class CurriculumTemperature(nn.Module):
    """τ = t_start + t_end · σ(θ): one learnable temperature, bounded to (t_start, t_start + t_end).

    θ reaches the loss through a gradient-reversal layer, so an optimiser that descends the
    distillation loss moves θ to *raise* it: the temperature is the student's adversary.
    """

    def __init__(self, theta_init: float, t_start: float, t_end: float) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(float(theta_init)))
        self.t_start, self.t_end = t_start, t_end

    def forward(self, strength: float) -> torch.Tensor:
        theta = reverse_gradient(self.theta, strength)
        return self.t_start + self.t_end * torch.sigmoid(theta)


def cosine_curriculum(
    epoch: int, num_epochs: int, lambda_min: float, lambda_max: float, fraction: float
) -> float:
    """λ at 0-based `epoch`: from λ_min to λ_max along half a cosine over the first
    `fraction` × `num_epochs` epochs, then λ_max.

    The authors' `CosineDecay` (CTKD train_student.py) read at their 1-based epoch e + 1; its
    `decay_max = 0, decay_min = −1` are our λ_min = 0, λ_max = 1 (their λ is negative because their
    reversal layer multiplies by λ, ours by −λ).
    """
    span = fraction * num_epochs
    progress = min((epoch + 1) / span, 1.0) if span > 0 else 1.0
    return lambda_min + (lambda_max - lambda_min) * (1 - math.cos(math.pi * progress)) / 2


@register_method("ctkd")
class CurriculumTemperatureKD(Method):
    """γ·CE + α·τ²·KL(teacher ‖ student), τ learned adversarially (reversed gradient, λ curriculum).

    A fixed temperature is a compromise: a low one transfers little beyond the teacher's label, a
    high one flattens its distribution. CTKD learns one global τ = t_start + t_end·σ(θ) *against*
    the student: θ's gradient passes a reversal layer, so τ moves to make distillation harder while
    the student learns to match at that τ, and λ, the reversal's strength, follows a cosine
    curriculum from λ_min to λ_max so that the task goes from easy to hard.

    Defaults are the authors' CIFAR-100 setting (zhengli97/CTKD, scripts/run_cifar_distill.sh and
    train_student.py at commit 7d52522): `-r 0.1 -a 0.9` (γ = 0.1 on CE, α = 0.9 on KD),
    `--t_start 1 --t_end 20`, θ initialised to 1 as in models/temp_global.py (so τ starts at
    1 + 20·σ(1) ≈ 15.6), `--cosine_decay 1 --decay_max 0 --decay_min -1 --decay_loops 10`
    (λ from 0 to 1 over the first 10 of 240 epochs). The temperature is the global one of
    `Global_T` (their script's `--mlp_name global`), not the instance-wise one of their README.
    The KD term is classic KD's (`bench.train.losses.kd_kl`, batch-mean KL times τ²), their
    `DistillKL`; its τ² factor passes τ's gradient too, as theirs does. With
    `standardise=true` both logits are z-scored before the division by τ, as Sun et al.'s release
    of CTKD does (sunshangquan/logit-standardization-KD, CTKD/distiller_zoo/KD.py,
    `DistillKL_logit_stand`; their train_student.py picks that loss when `--logit_stand` is
    *absent*, an inverted switch we do not copy; their standardised recipe also sets `-a 9`).

    Departures from the authors' code, and why:

    - The curriculum spans `curriculum_fraction` (10/240) of the profile's epoch budget, as dkd
      scales its warm-up, and our 0-based epoch e is their epoch e + 1 (so λ is already
      ½(1 − cos(π/10)) ≈ 0.024 in the first epoch, as theirs is). The curriculum lasts 1.25
      epochs of the default profile's 30 for images (λ ≈ 0.905 in the first) and 2.5 of its 60
      for tables; on the smoke profile's 5 or 6 epochs λ = λ_max from the first.
    - θ is trained by the shared loop's optimiser (Adam at the profile's learning rate and weight
      decay) with the student, where the authors add it to the student's SGD (lr 0.05, momentum
      0.9, weight decay 5e-4). Adam divides each parameter's step by the running root mean square
      of its gradients, so a constant λ leaves θ's steps unchanged (apart from weight decay and
      Adam's ε): λ's size acts only while it changes faster than Adam's moment averages, and
      λ = 0 stops θ. The reversal, which sets the direction of θ's steps, is kept.

    Nothing degenerates with two classes (a binary table) in the plain loss. Under
    `standardise=true` a pair of logits always z-scores to ±1/√2, so the KD term keeps only which
    class the teacher prefers, at a softness that τ alone sets.
    """

    family = "logit"
    standardisable = True
    defaults = {
        "ce_weight": 0.1,
        "kd_weight": 0.9,
        "t_start": 1.0,
        "t_end": 20.0,
        "theta_init": 1.0,
        "lambda_min": 0.0,
        "lambda_max": 1.0,
        "curriculum_fraction": 10 / 240,
    }
    paper_defaults = defaults
    citation = (
        "Li, Li, Yang, Zhao, Song, Luo, Li and Yang, Curriculum Temperature for Knowledge "
        "Distillation, AAAI 2023, arXiv:2211.16231."
    )

    def trainable_modules(self, student: nn.Module, ctx: TrainContext) -> nn.Module:
        params = self.params
        self.temperature = CurriculumTemperature(
            params["theta_init"], params["t_start"], params["t_end"]
        )
        return self.temperature

    def reversal_strength(self, ctx: TrainContext) -> float:
        """λ of the current epoch."""
        params = self.params
        return cosine_curriculum(
            ctx.epoch,
            ctx.num_epochs,
            params["lambda_min"],
            params["lambda_max"],
            params["curriculum_fraction"],
        )

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        tau = self.temperature(self.reversal_strength(ctx))
        student, teacher = self.distilled_logits(student_out.logits, teacher_out.logits)
        return {
            "ce": self.params["ce_weight"] * F.cross_entropy(student_out.logits, batch.y),
            "kd": self.params["kd_weight"] * kd_kl(student, teacher, tau),
        }
