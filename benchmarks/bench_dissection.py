"""What dissection costs next to a plain forward pass over the same concept_shapes probe.

Run: python -m pytest benchmarks/bench_dissection.py --benchmark-only -q
For the default profile's image teacher (ResNet-8, width 16) and its concept_shapes student
(four-block CNN, width 16), each group times a forward pass over the 1 000-image probe and a
dissection of the last conv block; the `(1.xx)` beside a dissection's mean is its ratio to the
forward pass, measured in the same run.

Dissection runs the model once: the low-resolution activations are kept for the tally, and only
the maps that can cross their unit's threshold are upsampled (`bench.explain.dissection`). Measured in
one run on one thread of this 2-core machine, mean of 5 rounds:

| model | forward | dissection | ratio | previous code (measured right after) |
|---|---|---|---|---|
| teacher | 1.04 s | 1.29 s | 1.24 | 3.53 s, 3.41 |
| student | 0.58 s | 0.81 s | 1.39 | 3.98 s, 7.60 |

Before: two forward passes, and every unit's map upsampled, binarised and multiplied with every
concept's mask. The IoUs are unchanged: on both networks trained one epoch, old and new code give
the same thresholds and IoU matrices (largest difference 0.0), and `tests/test_dissection.py`
compares with upsampling every map.
"""

from __future__ import annotations

import pytest
import torch

from bench.datasets.concept_shapes import make_probe
from bench.explain.dissection import BATCH_SIZE, dissect
from bench.models.cnn import SmallCNN
from bench.models.resnet import ResNet


@pytest.fixture(scope="module")
def probe():
    return make_probe()


# The default profile's image teacher (ResNet-8, width 16) and concept_shapes student, with
# their last block's unit count; weights do not change the cost.
NETWORKS = {
    "teacher": (lambda: ResNet(3, 16, width=16, blocks=1), 64),
    "student": (lambda: SmallCNN(3, 16, width=16, depth=4), 128),
}


@pytest.fixture(scope="module", params=list(NETWORKS))
def network(request) -> tuple[str, torch.nn.Module, int]:
    build, units = NETWORKS[request.param]
    torch.manual_seed(0)
    return request.param, build().eval(), units


@torch.no_grad()
def forward_pass(model: torch.nn.Module, images) -> None:
    for start in range(0, len(images), BATCH_SIZE):
        model(torch.as_tensor(images[start : start + BATCH_SIZE]))


def test_forward_pass_over_probe(benchmark, probe, network):
    name, model, _ = network
    benchmark.group = f"{name}: dissection vs forward"
    benchmark(forward_pass, model, probe.images)


def test_dissection_of_last_conv_block(benchmark, probe, network):
    name, model, units = network
    benchmark.group = f"{name}: dissection vs forward"
    result = benchmark(dissect, model, probe)
    assert result.n_units == units and result.settings.quantile == probe.quantile
