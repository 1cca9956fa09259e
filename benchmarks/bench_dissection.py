"""What dissection costs next to a plain forward pass over the same concept_shapes probe.

Run: python -m pytest benchmarks/bench_dissection.py --benchmark-only -q
Dissection makes two forward passes (quantiles, then the tally) plus, per batch, bilinear
upsampling of every unit's map to 32x32, binarisation and the intersection products. Measured on
2 CPU cores: forward 129 ms, dissection 545-600 ms for the 500-image procedural-2 probe (ratio
about 4.3); upsampling and binarising the (100, 64, 32, 32) maps are most of the difference. The
procedural-3 probe has 1 000 images, 31 concepts (parts added) and a 1 % quantile (a top-k buffer
twice as long): forward 1.01 s, dissection 3.6 s (ratio 3.6) on the same 2 cores while other
processes kept them busy (load 5), so the absolute times are slower than an idle machine gives.
"""

from __future__ import annotations

import pytest
import torch

from bench.datasets.concept_shapes import make_probe
from bench.dissection import BATCH_SIZE, dissect
from bench.models.resnet import ResNet


@pytest.fixture(scope="module")
def probe():
    return make_probe()


@pytest.fixture(scope="module")
def teacher():
    # The default profile's image teacher (ResNet-8, width 16); weights do not change the cost.
    torch.manual_seed(0)
    return ResNet(3, 16, width=16, blocks=1).eval()


@torch.no_grad()
def forward_pass(model: torch.nn.Module, images) -> None:
    for start in range(0, len(images), BATCH_SIZE):
        model(torch.as_tensor(images[start : start + BATCH_SIZE]))


@pytest.mark.benchmark(group="dissection-vs-forward")
def test_forward_pass_over_probe(benchmark, probe, teacher):
    benchmark(forward_pass, teacher, probe.images)


@pytest.mark.benchmark(group="dissection-vs-forward")
def test_dissection_of_last_conv_block(benchmark, probe, teacher):
    result = benchmark(dissect, teacher, probe)
    assert result.n_units == 64 and result.settings.quantile == probe.quantile
