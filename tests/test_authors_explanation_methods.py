"""Our cat_kd and jacobian_kd loss terms against restatements of their authors' objectives.

Each test computes a method's terms the way training does (the module functions the methods use
and `Method.loss` itself) and, on the same random float64 tensors, the authors' objective
restated here: for CAT-KD from the released code (GzyAftermath/CAT-KD, files and commit named
above the restatement); for Jacobian matching from the paper's equation, because its authors
released no code (see `methods/jacobian_kd.py`). They agree to 1e-6 relative over
several batch sizes, channel counts, map sizes, grids, weights and temperatures; where the loss
trains the student through a map (the CAMs, the double-backpropagated input gradients) the
parameter gradients are compared too.

What differs on purpose:

- cat_kd: nothing in the loss. The released student replaces its classifier with a bias-free
  1×1 convolution before pooling, ours keeps a Linear head with a bias; a CAM is the weights
  alone, so the maps and the loss are the same (a test pins that the CAMs of both registered
  architectures average to their logits minus the bias).
- jacobian_kd: the KD part is our `kd` row (α·CE + (1 − α)·T²·KL). The student's input gradient
  is taken once for the whole batch; in train mode batch norm couples the samples, so it is not
  each sample's own Jacobian: recorded as a strict xfail with the measured difference.

A real training run of each method, on a few random images, checks what only training exercises:
the hooked layers and the teacher's classifier (cat_kd), the input that the shared loop makes
require grad and the precomputed teacher gradients (jacobian_kd).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.budgets import Architecture, TrainBudget
from bench.core.specs import TeacherSpec
from bench.data.bundle import DatasetBundle, Split
from bench.methods.cat_kd import (
    ClassAttentionTransferKD,
    binarise,
    cat_loss,
    class_activation_maps,
    linear_classifier,
)
from bench.methods.jacobian_kd import (
    JacobianMatchingKD,
    input_gradients,
    jacobian_matching_loss,
    teacher_input_gradients,
)
from bench.models import build_model
from bench.models.hooks import FeatureHooks
from bench.train.feature_losses import TeacherPerImage, last_conv_layer
from bench.train.loop import TrainContext
from bench.train.method import METHODS, Batch, Method, ModelOutput
from bench.train.teachers import NetworkTeacher
from tests.authorkit import assert_same

DOUBLE = torch.float64
CPU = torch.device("cpu")

# The tensors here are tiny: on a shared machine a second intra-op thread only spins.
pytestmark = pytest.mark.usefixtures("one_thread")


def random_bundle(n: int, shape: Sequence[int], classes: int, seed: int) -> DatasetBundle:
    rng = np.random.default_rng(seed)
    split = Split(rng.standard_normal((n, *shape), dtype=np.float32), np.arange(n) % classes)
    names = tuple(str(c) for c in range(classes))
    return DatasetBundle("random", "0", "image", split, split, split, names)


@pytest.fixture(scope="module")
def ctx() -> TrainContext:
    """A real training context for `Method.loss`; the CAT-KD loss does not read it."""
    student = Architecture("small_cnn", (("width", 4), ("depth", 1)))
    return TrainContext(
        random_bundle(4, (1, 8, 8), 2, 0), None, TrainBudget(1, 4, 1e-3), student, CPU, 0
    )


def grads(loss: torch.Tensor, tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, list(tensors), allow_unused=True, materialize_grads=True)


def authors_kd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float
) -> torch.Tensor:
    """Hinton et al.'s T²·KL(p_T ‖ p_S), summed over classes, averaged over the batch."""
    log_q = torch.log_softmax(student_logits / t, dim=1)
    log_p = torch.log_softmax(teacher_logits / t, dim=1)
    return t * t * (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


# --- CAT-KD -------------------------------------------------------------------------------------

# GzyAftermath/CAT-KD (Guo et al., CVPR 2023), commit 2657a680c7a627ebf49331ac592fc561b1026d9c:
# - tools/train.py with `if_test: True` (every CAT-KD configuration): both networks become their
#   `*_test` versions (mdistiller/models/cifar/resnet.py ResNet_test and the like), whose
#   classifier is `conv_test`, a bias-free 1×1 convolution on the last stage's output, followed
#   by average pooling; the teacher's conv_test weight is its trained fc weight viewed as
#   (K, C, 1, 1). The last entry of `feats` is therefore each network's CAMs.
# - mdistiller/distillers/CAT_KD.py, CAT_KD.forward_train: with IF_BINARIZE the teacher's CAMs
#   become 1 where the map minus (its L1 norm over positions / (h·w)) is positive, else 0;
#   CAT_loss average-pools both to (CAM_RESOLUTION, CAM_RESOLUTION) with adaptive_avg_pool2d,
#   applies F.normalize over dims (2, 3) when IF_NORMALIZE, and takes F.mse_loss (the mean);
#   the objective is CE_WEIGHT·CE + CAT_loss_weight·CAT_loss (onlyCAT drops the CE term).
# - mdistiller/engine/cfg.py: CAT_loss_weight 400, CE_WEIGHT 1, CAM_RESOLUTION 2,
#   IF_NORMALIZE True, IF_BINARIZE False.


def authors_cams(features: torch.Tensor, fc_weight: torch.Tensor) -> torch.Tensor:
    classes, channels = fc_weight.shape
    return F.conv2d(features, fc_weight.view(classes, channels, 1, 1))


def authors_binarise(tea: torch.Tensor) -> torch.Tensor:
    _, _, h, w = tea.shape
    threshold = torch.norm(tea, dim=(2, 3), keepdim=True, p=1) / (h * w)
    return F.relu(tea - threshold).bool() * torch.ones_like(tea)


def authors_cat_loss(
    stu: torch.Tensor, tea: torch.Tensor, resolution: int, normalise: bool
) -> torch.Tensor:
    stu = F.adaptive_avg_pool2d(stu, (resolution, resolution))
    tea = F.adaptive_avg_pool2d(tea, (resolution, resolution))
    if normalise:
        stu, tea = F.normalize(stu, dim=(2, 3)), F.normalize(tea, dim=(2, 3))
    return F.mse_loss(stu, tea)


def authors_cat_kd(
    student_features: torch.Tensor,
    student_fc: torch.Tensor,
    teacher_features: torch.Tensor,
    teacher_fc: torch.Tensor,
    y: torch.Tensor,
    config: dict,
) -> dict[str, torch.Tensor]:
    """The released objective; the student's logits are its pooled CAMs (no bias)."""
    stu = authors_cams(student_features, student_fc)
    tea = authors_cams(teacher_features, teacher_fc).detach()
    if config["binarise"]:
        tea = authors_binarise(tea)
    logits = stu.mean(dim=(2, 3))
    return {
        "ce": config["ce_weight"] * F.cross_entropy(logits, y),
        "cat": config["beta"]
        * authors_cat_loss(stu, tea, config["cam_resolution"], config["normalise"]),
    }


# (batch, classes, (student channels, H, W), (teacher channels, H, W))
CAT_SHAPES = [
    (2, 3, (4, 4, 4), (8, 2, 2)),  # digits: a 4×4 student block, a 2×2 ResNet stage
    (4, 10, (8, 8, 8), (16, 4, 4)),
    (3, 5, (6, 4, 4), (6, 8, 8)),  # the teacher's map is finer
    (5, 7, (3, 6, 5), (4, 3, 7)),  # not square, not divisible by the grid
]
CAT_CONFIGS = [
    # the released defaults (cfg.py)
    {"beta": 400.0, "ce_weight": 1.0, "cam_resolution": 2, "normalise": True, "binarise": False},
    # res32x4 → res8x4, and the other same-family CIFAR-100 pairs: no normalisation
    {"beta": 15.0, "ce_weight": 1.0, "cam_resolution": 2, "normalise": False, "binarise": False},
    # the ShuffleNet students: a 4×4 grid
    {"beta": 600.0, "ce_weight": 1.0, "cam_resolution": 4, "normalise": True, "binarise": False},
    # CAT alone with binarised teacher maps (configs/cifar100/CAT/CAT_Binarization)
    {"beta": 300.0, "ce_weight": 0.0, "cam_resolution": 2, "normalise": True, "binarise": True},
]


@pytest.mark.parametrize(("batch", "classes", "s_shape", "t_shape"), CAT_SHAPES)
@pytest.mark.parametrize("config", CAT_CONFIGS, ids=lambda c: f"beta{c['beta']:g}")
def test_cat_kd_terms_and_gradients_are_the_released_code(
    ctx: TrainContext,
    batch: int,
    classes: int,
    s_shape: tuple[int, int, int],
    t_shape: tuple[int, int, int],
    config: dict,
) -> None:
    generator = torch.Generator().manual_seed(batch * 10 + classes)
    s_features = F.relu(torch.randn(batch, *s_shape, dtype=DOUBLE, generator=generator))
    t_features = F.relu(torch.randn(batch, *t_shape, dtype=DOUBLE, generator=generator))
    s_features.requires_grad_(True)
    y = torch.randint(classes, (batch,), generator=generator)
    s_head = nn.Linear(s_shape[0], classes).to(DOUBLE)
    t_head = nn.Linear(t_shape[0], classes).to(DOUBLE)
    with torch.no_grad():
        s_head.weight.normal_(generator=generator)
        s_head.bias.zero_()  # the released student's classifier has no bias
        t_head.weight.normal_(generator=generator)

    method = ClassAttentionTransferKD(config)
    method.student_head, method.teacher_head = s_head, t_head
    ours = method.loss(
        Batch(torch.zeros(batch, 1, 1, 1), y, torch.arange(batch)),
        ModelOutput(s_head(s_features.mean(dim=(2, 3))), {"block": s_features}),
        ModelOutput(t_head(t_features.mean(dim=(2, 3))), {"layer3": t_features}),
        ctx,
    )
    theirs = authors_cat_kd(s_features, s_head.weight, t_features, t_head.weight, y, config)
    assert set(ours) == set(theirs)
    for name in theirs:
        assert_same(ours[name], theirs[name])
    assert_same(sum(ours.values()), sum(theirs.values()))
    # What CAT trains: the student's last feature map and its classifier's weights.
    trained = [s_features, s_head.weight]
    ours_grads, theirs_grads = grads(ours["cat"], trained), grads(theirs["cat"], trained)
    assert all(g.abs().max() > 0 for g in theirs_grads)
    for ours_g, theirs_g in zip(ours_grads, theirs_grads, strict=True):
        assert_same(ours_g, theirs_g, atol=1e-12)


def test_cat_kd_paper_defaults_are_the_released_defaults() -> None:
    assert ClassAttentionTransferKD.paper_defaults == CAT_CONFIGS[0]
    assert set(ClassAttentionTransferKD.defaults) == set(CAT_CONFIGS[0])


@pytest.mark.parametrize(("side", "resolution"), [(1, 2), (2, 4), (3, 4)])
def test_a_map_coarser_than_the_grid_is_spread_over_it_as_released(
    side: int, resolution: int
) -> None:
    """The stated rule for a grid finer than a map: the release's adaptive pooling, which copies
    each cell into the grid cells it overlaps (on an even ratio, a block repeat)."""
    generator = torch.Generator().manual_seed(side)
    coarse = torch.randn(3, 4, side, side, dtype=DOUBLE, generator=generator)
    fine = torch.randn(3, 4, 2 * resolution, 2 * resolution, dtype=DOUBLE, generator=generator)
    for normalise in (True, False):
        assert_same(
            cat_loss(fine, coarse, resolution, normalise),
            authors_cat_loss(fine, coarse, resolution, normalise),
        )
    if resolution % side == 0:
        spread = F.adaptive_avg_pool2d(coarse, (resolution, resolution))
        factor = resolution // side
        blocks = coarse.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
        assert_same(spread, blocks)


def test_binarise_is_the_released_threshold() -> None:
    generator = torch.Generator().manual_seed(3)
    cams = torch.randn(4, 6, 5, 3, dtype=DOUBLE, generator=generator)
    assert_same(binarise(cams), authors_binarise(cams))
    assert set(binarise(cams).unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize(
    ("model", "size", "shape"),
    [
        ("small_cnn", {"width": 4, "depth": 2}, (1, 8, 8)),
        ("small_cnn", {"width": 4, "depth": 4}, (3, 32, 32)),
        ("resnet", {"width": 4, "blocks": 1}, (1, 8, 8)),
        ("resnet", {"width": 4, "blocks": 2}, (3, 32, 32)),
    ],
)
def test_cams_of_the_registered_architectures_are_exact(
    model: str, size: dict, shape: tuple[int, int, int]
) -> None:
    """`head.weight` on the last conv stage's map is the released conv_test map: its spatial
    mean plus the head's bias is the network's logit, in train mode as in eval mode."""
    torch.manual_seed(0)
    network = build_model(model, shape, 6, **size).to(DOUBLE)
    x = torch.randn(5, *shape, dtype=DOUBLE)
    layer = last_conv_layer(network)
    for train in (True, False):
        network.train(train)
        with FeatureHooks(network, [layer]) as hooks:
            logits = network(x)
        head = linear_classifier(network)
        cams = class_activation_maps(hooks.features[layer], head)
        assert_same(cams, authors_cams(hooks.features[layer], head.weight))
        assert_same(cams.mean(dim=(2, 3)) + head.bias, logits)


# --- Jacobian matching --------------------------------------------------------------------------

# Srinivas & Fleuret, Knowledge Transfer with Jacobian Matching, ICML 2018 (arXiv:1803.00443).
# No code was released (Papers with Code lists none, none is indexed under the authors' names;
# the re-implementations we found are third parties'), so the oracle is the paper's
# distillation objective: a distillation loss plus
# λ·Σ_i ‖ ∇ₓT_i(x)/‖∇ₓT_i(x)‖₂ − ∇ₓS_i(x)/‖∇ₓS_i(x)‖₂ ‖₂², the squared L2 distance of the
# L2-normalised input Jacobians, here for one output i per image, the class the teacher
# predicts (our reading of the paper's experiments; only its abstract could be read here). It is
# written per image: one forward and one backward pass per sample, so each gradient is that
# sample's own Jacobian by construction. The distillation loss is Hinton's (α·CE + (1 − α)·T²·KL,
# our `kd` row).


def paper_jacobian(model: nn.Module, image: torch.Tensor, output: int) -> torch.Tensor:
    """∇ₓ model(x)_output for one image, differentiable in the model's weights."""
    x = image[None].clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(x)[0, output], x, create_graph=True)
    return gradient[0]


def paper_objective(
    student: nn.Module,
    teacher: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    alpha: float,
    temperature: float,
    lam: float,
) -> dict[str, torch.Tensor]:
    teacher_logits = teacher(x).detach()
    student_logits = student(x)
    penalties = []
    for image, output in zip(x, teacher_logits.argmax(dim=1).tolist(), strict=True):
        s_jac = paper_jacobian(student, image, output).flatten()
        t_jac = paper_jacobian(teacher, image, output).flatten().detach()
        penalties.append((s_jac / s_jac.norm() - t_jac / t_jac.norm()).square().sum())
    return {
        "ce": alpha * F.cross_entropy(student_logits, y),
        "kd": (1 - alpha) * authors_kd(student_logits, teacher_logits, temperature),
        "jacobian": lam * torch.stack(penalties).mean(),
    }


class ConvNet(nn.Module):
    """Conv, ReLU, average pool, a 1×1 conv and ReLU, global pool, linear: a non-linear map
    whose input gradient varies with the input; no batch norm, so samples never interact."""

    def __init__(self, in_channels: int, channels: int, pool: int, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(pool),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def float64_context(
    teacher: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor
) -> TrainContext:
    """A real TrainContext whose training split and teacher are float64 (bundles are float32
    by contract, so the split is replaced after construction); the teacher is the stand-in
    `TeacherPerImage` reads: its network and its training-split logits."""
    n, *shape = train_x.shape
    classes = int(train_y.max()) + 1
    bundle = random_bundle(n, shape, classes, 0)
    student = Architecture("small_cnn", (("width", 4), ("depth", 1)))
    with torch.no_grad():
        stand_in = SimpleNamespace(module=teacher, train_logits=teacher(train_x))
    ctx = TrainContext(bundle, stand_in, TrainBudget(1, n, 1e-3), student, CPU, 0)  # type: ignore[arg-type]
    ctx.x_train, ctx.y_train = train_x, train_y
    return ctx


# (images, channels, H×W, classes, (student width, pool), (teacher width, pool))
JACOBIAN_SHAPES = [
    (3, 1, (8, 8), 5, (4, 2), (6, 4)),
    (4, 3, (6, 10), 10, (5, 1), (3, 2)),
    (6, 2, (12, 12), 3, (3, 3), (8, 2)),
]


@pytest.mark.parametrize(
    ("batch", "channels", "size", "classes", "s_spec", "t_spec"), JACOBIAN_SHAPES
)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize(("alpha", "lam"), [(0.5, 1.0), (0.0, 10.0), (0.9, 0.1)])
def test_jacobian_kd_terms_and_gradients_are_the_papers(
    batch: int,
    channels: int,
    size: tuple[int, int],
    classes: int,
    s_spec: tuple[int, int],
    t_spec: tuple[int, int],
    temperature: float,
    alpha: float,
    lam: float,
) -> None:
    torch.manual_seed(batch)
    student = ConvNet(channels, *s_spec, classes).to(DOUBLE)
    teacher = ConvNet(channels, *t_spec, classes).to(DOUBLE).eval()
    generator = torch.Generator().manual_seed(batch + 1)
    train_x = torch.randn(2 * batch + 1, channels, *size, dtype=DOUBLE, generator=generator)
    train_y = torch.arange(len(train_x)) % classes
    index = torch.randperm(len(train_x), generator=generator)[:batch]
    y = train_y[index]

    # Ours, as training runs it: the teacher's gradients precomputed for the whole training
    # split, the batch's input made to require grad before the student's forward pass.
    method = JacobianMatchingKD({"alpha": alpha, "temperature": temperature, "lambda": lam})
    ctx = float64_context(teacher, train_x, train_y)
    method.teacher_gradients = TeacherPerImage(ctx, teacher_input_gradients)
    x = train_x[index].requires_grad_(True)
    ours = method.loss(
        Batch(x, y, index),
        ModelOutput(student(x)),
        ModelOutput(ctx.teacher.train_logits[index]),
        ctx,
    )
    theirs = paper_objective(student, teacher, train_x[index], y, alpha, temperature, lam)

    assert set(ours) == set(theirs)
    for name in theirs:
        assert_same(ours[name], theirs[name])
    assert_same(sum(ours.values()), sum(theirs.values()))
    # Double backpropagation: the penalty's gradient in the student's weights.
    weights = list(student.parameters())
    ours_grads, theirs_grads = grads(ours["jacobian"], weights), grads(theirs["jacobian"], weights)
    assert any(g.abs().max() > 0 for g in theirs_grads)
    for ours_g, theirs_g in zip(ours_grads, theirs_grads, strict=True):
        assert_same(ours_g, theirs_g, atol=1e-12)


def test_teacher_gradients_are_each_images_own_jacobian_of_its_predicted_class() -> None:
    torch.manual_seed(5)
    teacher = ConvNet(2, 4, 2, 7).to(DOUBLE).eval()
    train_x = torch.randn(9, 2, 6, 6, dtype=DOUBLE)
    ctx = float64_context(teacher, train_x, torch.arange(9) % 7)
    predicted = ctx.teacher.train_logits.argmax(dim=1)
    ours = teacher_input_gradients(teacher, train_x, predicted)
    predicted = predicted.tolist()
    theirs = torch.stack(
        [paper_jacobian(teacher, x, c) for x, c in zip(train_x, predicted, strict=True)]
    )
    assert_same(ours, theirs.detach())
    assert not any(p.grad is not None for p in teacher.parameters())  # weights untouched


def test_jacobian_matching_loss_is_two_minus_twice_the_cosine() -> None:
    """On unit vectors ‖a − b‖² = 2 − 2·cos(a, b): the penalty is e2kd's cosine loss, doubled,
    on input gradients instead of Grad-CAM maps; scale-free in either gradient."""
    generator = torch.Generator().manual_seed(2)
    a = torch.randn(5, 3, 4, 4, dtype=DOUBLE, generator=generator)
    b = torch.randn(5, 3, 4, 4, dtype=DOUBLE, generator=generator)
    cosine = F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)
    assert_same(jacobian_matching_loss(a, b), (2 - 2 * cosine).mean())
    assert_same(jacobian_matching_loss(7 * a, 0.1 * b), jacobian_matching_loss(a, b))


class BatchNormNet(nn.Module):
    """A student with batch norm, as the registered ones have."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(16, 5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason=(
        "departure from the paper's per-image Jacobian: in train mode batch norm couples the "
        "samples, so the gradient of the batch's summed scores (what jacobian_kd takes, in one "
        "backward pass) adds to each image's own Jacobian the other images' terms through the "
        "batch statistics, each O(1/batch) but together O(1). Measured on this randomly "
        "initialised batch-norm network: per image, ‖batched − own‖/‖own‖ is 0.15-0.25 on "
        "these 8 images, median 0.15 (max 0.21) on 64; in eval mode the two agree exactly."
    ),
)
def test_student_gradient_in_train_mode_is_each_images_own_jacobian() -> None:
    torch.manual_seed(1)
    student = BatchNormNet().to(DOUBLE).train()
    x = torch.randn(8, 1, 6, 6, dtype=DOUBLE).requires_grad_(True)
    explained = torch.arange(8) % 5
    logits = student(x)
    own = torch.stack(
        [
            torch.autograd.grad(logits[n, c], x, retain_graph=True)[0][n]
            for n, c in enumerate(explained.tolist())
        ]
    )
    batched = input_gradients(logits, x, explained, create_graph=False)
    assert_same(batched, own)


def test_student_gradient_in_eval_mode_is_each_images_own_jacobian() -> None:
    """The same network in eval mode: the batched gradient is exactly the per-image one."""
    torch.manual_seed(1)
    student = BatchNormNet().to(DOUBLE).eval()
    x = torch.randn(8, 1, 6, 6, dtype=DOUBLE).requires_grad_(True)
    explained = torch.arange(8) % 5
    own = torch.stack(
        [paper_jacobian(student, image, c) for image, c in zip(x, explained.tolist(), strict=True)]
    )
    batched = input_gradients(student(x), x, explained, create_graph=False)
    assert_same(batched, own.detach())


# --- training -----------------------------------------------------------------------------------


def tiny_run(
    tmp_path: Path, method: Method, inputs_seen: list[bool] | None = None
) -> tuple[nn.Module, TrainContext]:
    """A few steps of the shared loop on random 8×8 images, with a real (untrained) network
    teacher; returns the student and the context holding the loss history. `inputs_seen`, when
    given, collects whether each batch's input required grad when the loss read it."""
    bundle = random_bundle(48, (1, 8, 8), 3, 1)
    torch.manual_seed(0)
    teacher_net = build_model("resnet", (1, 8, 8), 3, width=4, blocks=1)
    spec = TeacherSpec("random", "0", "image", "resnet", {})
    teacher = NetworkTeacher(teacher_net, spec, bundle, CPU, {}, tmp_path)
    student = Architecture("small_cnn", (("width", 4), ("depth", 2)))
    ctx = TrainContext(bundle, teacher, TrainBudget(4, 16, 1e-2), student, CPU, seed=0)
    if inputs_seen is not None:
        loss = method.loss

        def recording_loss(batch: Batch, *args: object) -> dict[str, torch.Tensor]:
            inputs_seen.append(batch.x.requires_grad)
            return loss(batch, *args)

        method.loss = recording_loss  # type: ignore[method-assign]
    return method.fit(ctx), ctx


def test_cat_kd_trains_the_student_towards_the_teachers_cams(tmp_path: Path) -> None:
    """CAT alone (no CE): the loss falls, so the hooked layers and the teacher's own classifier
    are the ones compared, and the student's head receives the CAT gradient."""
    student, ctx = tiny_run(tmp_path, ClassAttentionTransferKD({"ce_weight": 0.0}))
    cat = ctx.history["loss/cat"]
    assert len(cat) == 4 and all(cat[i + 1] < cat[i] for i in range(3)), cat
    assert cat[-1] < 0.75 * cat[0], cat
    assert not student.training


def test_jacobian_kd_trains_through_the_input_gradient(tmp_path: Path) -> None:
    """With KD off and a large λ the penalty falls: the loop hands the loss an input that
    requires grad for this method, and for a method that does not ask, an input that does not."""
    seen: list[bool] = []
    _, ctx = tiny_run(tmp_path, JacobianMatchingKD({"alpha": 1.0, "lambda": 10.0}), seen)
    jacobian = ctx.history["loss/jacobian"]
    assert len(jacobian) == 4 and jacobian[-1] < jacobian[0], jacobian
    assert seen and all(seen)
    plain: list[bool] = []
    tiny_run(tmp_path / "plain", METHODS.get("kd")(), plain)
    assert plain and not any(plain)
