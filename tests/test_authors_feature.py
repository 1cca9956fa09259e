"""Our fitnet, at and e2kd loss terms against restatements of the authors' released formulas.

A method row is only worth comparing with a paper if its loss is the paper's loss. Each test below
computes a method's terms the way training does (the module-level functions the methods use, and
`Method.loss` itself) and, on the same random float64 tensors, the objective of the authors'
released code, restated here from our reading of it (repository, file and commit named above each
restatement). They must agree to 1e-6 relative, over several batch sizes, channel counts, spatial
sizes, weights and temperatures.

What differs on purpose is a default, not a formula, and the tests compare at equal effective
weight:

- fitnet: ours is `hint_weight · ½ · mean((r(g) − h)²)`, RepDistiller's `β · mean((r(g) − h)²)`,
  so RepDistiller's β is our `hint_weight = 2β`. Their CIFAR-100 β = 100 is `fitnet.hint_weight =
  200`; our default `hint_weight = 10` is an effective weight of 5 on the mean squared error.
- at: both released codes (Zagoruyko & Komodakis' own and RepDistiller's) apply
  `β · Σ_j mean((Q_S − Q_T)²)` with β = 1000; the paper writes β/2, as ours does, so their β is our
  `at.beta = 2β`: the authors' weight is `at.beta = 2000`. Our default β = 100 is an effective 50.
- e2kd: the authors' objective is `g·CE + l·T²·KL + e·mean(1 − cos)`; ours is `α·CE +
  (1 − α)·T²·KL + λ·mean(1 − cos)`, the same at α = g, 1 − α = l, λ = e.

One genuine difference in a formula is recorded as a strict xfail: when an attention pair has two
resolutions, RepDistiller average-pools the finer *features* and then squares them, we pool the
finer map's *energy* Σ_c A_c² (`bench.train.feature_losses.attention_map`); mean-of-squares is not
square-of-means, so the two losses differ whenever the resolutions do.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.explain.gradcam import grad_cam, grad_cam_maps
from bench.methods.at import AttentionTransfer
from bench.methods.e2kd import ExplanationEnhancedKD, explanation_loss
from bench.methods.fitnet import FitNet, HintRegressor, hint_loss
from bench.train.feature_losses import attention_transfer_loss, match_spatial
from bench.train.loop import TrainContext
from bench.train.losses import kd_kl
from bench.train.method import Batch, ModelOutput
from tests.authorkit import assert_same, image_context

DOUBLE = torch.float64
CLASSES = 5


# The tensors here are tiny: on a shared machine a second intra-op thread only spins.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ctx() -> TrainContext:
    """A real training context for `Method.loss`; the three losses compared here do not read it."""
    return image_context()


def random_logits(batch: int, generator: torch.Generator) -> torch.Tensor:
    return 3 * torch.randn(batch, CLASSES, dtype=DOUBLE, generator=generator)


# --- the authors' shared pieces, restated ---------------------------------------------------

# HobbitLong/RepDistiller, distiller_zoo/KD.py (DistillKL), commit
# b84f547c5db6a35318d4671d7d5c4de74c822403: KL(p_T ‖ p_S) at temperature T, summed over classes
# and batch, times T², divided by the batch size. The e2KD release computes the same quantity
# (KLDivLoss(reduction="none") summed over classes, averaged over the batch, times T²).


def authors_kd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float
) -> torch.Tensor:
    log_q = torch.log_softmax(student_logits / t, dim=1)
    log_p = torch.log_softmax(teacher_logits / t, dim=1)
    per_sample = (log_p.exp() * (log_p - log_q)).sum(dim=1)
    return t * t * per_sample.sum() / student_logits.shape[0]


def test_our_kd_term_is_the_authors_at_every_temperature() -> None:
    generator = torch.Generator().manual_seed(1)
    for t in (1.0, 4.0, 5.0, 8.0):
        s, te = random_logits(6, generator), random_logits(6, generator)
        assert_same(kd_kl(s, te, t), authors_kd(s, te, t))


# --- FitNets ----------------------------------------------------------------------------------

# HobbitLong/RepDistiller, commit b84f547c5db6a35318d4671d7d5c4de74c822403:
# - distiller_zoo/FitNet.py (HintLoss): nn.MSELoss with its default mean reduction, between the
#   regressed student map and the teacher's hint map;
# - helper/loops.py (train_distill): loss = γ·CE + α·DistillKL + β·HintLoss;
# - train_student.py: γ = 1 and kd_T = 4 by default; scripts/run_cifar_distill.sh runs FitNet on
#   CIFAR-100 with -a 0 -b 100 (α = 0, β = 100).
# Their regressor (models/util.py ConvReg: a strided/transposed/valid convolution, batch norm and
# ReLU) is an architecture choice, not the loss: both sides are given our regressor's output.


def repdistiller_fitnet(
    ce: torch.Tensor,
    kd: torch.Tensor,
    regressed: torch.Tensor,
    hint: torch.Tensor,
    alpha: float,
    beta: float,
    gamma: float = 1.0,
) -> torch.Tensor:
    mse = (regressed - hint).square().sum() / hint.numel()
    return gamma * ce + alpha * kd + beta * mse


# (batch, student channels, student H×W, teacher channels, teacher H×W)
FITNET_SHAPES = [
    (2, 3, (4, 4), 5, (4, 4)),  # equal sizes
    (4, 8, (8, 8), 16, (4, 4)),  # the guided map is finer: pooled
    (3, 16, (2, 2), 4, (4, 4)),  # the guided map is coarser: upsampled
    (5, 6, (6, 4), 7, (3, 2)),  # not square
]


@pytest.mark.parametrize(("batch", "s_channels", "s_size", "t_channels", "t_size"), FITNET_SHAPES)
@pytest.mark.parametrize(
    ("beta", "alpha", "temperature"),
    [(100.0, 0.0, 4.0), (100.0, 0.9, 4.0), (3.0, 1.0, 1.0), (100.0, 0.5, 8.0)],
)
def test_fitnet_objective_is_repdistillers_at_hint_weight_two_beta(
    ctx: TrainContext,
    batch: int,
    s_channels: int,
    s_size: tuple[int, int],
    t_channels: int,
    t_size: tuple[int, int],
    beta: float,
    alpha: float,
    temperature: float,
) -> None:
    torch.manual_seed(0)  # the regressor's initialisation
    generator = torch.Generator().manual_seed(batch * 100 + s_channels)
    guided = torch.randn(batch, s_channels, *s_size, dtype=DOUBLE, generator=generator)
    hint = F.relu(torch.randn(batch, t_channels, *t_size, dtype=DOUBLE, generator=generator))
    s_logits, t_logits = random_logits(batch, generator), random_logits(batch, generator)
    y = torch.randint(CLASSES, (batch,), generator=generator)

    method = FitNet({"hint_weight": 2 * beta, "kd_weight": alpha, "temperature": temperature})
    method.regressor = HintRegressor(s_channels, t_channels, t_size).to(DOUBLE)
    terms = method.loss(
        Batch(torch.zeros(batch, 1, 1, 1), y, torch.arange(batch)),
        ModelOutput(s_logits, {"block1": guided}),
        ModelOutput(t_logits, {"layer2": hint}),
        ctx,
    )
    regressed = method.regressor(guided)
    assert regressed.shape == hint.shape
    ce = F.cross_entropy(s_logits, y)
    theirs = repdistiller_fitnet(
        ce, authors_kd(s_logits, t_logits, temperature), regressed, hint, alpha, beta
    )
    assert_same(sum(terms.values()), theirs)
    # The hint term alone, from the function the method calls.
    their_hint = beta * (regressed - hint).square().sum() / hint.numel()
    assert_same(2 * beta * hint_loss(method.regressor, guided, hint), their_hint)
    assert_same(terms["hint"], their_hint)


def test_fitnet_default_hint_weight_is_an_effective_5_against_repdistillers_100() -> None:
    """The mapping stated in the module docstring, pinned: ours ½·w·MSE, theirs β·MSE."""
    # RepDistiller's CIFAR-100 hint (β = 100) weighs 20 times ours; `hint_weight = 200` is theirs.
    assert FitNet.defaults["hint_weight"] / 2 == 5.0


# --- attention transfer -----------------------------------------------------------------------

# The attention map and loss, as released by the paper's authors (szagoruyko/attention-transfer,
# utils.py `at` and `at_loss`, cifar.py `h`, commit 893df5488f93691799f082a70e2521a9dc2ddf2d) and
# by RepDistiller (HobbitLong/RepDistiller, distiller_zoo/AT.py `Attention`, helper/loops.py,
# commit b84f547c5db6a35318d4671d7d5c4de74c822403): Q = the channel mean of the squared features,
# flattened per sample and divided by its L2 norm; loss_j = mean over batch and positions of
# (Q_S − Q_T)²; objective = CE (+ α·KD) + β·Σ_j loss_j, with β = 1000 in both (attention-transfer's
# README `--beta 1e+3`; RepDistiller's scripts/run_cifar_distill.sh `-a 0 -b 1000`). No ½.
# RepDistiller additionally pools the finer of two square feature maps to the coarser side
# (F.adaptive_avg_pool2d on the features) before taking Q.


def unit_rows(maps: torch.Tensor) -> torch.Tensor:
    rows = maps.reshape(maps.shape[0], -1)
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


def authors_attention(features: torch.Tensor) -> torch.Tensor:
    return unit_rows(features.square().mean(dim=1))


def repdistiller_at_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    s_side, t_side = student.shape[2], teacher.shape[2]
    if s_side > t_side:
        student = F.adaptive_avg_pool2d(student, (t_side, t_side))
    elif t_side > s_side:
        teacher = F.adaptive_avg_pool2d(teacher, (s_side, s_side))
    return (authors_attention(student) - authors_attention(teacher)).square().mean()


# (batch, [(student channels, teacher channels, H×W) for each paired group])
AT_CASES = [
    (2, [(3, 5, (4, 4))]),
    (4, [(4, 8, (8, 8)), (8, 16, (4, 4)), (16, 32, (2, 2))]),  # three groups, as CIFAR ResNets
    (3, [(16, 16, (7, 5)), (32, 64, (3, 3))]),  # one group not square
    (6, [(1, 2, (1, 1)), (2, 2, (6, 6))]),  # a 1×1 map is the constant 1 after normalising
]


def features_for(
    batch: int, groups: Sequence[tuple[int, int, tuple[int, int]]], generator: torch.Generator
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    student, teacher = {}, {}
    for j, (s_channels, t_channels, size) in enumerate(groups):
        student[f"block{j}"] = torch.randn(
            batch, s_channels, *size, dtype=DOUBLE, generator=generator
        )
        teacher[f"layer{j}"] = torch.randn(
            batch, t_channels, *size, dtype=DOUBLE, generator=generator
        )
    return student, teacher


@pytest.mark.parametrize(("batch", "groups"), AT_CASES)
@pytest.mark.parametrize("authors_beta", [1000.0, 1.0])
def test_at_objective_is_the_authors_at_beta_two_times_theirs(
    ctx: TrainContext,
    batch: int,
    groups: list[tuple[int, int, tuple[int, int]]],
    authors_beta: float,
) -> None:
    generator = torch.Generator().manual_seed(batch)
    student, teacher = features_for(batch, groups, generator)
    s_logits = random_logits(batch, generator)
    y = torch.randint(CLASSES, (batch,), generator=generator)

    method = AttentionTransfer({"beta": 2 * authors_beta})
    method.pairs = list(zip(student, teacher, strict=True))
    terms = method.loss(
        Batch(torch.zeros(batch, 1, 1, 1), y, torch.arange(batch)),
        ModelOutput(s_logits, student),
        ModelOutput(random_logits(batch, generator), teacher),
        ctx,
    )
    per_group = [
        repdistiller_at_loss(s, t) for s, t in zip(student.values(), teacher.values(), strict=True)
    ]
    theirs = authors_beta * torch.stack(per_group).sum()
    assert_same(terms["at"], theirs)
    assert_same(sum(terms.values()), F.cross_entropy(s_logits, y) + theirs)
    for ours_group, theirs_group in zip(
        (
            attention_transfer_loss(s, t)
            for s, t in zip(student.values(), teacher.values(), strict=True)
        ),
        per_group,
        strict=True,
    ):
        assert_same(ours_group, theirs_group)


# (batch, student channels, student side, teacher channels, teacher side): square, as
# RepDistiller's pooling assumes.
CROSS_RESOLUTION = [
    (4, 8, 8, 16, 4),  # student finer (our 32×32 students against a ResNet's later groups)
    (3, 16, 16, 16, 32),  # teacher finer (a 32×32 ResNet stem against a 16×16 student block)
    (2, 4, 6, 4, 3),
]


@pytest.mark.xfail(
    strict=True,
    reason=(
        "formula difference with RepDistiller (distiller_zoo/AT.py at_loss, commit b84f547c) "
        "for pairs of different resolution: RepDistiller average-pools the finer FEATURES A and "
        "then takes mean_c A², bench.train.feature_losses.attention_map pools the finer map's ENERGY "
        "Σ_c A² (mean of squares, not square of means). Equal-resolution pairs agree exactly; "
        "the paper pairs equal resolutions only, and the at docstring calls the resizing ours."
    ),
)
@pytest.mark.parametrize(
    ("batch", "s_channels", "s_side", "t_channels", "t_side"), CROSS_RESOLUTION
)
def test_at_across_resolutions_is_repdistillers(
    batch: int, s_channels: int, s_side: int, t_channels: int, t_side: int
) -> None:
    generator = torch.Generator().manual_seed(batch)
    student = torch.randn(batch, s_channels, s_side, s_side, dtype=DOUBLE, generator=generator)
    teacher = torch.randn(batch, t_channels, t_side, t_side, dtype=DOUBLE, generator=generator)
    assert_same(attention_transfer_loss(student, teacher), repdistiller_at_loss(student, teacher))


@pytest.mark.parametrize(
    ("batch", "s_channels", "s_side", "t_channels", "t_side"), CROSS_RESOLUTION
)
def test_at_across_resolutions_pools_the_energy(
    batch: int, s_channels: int, s_side: int, t_channels: int, t_side: int
) -> None:
    """What we do instead, stated exactly: the authors' Q of the energy pooled to the coarser side."""
    generator = torch.Generator().manual_seed(batch)
    student = torch.randn(batch, s_channels, s_side, s_side, dtype=DOUBLE, generator=generator)
    teacher = torch.randn(batch, t_channels, t_side, t_side, dtype=DOUBLE, generator=generator)
    side = min(s_side, t_side)

    def pooled_q(features: torch.Tensor) -> torch.Tensor:
        return unit_rows(F.adaptive_avg_pool2d(features.square().mean(dim=1, keepdim=True), side))

    expected = (pooled_q(student) - pooled_q(teacher)).square().mean()
    assert_same(attention_transfer_loss(student, teacher), expected)


def test_at_default_beta_is_an_effective_50_against_the_authors_1000() -> None:
    """Ours applies β/2 (the paper's notation); both released codes apply β = 1000 without ½."""
    # `--set at.beta=2000` is the authors' weight (test_at_objective_is_the_authors_...).
    assert AttentionTransfer.defaults["beta"] / 2 == 50.0


# --- e2KD ---------------------------------------------------------------------------------------

# m-parchami/GoodTeachersExplain (Parchami-Araghi, Böhle, Rao, Schiele, ECCV 2024), commit
# a1b7bb532bff395988e6695d65a49461bfedb099, bcos/distillation_methods/TeachersExplain.py:
# - explanation_aware_forward, case GRAD_CAM_POS (standard, non-B-cos networks): the class
#   explained is the teacher's top-1 (select_classes_and_teachers, exp_of="top1"); the sum of
#   those logits is differentiated with respect to the final feature map (create_graph for the
#   student); Grad-CAM = ReLU(Σ_k mean_hw(∂y/∂A_k) · A_k), resized to the image's size with
#   torchvision's `resize` (bilinear, align_corners=False; an upsampling, where antialiasing
#   changes nothing);
# - TeachersExplainCriterion.forward / _explanation_loss: loss = gt·CE + exp·mean_n(1 − cos(
#   flattened student map, flattened teacher map)) + logit·KLDivLoss(reduction="none")(
#   log_softmax(s/T), softmax(t/T)).sum(-1).mean()·T².
# bcos/experiments/ImageNet/final_live/experiment_parameters.py: defaults gt 1, logit 1, T = 1,
# exp 1; the standard-network (Grad-CAM) grid is gt 0, logit {1, 0.5}, T {1, 5}, exp {10, 5, 1, 0}.
# The release configures ImageNet only: it has no CIFAR-100 setting to compare defaults with.


def authors_grad_cam(
    activation: torch.Tensor, logits: torch.Tensor, explained: torch.Tensor, create_graph: bool
) -> torch.Tensor:
    chosen = logits[torch.arange(len(explained)), explained]
    (gradient,) = torch.autograd.grad(chosen.sum(), activation, create_graph=create_graph)
    cam = (gradient.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1, keepdim=True)
    return F.relu(cam)


def authors_resize(cam: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    # torchvision.transforms.functional.resize on a tensor, bilinear with antialiasing as in
    # torchvision >= 0.17 (the release pins no version; for upsampling the two agree).
    return F.interpolate(
        cam, size=tuple(size), mode="bilinear", align_corners=False, antialias=True
    )


def authors_e2kd(
    student_logits: torch.Tensor,
    student_maps: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_maps: torch.Tensor,
    y: torch.Tensor,
    gt: float,
    logit: float,
    exp: float,
    t: float,
) -> dict[str, torch.Tensor]:
    n = len(y)
    cosine = F.cosine_similarity(student_maps.reshape(n, -1), teacher_maps.reshape(n, -1), dim=1)
    return {
        "ce": gt * F.cross_entropy(student_logits, y),
        "kd": logit * authors_kd(student_logits, teacher_logits, t),
        "explanation": exp * (1 - cosine).mean(),
    }


def grads(loss: torch.Tensor, model: nn.Module) -> tuple[torch.Tensor, ...]:
    """∂loss/∂θ for every parameter; zeros where loss does not depend on it (the output bias)."""
    return torch.autograd.grad(
        loss, list(model.parameters()), allow_unused=True, materialize_grads=True
    )


class ConvNet(nn.Module):
    """`features` (conv, ReLU, average pool) is the map explained; the head varies the gradient
    over positions (a 1×1 conv and ReLU before pooling), so Grad-CAM is not a plain channel mix."""

    def __init__(self, in_channels: int, channels: int, pool: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(), nn.AvgPool2d(pool)
        )
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# (images, in channels, H×W, (student channels, pool), (teacher channels, pool))
E2KD_SHAPES = [
    (4, 1, (8, 8), (4, 2), (6, 4)),
    (3, 3, (12, 12), (5, 3), (8, 2)),
    (5, 3, (16, 12), (6, 4), (4, 1)),  # the teacher's map is at input size; not square
]


@pytest.mark.parametrize(
    ("batch", "in_channels", "size", "student_spec", "teacher_spec"), E2KD_SHAPES
)
@pytest.mark.parametrize("temperature", [1.0, 4.0, 5.0])
@pytest.mark.parametrize(("alpha", "lam"), [(0.5, 1.0), (0.0, 5.0)])
def test_e2kd_terms_and_gradient_are_the_authors(
    ctx: TrainContext,
    batch: int,
    in_channels: int,
    size: tuple[int, int],
    student_spec: tuple[int, int],
    teacher_spec: tuple[int, int],
    temperature: float,
    alpha: float,
    lam: float,
) -> None:
    torch.manual_seed(batch)
    student = ConvNet(in_channels, *student_spec).to(DOUBLE)
    teacher = ConvNet(in_channels, *teacher_spec).to(DOUBLE).eval()
    generator = torch.Generator().manual_seed(batch + 1)
    train_x = torch.randn(2 * batch + 1, in_channels, *size, dtype=DOUBLE, generator=generator)
    index = torch.randperm(len(train_x), generator=generator)[:batch]
    x = train_x[index]
    y = torch.randint(CLASSES, (batch,), generator=generator)

    # The teacher's maps: ours as `TeacherPerImage` makes them (all training images, at input
    # size), the authors' live on the batch.
    with torch.no_grad():
        train_predicted = teacher(train_x).argmax(dim=1)
    ours_teacher = grad_cam_maps(teacher, "features", train_x, train_predicted, batch_size=3)
    ours_teacher = match_spatial(ours_teacher[:, None], size)[:, 0]
    t_activation = teacher.features(x.clone().requires_grad_(True))
    t_logits = teacher.head(t_activation)
    explained = t_logits.argmax(dim=1)
    theirs_teacher = authors_resize(
        authors_grad_cam(t_activation, t_logits, explained, False), size
    )
    t_logits, theirs_teacher = t_logits.detach(), theirs_teacher.detach()
    assert_same(ours_teacher[index], theirs_teacher[:, 0], atol=1e-12)

    # Ours, through the method's own loss.
    method = ExplanationEnhancedKD({"alpha": alpha, "temperature": temperature, "lambda": lam})
    # The lookup `TeacherPerImage` makes on a batch that is not augmented.
    method.teacher_maps = lambda batch, _: ours_teacher[batch.index]
    activation = student.features(x)
    s_logits = student.head(activation)
    ours = method.loss(
        Batch(x, y, index),
        ModelOutput(s_logits, {"features": activation}),
        ModelOutput(t_logits),
        ctx,
    )
    ours_grad = grads(ours["explanation"], student)

    # The authors', on a fresh forward pass of the same student.
    s_activation = student.features(x)
    s_logits_2 = student.head(s_activation)
    s_maps = authors_resize(authors_grad_cam(s_activation, s_logits_2, explained, True), size)
    theirs = authors_e2kd(
        s_logits_2, s_maps, t_logits, theirs_teacher, y, alpha, 1 - alpha, lam, temperature
    )
    theirs_grad = grads(theirs["explanation"], student)

    assert set(ours) == set(theirs)
    for name in theirs:
        assert_same(ours[name], theirs[name])
    assert_same(sum(ours.values()), sum(theirs.values()))
    assert any(g.abs().max() > 0 for g in theirs_grad)  # the explanation term trains the student
    for ours_g, theirs_g in zip(ours_grad, theirs_grad, strict=True):
        assert_same(ours_g, theirs_g, atol=1e-12)


def test_e2kd_building_blocks_are_the_authors() -> None:
    """`grad_cam` and `explanation_loss`, the functions the method calls, on their own."""
    torch.manual_seed(7)
    model = ConvNet(3, 6, 2).to(DOUBLE)
    x = torch.randn(5, 3, 10, 10, dtype=DOUBLE)
    activation = model.features(x)
    logits = model.head(activation)
    explained = torch.tensor([0, 4, 2, 2, 1])
    scores = logits.gather(1, explained[:, None]).squeeze(1)
    ours = grad_cam(activation, scores, create_graph=True)
    theirs = authors_grad_cam(activation, logits, explained, True)[:, 0]
    assert_same(ours, theirs, atol=1e-12)
    other = torch.rand(5, 5, 5, dtype=DOUBLE)
    n = len(other)
    cosine = F.cosine_similarity(ours.reshape(n, -1), other.reshape(n, -1), dim=1)
    assert_same(explanation_loss(ours, other), (1 - cosine).mean())
