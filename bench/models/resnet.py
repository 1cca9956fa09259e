"""The image teacher: a CIFAR-style ResNet (He et al. 2016) in plain PyTorch, sized by the profile."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.models import register_model
from bench.models.cnn import conv_bn_relu


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


class ResNet(nn.Module):
    """`stem`, `layer1 .. layer3` (widths w, 2w, 4w; the last two halve the resolution), `head`."""

    def __init__(self, in_channels: int, num_classes: int, width: int, blocks: int) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, width)
        channels = width
        self.layer_names: list[str] = []
        for i, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2)), start=1):
            stage = [BasicBlock(channels, width * mult, stride)]
            stage += [BasicBlock(width * mult, width * mult, 1) for _ in range(blocks - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            self.layer_names.append(f"layer{i}")
            channels = width * mult
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, num_classes)

    @property
    def last_conv_layer(self) -> str:
        return self.layer_names[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.layer_names:
            x = getattr(self, name)(x)
        return self.head(self.pool(x))


@register_model("resnet")
def build_resnet(
    input_shape: tuple[int, ...], num_classes: int, width: int = 16, blocks: int = 1
) -> nn.Module:
    """blocks=1 gives a ResNet-8, blocks=3 a ResNet-20 (CIFAR layouts)."""
    return ResNet(input_shape[0], num_classes, width=width, blocks=blocks)
