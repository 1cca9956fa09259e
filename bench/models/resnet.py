"""CIFAR-style ResNets (He et al. 2016) in plain PyTorch: the image teacher sized by the profile, and
the fixed layouts of the CIFAR-100 distillation literature (RepDistiller's models/resnet.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.models import register_model
from bench.models.cnn import conv_bn_relu
from bench.models.staged import StagedNetwork, authors_initialisation


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(StagedNetwork):
    """`stem`, `layer1 .. layer3` (widths w, 2w, 4w; the last two halve the resolution), `head`.

    The stem is `stem_width` wide (w unless given): RepDistiller's resnet8x4 and resnet32x4 have a
    32-channel stem before stages of 64, 128 and 256, so their first stage opens with a projection.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int,
        blocks: int,
        stem_width: int | None = None,
    ) -> None:
        super().__init__()
        channels = width if stem_width is None else stem_width
        self.add_stage("stem", conv_bn_relu(in_channels, channels))
        for i, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2)), start=1):
            stage = [BasicBlock(channels, width * mult, stride)]
            stage += [BasicBlock(width * mult, width * mult, 1) for _ in range(blocks - 1)]
            self.add_stage(f"layer{i}", nn.Sequential(*stage))
            channels = width * mult
        self.add_classifier(channels, num_classes)


@register_model("resnet")
def build_resnet(
    input_shape: tuple[int, ...], num_classes: int, width: int = 16, blocks: int = 1
) -> nn.Module:
    """blocks=1 gives a ResNet-8, blocks=3 a ResNet-20 (CIFAR layouts)."""
    return ResNet(input_shape[0], num_classes, width=width, blocks=blocks)


# RepDistiller models/resnet.py: resnetN has a 16-channel stem and stages of 16, 32 and 64 channels,
# resnetNx4 a 32-channel stem and stages of 64, 128 and 256; N = 6 * blocks + 2.


@register_model("resnet20")
def build_resnet20(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return authors_initialisation(ResNet(input_shape[0], num_classes, width=16, blocks=3))


@register_model("resnet56")
def build_resnet56(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return authors_initialisation(ResNet(input_shape[0], num_classes, width=16, blocks=9))


@register_model("resnet110")
def build_resnet110(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return authors_initialisation(ResNet(input_shape[0], num_classes, width=16, blocks=18))


@register_model("resnet8x4")
def build_resnet8x4(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return authors_initialisation(
        ResNet(input_shape[0], num_classes, width=64, blocks=1, stem_width=32)
    )


@register_model("resnet32x4")
def build_resnet32x4(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return authors_initialisation(
        ResNet(input_shape[0], num_classes, width=64, blocks=5, stem_width=32)
    )
