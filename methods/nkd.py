"""Normalized knowledge distillation, NKD (Yang et al. 2023)."""

import torch
import torch.nn.functional as F

from bench.train.loop import TrainContext
from bench.train.method import Batch, Method, ModelOutput, register_method


def normalized_kd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample target term −T_t·log S_t and non-target term −T²·Σ_{i≠t} N(T_i)·log N(S_i).

    S and T are the student's and the teacher's class distributions; the target term uses them at
    temperature 1, the non-target term the softmax over the non-target logits alone at
    temperature T, which is the non-target distribution renormalised to sum to one, N(·)
    (the paper's NKD loss with the teacher's soft labels). Both are cross-entropies, as in the
    paper, so they do not vanish when the student equals the teacher.
    """
    n, k = student_logits.shape
    column = target.unsqueeze(1)
    log_s = F.log_softmax(student_logits, dim=1).gather(1, column).squeeze(1)
    p_t = F.softmax(teacher_logits, dim=1).gather(1, column).squeeze(1)
    target_term = -p_t * log_s
    rest = ~F.one_hot(target, k).bool()
    log_s_rest = F.log_softmax(student_logits[rest].view(n, k - 1) / temperature, dim=1)
    p_t_rest = F.softmax(teacher_logits[rest].view(n, k - 1) / temperature, dim=1)
    non_target = -(p_t_rest * log_s_rest).sum(dim=1)
    return target_term, temperature**2 * non_target


@register_method("nkd")
class NormalizedKD(Method):
    """CE + teacher-weighted target CE + γ·T²·CE between the renormalised non-target distributions.

    KL(T ‖ S) splits into a target-class part and a non-target part, −Σ_{i≠t} T_i·log S_i, in
    which the teacher's and the student's non-target probabilities sum to different totals
    (1 − T_t and 1 − S_t), so the student cannot match the teacher's non-target shape exactly and
    that part's weight shrinks as the teacher grows confident. NKD renormalises both non-target
    distributions to sum to one before comparing them, weighs the result by γ, and keeps the
    target part as the teacher's target probability times the student's log-likelihood.

    Defaults are the authors' CIFAR-100 setting (yzd-v/cls_KD,
    `configs/distillers/cifar100/res34_distill_res18_cifar.py`: `NKDLoss(temp=3.0, gamma=3.5)`,
    added to the student's cross-entropy at weight 1); their ImageNet setting is T = 1, γ = 1.5.
    No departure in the loss: the terms equal the released `NKDLoss` (after its fix of 10 Oct
    2023, commit 9466b3f, which removes the target class from the non-target distributions), see
    tests/test_authors_new_logit.py. The authors turn mixup/cutmix score labels into a class
    with argmax; our batches carry class indices only.

    On a binary task (breast_cancer) a sample has a single non-target class, whose renormalised
    probability is 1 for both networks: the non-target term is zero and NKD reduces to CE plus the
    teacher-weighted target term.
    """

    family = "logit"
    standardisable = True
    defaults = {"gamma": 3.5, "temperature": 3.0}
    paper_defaults = defaults
    citation = (
        "Yang, Zeng, Li, Zhang, Yuan and Li, From Knowledge Distillation to Self-Knowledge "
        "Distillation: A Unified Approach with Normalized Loss and Customized Soft Labels, "
        "ICCV 2023, arXiv:2303.13005."
    )

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        student, teacher = self.distilled_logits(student_out.logits, teacher_out.logits)
        target_term, non_target = normalized_kd(
            student, teacher, batch.y, self.params["temperature"]
        )
        return {
            "ce": F.cross_entropy(student_out.logits, batch.y),
            "nkd_target": target_term.mean(),
            "nkd_non_target": self.params["gamma"] * non_target.mean(),
        }
