"""Network dissection: planted detectors are found, noise is not, and the streamed tally is exact."""

from __future__ import annotations

import gc
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.data import DATASETS, DatasetBundle, DatasetLoaderOptions, Split
from bench.datasets.concept_shapes import CLASS_NAMES, generate_scenes, make_probe
from bench.dissection import (
    Concept,
    ConceptProbe,
    default_layer,
    dissect,
    unit_thresholds,
)
from bench.hooks import FeatureHooks
from bench.metrics import METRICS, ScoringContext
from bench.metrics.dissection import _results, dissection_of, dissection_summary
from bench.models.cnn import SmallCNN
from bench.models.resnet import ResNet
from bench.training import network_logits
from tests.conftest import read_records

SIDE = 20


def planted_probe(n: int = 100) -> ConceptProbe:
    """Images whose channel 0 is the mask of a small 'spot' concept and channel 1 is noise.

    The spot covers 50 images x 4 pixels = 0.5 % of the probe's pixels, so a unit equal to channel
    0 has exactly the spot as its top 0.5 %: its IoU with the spot must be 1.
    """
    rng = np.random.default_rng(0)
    spot = np.full((n, SIDE, SIDE), -1, dtype=np.int8)
    for i in range(n // 2):
        y, x = rng.integers(0, SIDE - 2, size=2)
        spot[i, y : y + 2, x : x + 2] = 0
    ground = np.zeros((n, SIDE, SIDE), dtype=np.int8)
    ground[:, :, SIDE // 2 :] = 1
    images = np.zeros((n, 3, SIDE, SIDE), dtype=np.float32)
    images[:, 0] = spot == 0
    images[:, 1] = rng.random((n, SIDE, SIDE))
    images[:, 2] = ground
    return ConceptProbe(
        images=images,
        label_maps={"spot": spot, "ground": ground},
        concept_names={"spot": ("spot",), "ground": ("left", "right")},
        version="planted-1",
    )


def channel_picker() -> nn.Module:
    """A 1x1 convolution whose unit 0 copies input channel 0 and unit 1 input channel 1."""
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0
        conv.weight[1, 1] = 1.0
    return nn.Sequential(OrderedDict(features=conv))


class Network:
    """A network seen through the `Scorable` interface the scoring context expects."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module.eval()
        self.device = torch.device("cpu")
        self.n_params = sum(p.numel() for p in module.parameters())

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        return network_logits(self.module, x, self.device)


def small_random_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 6, 3, stride=2, padding=1),
            relu=nn.ReLU(),
            conv2=nn.Conv2d(6, 8, 3, padding=1),
        )
    ).eval()


def test_planted_unit_is_found_with_iou_one_and_noise_unit_is_not_a_detector():
    probe = planted_probe()
    result = dissect(channel_picker(), probe, layer="features", batch_size=16)
    spot = probe.concepts.index(Concept("spot", "spot"))
    assert result.best_concept[0] == spot
    assert result.iou[0, spot] == pytest.approx(1.0)
    assert result.best_iou[1] < 0.04
    assert result.is_detector.tolist() == [True, False]
    assert result.detectors == 1
    assert result.unique_concepts == 1
    assert result.detectors_per_category == {"spot": 1, "ground": 0}
    assert result.unit_labels() == [(0, "spot/spot", pytest.approx(1.0))]


def activations(model: nn.Module, probe: ConceptProbe, batch_size: int) -> torch.Tensor:
    """All of a probe's conv2 activations in memory, computed in the same batches as the tally.

    Convolutions round differently in the last bit for different batch sizes; computing the
    reference in the same batches makes the comparison exact rather than approximate.
    """
    parts = []
    with FeatureHooks(model, ["conv2"]) as hooks, torch.no_grad():
        for start in range(0, len(probe), batch_size):
            model(torch.as_tensor(probe.images[start : start + batch_size]))
            parts.append(hooks.features["conv2"])
    return torch.cat(parts)


def per_unit(acts: torch.Tensor) -> np.ndarray:
    return acts.numpy().transpose(1, 0, 2, 3).reshape(acts.shape[1], -1).astype(np.float64)


def test_streamed_tally_equals_exact_in_memory_computation():
    probe = make_probe(60)
    model = small_random_net()
    result = dissect(model, probe, layer="conv2", batch_size=7)

    # Exact: every activation in memory, np.quantile, direct set operations per unit and concept.
    acts = activations(model, probe, batch_size=7)
    thresholds = np.quantile(per_unit(acts), 1 - 0.005, axis=1)
    np.testing.assert_allclose(result.thresholds, thresholds, rtol=1e-6)

    upsampled = F.interpolate(acts, size=(32, 32), mode="bilinear").numpy()
    binary = upsampled > result.thresholds[None, :, None, None]
    expected = np.zeros_like(result.iou)
    for k, concept in enumerate(probe.concepts):
        names = probe.concept_names[concept.category]
        mask = probe.label_maps[concept.category] == names.index(concept.name)
        for u in range(binary.shape[1]):
            union = (binary[:, u] | mask).sum()
            expected[u, k] = (binary[:, u] & mask).sum() / union if union else 0.0
    np.testing.assert_allclose(result.iou, expected, rtol=1e-12, atol=1e-12)
    assert expected.max() > 0  # the comparison is not between two zero matrices


@pytest.mark.parametrize("batch_size", [1, 13, 40])
def test_threshold_is_the_quantile_whatever_the_batch_size(batch_size):
    probe = make_probe(40)
    model = small_random_net()
    acts = per_unit(activations(model, probe, batch_size))
    thresholds = unit_thresholds(model, probe, "conv2", batch_size=batch_size).numpy()
    np.testing.assert_allclose(thresholds, np.quantile(acts, 0.995, axis=1), rtol=1e-6)
    # "The value that the top 0.5 % exceed": at most 0.5 % lie above it and at least 0.5 % at or
    # above it (ReLU zeros make ties), up to one activation.
    one = 1 / acts.shape[1]
    assert np.all((acts > thresholds[:, None]).mean(axis=1) <= 0.005 + one)
    assert np.all((acts >= thresholds[:, None]).mean(axis=1) >= 0.005 - one)


def test_dissection_records_settings_and_keeps_the_training_mode():
    probe = make_probe(20)
    model = small_random_net().train()
    result = dissect(model, probe, layer="conv2")
    assert model.training
    assert result.settings.as_dict() == {
        "layer": "conv2",
        "quantile": 0.005,
        "iou_threshold": 0.04,
        "probe_version": probe.version,
        "probe_size": 20,
        "mask_shape": [32, 32],
        "upsample": "bilinear",
    }
    assert result.iou.shape == (8, len(probe.concepts)) == (8, 20)


def test_default_layer_is_the_last_conv_block():
    assert default_layer(SmallCNN(3, 4, width=4, depth=2)) == "block2"
    assert default_layer(ResNet(3, 4, width=4, blocks=1)) == "layer3"
    assert default_layer(small_random_net()) == "conv2"


def test_dissection_metrics_share_one_computation_per_scored_model():
    scenes = generate_scenes(64, 5)
    split = Split(scenes.images, scenes.labels)
    bundle = DatasetBundle(
        name="tiny_shapes",
        version="1",
        modality="image",
        train=split,
        val=split,
        test=split,
        class_names=CLASS_NAMES,
        extras={"concept_probe": make_probe(30)},
    )
    torch.manual_seed(0)
    predictor = Network(SmallCNN(3, 16, width=4, depth=2))
    ctx = ScoringContext(bundle, predictor, predictor, 0.0, 16)
    names = [n for n in METRICS.names() if METRICS.get(n).category == "dissection"]
    for name in names:
        metric = METRICS.get(name)
        assert metric.modalities == {"image"}
        assert metric.applies_to(ctx)
    values = {n: METRICS.get(n).compute(ctx) for n in names}
    result = dissection_of(ctx)
    assert dissection_of(ctx) is result
    assert values["concept_detectors"] == result.detectors
    assert values["unique_concepts"] == result.unique_concepts
    for category in ("shape", "colour", "texture", "background"):
        assert values[f"detectors_{category}"] == result.detectors_per_category[category]
    assert sum(values[f"detectors_{c}"] for c in result.categories) == result.detectors
    assert set(names) >= {"concept_detectors", "unique_concepts", "detectors_shape"}
    assert METRICS.get("concept_detectors").higher_is_better
    assert result.settings.layer == "block2"
    summary = dissection_summary(ctx)
    assert (
        summary["layer"] == "block2"
        and summary["probe_version"] == bundle.extras["concept_probe"].version
    )
    assert summary["units"] == 8 and len(summary["detectors"]) == result.detectors
    assert [d["unit"] for d in summary["detectors"]] == [u for u, _, _ in result.unit_labels()]
    del ctx
    gc.collect()
    assert not _results  # the cached result leaves with its context


def test_dissection_metrics_do_not_apply_without_a_probe():
    scenes = generate_scenes(32, 6)
    split = Split(scenes.images, scenes.labels)
    bundle = DatasetBundle("no_probe", "1", "image", split, split, split, CLASS_NAMES)
    ctx = ScoringContext(bundle, Network(SmallCNN(3, 16, width=4, depth=2)), None, 0.0, 8)
    for name in ("concept_detectors", "detectors_colour"):
        assert not METRICS.get(name).applies_to(ctx)


def test_suite_records_dissection_of_teacher_and_students_on_concept_shapes(cli, tmp_path):
    result = cli(
        "run", "--profile", "smoke", "--dataset", "concept_shapes",
        "--method", "scratch", "kd", "--results", tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.err
    records = read_records(tmp_path)
    rows = {path.split("/")[2]: record for path, record in records.items()}
    assert set(rows) == {"teacher", "random_explainer", "scratch", "kd"}
    probe_version = (
        DATASETS.get("concept_shapes").load(DatasetLoaderOptions()).extras["concept_probe"].version
    )
    for row in ("teacher", "scratch", "kd"):
        record = rows[row]
        summary = record["dissection"]
        assert summary["probe_version"] == probe_version and summary["probe_size"] == 500
        assert summary["layer"] == ("layer3" if row == "teacher" else "block2")
        assert record["metrics"]["concept_detectors"] == len(summary["detectors"])
        # Smoke widths: the ResNet's layer3 has 4 x 8 channels, the CNN's block2 2 x 8.
        assert summary["units"] == (32 if row == "teacher" else 16)
        assert all(d["iou"] >= summary["iou_threshold"] for d in summary["detectors"])
        assert record["metric_metadata"]["concept_detectors"]["higher_is_better"] is True
    assert rows["random_explainer"]["dissection"] is None
