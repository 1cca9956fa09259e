"""Our logit-based loss terms (kd, label_smoothing, dkd) against the authors' released formulas.

Each method's `loss` is called the way the shared loop calls it (`train_with_loss`: a `Batch`, the
student's and teacher's `ModelOutput`, a `TrainContext`), and every named term it returns is
compared with a restatement of the formula in the authors' released code, written here from
scratch in float64 on seeded random logits: RepDistiller and mdistiller for classic KD, mdistiller
for DKD (including its warm-up), and Szegedy et al.'s equation for label smoothing, which is what
our docstring cites. The two sides share no code beyond torch's elementary functions, so a change
of formula on our side (a missing T², a sum instead of a batch mean, a weight on the wrong term,
an off-by-one epoch in the warm-up) fails here. Both sides get the same hyper-parameters; our
defaults and the authors' CIFAR-100 defaults are compared only where they are meant to agree (all
of DKD's, KD's temperature); KD's α differs by design (ours 0.5, theirs 0.1) and is compared at both.
"""

from __future__ import annotations

import pytest
import torch

from bench.methods.dkd import DecoupledKD
from bench.methods.kd import KnowledgeDistillation
from bench.methods.label_smoothing import LabelSmoothing
from bench.train.method import Batch, ModelOutput
from tests.authorkit import epoch_context

RTOL = 1e-6
# Only for terms that are exactly zero on both sides (NCKD with two classes has one non-target).
ATOL = 1e-12

BATCH_SIZES = (1, 5, 64)
CLASS_COUNTS = (2, 10, 100)
TEMPERATURES = (0.5, 1.0, 4.0)
SHAPES = pytest.mark.parametrize("batch_size", BATCH_SIZES)
CLASSES = pytest.mark.parametrize("num_classes", CLASS_COUNTS)
TEMPERATURE = pytest.mark.parametrize("temperature", TEMPERATURES)

Terms = dict[str, torch.Tensor]


# --- inputs as the training loop hands them over -------------------------------------------


def random_inputs(
    batch_size: int, num_classes: int, seed: int = 0
) -> tuple[Batch, ModelOutput, ModelOutput]:
    """Seeded float64 student and teacher logits (spread like a trained net's) and labels."""
    generator = torch.Generator().manual_seed(seed * 7919 + batch_size * 131 + num_classes)
    student = 3.0 * torch.randn(batch_size, num_classes, generator=generator, dtype=torch.float64)
    teacher = 3.0 * torch.randn(batch_size, num_classes, generator=generator, dtype=torch.float64)
    labels = torch.randint(num_classes, (batch_size,), generator=generator)
    batch = Batch(torch.zeros(batch_size, 1, 2, 2), labels, torch.arange(batch_size))
    return batch, ModelOutput(student), ModelOutput(teacher)


def assert_terms_equal(ours: Terms, theirs: Terms) -> None:
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        assert ours[name].dtype == torch.float64, name
        torch.testing.assert_close(ours[name], value, rtol=RTOL, atol=ATOL, msg=name)


# --- independent restatements ----------------------------------------------------------------


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return logits - torch.logsumexp(logits, dim=1, keepdim=True)


def mean_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """nn.CrossEntropyLoss() with its default batch mean: −log softmax at the label."""
    return -log_softmax(logits)[torch.arange(len(labels)), labels].mean()


def kl_pointwise(target: torch.Tensor, log_input: torch.Tensor) -> torch.Tensor:
    """What F.kl_div(log_input, target) adds up: target · (log target − log_input), 0 where target is 0."""
    return torch.xlogy(target, target) - target * log_input


# HobbitLong/RepDistiller, distiller_zoo/KD.py (DistillKL) and helper/loops.py (train_distill:
# loss = gamma·loss_cls + alpha·loss_div + beta·loss_kd, beta = 0 for --distill kd), read at
# commit b84f547c5db6a35318d4671d7d5c4de74c822403. DistillKL sums the pointwise KL over the whole
# batch (size_average=False), multiplies by T² and divides by the batch size.
def repdistiller_kd(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    gamma: float,
    alpha: float,
    temperature: float,
) -> Terms:
    log_q = log_softmax(student / temperature)
    p = torch.exp(log_softmax(teacher / temperature))
    loss_div = kl_pointwise(p, log_q).sum() * temperature**2 / student.shape[0]
    return {"ce": gamma * mean_cross_entropy(student, labels), "kd": alpha * loss_div}


# megvii-research/mdistiller, mdistiller/distillers/KD.py (kd_loss and KD.forward_train), read at
# commit a08d46f10d6102bd6e3f258ca5ac880b020ea259: the pointwise KL summed per sample, averaged
# over the batch, times T²; losses CE_WEIGHT·CE and KD_WEIGHT·kd_loss.
def mdistiller_kd(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    ce_weight: float,
    kd_weight: float,
    temperature: float,
) -> Terms:
    per_sample = kl_pointwise(
        torch.softmax(teacher / temperature, dim=1), log_softmax(student / temperature)
    ).sum(dim=1)
    loss_kd = per_sample.mean() * temperature**2
    return {"ce": ce_weight * mean_cross_entropy(student, labels), "kd": kd_weight * loss_kd}


# megvii-research/mdistiller, mdistiller/distillers/DKD.py (dkd_loss, cat_mask, DKD.forward_train),
# read at commit a08d46f10d6102bd6e3f258ca5ac880b020ea259. TCKD: the tempered softmax of each side
# collapsed to [target mass, non-target mass], log taken of the collapsed probabilities, KL summed
# over the batch × T² / batch size. NCKD: softmax of logits/T with 1000 subtracted at the target,
# i.e. the distribution over the non-target classes, same KL reduction. The returned terms are
# alpha·TCKD and beta·NCKD (mdistiller logs their sum, times the warm-up, as loss_kd) and
# CE_WEIGHT·CE with CE_WEIGHT = 1.
def mdistiller_dkd(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> Terms:
    batch_size, num_classes = student.shape
    is_target = torch.zeros(batch_size, num_classes, dtype=torch.bool)
    is_target[torch.arange(batch_size), labels] = True

    def binary(probs: torch.Tensor) -> torch.Tensor:
        target_mass = torch.where(is_target, probs, 0.0).sum(dim=1)
        rest_mass = torch.where(is_target, 0.0, probs).sum(dim=1)
        return torch.stack([target_mass, rest_mass], dim=1)

    b_student = binary(torch.softmax(student / temperature, dim=1))
    b_teacher = binary(torch.softmax(teacher / temperature, dim=1))
    tckd = kl_pointwise(b_teacher, torch.log(b_student)).sum() * temperature**2 / batch_size

    suppress = 1000.0 * is_target.to(student.dtype)
    teacher_rest = torch.softmax(teacher / temperature - suppress, dim=1)
    log_student_rest = log_softmax(student / temperature - suppress)
    nckd = kl_pointwise(teacher_rest, log_student_rest).sum() * temperature**2 / batch_size
    return {
        "ce": 1.0 * mean_cross_entropy(student, labels),
        "tckd": alpha * tckd,
        "nckd": beta * nckd,
    }


# megvii-research/mdistiller, mdistiller/distillers/DKD.py (DKD.forward_train: the DKD loss times
# min(epoch / WARMUP, 1.0)) with mdistiller/engine/trainer.py (epochs counted from 1 to EPOCHS),
# read at commit a08d46f10d6102bd6e3f258ca5ac880b020ea259.
def mdistiller_warmup(epoch_from_one: int, warmup_epochs: float) -> float:
    return min(epoch_from_one / warmup_epochs, 1.0)


# Szegedy et al., Rethinking the Inception Architecture for Computer Vision, CVPR 2016
# (arXiv:1512.00567), Section 7 — a paper, no released code to pin: the label distribution
# q'(k) = (1 − ε)·δ(k, y) + ε/K and the loss H(q', p) = −Σ_k q'(k) log p(k), averaged over the batch.
def szegedy_label_smoothing(logits: torch.Tensor, labels: torch.Tensor, epsilon: float) -> Terms:
    batch_size, num_classes = logits.shape
    one_hot = torch.zeros(batch_size, num_classes, dtype=logits.dtype)
    one_hot[torch.arange(batch_size), labels] = 1.0
    smoothed = (1 - epsilon) * one_hot + epsilon / num_classes
    return {"ce_smoothed": -(smoothed * log_softmax(logits)).sum(dim=1).mean()}


# --- KD --------------------------------------------------------------------------------------

# Ours is α·CE + (1 − α)·KD; RepDistiller's README runs KD with -r 0.1 -a 0.9 and mdistiller's
# CFG.KD.LOSS has CE_WEIGHT 0.1, KD_WEIGHT 0.9: our α = 0.1. Our default α is 0.5 (T = 4 on all
# three). Both values are compared, with the same weights given to both sides.
KD_ALPHAS = pytest.mark.parametrize("alpha", [0.5, 0.1])


@SHAPES
@CLASSES
@TEMPERATURE
@KD_ALPHAS
def test_kd_equals_repdistiller(
    batch_size: int, num_classes: int, temperature: float, alpha: float
) -> None:
    batch, student, teacher = random_inputs(batch_size, num_classes)
    method = KnowledgeDistillation({"alpha": alpha, "temperature": temperature})
    ours = method.loss(batch, student, teacher, epoch_context(240, 100))
    theirs = repdistiller_kd(
        student.logits,
        teacher.logits,
        batch.y,
        gamma=alpha,
        alpha=1 - alpha,
        temperature=temperature,
    )
    assert_terms_equal(ours, theirs)


@SHAPES
@CLASSES
@TEMPERATURE
@KD_ALPHAS
def test_kd_equals_mdistiller(
    batch_size: int, num_classes: int, temperature: float, alpha: float
) -> None:
    batch, student, teacher = random_inputs(batch_size, num_classes, seed=1)
    method = KnowledgeDistillation({"alpha": alpha, "temperature": temperature})
    ours = method.loss(batch, student, teacher, epoch_context(240, 100))
    theirs = mdistiller_kd(
        student.logits,
        teacher.logits,
        batch.y,
        ce_weight=alpha,
        kd_weight=1 - alpha,
        temperature=temperature,
    )
    assert_terms_equal(ours, theirs)


def test_kd_temperature_default_is_the_authors() -> None:
    # RepDistiller train_student.py --kd_T default 4; mdistiller CFG.KD.TEMPERATURE = 4.
    assert KnowledgeDistillation.defaults["temperature"] == 4.0


# --- label smoothing -------------------------------------------------------------------------


@SHAPES
@CLASSES
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_label_smoothing_equals_szegedy(batch_size: int, num_classes: int, epsilon: float) -> None:
    batch, student, teacher = random_inputs(batch_size, num_classes, seed=2)
    ours = LabelSmoothing({"epsilon": epsilon}).loss(batch, student, teacher, epoch_context(5, 0))
    assert_terms_equal(ours, szegedy_label_smoothing(student.logits, batch.y, epsilon))


# --- DKD -------------------------------------------------------------------------------------

# mdistiller/engine/cfg.py at a08d46f10d6102bd6e3f258ca5ac880b020ea259: CFG.DKD CE_WEIGHT 1.0,
# ALPHA 1.0, BETA 8.0, T 4.0, WARMUP 20; configs/cifar100/dkd/*.yaml train for 240 epochs.
MDISTILLER_DKD = {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup": 20, "epochs": 240}


def test_dkd_defaults_are_the_authors_cifar100_settings() -> None:
    defaults = DecoupledKD.defaults
    assert defaults["alpha"] == MDISTILLER_DKD["alpha"]
    assert defaults["beta"] == MDISTILLER_DKD["beta"]
    assert defaults["temperature"] == MDISTILLER_DKD["temperature"]
    assert defaults["warmup_fraction"] * MDISTILLER_DKD["epochs"] == pytest.approx(
        MDISTILLER_DKD["warmup"], rel=1e-12
    )


@SHAPES
@CLASSES
@TEMPERATURE
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 8.0), (0.5, 2.0)])
def test_dkd_equals_mdistiller_after_warmup(
    batch_size: int, num_classes: int, temperature: float, alpha: float, beta: float
) -> None:
    # Our 0-based epoch 19 is mdistiller's epoch 20, the first at full weight (of 240; the ramp
    # test below covers every epoch).
    epoch = 19
    batch, student, teacher = random_inputs(batch_size, num_classes, seed=3)
    method = DecoupledKD({"alpha": alpha, "beta": beta, "temperature": temperature})
    ours = method.loss(batch, student, teacher, epoch_context(240, epoch))
    theirs = mdistiller_dkd(student.logits, teacher.logits, batch.y, alpha, beta, temperature)
    assert mdistiller_warmup(epoch + 1, MDISTILLER_DKD["warmup"]) == 1.0
    assert_terms_equal(ours, theirs)


@pytest.mark.parametrize("num_epochs", [240, 30, 12, 5])
def test_dkd_warmup_is_mdistillers_ramp(num_epochs: int) -> None:
    """Every epoch of a run: our 0-based epoch e is mdistiller's epoch e + 1, and its WARMUP is
    our `warmup_fraction` × the budget's epochs (20 of 240 at the defaults)."""
    batch, student, teacher = random_inputs(7, 10, seed=4)
    method = DecoupledKD()
    p = method.params
    theirs = mdistiller_dkd(
        student.logits, teacher.logits, batch.y, p["alpha"], p["beta"], p["temperature"]
    )
    warmup = p["warmup_fraction"] * num_epochs
    for epoch in range(num_epochs):
        ours = method.loss(batch, student, teacher, epoch_context(num_epochs, epoch))
        ramp = mdistiller_warmup(epoch + 1, warmup)
        expected = {
            "ce": theirs["ce"],
            "tckd": ramp * theirs["tckd"],
            "nckd": ramp * theirs["nckd"],
        }
        assert_terms_equal(ours, expected)
    # The first epoch already carries 1/WARMUP of the KD terms (mdistiller's epoch 1), not 0.
    first = method.loss(batch, student, teacher, epoch_context(num_epochs, 0))
    assert first["tckd"].item() == pytest.approx(
        min(1 / warmup, 1.0) * theirs["tckd"].item(), rel=RTOL
    )
    assert first["tckd"].item() > 0
