"""Our nst, vid and ofd loss terms against restatements of the authors' released code.

Each test computes a method's terms the way training does (the module functions the methods
call, and `Method.loss` itself with a real `TrainContext`) and, on the same random float64
tensors, the objective of the released code, restated here from our reading of it (repository,
path and commit above each restatement). They must agree to 1e-6 relative over several batch
sizes, channel counts, spatial sizes and weights. The trained modules (VID's regressors, OFD's
connectors) are shared: the restatements run the authors' forward pass on our modules' weights,
and separate checks pin the modules' layout and initialisation to the authors'.

- nst: RepDistiller's `NSTLoss` (full MMD, teacher term included) times β, plus CE. Equal,
  including pairs of different (square) resolutions, which both pool to the coarser side.
- vid: RepDistiller's `VIDLoss` (regressor, softplus variance, `init_pred_var`, `eps`) times β,
  plus CE and the optional KD term (off in the authors' CIFAR-100 command). Equal.
- ofd: the authors' partial L2 in both released forms (clovaai/overhaul-distillation's first
  commit and its "efficient computation" rewrite) and mdistiller's, with the pair weights
  1/2^(n−1−i) and the authors' `sum / batch_size / 1000` (our β = 1e-3). Equal where the pairs
  have one resolution (the authors' setting) and, against mdistiller, which resizes the teacher's
  map to the student's grid, where they have two (either one finer). The margin equals the
  authors' `get_margin_from_BN`; the pre-ReLU features we rebuild from hooks equal the value our
  ResNet and SmallCNN pass to their last ReLU.

No formula differs on purpose (VID's `F.softplus` returns α itself above α = 20, where the
authors' log(1 + e^α) differs by under 1e-8 relative); the departures of these methods (layer
pairing, the teacher's batch-norm mode in OFD) are about which tensors are compared, and are
stated in the methods' docstrings.

The last tests train each method for a few steps through the shared loop with a small random
network teacher: the hooks, the precomputed teacher features and the trained modules must work
there, not only on tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch import nn

from bench.core.budgets import Architecture, TrainBudget
from bench.core.errors import BenchError
from bench.core.specs import TeacherSpec
from bench.data.bundle import DatasetBundle, Split
from bench.methods.nst import NeuronSelectivityTransfer, nst_loss
from bench.methods.ofd import (
    Connector,
    OverhaulFeatureDistillation,
    PreActivation,
    bn_margin,
    partial_l2,
    pre_activation,
)
from bench.methods.vid import VariationalInformationDistillation, VariationalRegressor, vid_loss
from bench.models import build_model
from bench.models.hooks import FeatureHooks
from bench.train.loop import TrainContext, seed_everything
from bench.train.method import Batch, ModelOutput
from bench.train.teachers import NetworkTeacher
from tests.authorkit import RTOL, assert_same, image_context

DOUBLE = torch.float64
CLASSES = 5

# The tensors here are tiny: on a shared machine a second intra-op thread only spins.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ctx() -> TrainContext:
    """A real training context for `Method.loss`; the losses compared here do not read it."""
    return image_context()


def random_batch(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Student logits, teacher logits and labels."""
    s_logits = 3 * torch.randn(batch, CLASSES, dtype=DOUBLE, generator=generator)
    t_logits = 3 * torch.randn(batch, CLASSES, dtype=DOUBLE, generator=generator)
    return s_logits, t_logits, torch.randint(CLASSES, (batch,), generator=generator)


def a_batch(y: torch.Tensor) -> Batch:
    return Batch(torch.zeros(len(y), 1, 1, 1), y, torch.arange(len(y)))


def layer_features(
    batch: int, groups: Sequence[tuple[int, int, tuple[int, int], tuple[int, int]]], seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Random student and teacher maps, one per group (student C, teacher C, student HW,
    teacher HW), keyed like hooked layers."""
    generator = torch.Generator().manual_seed(seed)
    student, teacher = {}, {}
    for j, (s_channels, t_channels, s_size, t_size) in enumerate(groups):
        student[f"block{j}"] = torch.randn(
            batch, s_channels, *s_size, dtype=DOUBLE, generator=generator
        )
        teacher[f"layer{j}"] = torch.randn(
            batch, t_channels, *t_size, dtype=DOUBLE, generator=generator
        )
    return student, teacher


# RepDistiller's shared pieces.
# HobbitLong/RepDistiller, distiller_zoo/KD.py (DistillKL) at commit
# 1e2f81692647991a80a1e97ffa14e2af915eaa6f: KL(p_T ‖ p_S) at temperature T, summed, times T²,
# divided by the batch size. helper/loops.py (train_distill) and train_student.py at commit
# 1143dfea41686c15a7a21c6f8959d7e074f043c3: loss = γ·CE + α·DistillKL + β·Σ_groups loss_kd over
# feat[1:-1] (NST, VID); scripts/run_cifar_distill.sh at commit
# b0722bc8ae38f374958797e73e04ab0ec9b1b69d: NST `-a 0 -b 50`, VID `-a 0 -b 1`, γ = 1, kd_T = 4.


def repdistiller_kd(y_s: torch.Tensor, y_t: torch.Tensor, t: float) -> torch.Tensor:
    p_s = F.log_softmax(y_s / t, dim=1)
    p_t = F.softmax(y_t / t, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * t**2 / y_s.shape[0]


def repdistiller_pool(f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The finer square map pooled to the coarser side, by height, as NST.py and VID.py do."""
    s_h, t_h = f_s.shape[2], f_t.shape[2]
    if s_h > t_h:
        f_s = F.adaptive_avg_pool2d(f_s, (t_h, t_h))
    elif s_h < t_h:
        f_t = F.adaptive_avg_pool2d(f_t, (s_h, s_h))
    return f_s, f_t


# (batch, [(student C, teacher C, student HW, teacher HW) for each pair])
GROUP_CASES = [
    (2, [(3, 5, (4, 4), (4, 4))]),
    (4, [(4, 8, (8, 8), (8, 8)), (8, 16, (4, 4), (4, 4)), (16, 32, (2, 2), (2, 2))]),
    (3, [(8, 16, (4, 4), (4, 4)), (16, 32, (4, 4), (2, 2))]),  # our digits pairs: student finer
    (5, [(16, 8, (4, 4), (16, 16)), (12, 12, (7, 5), (7, 5))]),  # teacher finer; not square
    (6, [(1, 2, (1, 1), (1, 1)), (2, 2, (6, 6), (3, 3))]),  # a 1×1 map normalises to ±1
]


# --- NST --------------------------------------------------------------------------------------

# HobbitLong/RepDistiller, distiller_zoo/NST.py (NSTLoss) at commit
# 1e2f81692647991a80a1e97ffa14e2af915eaa6f (mdistiller's mdistiller/distillers/NST.py at commit
# e8c5bb331e78c9d79a8894ca233caae78531cf7f is the same): pool, flatten each channel, L2-normalise
# it over positions, and with full_loss = True return mean k(t, t) + mean k(s, s) − 2 mean k(s, t)
# with k(a, b) = (aᵀb)² over every (sample, channel, channel) triple.


def repdistiller_poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.unsqueeze(1) * b.unsqueeze(2)).sum(-1).pow(2)


def repdistiller_nst(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    f_s, f_t = repdistiller_pool(f_s, f_t)
    f_s = F.normalize(f_s.view(f_s.shape[0], f_s.shape[1], -1), dim=2)
    f_t = F.normalize(f_t.view(f_t.shape[0], f_t.shape[1], -1), dim=2)
    return (
        repdistiller_poly_kernel(f_t, f_t).mean().detach()
        + repdistiller_poly_kernel(f_s, f_s).mean()
        - 2 * repdistiller_poly_kernel(f_s, f_t).mean()
    )


@pytest.mark.parametrize(("batch", "groups"), GROUP_CASES)
@pytest.mark.parametrize("beta", [50.0, 1.0])
def test_nst_objective_is_repdistillers(
    ctx: TrainContext, batch: int, groups: list, beta: float
) -> None:
    student, teacher = layer_features(batch, groups, seed=batch)
    generator = torch.Generator().manual_seed(batch + 100)
    s_logits, t_logits, y = random_batch(batch, generator)

    method = NeuronSelectivityTransfer({"beta": beta})
    method.pairs = list(zip(student, teacher, strict=True))
    terms = method.loss(
        a_batch(y), ModelOutput(s_logits, student), ModelOutput(t_logits, teacher), ctx
    )

    per_pair = [
        repdistiller_nst(s, t) for s, t in zip(student.values(), teacher.values(), strict=True)
    ]
    theirs = F.cross_entropy(s_logits, y) + beta * sum(per_pair)
    assert_same(sum(terms.values()), theirs)
    assert_same(terms["nst"], beta * sum(per_pair))
    for (s, t), their_pair in zip(method.pairs, per_pair, strict=True):
        assert_same(nst_loss(student[s], teacher[t]), their_pair)


def test_nst_is_a_squared_mmd() -> None:
    """Zero for a layer against itself, also rescaled (only the patterns count); positive else."""
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(4, 6, 5, 5, dtype=DOUBLE, generator=generator)
    b = torch.randn(4, 9, 5, 5, dtype=DOUBLE, generator=generator)
    assert nst_loss(a, 3 * a).abs().item() < 1e-12
    assert nst_loss(a, b).item() > 0


# --- VID --------------------------------------------------------------------------------------

# HobbitLong/RepDistiller, distiller_zoo/VID.py (VIDLoss) at commit
# f16477c4c9152cfb44ccb707a98879ad56f876e3 (mdistiller's vid_loss at
# e8c5bb331e78c9d79a8894ca233caae78531cf7f is the same): regressor = conv1x1(s→mid), ReLU,
# conv1x1(mid→mid), ReLU, conv1x1(mid→t), all without bias, mid = t in train_student.py;
# log_scale = log(exp(init_pred_var − eps) − 1) per teacher channel; pool for dimension match;
# pred_var = log(1 + exp(log_scale)) + eps; loss = mean(½ ((pred_mean − target)² / pred_var +
# log pred_var)).


def repdistiller_vid(
    weights: Sequence[torch.Tensor],
    log_scale: torch.Tensor,
    f_s: torch.Tensor,
    f_t: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    f_s, f_t = repdistiller_pool(f_s, f_t)
    hidden = F.relu(F.conv2d(f_s, weights[0]))
    hidden = F.relu(F.conv2d(hidden, weights[1]))
    pred_mean = F.conv2d(hidden, weights[2])
    pred_var = (torch.log(1.0 + torch.exp(log_scale)) + eps).view(1, -1, 1, 1)
    return torch.mean(0.5 * ((pred_mean - f_t) ** 2 / pred_var + torch.log(pred_var)))


def regressor_weights(regressor: VariationalRegressor) -> list[torch.Tensor]:
    convs = [m for m in regressor.mean if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None and c.kernel_size == (1, 1) for c in convs)
    return [c.weight for c in convs]


@pytest.mark.parametrize(("init_variance", "eps"), [(5.0, 1e-5), (1.0, 1e-3)])
def test_vid_regressor_layout_and_initial_variance_are_repdistillers(
    init_variance: float, eps: float
) -> None:
    regressor = VariationalRegressor(6, 10, init_variance, eps)
    weights = regressor_weights(regressor)
    assert [tuple(w.shape) for w in weights] == [(10, 6, 1, 1), (10, 10, 1, 1), (10, 10, 1, 1)]
    theirs = np.log(np.exp(init_variance - eps) - 1.0) * torch.ones(10)
    torch.testing.assert_close(regressor.log_scale.detach(), theirs.float(), rtol=RTOL, atol=0)
    torch.testing.assert_close(
        regressor.variance().flatten(), torch.full((10,), init_variance), rtol=RTOL, atol=0
    )


@pytest.mark.parametrize(("batch", "groups"), GROUP_CASES)
@pytest.mark.parametrize(
    ("beta", "kd_weight", "temperature"), [(1.0, 0.0, 4.0), (3.0, 0.9, 4.0), (0.5, 1.0, 2.0)]
)
def test_vid_objective_is_repdistillers(
    ctx: TrainContext, batch: int, groups: list, beta: float, kd_weight: float, temperature: float
) -> None:
    torch.manual_seed(batch)  # the regressors' initialisation
    student, teacher = layer_features(batch, groups, seed=batch)
    generator = torch.Generator().manual_seed(batch + 200)
    s_logits, t_logits, y = random_batch(batch, generator)
    eps = 1e-5

    method = VariationalInformationDistillation(
        {"beta": beta, "kd_weight": kd_weight, "temperature": temperature, "eps": eps}
    )
    method.pairs = list(zip(student, teacher, strict=True))
    method.regressors = nn.ModuleList(
        VariationalRegressor(s_c, t_c, 5.0, eps) for s_c, t_c, _, _ in groups
    ).to(DOUBLE)
    with torch.no_grad():  # distinct variances per channel, as after some training
        for regressor in method.regressors:
            regressor.log_scale.add_(torch.randn(regressor.log_scale.shape, dtype=DOUBLE))
    terms = method.loss(
        a_batch(y), ModelOutput(s_logits, student), ModelOutput(t_logits, teacher), ctx
    )

    per_pair = [
        repdistiller_vid(regressor_weights(r), r.log_scale, student[s], teacher[t], eps)
        for r, (s, t) in zip(method.regressors, method.pairs, strict=True)
    ]
    kd = repdistiller_kd(s_logits, t_logits, temperature)
    theirs = F.cross_entropy(s_logits, y) + kd_weight * kd + beta * sum(per_pair)
    assert_same(sum(terms.values()), theirs)
    assert_same(terms["vid"], beta * sum(per_pair))
    for r, (s, t), their_pair in zip(method.regressors, method.pairs, per_pair, strict=True):
        assert_same(vid_loss(r, student[s], teacher[t]), their_pair)


# --- OFD --------------------------------------------------------------------------------------

# clovaai/overhaul-distillation, CIFAR-100/distiller.py (distillation_loss), in both released
# forms: the initial commit 93bbcd2bf2bf07a50e57291e0fb8fc62b127bfe8 spells out the three cases
# and sums |loss|; the newest, 76344a84a7ce23c894f41a2e05b866c9b73fd85a ("efficient computation"),
# lifts the target to max(t, m) and masks an MSE with (s > t̂) | (t̂ > 0). `Distiller.forward`
# weighs pair i of n by 1/2^(n−i−1); CIFAR-100/train_with_distillation.py (93bbcd2) adds
# `loss_distill.sum() / batch_size / 1000` to CE. Their `.float()` masks are restated in the
# tensors' dtype (0 and 1 are exact in both).


def overhaul_loss_first(source: torch.Tensor, target: torch.Tensor, margin: torch.Tensor):
    as_float = source.dtype
    loss = (
        (source - margin) ** 2 * ((source > margin) & (target <= margin)).to(as_float)
        + (source - target) ** 2
        * ((source > target) & (target > margin) & (target <= 0)).to(as_float)
        + (source - target) ** 2 * (target > 0).to(as_float)
    )
    return torch.abs(loss).sum()


def overhaul_loss_newest(source: torch.Tensor, target: torch.Tensor, margin: torch.Tensor):
    target = torch.max(target, margin)
    loss = F.mse_loss(source, target, reduction="none")
    return (loss * ((source > target) | (target > 0)).to(source.dtype)).sum()


# megvii-research/mdistiller, mdistiller/distillers/OFD.py at commit
# e8c5bb331e78c9d79a8894ca233caae78531cf7f: feat_loss is the three-case form with
# `.mean(dim=0).sum()` (sum over C·H·W, mean over the batch); ofd_loss pools the teacher's map to
# the student's size with adaptive_avg_pool2d before it, and weighs pair i by 1/2^(n−i−1);
# mdistiller/engine/cfg.py at a08d46f10d6102bd6e3f258ca5ac880b020ea259: FEAT_WEIGHT 0.001,
# CE_WEIGHT 1, CONNECTOR.KERNEL_SIZE 1.


def mdistiller_feat_loss(source: torch.Tensor, target: torch.Tensor, margin: torch.Tensor):
    as_float = source.dtype
    loss = (
        (source - margin) ** 2 * ((source > margin) & (target <= margin)).to(as_float)
        + (source - target) ** 2
        * ((source > target) & (target > margin) & (target <= 0)).to(as_float)
        + (source - target) ** 2 * (target > 0).to(as_float)
    )
    return torch.abs(loss).mean(dim=0).sum()


def authors_connector(connector: Connector, student: torch.Tensor) -> torch.Tensor:
    """The authors' connector, conv1x1 without bias then BatchNorm2d in train mode, on our
    connector's weights."""
    out = F.conv2d(student, connector.conv.weight)
    bn = connector.norm
    return F.batch_norm(out, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)


def random_margin(channels: int, generator: torch.Generator) -> torch.Tensor:
    """Negative margins, as every margin of a batch norm is."""
    return -(0.05 + torch.rand(channels, dtype=DOUBLE, generator=generator))


def ofd_setup(
    groups: Sequence[tuple[int, int, tuple[int, int], tuple[int, int]]], batch: int, beta: float
) -> tuple[OverhaulFeatureDistillation, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A method with its sources and connectors set by hand, and hooked features for it: the
    teacher's pre-ReLU map arrives as a block's `bn2` and `shortcut` outputs, to be added."""
    torch.manual_seed(batch)  # the connectors' initialisation
    generator = torch.Generator().manual_seed(batch + 300)
    method = OverhaulFeatureDistillation({"beta": beta})
    placeholder = nn.BatchNorm2d(1)  # `norm` serves the margin, set on the connectors here
    method.student_sources, method.teacher_sources, connectors = [], [], []
    student, teacher = {}, {}
    for j, (s_c, t_c, s_size, t_size) in enumerate(groups):
        method.student_sources.append(PreActivation((f"s{j}",), placeholder, nn.Sequential()))
        parts = (f"t{j}.bn2", f"t{j}.shortcut")
        method.teacher_sources.append(PreActivation(parts, placeholder, nn.Sequential()))
        student[f"s{j}"] = torch.randn(batch, s_c, *s_size, dtype=DOUBLE, generator=generator)
        for part in parts:
            teacher[part] = torch.randn(batch, t_c, *t_size, dtype=DOUBLE, generator=generator)
        connectors.append(Connector(s_c, t_c, random_margin(t_c, generator)))
    method.connectors = nn.ModuleList(connectors).to(DOUBLE)
    return method, student, teacher


def teacher_pre_relu(teacher: dict[str, torch.Tensor], j: int) -> torch.Tensor:
    return teacher[f"t{j}.bn2"] + teacher[f"t{j}.shortcut"]


# (batch, [(student C, teacher C, student HW, teacher HW)]): the authors' setting, one
# resolution per pair, up to CIFAR's three groups.
OFD_SAME_RESOLUTION = [
    (2, [(3, 5, (4, 4), (4, 4))]),
    (4, [(4, 8, (8, 8), (8, 8)), (8, 16, (4, 4), (4, 4)), (16, 32, (2, 2), (2, 2))]),
    (5, [(12, 6, (7, 5), (7, 5)), (8, 16, (3, 3), (3, 3))]),
]
# Two resolutions per pair, as our profiles pair them: mdistiller resizes the teacher's map.
OFD_TWO_RESOLUTIONS = [
    (3, [(8, 16, (4, 4), (4, 4)), (16, 32, (4, 4), (2, 2))]),  # digits: student finer
    (3, [(8, 4, (4, 4), (8, 8)), (16, 32, (2, 2), (4, 4))]),  # teacher finer
    # concept_shapes: a four-block student against the ResNet's stem and groups
    (2, [(8, 8, (16, 16), (32, 32)), (16, 16, (8, 8), (32, 32)), (32, 64, (4, 4), (8, 8))]),
    (4, [(16, 8, (6, 6), (3, 3)), (6, 6, (5, 7), (5, 7))]),  # not square
]


@pytest.mark.parametrize(("batch", "groups"), OFD_SAME_RESOLUTION)
@pytest.mark.parametrize("beta", [1e-3, 0.05])
def test_ofd_objective_is_the_authors_at_one_resolution(
    ctx: TrainContext, batch: int, groups: list, beta: float
) -> None:
    method, student, teacher = ofd_setup(groups, batch, beta)
    generator = torch.Generator().manual_seed(batch + 400)
    s_logits, t_logits, y = random_batch(batch, generator)
    terms = method.loss(
        a_batch(y), ModelOutput(s_logits, student), ModelOutput(t_logits, teacher), ctx
    )

    n = len(groups)
    connected = [authors_connector(c, student[f"s{j}"]) for j, c in enumerate(method.connectors)]
    targets = [teacher_pre_relu(teacher, j) for j in range(n)]
    margins = [c.margin for c in method.connectors]
    ce = F.cross_entropy(s_logits, y)
    for loss_fn in (overhaul_loss_first, overhaul_loss_newest):
        distill = sum(
            loss_fn(connected[i], targets[i], margins[i]) / 2 ** (n - i - 1) for i in range(n)
        )
        # beta = 1e-3 is train_with_distillation.py's `/ batch_size / 1000`.
        assert_same(sum(terms.values()), ce + beta * distill / batch)
        assert_same(terms["ofd"], beta * distill / batch)
    their_pairs = [mdistiller_feat_loss(connected[i], targets[i], margins[i]) for i in range(n)]
    for i in range(n):
        assert_same(partial_l2(connected[i], targets[i], margins[i]), their_pairs[i])


def mdistiller_ofd(
    connectors: nn.ModuleList, student: list[torch.Tensor], teacher: list[torch.Tensor]
) -> torch.Tensor:
    n = len(student)
    total = torch.zeros((), dtype=DOUBLE)
    for i in range(n):
        connected = authors_connector(connectors[i], student[i])
        pooled = F.adaptive_avg_pool2d(teacher[i], connected.shape[-2:])
        total = total + mdistiller_feat_loss(connected, pooled, connectors[i].margin) / 2 ** (
            n - i - 1
        )
    return total


@pytest.mark.parametrize(("batch", "groups"), OFD_TWO_RESOLUTIONS)
@pytest.mark.parametrize("beta", [1e-3, 0.05])
def test_ofd_across_resolutions_is_mdistillers(
    ctx: TrainContext, batch: int, groups: list, beta: float
) -> None:
    method, student, teacher = ofd_setup(groups, batch, beta)
    generator = torch.Generator().manual_seed(batch + 500)
    s_logits, t_logits, y = random_batch(batch, generator)
    terms = method.loss(
        a_batch(y), ModelOutput(s_logits, student), ModelOutput(t_logits, teacher), ctx
    )
    n = len(groups)
    theirs = mdistiller_ofd(
        method.connectors,
        [student[f"s{j}"] for j in range(n)],
        [teacher_pre_relu(teacher, j) for j in range(n)],
    )
    assert_same(terms["ofd"], beta * theirs)
    assert_same(sum(terms.values()), F.cross_entropy(s_logits, y) + beta * theirs)


# clovaai/overhaul-distillation, CIFAR-100/distiller.py (get_margin_from_BN) at commit
# 76344a84a7ce23c894f41a2e05b866c9b73fd85a (unchanged since 93bbcd2): per channel s = |weight|,
# m = bias; if norm.cdf(−m/s) > 0.001 the margin is −s·exp(−(m/s)²/2)/√(2π)/norm.cdf(−m/s) + m,
# else −3s. (mdistiller's init_ofd_modules is the same.) Their FloatTensor is float32; the values
# are compared here before that rounding.


def authors_margin(bn: nn.BatchNorm2d) -> torch.Tensor:
    margin = []
    for s, m in zip(bn.weight.data, bn.bias.data, strict=True):
        s = abs(s.item())
        m = m.item()
        if norm.cdf(-m / s) > 0.001:
            margin.append(
                -s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / norm.cdf(-m / s) + m
            )
        else:
            margin.append(-3 * s)
    return torch.tensor(margin, dtype=DOUBLE)


def test_ofd_margin_is_the_authors_get_margin_from_bn() -> None:
    bn = nn.BatchNorm2d(7).to(DOUBLE)
    with torch.no_grad():
        # Negative and positive γ (the sign is dropped), β from far below to far above zero:
        # β/|γ| = 4 and 10 take the −3|γ| branch.
        bn.weight.copy_(torch.tensor([1.0, -0.5, 2.0, 0.3, 1.5, 0.2, -1.0], dtype=DOUBLE))
        bn.bias.copy_(torch.tensor([0.0, 0.4, -1.0, 0.9, 6.0, 2.0, -3.0], dtype=DOUBLE))
    ours = bn_margin(bn)
    assert_same(ours, authors_margin(bn))
    assert (ours < 0).all()
    assert ours[4].item() == pytest.approx(-4.5) and ours[5].item() == pytest.approx(-0.6)


# --- pre-ReLU features through hooks -----------------------------------------------------------


def stage_inputs_and_outputs(
    model: nn.Module, stage: str, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The input of the stage's last child and the stage's output, by hooks."""
    seen: dict[str, torch.Tensor] = {}
    last = list(model.get_submodule(stage).children())[-1]
    handle = last.register_forward_pre_hook(lambda _m, args: seen.update(last_in=args[0]))
    with FeatureHooks(model, [stage]) as hooks:
        model(x)
    handle.remove()
    return seen["last_in"], hooks.features[stage]


@pytest.mark.parametrize(
    ("model_name", "kwargs"),
    [
        ("resnet", {"blocks": 1}),
        ("resnet", {"blocks": 2}),
        ("small_cnn", {"depth": 2}),
        ("small_cnn", {"depth": 3}),
    ],
)
def test_pre_activation_is_what_each_stage_passes_to_its_last_relu(
    model_name: str, kwargs: dict
) -> None:
    torch.manual_seed(0)
    model = build_model(model_name, (1, 8, 8), CLASSES, width=4, **kwargs).to(DOUBLE).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics and affine parameters
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.2, 0.2)
    x = torch.randn(6, 1, 8, 8, dtype=DOUBLE)
    for stage in (name for name, child in model.named_children() if name not in ("pool", "head")):
        source = pre_activation(model, stage)
        with torch.no_grad(), FeatureHooks(model, source.parts) as hooks:
            model(x)
            pre = source.read(hooks.features)
            last_in, out = stage_inputs_and_outputs(model, stage, x)
        assert (pre < 0).any()  # there is something for the ReLU to erase
        torch.testing.assert_close(F.relu(pre), out, rtol=RTOL, atol=0)
        last = list(model.get_submodule(stage).children())[-1]
        if hasattr(last, "bn2"):  # recompute the residual block by hand
            assert source.norm is last.bn2
            with torch.no_grad():
                inner = F.relu(last.bn1(last.conv1(last_in)))
                expected = last.bn2(last.conv2(inner)) + last.shortcut(last_in)
            torch.testing.assert_close(pre, expected, rtol=RTOL, atol=0)
        else:
            block = model.get_submodule(stage)
            assert source.norm is block[1]


def test_pre_activation_refuses_an_unknown_layout() -> None:
    model = nn.Sequential()
    model.add_module("stage", nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2)))
    with pytest.raises(BenchError, match="pre-ReLU"):
        pre_activation(model, "stage")


# --- training through the shared loop ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetBundle, NetworkTeacher]:
    """Random 8×8 images and an untrained ResNet teacher with varied batch-norm parameters (so
    that OFD's margins differ by channel); training mechanics, not accuracy, are tested."""
    rng = np.random.default_rng(0)
    split = Split(rng.standard_normal((96, 1, 8, 8)).astype(np.float32), np.arange(96) % 3)
    bundle = DatasetBundle("random", "0", "image", split, split, split, ("a", "b", "c"))
    torch.manual_seed(0)
    module = build_model("resnet", (1, 8, 8), 3, width=4, blocks=1)
    with torch.no_grad():
        for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1.0, 1.0)
    spec = TeacherSpec("random", "0", "image", "resnet", {}, 0)
    folder = tmp_path_factory.mktemp("teacher")
    teacher = NetworkTeacher(module, spec, bundle, torch.device("cpu"), {}, folder)
    return bundle, teacher


@pytest.mark.parametrize("name", ["nst", "vid", "ofd"])
@pytest.mark.parametrize("depth", [2, 3])
def test_method_trains_through_the_shared_loop(
    tiny_teacher: tuple[DatasetBundle, NetworkTeacher], name: str, depth: int
) -> None:
    bundle, teacher = tiny_teacher
    seed_everything(0)
    student_arch = Architecture("small_cnn", (("width", 4), ("depth", depth)))
    budget = TrainBudget(epochs=3, batch_size=32, lr=1e-2)
    ctx = TrainContext(bundle, teacher, budget, student_arch, torch.device("cpu"), seed=0)
    method = {
        "nst": NeuronSelectivityTransfer,
        "vid": VariationalInformationDistillation,
        "ofd": OverhaulFeatureDistillation,
    }[name]()
    original = method.trainable_modules
    initial: dict[str, torch.Tensor] = {}

    def remember(student: nn.Module, context: TrainContext) -> nn.Module | None:
        extra = original(student, context)
        if extra is not None:
            initial.update({k: v.detach().clone() for k, v in extra.state_dict().items()})
        return extra

    method.trainable_modules = remember  # observe the modules as the loop receives them
    student = method.fit(ctx)
    history = ctx.history[f"loss/{name}"]
    assert len(history) == 3 and all(math.isfinite(v) for v in history)
    assert history[-1] < history[0], history  # the distillation term is optimised
    assert not student.training and student(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    if name == "vid":
        for j, regressor in enumerate(method.regressors):
            # The per-channel variances are trained, not only the regressor's convolutions.
            assert not torch.equal(regressor.log_scale.detach(), initial[f"{j}.log_scale"])
    if name == "ofd":
        for j, connector in enumerate(method.connectors):
            assert not torch.equal(connector.conv.weight, initial[f"{j}.conv.weight"])
            expected = bn_margin(method.teacher_sources[j].norm).view(1, -1, 1, 1)
            assert torch.equal(connector.margin, expected)  # a buffer: never trained
