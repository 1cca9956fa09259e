"""The soft-label manipulations of Han et al.'s dose–response claim, and their manipulation check."""

from __future__ import annotations

import numpy as np
import torch

from bench.core.budgets import Architecture, TrainBudget
from bench.data.bundle import DatasetBundle, Split
from bench.methods.kd_similarity import (
    ClassPermutedNonTargetKD,
    EntropyMatchedUniformKD,
    PermutedNonTargetKD,
    UniformNonTargetKD,
)
from bench.train.loop import TrainContext
from bench.train.method import METHODS, Batch
from bench.train.soft_labels import similarity_check

CLASSES = 6


def _batch(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, Batch]:
    generator = torch.Generator().manual_seed(seed)
    probabilities = torch.softmax(3 * torch.randn(n, CLASSES, generator=generator), dim=1)
    labels = torch.randint(0, CLASSES, (n,), generator=generator)
    return probabilities, Batch(torch.zeros(n, 2), labels, torch.arange(n))


def _context(labels: torch.Tensor, seed: int) -> TrainContext:
    x = np.zeros((len(labels), 2), dtype=np.float32)
    split = Split(x, labels.numpy().astype(np.int64))
    names = tuple(f"c{k}" for k in range(CLASSES))
    bundle = DatasetBundle("toy", "0", "tabular", split, split, split, names)
    return TrainContext(
        bundle, None, TrainBudget(1, 8, 1e-3), Architecture("mlp"), torch.device("cpu"), seed
    )


def assert_uniform_non_targets(targets: torch.Tensor, labels: torch.Tensor) -> None:
    """Each row a distribution whose non-target entries are all equal."""
    assert torch.allclose(targets.sum(dim=1), torch.ones(len(targets)), atol=1e-6)
    others = targets.clone()
    others[torch.arange(len(targets)), labels] = float("nan")
    spread = others.nan_to_num(0).amax(dim=1) - others.nan_to_num(1).amin(dim=1)
    assert spread.abs().max() < 1e-6


def test_uniform_targets_keep_the_target_probability_and_equalise_the_rest():
    probabilities, batch = _batch()
    targets = UniformNonTargetKD({}).soft_targets(probabilities, batch)
    rows = torch.arange(len(targets))
    assert torch.allclose(targets[rows, batch.y], probabilities[rows, batch.y])
    assert_uniform_non_targets(targets, batch.y)


def shuffled_targets(method, probabilities: torch.Tensor, batch: Batch) -> torch.Tensor:
    """`method`'s targets (prepared with seed 3), checked to be a shuffle of the non-targets."""
    method.prepare(_context(batch.y, seed=3))
    targets = method.soft_targets(probabilities, batch)
    rows = torch.arange(len(targets))
    assert torch.equal(targets[rows, batch.y], probabilities[rows, batch.y])
    assert torch.equal(targets.sort(dim=1).values, probabilities.sort(dim=1).values)
    return targets


def test_permuted_targets_are_a_fixed_per_sample_shuffle_of_the_non_targets():
    probabilities, batch = _batch()
    method = PermutedNonTargetKD({})
    targets = shuffled_targets(method, probabilities, batch)
    assert not torch.equal(targets, probabilities)
    # The same samples get the same shuffle at every epoch; another seed, another shuffle.
    assert torch.equal(method.soft_targets(probabilities, batch), targets)
    other = PermutedNonTargetKD({})
    other.prepare(_context(batch.y, seed=4))
    assert not torch.equal(other.soft_targets(probabilities, batch), targets)


def test_the_manipulation_check_sees_similarity_only_where_the_targets_carry_it():
    # Six classes: (shape, colour) over 3 shapes x 2 colours; targets that put mass on classes
    # sharing an attribute carry the similarity, their uniform version none.
    attributes = np.array([(s, c) for s in range(3) for c in range(2)])
    shared = (attributes[:, None] == attributes[None]).sum(axis=2).astype(float)
    labels = np.repeat(np.arange(CLASSES), 20)
    similar = shared[labels] + 0.05
    similar /= similar.sum(axis=1, keepdims=True)
    probabilities, batch = (
        torch.as_tensor(similar),
        Batch(torch.zeros(len(labels), 2), torch.as_tensor(labels), torch.arange(len(labels))),
    )
    uniform = UniformNonTargetKD({}).soft_targets(probabilities, batch).numpy()
    carried = similarity_check(similar, labels, attributes)
    erased = similarity_check(uniform, labels, attributes)
    assert carried["similarity_correlation"] > 0.99
    assert np.isnan(erased["similarity_correlation"])
    entropy = -(similar * np.log(similar)).sum(axis=1).mean()
    assert np.isclose(carried["soft_target_entropy"], entropy)
    assert set(similarity_check(similar, labels, None)) == {"soft_target_entropy"}


def test_the_temperature_sweep_is_kd_at_other_temperatures():
    for name, temperature in (("kd_temperature_1", 1.0), ("kd_temperature_8", 8.0)):
        method = METHODS.get(name)({})
        assert dict(method.params) == {**METHODS.get("kd").defaults, "temperature": temperature}
        assert type(method).loss is METHODS.get("kd").loss


def test_entropy_matched_targets_erase_the_similarity_and_keep_each_samples_entropy():
    probabilities, batch = _batch()
    targets = EntropyMatchedUniformKD({}).soft_targets(probabilities, batch)

    def entropy(p: torch.Tensor) -> torch.Tensor:
        return -torch.xlogy(p, p).sum(dim=1)

    assert torch.allclose(entropy(targets), entropy(probabilities), atol=1e-5)
    assert_uniform_non_targets(targets, batch.y)
    # Plain uniform targets raise the entropy wherever the non-targets were unequal.
    uniform = UniformNonTargetKD({}).soft_targets(probabilities, batch)
    assert (entropy(uniform) > entropy(probabilities) + 1e-3).float().mean() > 0.9


def test_class_permuted_targets_move_every_non_target_class_the_same_way_within_a_class():
    probabilities, batch = _batch()
    method = ClassPermutedNonTargetKD({})
    targets = shuffled_targets(method, probabilities, batch)
    for label, order in enumerate(method.order.tolist()):
        assert order[label] == label
        moved = [k for k in range(CLASSES) if k != label]
        assert all(order[k] != k for k in moved)  # a derangement of the non-targets
        same_class = batch.y == label
        assert torch.equal(targets[same_class], probabilities[same_class][:, order])


def test_the_manipulation_check_sees_no_true_similarity_after_either_control():
    attributes = np.array([(s, c) for s in range(3) for c in range(2)])
    shared = (attributes[:, None] == attributes[None]).sum(axis=2).astype(float)
    labels = np.repeat(np.arange(CLASSES), 20)
    similar = shared[labels] + 0.05
    similar /= similar.sum(axis=1, keepdims=True)
    probabilities = torch.as_tensor(similar)
    batch = Batch(torch.zeros(len(labels), 2), torch.as_tensor(labels), torch.arange(len(labels)))
    erased = EntropyMatchedUniformKD({}).soft_targets(probabilities, batch).numpy()
    assert np.isnan(similarity_check(erased, labels, attributes)["similarity_correlation"])
    scrambled = ClassPermutedNonTargetKD({})
    scrambled.prepare(_context(torch.as_tensor(labels), seed=0))
    kept = similarity_check(similar, labels, attributes)["similarity_correlation"]
    moved = scrambled.soft_targets(probabilities, batch).numpy()
    assert similarity_check(moved, labels, attributes)["similarity_correlation"] < kept - 0.5
