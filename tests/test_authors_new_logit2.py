"""WSLD and Tf-KD_reg against restatements of their authors' released code.

Each `authors_*` function restates, operation for operation, the loss of a file read at a pinned
commit, on logits instead of networks and without `.cuda()`; our methods' `loss` terms must
equal it to 1e-6 relative in float64, over several batch sizes, class counts and temperatures.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.methods.tf_kd import TeacherFreeKD
from bench.methods.wsld import WeightedSoftLabelDistillation, soft_label_weights
from bench.train.method import METHODS
from tests.authorkit import logit_terms, random_logits

BATCH_SIZES = (1, 7, 64)
CLASS_COUNTS = (2, 3, 10, 100)
RTOL = 1e-6


def assert_rel_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=1e-12)


# --- WSLD ---------------------------------------------------------------------------------------
# Restated from github.com/bellymonster/Weighted-Soft-Label-Distillation, file
# knowledge_distiller.py (class WSLDistiller, method forward), at commit
# 4ecf930e7da4bf450c4f3436cf53f90d34767137. Changes to run it on logits: the two networks'
# forward passes are dropped (fc_s, fc_t are the arguments), `.cuda()` is dropped, the one-hot
# width is the logits' class count instead of the hard-coded 1000, `nn.LogSoftmax()` gets the
# dim=1 that PyTorch infers for 2-D input, and `hard_loss` is `nn.CrossEntropyLoss()` because
# `optim.label_smooth` is False in that commit's imagenet_train_cfg.py. The two terms are
# returned apart (their forward returns hard_loss + alpha * soft_loss).
def authors_wsld(
    fc_s: torch.Tensor, fc_t: torch.Tensor, label: torch.Tensor, T: float, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    softmax, logsoftmax = nn.Softmax(dim=1), nn.LogSoftmax(dim=1)
    t_soft_label = softmax(fc_t / T)
    softmax_loss = -torch.sum(t_soft_label * logsoftmax(fc_s / T), 1, keepdim=True)

    one_hot_label = F.one_hot(label, num_classes=fc_s.shape[1]).to(fc_s.dtype)
    softmax_loss_s = -torch.sum(one_hot_label * logsoftmax(fc_s.detach()), 1, keepdim=True)
    softmax_loss_t = -torch.sum(one_hot_label * logsoftmax(fc_t.detach()), 1, keepdim=True)
    focal_weight = softmax_loss_s / (softmax_loss_t + 1e-7)
    focal_weight = torch.max(focal_weight, torch.zeros(1, dtype=fc_s.dtype))
    focal_weight = 1 - torch.exp(-focal_weight)

    soft_loss = (T**2) * torch.mean(focal_weight * softmax_loss)
    hard_loss = nn.CrossEntropyLoss()(fc_s, label)
    return hard_loss, alpha * soft_loss


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 8.0])
def test_wsld_terms_equal_the_authors_code(temperature: float) -> None:
    for seed, (n, k) in enumerate(itertools.product(BATCH_SIZES, CLASS_COUNTS)):
        student, teacher, labels = random_logits(n, k, seed)
        method = WeightedSoftLabelDistillation({"temperature": temperature, "alpha": 2.5})
        terms = logit_terms(method, student, teacher, labels)
        assert set(terms) == {"ce", "wsl"}
        hard, soft = authors_wsld(student, teacher, labels, temperature, 2.5)
        assert_rel_close(terms["ce"], hard)
        assert_rel_close(terms["wsl"], soft)


def test_wsld_gradient_equals_the_authors_code() -> None:
    """The weight is detached in both, so the gradients agree too, not only the values."""
    student, teacher, labels = random_logits(32, 10, seed=99)
    ours_in = student.clone().requires_grad_(True)
    theirs_in = student.clone().requires_grad_(True)
    terms = logit_terms(WeightedSoftLabelDistillation(), ours_in, teacher, labels)
    sum(terms.values()).backward()
    defaults = WeightedSoftLabelDistillation.defaults
    sum(
        authors_wsld(theirs_in, teacher, labels, defaults["temperature"], defaults["alpha"])
    ).backward()
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, rtol=RTOL, atol=1e-12)


def test_wsld_weight_falls_on_samples_the_student_already_fits() -> None:
    """Label 0: the first student is sure of it while the teacher is not (a regularization
    sample, w → 0); the second lags the teacher (w → 1)."""
    student = torch.tensor([[8.0, 0.0, 0.0], [0.0, 2.0, 2.0]], dtype=torch.float64)
    teacher = torch.tensor([[1.0, 0.5, 0.5], [8.0, 0.0, 0.0]], dtype=torch.float64)
    weights = soft_label_weights(student, teacher, torch.tensor([0, 0]))
    assert float(weights[0]) < 0.01
    assert float(weights[1]) > 0.99


# --- Tf-KD_reg ----------------------------------------------------------------------------------
# Restated from github.com/yuanli2333/Teacher-free-Knowledge-Distillation, file
# my_loss_function.py (function loss_kd_regularization), at commit
# 880a74ec5ac1d6641a14a3393df23a16f45b460a (the last commit touching that file; the repository's
# head d000ab378a409535a5f5f645b473e05e27529a02 has it unchanged). Changes: `params.reg_alpha`,
# `params.reg_temperature` and `params.multiplier` are arguments, `correct_prob` (hard-coded
# 0.99 there) is an argument, `.cuda()` is dropped, and the two terms are returned apart (their
# function returns (1 - alpha) * loss_CE + alpha * loss_soft_regu).
def authors_tf_kd_reg(
    outputs: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    T: float,
    multiplier: float,
    correct_prob: float = 0.99,
) -> tuple[torch.Tensor, torch.Tensor]:
    loss_CE = F.cross_entropy(outputs, labels)
    K = outputs.size(1)
    teacher_soft = torch.ones_like(outputs) * (1 - correct_prob) / (K - 1)
    for i in range(outputs.shape[0]):
        teacher_soft[i, labels[i]] = correct_prob
    loss_soft_regu = (
        nn.KLDivLoss()(F.log_softmax(outputs, dim=1), F.softmax(teacher_soft / T, dim=1))
        * multiplier
    )
    return (1.0 - alpha) * loss_CE, alpha * loss_soft_regu


# nn.KLDivLoss's default reduction warns that it averages over classes too; that is the point.
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize(
    ("temperature", "alpha", "multiplier", "correct_prob"),
    [
        (20.0, 0.1, 100.0, 0.99),
        (40.0, 0.95, 1.0, 0.99),
        (10.0, 0.5, 50.0, 0.9),
        (1.0, 0.3, 1.0, 0.6),
    ],
)
def test_tf_kd_terms_equal_the_authors_code(
    temperature: float, alpha: float, multiplier: float, correct_prob: float
) -> None:
    params = {
        "temperature": temperature,
        "alpha": alpha,
        "multiplier": multiplier,
        "correct_prob": correct_prob,
    }
    for seed, (n, k) in enumerate(itertools.product(BATCH_SIZES, CLASS_COUNTS)):
        student, teacher, labels = random_logits(n, k, seed)
        terms = logit_terms(TeacherFreeKD(params), student, teacher, labels)
        assert set(terms) == {"ce", "reg"}
        ce, reg = authors_tf_kd_reg(student, labels, alpha, temperature, multiplier, correct_prob)
        assert_rel_close(terms["ce"], ce)
        assert_rel_close(terms["reg"], reg)


def test_tf_kd_uses_no_teacher_signal() -> None:
    student, teacher, labels = random_logits(16, 10, seed=7)
    with_teacher = logit_terms(TeacherFreeKD(), student, teacher, labels)
    other_teacher = logit_terms(TeacherFreeKD(), student, -3.0 * teacher, labels)
    for name in with_teacher:
        assert torch.equal(with_teacher[name], other_teacher[name])


def test_both_methods_are_registered_for_both_modalities() -> None:
    for name, cls in (("wsld", WeightedSoftLabelDistillation), ("tf_kd", TeacherFreeKD)):
        assert METHODS.get(name) is cls
        assert cls.modalities == frozenset({"tabular", "image"})
        assert cls.citation
