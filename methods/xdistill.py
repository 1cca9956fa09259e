"""XDistillation (Alharbi et al. 2021), in our reading of its abstract (DESIGN §5)."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.errors import BenchError
from bench.core.parameters import MIXING_FRACTION
from bench.models.cnn import conv_bn_relu
from bench.train.feature_losses import (
    TeacherPerImage,
    feature_shapes,
    last_conv_layer,
    match_spatial,
    teacher_grad_cam,
)
from bench.train.loop import TrainContext
from bench.train.method import Batch, Method, ModelOutput, register_method


class Concat(nn.Module):
    """Channel-wise concatenation, a module of its own so that Grad-CAM and dissection can hook it."""

    def forward(self, *maps: torch.Tensor) -> torch.Tensor:
        return torch.cat(maps, dim=1)


class FusedStudent(nn.Module):
    """The standard student's convolutional trunk and the autoencoder's encoder, fused.

    Both see the input; the encoder's code is resized to the trunk's last feature map, the two are
    concatenated (`fuse`) and a global-pool + linear classifier reads the result. This is the
    network that is scored: a single module from input to logits.
    """

    def __init__(
        self, trunk: nn.Module, encoder: nn.Module, channels: int, num_classes: int
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.encoder = encoder
        self.fuse = Concat()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, num_classes)

    @property
    def last_conv_layer(self) -> str:
        return "fuse"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.trunk(x)
        code = match_spatial(self.encoder(x), features.shape[-2:])
        return self.head(self.pool(self.fuse(features, code)))

    def attach_decoder(self, decoder: nn.Module) -> None:
        """Keep XDistillation's trained decoder as this student's own explainer.

        Held outside the module tree, so neither counted in the student's parameters nor saved in
        its state: it explains the student's predictions and takes no part in them. So `.to()`,
        `.train()` and Quantus' layer randomisation do not reach it either: it is scored where it
        was trained, and `own` cannot be a profile's Quantus explainer (`ExplanationBudget`).
        """
        object.__setattr__(self, "explanation_decoder", decoder)

    @property
    def explains_itself(self) -> bool:
        """Whether a decoder is attached (`xdistill_arch` trains none: Grad-CAM explains it)."""
        return "explanation_decoder" in self.__dict__

    def own_explanation(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's map of each input, (samples, H, W) in [0, 1]. One map per input: the
        decoder learnt the teacher's Grad-CAM of the class the teacher predicts, so it does not
        take a target class. In eval mode, as every explained network (`.eval()` of the student
        does not reach the decoder)."""
        return self.__dict__["explanation_decoder"].eval()(self.encoder(x))


class MapDecoder(nn.Module):
    """The autoencoder's decoder: the encoder's code to a map in [0, 1] at the input resolution."""

    def __init__(self, width: int, size: Sequence[int]) -> None:
        super().__init__()
        self.size = tuple(size)
        self.body = nn.Sequential(conv_bn_relu(width, width), nn.Conv2d(width, 1, kernel_size=1))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(match_spatial(code, self.size)))[:, 0]


def strip_classifier(student: nn.Module) -> nn.Module:
    """The student up to its last feature map: its `pool` and `head` replaced by identities."""
    for part in ("pool", "head"):
        if not isinstance(getattr(student, part, None), nn.Module):
            raise BenchError(
                f"xdistill fuses features before the classifier and needs a student with `pool` "
                f"and `head` modules; {type(student).__name__} has no {part!r}"
            )
        setattr(student, part, nn.Identity())
    return student


def peak_normalised_grad_cam(
    teacher: nn.Module, x: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """The teacher's Grad-CAM (`teacher_grad_cam`) divided by its peak: the decoder's sigmoid
    target, in [0, 1]."""
    maps = teacher_grad_cam(teacher, x, classes)
    return maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


@register_method("xdistill")
class XDistillation(Method):
    """CE + KD + γ·MSE: an autoencoder learns the teacher's Grad-CAM; its code feeds the classifier.

    Our reading of the paper's abstract (DESIGN §5), not of its text: arXiv:2111.06945 lists a
    full text, which this implementation has not been checked against, and no code was released;
    tests/test_authors_existing.py checks the code against that reading. A small convolutional
    autoencoder maps the input to the teacher's Grad-CAM of its predicted class (upsampled to the input size and scaled to a maximum of 1 per sample); its encoder
    features are concatenated with the student's last feature map before the classifier; student
    and autoencoder train jointly with α·CE + (1−α)·T²·KL (our `kd` defaults) + γ·MSE(decoded
    map, teacher map). The encoder is part of the scored student, so it has more parameters
    than the standard one. The decoder, restored to the student's best epoch, is kept as the
    student's own explainer: the explainer `own` scores its maps (the paper's explanations), where
    every other network is explained by Grad-CAM; it is not counted among the parameters.
    """

    family = "explanation"
    modalities = frozenset({"image"})
    defaults = {"alpha": 0.5, "temperature": 4.0, "gamma": 1.0, "ae_width": 8}
    ranges = MIXING_FRACTION
    citation = (
        "Alharbi, Vu and Thai, Learning Interpretation with Explainable Knowledge Distillation, "
        "IEEE BigData 2021, arXiv:2111.06945 (implemented from its abstract, as read in DESIGN §5)."
    )

    def fit(self, ctx: TrainContext) -> nn.Module:
        self.teacher_maps = TeacherPerImage(ctx, peak_normalised_grad_cam)
        student = super().fit(ctx)
        student.attach_decoder(self.decoder)
        return student

    def build_student(self, ctx: TrainContext) -> nn.Module:
        student = ctx.default_student()
        layer = last_conv_layer(student)
        trunk_channels = feature_shapes(student, [layer], ctx.x_train[:2])[layer][1]
        width = self.params["ae_width"]
        in_channels = ctx.bundle.input_shape[0]
        encoder = nn.Sequential(
            conv_bn_relu(in_channels, width), nn.MaxPool2d(2), conv_bn_relu(width, width)
        )
        num_classes = ctx.bundle.num_classes
        return FusedStudent(strip_classifier(student), encoder, trunk_channels + width, num_classes)

    def student_layers(self, student: nn.Module) -> Sequence[str]:
        return ["encoder"]

    def trainable_modules(self, student: nn.Module, ctx: TrainContext) -> nn.Module:
        self.decoder = MapDecoder(self.params["ae_width"], ctx.x_train.shape[-2:])
        return self.decoder

    def loss(
        self, batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        decoded = self.decoder(student_out.features["encoder"])
        return {
            **self.hinton_terms(student_out.logits, teacher_out.logits, batch.y),
            "reconstruction": self.params["gamma"]
            * F.mse_loss(decoded, self.teacher_maps(batch, teacher_out)),
        }
