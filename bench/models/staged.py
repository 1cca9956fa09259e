"""The layout that methods, Grad-CAM and dissection read a convolutional network by."""

from __future__ import annotations

import torch
from torch import nn


class StagedNetwork(nn.Module):
    """Convolutional stages run in order, then `pool` (the penultimate embedding) and `head`.

    Each stage is a top-level child registered in forward order, so `bench.explain.gradcam.conv_stages`
    lists them and hooks on them see every stage's output; pooling and the classifier hold no
    convolution. A subclass adds its stages with `add_stage` and ends with `add_classifier`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stage_names: list[str] = []

    def add_stage(self, name: str, stage: nn.Module) -> None:
        self.add_module(name, stage)
        self.stage_names.append(name)

    def add_classifier(self, channels: int, num_classes: int) -> None:
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, num_classes)

    @property
    def last_conv_layer(self) -> str:
        return self.stage_names[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.head(self.pool(x))


def authors_initialisation(
    model: nn.Module, zero_classifier_bias: bool = False, classifier_std: float | None = None
) -> nn.Module:
    """`model` initialised as RepDistiller initialises its ResNets, WRNs and VGGs (models/resnet.py,
    wrn.py, vgg.py, commit b84f547c): convolutions He-normal over their fan-out (biases 0), batch
    norms at weight 1 and bias 0. The classifier keeps PyTorch's initialisation (the ResNets'),
    or its bias is 0 (`zero_classifier_bias`, the WRNs'), or its weights are normal with
    deviation `classifier_std` and its bias 0 (the VGGs', 0.01).

    PyTorch's default starts a convolution at a third of that variance (Kaiming-uniform with
    a = √5). The literature's accuracies come from its own start, so the standard architectures
    take it; the profile-sized `resnet` and `small_cnn` keep PyTorch's, and their runs and cached
    teachers with it.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    head = model.get_submodule("head")
    if zero_classifier_bias or classifier_std is not None:
        nn.init.zeros_(head.bias)
    if classifier_std is not None:
        nn.init.normal_(head.weight, 0.0, classifier_std)
    return model
