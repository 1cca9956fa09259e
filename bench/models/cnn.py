"""The image student: a narrow, shallow CNN with named convolutional blocks."""

from __future__ import annotations

import torch
from torch import nn

from bench.models import register_model


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class SmallCNN(nn.Module):
    """`block1 .. blockN` (conv-BN-ReLU, each but the last halving the resolution), `pool`, `head`.

    The last block keeps its resolution so that Grad-CAM and dissection see the finest map the
    student has; `last_conv_layer` names it for them.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, depth: int) -> None:
        super().__init__()
        self.block_names: list[str] = []
        channels = in_channels
        for i in range(1, depth + 1):
            out = width * 2 ** (i - 1)
            block = conv_bn_relu(channels, out)
            if i < depth:
                block.append(nn.MaxPool2d(2))
            self.add_module(f"block{i}", block)
            self.block_names.append(f"block{i}")
            channels = out
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, num_classes)

    @property
    def last_conv_layer(self) -> str:
        return self.block_names[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.block_names:
            x = getattr(self, name)(x)
        return self.head(self.pool(x))


@register_model("small_cnn")
def build_small_cnn(
    input_shape: tuple[int, ...], num_classes: int, width: int = 16, depth: int = 2
) -> nn.Module:
    return SmallCNN(input_shape[0], num_classes, width=width, depth=depth)
