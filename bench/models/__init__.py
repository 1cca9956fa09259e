"""Network architectures for teachers and students, registered by name so profiles can pick them.

Every architecture names its intermediate layers as plain attributes (`hidden1`, `block2`,
`layer3`, ...) so that methods, Grad-CAM and dissection reach them through forward hooks by module
path instead of models rewritten to return features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from torch import nn

from bench.core.registry import Registry

# Rows per forward pass when a model is evaluated rather than trained (accuracy, logits, Grad-CAM).
EVAL_BATCH = 1024


class ModelBuilder(Protocol):
    def __call__(
        self, input_shape: tuple[int, ...], num_classes: int, **size: int
    ) -> nn.Module: ...


MODELS: Registry[ModelBuilder] = Registry("model")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    return MODELS.register(name)


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **size: int
) -> nn.Module:
    return MODELS.get(name)(input_shape, num_classes, **size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode for the block, its former mode restored after (also on an error).

    For probing and explaining a network that may be mid-training: batch norm then reads its
    running statistics and leaves them untouched.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
