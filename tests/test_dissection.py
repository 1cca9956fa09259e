"""Network dissection: planted detectors are found, noise is not, and the streamed tally is exact.

Also the detector rule (strictly above the IoU threshold, as NetDissect), the threshold sweep and
the mean best IoU, and what the suite records of them.
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.data.bundle import DATASETS, DatasetBundle, DatasetLoaderOptions, Split
from bench.data.probes import QUANTILE, Concept, ConceptProbe
from bench.datasets.concept_shapes import (
    CLASS_NAMES,
    N_PROBE,
    PROBE_QUANTILE,
    generate_scenes,
    make_probe,
)
from bench.explain.dissection import (
    IOU_THRESHOLD,
    SWEEP_THRESHOLDS,
    DissectionResult,
    DissectionSettings,
    default_layer,
    dissect,
    unit_thresholds,
)
from bench.metrics import METRICS, ScoringContext
from bench.metrics.dissection import (
    _results,
    dissection_of,
    dissection_summary,
    sweep_metric_name,
)
from bench.models.cnn import SmallCNN
from bench.models.hooks import FeatureHooks
from bench.models.resnet import ResNet
from bench.train.loop import network_logits
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
    assert result.settings.quantile == QUANTILE  # a probe without its own gets NetDissect's
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


@pytest.mark.parametrize("quantile", [None, QUANTILE])
def test_streamed_tally_equals_exact_in_memory_computation(quantile):
    """On the concept_shapes probe (parts included), at its own quantile and at NetDissect's."""
    probe = make_probe(60)
    model = small_random_net()
    result = dissect(model, probe, layer="conv2", batch_size=7, quantile=quantile)
    level = probe.quantile if quantile is None else quantile
    assert result.settings.quantile == level

    # Exact: every activation in memory, np.quantile, direct set operations per unit and concept.
    acts = activations(model, probe, batch_size=7)
    thresholds = np.quantile(per_unit(acts), 1 - level, axis=1)
    np.testing.assert_allclose(result.thresholds, thresholds, rtol=1e-6)

    upsampled = F.interpolate(acts, size=(32, 32), mode="bilinear").numpy()
    binary = upsampled > result.thresholds[None, :, None, None]
    expected = np.zeros_like(result.iou)
    concept_area = np.zeros(len(probe.concepts))
    for k, concept in enumerate(probe.concepts):
        names = probe.concept_names[concept.category]
        mask = probe.label_maps[concept.category] == names.index(concept.name)
        concept_area[k] = mask.mean()
        for u in range(binary.shape[1]):
            union = (binary[:, u] | mask).sum()
            expected[u, k] = (binary[:, u] & mask).sum() / union if union else 0.0
    np.testing.assert_allclose(result.iou, expected, rtol=1e-12, atol=1e-12)
    assert expected.max() > 0  # the comparison is not between two zero matrices
    assert {c.category for c in probe.concepts} >= {"part"}
    np.testing.assert_allclose(result.unit_area, binary.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(result.concept_area, concept_area, rtol=1e-12)

    # The views of the result agree with a recount from the exact IoUs.
    best = expected.max(axis=1)
    assert result.detectors == int((best > IOU_THRESHOLD).sum())
    assert result.sweep() == {t: int((best > t).sum()) for t in SWEEP_THRESHOLDS}
    assert result.mean_best_iou == pytest.approx(best.mean(), abs=1e-12)
    assert result.median_best_iou == pytest.approx(np.median(best), abs=1e-12)


@pytest.mark.parametrize("quantile", [0.005, 0.01])
@pytest.mark.parametrize("batch_size", [1, 13, 40])
def test_threshold_is_the_quantile_whatever_the_batch_size(batch_size, quantile):
    probe = make_probe(40)
    model = small_random_net()
    acts = per_unit(activations(model, probe, batch_size))
    thresholds = unit_thresholds(
        model, probe, "conv2", quantile=quantile, batch_size=batch_size
    ).numpy()
    np.testing.assert_allclose(thresholds, np.quantile(acts, 1 - quantile, axis=1), rtol=1e-6)
    # "The value that the top q exceed": at most a share q lies above it and at least q at or
    # above it (ReLU zeros make ties), up to one activation.
    one = 1 / acts.shape[1]
    assert np.all((acts > thresholds[:, None]).mean(axis=1) <= quantile + one)
    assert np.all((acts >= thresholds[:, None]).mean(axis=1) >= quantile - one)


def test_dissection_records_settings_and_keeps_the_training_mode():
    probe = make_probe(20)
    model = small_random_net().train()
    result = dissect(model, probe, layer="conv2")
    assert model.training
    assert result.settings.as_dict() == {
        "layer": "conv2",
        "quantile": PROBE_QUANTILE,  # the probe's own, not NetDissect's 0.005
        "iou_threshold": 0.04,
        "detector_rule": "best IoU > iou_threshold",
        "sweep_thresholds": [0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10],
        "probe_version": probe.version,
        "probe_size": 20,
        "mask_shape": [32, 32],
        "upsample": "bilinear",
    }
    assert result.iou.shape == (8, len(probe.concepts)) == (8, 31)
    assert dissect(model, probe, layer="conv2", quantile=0.005).settings.quantile == 0.005


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
    for category in ("shape", "part", "colour", "texture", "background"):
        assert values[f"detectors_{category}"] == result.detectors_per_category[category]
    assert sum(values[f"detectors_{c}"] for c in result.categories) == result.detectors
    assert values["mean_best_iou"] == pytest.approx(result.best_iou.mean())
    assert values["median_best_iou"] == pytest.approx(np.median(result.best_iou))
    sweep = result.sweep()
    for threshold in SWEEP_THRESHOLDS:
        name = "concept_detectors" if threshold == 0.04 else sweep_metric_name(threshold)
        assert values[name] == sweep[threshold]
        assert METRICS.get(name).settings["iou_threshold"] == threshold
    assert sweep_metric_name(0.05) == "concept_detectors_iou005"
    assert sweep_metric_name(0.1) == "concept_detectors_iou010"
    assert "concept_detectors_iou004" not in names  # that count is concept_detectors
    assert set(names) >= {
        "concept_detectors",
        "unique_concepts",
        "detectors_shape",
        "detectors_part",
        "mean_best_iou",
        "concept_detectors_iou005",
    }
    assert METRICS.get("concept_detectors").higher_is_better
    assert METRICS.get("mean_best_iou").higher_is_better
    assert result.settings.layer == "block2"
    summary = dissection_summary(ctx)
    assert (
        summary["layer"] == "block2"
        and summary["probe_version"] == bundle.extras["concept_probe"].version
    )
    assert summary["units"] == 8 and len(summary["detectors"]) == result.detectors
    assert [d["unit"] for d in summary["detectors"]] == [u for u, _, _ in result.unit_labels()]
    assert summary["iou_sweep"] == {f"{t:.2f}": n for t, n in sweep.items()}
    assert summary["mean_best_iou"] == pytest.approx(result.mean_best_iou, abs=1e-4)
    assert len(summary["best_iou"]) == 8
    assert 0 < summary["unit_area_median"] < summary["concept_area_median"] < 1
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
    assert set(rows) >= {"teacher", "random_explainer", "scratch", "kd"}
    probe_version = (
        DATASETS.get("concept_shapes").load(DatasetLoaderOptions()).extras["concept_probe"].version
    )
    for row in ("teacher", "scratch", "kd"):
        record = rows[row]
        summary = record["dissection"]
        assert summary["probe_version"] == probe_version and summary["probe_size"] == N_PROBE
        assert summary["quantile"] == PROBE_QUANTILE
        assert summary["layer"] == ("layer3" if row == "teacher" else "block2")
        metrics = record["metrics"]
        assert metrics["concept_detectors"] == len(summary["detectors"])
        # Smoke widths: the ResNet's layer3 has 4 x 8 channels, the CNN's block2 2 x 8.
        assert summary["units"] == (32 if row == "teacher" else 16) == len(summary["best_iou"])
        assert all(d["iou"] > summary["iou_threshold"] for d in summary["detectors"])
        assert record["metric_metadata"]["concept_detectors"]["higher_is_better"] is True
        # The sweep never increases with the threshold, and its numbers are metrics too.
        counts = list(summary["iou_sweep"].values())
        assert counts == sorted(counts, reverse=True)
        assert summary["iou_sweep"]["0.04"] == metrics["concept_detectors"]
        assert summary["iou_sweep"]["0.05"] == metrics["concept_detectors_iou005"]
        assert metrics["mean_best_iou"] == pytest.approx(summary["mean_best_iou"], abs=1e-4)
        assert metrics["mean_best_iou"] == pytest.approx(np.mean(summary["best_iou"]), abs=1e-4)
        assert record["metric_metadata"]["mean_best_iou"]["category"] == "dissection"
        # The areas that bound every IoU are recorded (smoke networks, which learn colours
        # only, make every unit a colour detector well above 0.04).
        assert 0 < summary["unit_area_median"] < summary["concept_area_median"]
    assert rows["random_explainer"]["dissection"] is None
    # The randomly initialised student, where the suite scores one as a control row: on the same
    # probe at the same threshold, not every unit is a detector (4 of 16 when measured).
    untrained = rows.get("untrained_student", {}).get("dissection")
    if untrained is not None:
        assert len(untrained["detectors"]) < untrained["units"] / 2


def halo_probe(n: int = 100) -> ConceptProbe:
    """Channel 0 paints a 2x2 spot in half the images; the only object concept is a 10x10 'halo'
    around each spot, 25 times its area, so a unit copying channel 0 has IoU exactly 4/100."""
    rng = np.random.default_rng(1)
    halo = np.full((n, SIDE, SIDE), -1, dtype=np.int8)
    images = np.zeros((n, 3, SIDE, SIDE), dtype=np.float32)
    for i in range(n // 2):
        y, x = rng.integers(0, SIDE - 10, size=2)
        halo[i, y : y + 10, x : x + 10] = 0
        dy, dx = rng.integers(0, 9, size=2)
        images[i, 0, y + dy : y + dy + 2, x + dx : x + dx + 2] = 1.0
    images[:, 1] = rng.random((n, SIDE, SIDE))
    return ConceptProbe(
        images=images,
        label_maps={"object": halo},
        concept_names={"object": ("halo",)},
        version="halo-1",
    )


def test_a_unit_exactly_at_the_threshold_is_not_a_detector():
    """NetDissect counts `iou > 0.04`; at exactly 0.04 a unit is not a detector."""
    result = dissect(channel_picker(), halo_probe(), layer="features", batch_size=16)
    assert result.iou[0, 0] == 0.04  # 200 spot pixels over 5 000 halo pixels, exactly
    assert result.best_iou[0] == IOU_THRESHOLD
    assert not result.is_detector[0]
    assert result.detectors == 0 and result.unit_labels() == []
    assert result.detectors_at(0.039) == 1 and result.detectors_at(0.04) == 0
    assert result.sweep()[0.03] == 1 and result.sweep()[0.04] == 0


def synthetic_result(best: np.ndarray, threshold: float = IOU_THRESHOLD) -> DissectionResult:
    """A result whose unit u has IoU best[u] with concept u % 3 and 0 with the others."""
    iou = np.zeros((len(best), 3))
    iou[np.arange(len(best)), np.arange(len(best)) % 3] = best
    return DissectionResult(
        settings=DissectionSettings(layer="x", iou_threshold=threshold),
        concepts=(Concept("a", "p"), Concept("a", "q"), Concept("b", "r")),
        categories=("a", "b"),
        thresholds=np.zeros(len(best)),
        iou=iou,
    )


def test_sweep_never_increases_with_the_threshold_and_counts_strictly_above_each():
    rng = np.random.default_rng(3)
    # Values exactly at every sweep threshold, and a spread around them.
    best = np.concatenate([np.array(SWEEP_THRESHOLDS), rng.uniform(0, 0.15, size=200)])
    result = synthetic_result(best)
    sweep = result.sweep()
    assert list(sweep) == list(SWEEP_THRESHOLDS)
    counts = list(sweep.values())
    assert counts == sorted(counts, reverse=True)
    for threshold, count in sweep.items():
        assert count == int((best > threshold).sum())
    assert sweep[0.04] == result.detectors
    assert result.mean_best_iou == pytest.approx(best.mean())
    assert result.median_best_iou == pytest.approx(np.median(best))
    assert result.summary()["iou_sweep"]["0.05"] == sweep[0.05]
    # The summary is JSON-safe even where areas were not measured.
    assert result.summary()["unit_area_median"] is None


def test_detector_count_follows_the_settings_threshold():
    best = np.array([0.02, 0.04, 0.05, 0.0500001, 0.2])
    assert synthetic_result(best, 0.04).detectors == 3
    assert synthetic_result(best, 0.05).detectors == 2  # Han et al.'s threshold, strictly


def count_forward_calls(model: nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_one_forward_pass_serves_both_passes_and_equals_running_the_model_twice(monkeypatch):
    """The kept activations are read back by the tally; past `KEEP_BYTES` the model runs again,
    with the same result."""
    probe = make_probe(60)
    model = small_random_net()
    calls = count_forward_calls(model)
    kept = dissect(model, probe, layer="conv2", batch_size=7)
    assert calls[0] == 9  # ceil(60 / 7) batches, once
    monkeypatch.setattr("bench.explain.dissection.KEEP_BYTES", 0)
    calls[0] = 0
    rerun = dissect(model, probe, layer="conv2", batch_size=7)
    assert calls[0] == 18
    np.testing.assert_array_equal(kept.thresholds, rerun.thresholds)
    np.testing.assert_array_equal(kept.iou, rerun.iou)
    np.testing.assert_array_equal(kept.unit_area, rerun.unit_area)
    assert kept.iou.max() > 0


class RepeatingProbe:
    """A probe whose batches name every concept of its first layer twice (a copy of the layer
    appended), as Broden's overlapping mask layers may: a pixel must still count once."""

    def __init__(self, probe: ConceptProbe) -> None:
        self.probe, self.version = probe, probe.version
        self.concepts, self.categories = probe.concepts, probe.categories
        self.mask_shape, self.quantile = probe.mask_shape, probe.quantile

    def __len__(self) -> int:
        return len(self.probe)

    def batches(self, batch_size: int):
        for batch in self.probe.batches(batch_size):
            labels = np.concatenate([batch.labels, batch.labels[:, :1]], axis=1)
            yield replace(batch, labels=labels, distinct=False)


def test_a_concept_named_by_two_layers_at_a_pixel_counts_once():
    probe = make_probe(40)
    model = small_random_net()
    plain = dissect(model, probe, layer="conv2", batch_size=16)
    repeated = dissect(model, RepeatingProbe(probe), layer="conv2", batch_size=16)
    np.testing.assert_array_equal(plain.iou, repeated.iou)
    np.testing.assert_array_equal(plain.concept_area, repeated.concept_area)
    assert plain.iou.max() > 0
