"""Shared pieces of the tests that compare our losses with the authors' released code."""

from __future__ import annotations

import numpy as np
import torch

from bench.core.budgets import Architecture, TrainBudget
from bench.data.bundle import DatasetBundle, Split
from bench.train.loop import TrainContext
from bench.train.method import Batch, Method, ModelOutput

# Every comparison with an author's formula is made in float64 and must agree to this relative
# tolerance; an absolute one is allowed only where exact zeros occur.
RTOL = 1e-6


def random_logits(
    batch_size: int, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student logits, teacher logits (sharper, as a trained teacher's are) and labels, in
    float64 from a fixed generator."""
    generator = torch.Generator().manual_seed(seed)
    student = 2.0 * torch.randn(batch_size, num_classes, generator=generator, dtype=torch.float64)
    teacher = 5.0 * torch.randn(batch_size, num_classes, generator=generator, dtype=torch.float64)
    labels = torch.randint(num_classes, (batch_size,), generator=generator)
    return student, teacher, labels


def logit_terms(
    method: Method, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """A logit method's loss terms for these logits, called as the training loop calls it (a
    logit method reads no input and no training context)."""
    batch = Batch(
        torch.zeros(len(labels), 1, dtype=torch.float64), labels, torch.arange(len(labels))
    )
    return method.loss(batch, ModelOutput(student), ModelOutput(teacher), ctx=None)  # type: ignore[arg-type]


def image_context() -> TrainContext:
    """A real training context of four random 8×8 images, for `Method.loss` of methods that read
    none of it but the signature needs one (no teacher: the tests pass its outputs directly)."""
    rng = np.random.default_rng(0)
    split = Split(rng.random((4, 1, 8, 8), dtype=np.float32), np.arange(4) % 2)
    bundle = DatasetBundle("random", "0", "image", split, split, split, ("a", "b"))
    student = Architecture("small_cnn", (("width", 4), ("depth", 1)))
    return TrainContext(bundle, None, TrainBudget(1, 4, 1e-3), student, torch.device("cpu"), 0)


def assert_same(ours: torch.Tensor, theirs: torch.Tensor, atol: float = 0.0) -> None:
    """Equal to `RTOL` relative, both in float64; `atol` only where exact zeros occur."""
    assert ours.dtype == theirs.dtype == torch.float64
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=atol)


def epoch_context(num_epochs: int, epoch: int) -> TrainContext:
    """A real context on a two-sample image dataset, at 0-based `epoch` of `num_epochs` (for
    the methods whose loss follows a schedule over the epochs)."""
    split = Split(np.zeros((2, 1, 2, 2), dtype=np.float32), np.array([0, 1]))
    bundle = DatasetBundle("toy", "1", "image", split, split, split, ("a", "b"))
    budget = TrainBudget(epochs=num_epochs, batch_size=64, lr=1e-3)
    ctx = TrainContext(bundle, None, budget, Architecture("cnn"), torch.device("cpu"), seed=0)
    ctx.epoch = epoch
    return ctx
