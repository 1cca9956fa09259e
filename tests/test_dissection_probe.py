"""The concept_shapes probe is fit for network dissection: its concepts and a unit's top-quantile
area are commensurate, and the IoU threshold still separates concept detectors from units that only
tell objects from background (Bau et al. 2017's 0.04; datasets/concept_shapes.py says why).

Before procedural-3, concepts covered 5-10 % of the probe's pixels and a unit's top-0.5 % maps
0.26 %, which capped the median unit's IoU near the threshold; the first test fails on that probe.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bench.data.probes import QUANTILE
from bench.datasets.concept_shapes import (
    DATASET_SEED,
    N_PROBE,
    PROBE_QUANTILE,
    PROBE_STREAM,
    generate_scenes,
    make_probe,
)
from bench.explain.dissection import IOU_THRESHOLD, dissect
from bench.models.cnn import SmallCNN
from bench.models.resnet import ResNet

# Share of the probe's pixels in a unit's binarised maps, as a share of the quantile: bilinear
# upsampling of 4x4 or 8x8 maps keeps only the peaks above the threshold. Measured on the default
# profile's seed-0 networks: 0.60-0.64 (students), 0.70 (teacher); p90 over the teacher's units 0.82.
UNIT_SHARE, UNIT_SHARE_HIGH = 0.6, 0.82


@pytest.fixture(scope="module")
def probe():
    return make_probe()


@pytest.fixture(scope="module")
def concept_areas(probe) -> np.ndarray:
    """Each concept's share of the probe's pixels."""
    return np.array(
        [
            (probe.label_maps[c.category] == probe.concept_names[c.category].index(c.name)).mean()
            for c in probe.concepts
        ]
    )


def iou_ceiling(unit: float, concept: np.ndarray) -> np.ndarray:
    """The largest IoU a unit of area `unit` can have with concepts of these areas."""
    return np.minimum(unit, concept) / np.maximum(unit, concept)


def test_concept_areas_are_commensurate_with_a_units_top_quantile_area(probe, concept_areas):
    assert probe.quantile == PROBE_QUANTILE and PROBE_QUANTILE > QUANTILE
    unit = UNIT_SHARE * probe.quantile
    # The median concept is 2-12 units large (measured: 9-10), parts 2-6; on procedural-2 at
    # NetDissect's quantile it was 25 (6.5 % against 0.26 %).
    ratio = np.median(concept_areas) / unit
    assert 2 <= ratio <= 12, ratio
    part = np.array([c.category == "part" for c in probe.concepts])
    assert np.all(concept_areas[part] / unit <= 6)
    # Every concept, backgrounds included, can be detected with a margin over the threshold
    # (procedural-2: backgrounds 0.028, the median concept 0.04).
    ceilings = iou_ceiling(unit, concept_areas)
    assert ceilings.min() >= 1.5 * IOU_THRESHOLD, ceilings.min()
    assert np.median(ceilings) >= 2.4 * IOU_THRESHOLD
    # and no concept is a sliver a unit cannot resolve
    assert concept_areas.min() >= unit


def figure_ground_iou(unit: float, probe, concept_areas: np.ndarray) -> float:
    """The best IoU of a unit of area `unit` whose pixels all lie on objects (or all on
    background) but spread over them regardless of concept: selectivity for figure or ground
    alone. Concentrating on objects or on background is the worst case for every concept."""
    scenes = generate_scenes(N_PROBE, (DATASET_SEED, PROBE_STREAM))
    objects = (scenes.object_map >= 0).mean()
    on_objects = np.array([c.category != "background" for c in probe.concepts])
    share = np.where(on_objects, concept_areas / objects, concept_areas / (1 - objects))
    intersection = unit * share
    return float((intersection / (unit + concept_areas - intersection)).max())


def test_a_unit_that_only_tells_objects_from_background_is_no_detector(probe, concept_areas):
    # 0.030 at the area of the teacher's p90 unit (measured per unit: at most 0.027).
    iou = figure_ground_iou(UNIT_SHARE_HIGH * probe.quantile, probe, concept_areas)
    assert iou < 0.8 * IOU_THRESHOLD, iou
    # Which is why the quantile is not 2 %: there such a unit would count as a detector.
    assert figure_ground_iou(UNIT_SHARE_HIGH * 0.02, probe, concept_areas) > IOU_THRESHOLD


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "build",
    [
        lambda: SmallCNN(3, 16, width=8, depth=2),  # the smoke profile's student
        lambda: ResNet(3, 16, width=8, blocks=1),  # the smoke profile's teacher
        lambda: SmallCNN(3, 16, width=16, depth=4),  # concept_shapes' default student
    ],
    ids=["smoke-student", "smoke-teacher", "default-student"],
)
def test_a_randomly_initialised_network_is_not_every_unit_a_detector(probe, build, seed):
    """Random features do detect some colours (NetDissect finds the same), but far from all
    units are detectors, and few are well above the threshold."""
    torch.manual_seed(seed)
    model: nn.Module = build().eval()
    result = dissect(model, probe)
    assert result.settings.quantile == PROBE_QUANTILE
    assert result.detectors < result.n_units / 2
    assert result.detectors_at(0.10) <= result.n_units / 8
    assert result.mean_best_iou < IOU_THRESHOLD
