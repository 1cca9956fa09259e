"""VGG networks with batch norm (Simonyan & Zisserman 2015) in the CIFAR layout of the
distillation literature (RepDistiller's models/vgg.py, `vgg8_bn` and `vgg13_bn`), in plain PyTorch:
five blocks of 3x3 convolutions and a single linear classifier."""

from __future__ import annotations

from torch import nn

from bench.models import register_model
from bench.models.staged import StagedNetwork, authors_initialisation

BLOCK_WIDTHS = (64, 128, 256, 512, 512)
# The authors pool between the fourth and fifth blocks on inputs of this height only.
POOL_LAST_HEIGHT = 64


class VGG(StagedNetwork):
    """`block1 .. block5` (64, 128, 256, 512, 512 channels), each `convs` conv-BN-ReLU layers,
    then `pool` and `head`.

    Blocks 2 to 4 open with a 2x2 max-pooling, block 5 too on 64-pixel-high inputs, as the
    authors' network pools: on 32x32 inputs the blocks run at 32, 16, 8, 4 and 4. A block opens
    with the pooling instead of the block before ending with it so that each stage's output is
    the map the authors take as that block's feature, before pooling. The convolutions keep their
    biases, as theirs do.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, convs: int) -> None:
        super().__init__()
        pooled = {2, 3, 4} | ({5} if input_shape[1] == POOL_LAST_HEIGHT else set())
        channels = input_shape[0]
        for i, width in enumerate(BLOCK_WIDTHS, start=1):
            block = nn.Sequential(nn.MaxPool2d(2)) if i in pooled else nn.Sequential()
            for _ in range(convs):
                block.extend(
                    [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
                )
                channels = width
            self.add_stage(f"block{i}", block)
        self.add_classifier(channels, num_classes)


@register_model("vgg8")
def build_vgg8(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """RepDistiller's cfg 'S': one convolution a block."""
    return authors_initialisation(VGG(input_shape, num_classes, convs=1), classifier_std=0.01)


@register_model("vgg13")
def build_vgg13(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """RepDistiller's cfg 'B': two convolutions a block."""
    return authors_initialisation(VGG(input_shape, num_classes, convs=2), classifier_std=0.01)
