"""ShuffleNet V1 (Zhang et al. 2018) in the CIFAR layout of the distillation literature
(RepDistiller's models/ShuffleNetv1.py, `ShuffleV1`), in plain PyTorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.models import register_model
from bench.models.staged import StagedNetwork

STEM_WIDTH = 24
GROUPS = 3
# (output channels, units) of each stage; the first unit of each halves the resolution.
STAGES = ((240, 4), (480, 8), (960, 4))


class ChannelShuffle(nn.Module):
    """Interleave the channels of `groups` groups, so the next group convolution mixes them."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """1x1 group conv-BN-ReLU, channel shuffle, 3x3 depthwise conv-BN-ReLU, 1x1 group conv-BN,
    then the ReLU of its sum with the input; a unit of stride 2 concatenates the input, 3x3
    average-pooled, instead, so its own branch is narrower by the input's width.

    `in_groups` groups the first convolution: the network's first unit, on the narrow stem, has
    one group, as in the paper and the authors' code. The ReLU after the depthwise convolution
    is the authors' (the paper has none there).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, groups: int, in_groups: int
    ) -> None:
        super().__init__()
        branch = out_channels - in_channels if stride == 2 else out_channels
        mid = branch // 4
        self.conv1 = nn.Conv2d(in_channels, mid, 1, groups=in_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle = ChannelShuffle(in_groups)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, branch, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch)
        self.shortcut: nn.AvgPool2d | None = None
        if stride == 2:
            self.shortcut = nn.AvgPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle(F.relu(self.bn1(self.conv1(x))))
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        if self.shortcut is None:
            return F.relu(out + x)
        return F.relu(torch.cat([out, self.shortcut(x)], dim=1))


class ShuffleNetV1(StagedNetwork):
    """`stem` (1x1 conv-BN-ReLU, 24 channels), `layer1 .. layer3` (240, 480, 960 channels, each
    halving the resolution), `pool`, `head`; three groups."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.add_stage(
            "stem",
            nn.Sequential(
                nn.Conv2d(in_channels, STEM_WIDTH, 1, bias=False),
                nn.BatchNorm2d(STEM_WIDTH),
                nn.ReLU(),
            ),
        )
        channels = STEM_WIDTH
        for i, (out, units) in enumerate(STAGES, start=1):
            in_groups = 1 if i == 1 else GROUPS
            stage = [ShuffleUnit(channels, out, 2, GROUPS, in_groups)]
            stage += [ShuffleUnit(out, out, 1, GROUPS, GROUPS) for _ in range(units - 1)]
            self.add_stage(f"layer{i}", nn.Sequential(*stage))
            channels = out
        self.add_classifier(channels, num_classes)


@register_model("shufflenetv1")
def build_shufflenetv1(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return ShuffleNetV1(input_shape[0], num_classes)
