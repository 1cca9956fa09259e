"""Pieces shared by the image distillation methods: stages and their pairing, resizing, attention
maps, the teacher's Grad-CAM maps and the penultimate embedding.

Each is written once here and used by several methods (FitNets, attention transfer, NST, VID, OFD,
ReviewKD, the relational methods, e2KD, XDistillation), so that two methods comparing "the same"
map really compute the same thing.
Layers are found by module path, as everywhere in the harness: the registered architectures name
their convolutional stages as top-level children in forward order (`block1 .. blockN`;
`stem, layer1 .. layer3`) and name the last one `last_conv_layer`. Grad-CAM is taken where
`bench.explain.gradcam.gradcam_layer` says, for training as for scoring.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.errors import BenchError
from bench.explain.gradcam import conv_stages as conv_stages  # re-exported for the methods
from bench.explain.gradcam import grad_cam_maps, gradcam_layer
from bench.explain.gradcam import last_conv_layer as last_conv_layer
from bench.models import eval_mode
from bench.models.hooks import FeatureHooks
from bench.train.loop import TrainContext
from bench.train.losses import at_least_float32, relation_precision
from bench.train.method import Batch, Method, ModelOutput


@torch.no_grad()
def feature_shapes(
    model: nn.Module, layers: Sequence[str], sample: torch.Tensor
) -> dict[str, torch.Size]:
    """Output shapes (batch dimension included) of `layers` on `sample`, found by one forward pass.

    Run in eval mode so that probing leaves batch-norm statistics untouched.
    """
    with eval_mode(model), FeatureHooks(model, layers) as hooks:
        model(sample)
        return {layer: hooks.features[layer].shape for layer in layers}


def match_spatial(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize an (N, C, H, W) tensor to `size`: average-pool when shrinking, bilinear otherwise.

    Pooling keeps the total of a finer map's cells in each coarse cell (up to the area factor),
    which is what comparing a fine map with a coarse one should mean; bilinear upsampling is what
    Grad-CAM implementations use to bring a map to the input resolution.
    """
    height, width = int(size[0]), int(size[1])
    if tuple(x.shape[-2:]) == (height, width):
        return x
    if x.shape[-2] >= height and x.shape[-1] >= width:
        return F.adaptive_avg_pool2d(x, (height, width))
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


def coarser_grid(*maps: torch.Tensor) -> torch.Size:
    """The (H, W) of whichever map has the fewest cells: where maps of two resolutions meet.

    RepDistiller's feature losses pool the finer of two square maps to the coarser side before
    comparing them; the grid with fewer cells is that side for square maps and also serves the
    non-square ones.
    """
    return min((m.shape[-2:] for m in maps), key=lambda hw: hw.numel())


def on_coarser_grid(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both maps on the `coarser_grid` of the two, the finer one average-pooled to it."""
    size = coarser_grid(a, b)
    return match_spatial(a, size), match_spatial(b, size)


def attention_map(features: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
    """Zagoruyko & Komodakis 2017: Q = vec(Σ_c A_c²) / ‖vec(Σ_c A_c²)‖₂, shape (N, H·W).

    The paper's F_sum^p with p = 2. When `size` is given the (N, H, W) map is resized to it before
    flattening, so that layers of different resolutions can be compared (the paper pairs layers of
    equal resolution only; the resizing is ours).
    """
    energy = features.pow(2).sum(dim=1, keepdim=True)
    if size is not None:
        energy = match_spatial(energy, size)
    return F.normalize(energy.flatten(1), dim=1)


def attention_transfer_loss(
    student_features: torch.Tensor, teacher_features: torch.Tensor
) -> torch.Tensor:
    """Mean squared difference of the two normalised attention maps, over batch and positions.

    The paper's Eq. 2 writes ‖Q_S/‖Q_S‖ − Q_T/‖Q_T‖‖_p with p = 2 and says β is "divided by the
    number of elements in the attention map and batch size"; its public code squares the
    difference and averages, which is what this does (β is applied by the method). Maps of
    different resolutions are compared on the coarser grid.
    """
    size = coarser_grid(student_features, teacher_features)
    difference = attention_map(student_features, size) - attention_map(teacher_features, size)
    return difference.pow(2).mean()


def paired_stages(student: nn.Module, teacher: nn.Module) -> list[tuple[str, str]]:
    """The last k stages of each network, paired in order, k the smaller stage count.

    Attention transfer's paper (and RepDistiller for NST and VID) pairs the outputs of the
    residual groups of two networks with equally many groups; counting from the output end pairs
    the deepest, most semantic layers when the counts differ.
    """
    s_stages, t_stages = conv_stages(student), conv_stages(teacher)
    k = min(len(s_stages), len(t_stages))
    return list(zip(s_stages[-k:], t_stages[-k:], strict=True))


def network_teacher(ctx: TrainContext) -> nn.Module:
    """The teacher's network, for methods that read its layers; tree teachers have none."""
    module = ctx.teacher.module if ctx.teacher is not None else None
    if module is None:
        raise BenchError("this method needs a network teacher (image datasets); found none")
    return module


class PairedStagesMethod(Method):
    """A method that compares the student's and the teacher's `paired_stages`, one pair a term.

    It finds the pairs once the student is built and hooks both sides of each (attention
    transfer, NST, VID, ReviewKD); `self.pairs` holds them, student layer first.
    """

    def build_student(self, ctx: TrainContext) -> nn.Module:
        student = super().build_student(ctx)
        self.pairs = paired_stages(student, network_teacher(ctx))
        return student

    def student_layers(self, student: nn.Module) -> Sequence[str]:
        return [s for s, _ in self.pairs]

    def teacher_layers(self, teacher: nn.Module) -> Sequence[str]:
        return [t for _, t in self.pairs]


PerImage = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class TeacherPerImage:
    """A fixed function of the teacher per training image and its predicted class (its Grad-CAM,
    its input gradient), as the methods that train on one read it for a batch.

    Without augmentation it is computed once over the training split and looked up by index:
    the teacher is frozen, so these are exactly the values a live teacher gives per batch. On an
    augmented batch a stored value would belong to the un-augmented image, so it is computed
    from the batch's own images and the teacher's prediction on them.
    `compute(teacher, x, classes)` returns one detached value per image.
    """

    def __init__(self, ctx: TrainContext, compute: PerImage) -> None:
        self.teacher = network_teacher(ctx)
        self.compute = compute
        self.table: torch.Tensor | None = None
        if not ctx.budget.augments:
            predicted = ctx.teacher.train_logits.argmax(dim=1)
            self.table = compute(self.teacher, ctx.x_train, predicted)

    def __call__(self, batch: Batch, teacher_out: ModelOutput) -> torch.Tensor:
        if self.table is not None and not batch.augmented:
            return self.table[batch.index]
        return self.compute(self.teacher, batch.x, teacher_out.logits.argmax(dim=1))


def teacher_grad_cam(teacher: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The teacher's Grad-CAM of `classes` for images `x`, (N, H, W) at input resolution
    (bilinear upsampling), where `bench.explain.gradcam` takes it."""
    layer = gradcam_layer(teacher, x.shape[1:])
    maps = grad_cam_maps(teacher, layer, x, classes)
    return match_spatial(maps[:, None], x.shape[-2:])[:, 0]


# The penultimate embedding that RKD and PKT distil (RepDistiller's `feat[-1]`, mdistiller's
# `pooled_feat`): the registered image architectures pool their last stage into the (N, D)
# features their linear `head` reads in a child called `pool`. On an architecture without one
# the hooks fail with the list of valid layer names.
EMBEDDING_LAYER = "pool"


class BatchRelationMethod(Method):
    """A method that matches relations among a batch's samples at one layer of each network
    (RKD, SP, PKT): cross-entropy plus the terms of `relations`.

    `relations` receives both layers' outputs flattened to (N, D) and in float32 even under a
    float16 autocast (a GPU profile): a Gram or distance matrix of half-precision activations
    can overflow or cancel to noise. `relation_layer` names the layer, by default the pooled
    penultimate embedding (`EMBEDDING_LAYER`).
    """

    def relation_layer(self, model: nn.Module) -> str:
        return EMBEDDING_LAYER

    def student_layers(self, student: nn.Module) -> Sequence[str]:
        return [self.relation_layer(student)]

    def teacher_layers(self, teacher: nn.Module) -> Sequence[str]:
        return [self.relation_layer(teacher)]

    def relations(self, student: torch.Tensor, teacher: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted relation terms of (N, D) student and teacher features."""
        raise NotImplementedError

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        (student,) = student_out.features.values()
        (teacher,) = teacher_out.features.values()
        with relation_precision(student.device):
            wide_student = at_least_float32(student.flatten(1))
            wide_teacher = at_least_float32(teacher.flatten(1))
            terms = self.relations(wide_student, wide_teacher)
        return {"ce": F.cross_entropy(student_out.logits, batch.y), **terms}
