"""The tabular student: a plain ReLU MLP with named hidden layers."""

from __future__ import annotations

import torch
from torch import nn

from bench.models import register_model


class MLP(nn.Module):
    """`hidden1 .. hiddenN` (Linear + ReLU each), then `head`; the default tabular student."""

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.hidden_names: list[str] = []
        width = in_features
        for i, size in enumerate(hidden, start=1):
            name = f"hidden{i}"
            self.add_module(name, nn.Sequential(nn.Linear(width, size), nn.ReLU()))
            self.hidden_names.append(name)
            width = size
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.hidden_names:
            x = getattr(self, name)(x)
        return self.head(x)


@register_model("mlp")
def build_mlp(
    input_shape: tuple[int, ...], num_classes: int, width: int = 64, depth: int = 2
) -> nn.Module:
    (in_features,) = input_shape
    return MLP(in_features, num_classes, hidden=(width,) * depth)
