"""Class attention transfer based knowledge distillation, CAT-KD (Guo et al. 2023)."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.errors import BenchError
from bench.train.feature_losses import last_conv_layer, network_teacher
from bench.train.loop import TrainContext
from bench.train.method import Batch, Method, ModelOutput, register_method


def linear_classifier(model: nn.Module) -> nn.Linear:
    """The `head` of a model whose last convolutional stage feeds `pool` and then `head`.

    The registered student and teacher architectures end `last_conv_layer → pool (global
    average) → head (Linear)`, so the head's weights applied at every position of the last
    feature map are the model's class activation maps, exactly (`class_activation_maps`). A
    network whose classifier is more than that (`digit_recognizer_cnn`) is refused.
    """
    head, pool = getattr(model, "head", None), getattr(model, "pool", None)
    if not isinstance(head, nn.Linear) or not is_global_average(pool):
        raise BenchError(
            f"cat_kd reads class activation maps through a global-average `pool` and a Linear "
            f"`head`; {type(model).__name__} has no such classifier"
        )
    return head


def is_global_average(pool: object) -> bool:
    """Whether `pool` averages each channel over the whole map and flattens, nothing else: a
    classifier behind anything more (a dense layer: `bench.models.digit_recognizer`) reads no
    class activation maps."""
    return (
        isinstance(pool, nn.Sequential)
        and len(pool) == 2
        and isinstance(pool[0], nn.AdaptiveAvgPool2d)
        and pool[0].output_size in (1, (1, 1))
        and isinstance(pool[1], nn.Flatten)
    )


def class_activation_maps(features: torch.Tensor, classifier: nn.Linear) -> torch.Tensor:
    """Zhou et al. 2016: CAM_k = Σ_c W_kc · A_c at every position, shape (N, K, H, W).

    The classifier as a 1×1 convolution, without its bias. Global average pooling commutes with
    it, so a CAM's spatial mean plus the bias is the class's logit: the maps say where each
    class's evidence lies, for every class, not only the predicted one.
    """
    return torch.einsum("nchw,kc->nkhw", features, classifier.weight)


def binarise(cams: torch.Tensor) -> torch.Tensor:
    """1 where a CAM exceeds its own mean absolute value, else 0 (the release's IF_BINARIZE).

    A step function: no gradient flows through it, which is why only the teacher's maps are
    binarised.
    """
    threshold = cams.abs().mean(dim=(2, 3), keepdim=True)
    return (cams > threshold).to(cams.dtype)


def cat_loss(
    student_cams: torch.Tensor, teacher_cams: torch.Tensor, resolution: int, normalise: bool
) -> torch.Tensor:
    """Mean squared difference of the two CAMs average-pooled to resolution × resolution.

    With `normalise`, each class's pooled map is first divided by its L2 norm over positions, so
    the student matches where the teacher's evidence for a class lies, not how strong it is.
    Pooling is adaptive average pooling, as released, in both directions: a map coarser than the
    grid is spread over it, each cell copied into the grid cells it overlaps (nearest-neighbour,
    no interpolation). The registered pairs never need this (their maps are at least 2×2, the
    default grid); the rule keeps `cam_resolution` meaning the same grid for every pair instead
    of silently lowering it to the coarsest map.
    """
    grid = (resolution, resolution)
    student = F.adaptive_avg_pool2d(student_cams, grid)
    teacher = F.adaptive_avg_pool2d(teacher_cams, grid)
    if normalise:
        student, teacher = F.normalize(student, dim=(2, 3)), F.normalize(teacher, dim=(2, 3))
    return F.mse_loss(student, teacher)


@register_method("cat_kd")
class ClassAttentionTransferKD(Method):
    """ce_weight·CE + β·MSE(pool(CAM_S), pool(CAM_T)): match every class's activation map.

    A class activation map (CAM) applies the classifier's weights at each position of the last
    feature map: it says which regions carry evidence for each class. Guo et al. find that
    transferring these maps alone (no logits, no labels) already trains a student, and that the
    position of class evidence, more than its strength, is what transfers (binarised teacher
    maps still teach); average-pooling to a 2×2 grid keeps the coarse layout and drops detail a
    smaller student cannot reproduce. We read `head.weight` as the 1×1 convolution of the released code, which
    is exact for both registered architectures (`class_activation_maps`).

    Defaults are the released framework's (GzyAftermath/CAT-KD, `mdistiller/engine/cfg.py`): β =
    400, CE weight 1, a 2×2 grid, normalised maps, no binarisation. The released CIFAR-100
    configurations (`configs/cifar100/CAT_KD/*.yaml`) tune β per pair: without normalisation and β
    from 0.7 to 15 for teacher and student of one family (res56→res20 0.7, res32x4→res8x4 15), with
    normalisation and β from 15 to 600 (grid 4 for ShuffleNets) across families; ours are across
    families (ResNet → plain CNN). Kept after a check on validation accuracy (never test): best
    validation accuracy on digits (default profile, seeds 0–2, three teachers; `python -m bench run
    --dataset digits --method cat_kd --set cat_kd.beta=B`, the maximum of the record's
    `training.history.val_accuracy`; mean ± standard deviation over seeds): β = 4: 0.9688 ± 0.0092,
    40: 0.9734 ± 0.0106, 400: 0.9699 ± 0.0140 (kd 0.9745 ± 0.0040, scratch 0.9745 ± 0.0087). By the
    rule of `at` (the largest β within one standard error of the paired difference from the best),
    400 stays: 400 − 40 is −0.0035 with a standard error of 0.0053. At β = 400 the CAT term is ~110
    after the first epoch and ~10 at the last (CE ~2.0); the release's README advises a β that puts
    it at 1–50 after the first epoch, which β = 40 does (~11), at no measurable gain.

    Departures from the release (`mdistiller/distillers/CAT_KD.py` and the `*_test` models of
    `mdistiller/models/cifar/`): (1) the released student replaces its classifier with a
    bias-free 1×1 convolution before pooling; ours keeps its Linear head and bias. The CAMs and
    the loss are the same (the bias is not part of a CAM), the student has K more parameters.
    (2) The option to transfer only some classes' maps (IF_OnlyTransferPartialCAMs, an ablation
    off in every CAT-KD configuration) is not offered.
    """

    family = "explanation"
    modalities = frozenset({"image"})
    defaults = {
        "beta": 400.0,
        "ce_weight": 1.0,
        "cam_resolution": 2,
        "normalise": True,
        "binarise": False,
    }
    paper_defaults = {
        "beta": 400.0,
        "ce_weight": 1.0,
        "cam_resolution": 2,
        "normalise": True,
        "binarise": False,
    }
    citation = (
        "Guo, Yan, Li and Lin, Class Attention Transfer Based Knowledge Distillation, "
        "CVPR 2023, arXiv:2304.12777."
    )

    def build_student(self, ctx: TrainContext) -> nn.Module:
        student = super().build_student(ctx)
        teacher = network_teacher(ctx)
        self.student_head = linear_classifier(student)
        self.teacher_head = linear_classifier(teacher)
        return student

    def student_layers(self, student: nn.Module) -> Sequence[str]:
        return [last_conv_layer(student)]

    def teacher_layers(self, teacher: nn.Module) -> Sequence[str]:
        return [last_conv_layer(teacher)]

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        (student_features,) = student_out.features.values()
        (teacher_features,) = teacher_out.features.values()
        student_cams = class_activation_maps(student_features, self.student_head)
        with torch.no_grad():
            teacher_cams = class_activation_maps(teacher_features, self.teacher_head)
            if self.params["binarise"]:
                teacher_cams = binarise(teacher_cams)
        transfer = cat_loss(
            student_cams, teacher_cams, self.params["cam_resolution"], self.params["normalise"]
        )
        return {
            "ce": self.params["ce_weight"] * F.cross_entropy(student_out.logits, batch.y),
            "cat": self.params["beta"] * transfer,
        }
