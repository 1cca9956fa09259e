"""Wide residual networks (Zagoruyko & Komodakis 2016) in the CIFAR layout of the distillation
literature (RepDistiller's models/wrn.py), in plain PyTorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.models import register_model
from bench.models.staged import StagedNetwork, authors_initialisation

BASE_WIDTH = 16


class WideBlock(nn.Module):
    """A pre-activation residual block: (BN-ReLU,) conv, BN-ReLU, conv, plus the shortcut.

    A block that keeps width and resolution normalises and activates its input itself and adds
    the raw input back. One that changes them reads only its input's activation (its shortcut
    is a 1x1 projection of it, as in the authors' block), so it takes that activation ready-made:
    the BN-ReLU ends the stage before, where it makes that stage's output post-activation.
    Dropout is left out: the distillation benchmarks train WRNs with a drop rate of 0.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.shortcut: nn.Conv2d | None = None
        self.bn1: nn.BatchNorm2d | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        else:
            self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is not None:  # x is already activated
            return self.shortcut(x) + self.conv2(F.relu(self.bn2(self.conv1(x))))
        return x + self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))


class WideResNet(StagedNetwork):
    """`stem` (a convolution), `layer1 .. layer3` (16k, 32k, 64k channels; the last two halve the
    resolution), `pool`, `head`; depth 6 * blocks + 4, widening factor k.

    The same function as the authors' network with its batch norms regrouped: the closing
    BN-ReLU ends `layer3`, and the BN-ReLU that opens a stage's first block (a projecting one)
    ends the stage before, so that every stage's output is activated and its pre-ReLU value is a
    batch norm's output, as in the other architectures. Those batch norms are the ones the
    authors' `get_bn_before_relu` names for OFD. The stem is therefore conv-BN-ReLU for k > 1;
    with k = 1 the first block of `layer1` keeps width and resolution, and the stem stays a bare
    convolution.
    """

    def __init__(self, in_channels: int, num_classes: int, blocks: int, widen: int) -> None:
        super().__init__()
        self.add_stage(
            "stem", nn.Sequential(nn.Conv2d(in_channels, BASE_WIDTH, 3, padding=1, bias=False))
        )
        channels = BASE_WIDTH
        for i, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2)), start=1):
            out = BASE_WIDTH * widen * mult
            first = WideBlock(channels, out, stride)
            if first.shortcut is not None:
                self.activate_last_stage(channels)
            rest = [WideBlock(out, out, 1) for _ in range(blocks - 1)]
            self.add_stage(f"layer{i}", nn.Sequential(first, *rest))
            channels = out
        self.activate_last_stage(channels)
        self.add_classifier(channels, num_classes)

    def activate_last_stage(self, channels: int) -> None:
        """End the last stage added so far with BN-ReLU."""
        self.get_submodule(self.stage_names[-1]).extend([nn.BatchNorm2d(channels), nn.ReLU()])


@register_model("wrn_16_2")
def build_wrn_16_2(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return authors_initialisation(
        WideResNet(input_shape[0], num_classes, blocks=2, widen=2), zero_classifier_bias=True
    )


@register_model("wrn_40_2")
def build_wrn_40_2(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return authors_initialisation(
        WideResNet(input_shape[0], num_classes, blocks=6, widen=2), zero_classifier_bias=True
    )
