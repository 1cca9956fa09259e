"""What a method is handed and returns: its batches, the models' outputs, and what a teacher can do.

A leaf module: the training loop, the teachers, the explainers and the methods import it, and it
imports none of them, so that none of those has to import another that imports it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    import lightgbm as lgb


@dataclass(frozen=True)
class Contributions:
    """`values[n, c, f]`: feature f's contribution to class c's raw score on sample n."""

    values: np.ndarray
    bias: np.ndarray  # (samples, classes): the expected raw score the contributions start from

    def for_targets(self, targets: np.ndarray) -> np.ndarray:
        """One explanation per sample, for that sample's target class: (samples, features)."""
        return self.values[np.arange(len(targets)), targets]

    def raw_scores(self) -> np.ndarray:
        return self.values.sum(axis=2) + self.bias


@dataclass
class Batch:
    """A minibatch of the training split; `index` locates its rows for precomputed teacher outputs.

    `augmented`: the images were cropped and flipped (`TrainBudget.crop_padding`), so anything
    computed once from the training split's images (teacher logits, features, maps) belongs to
    other images; teachers and methods then compute it from `x`.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    augmented: bool = False


@dataclass
class ModelOutput:
    """Logits plus the intermediate activations of the layers the method asked to hook."""

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)


class TeacherModel(Protocol):
    """What a distillation method may ask of its teacher (`bench.train.teachers` implements it).

    Which kind of teacher it is shows in what it declares, never in which attributes it happens
    to have: a network has a `module`, whose layers `outputs` can hook; a tree ensemble has a
    `booster` and TreeSHAP `contributions`. Each kind declares the other's as None.
    """

    num_classes: int
    # The teacher's logits on the training split, on the device, computed once.
    train_logits: torch.Tensor
    module: nn.Module | None
    booster: lgb.Booster | None

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Logits for any rows or images, as float32 (samples, classes)."""
        ...

    def outputs(self, batch: Batch, layers: list[str]) -> ModelOutput:
        """The teacher's logits on a training batch, and the features of `layers` (networks)."""
        ...

    def contributions(self, x: np.ndarray) -> Contributions | None:
        """TreeSHAP of every class's centred score (`bench.explain.treeshap`); None for a network."""
        ...
