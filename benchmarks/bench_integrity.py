"""What verifying a cache entry's SHA-256 digest costs next to loading the entry at all.

Run: python -m pytest benchmarks/bench_integrity.py --benchmark-only -q
Each pair loads the same entry of the default profile's caches from disk, once trusting the file
(read and parse, as before digests existed) and once verified (read, hash, compare, then parse the
verified bytes, as `bench.train.teachers` now does): the breast_cancer LightGBM teacher's `model.txt`,
a ResNet-8 teacher's `model.pt` (concept_shapes' architecture; its weights do not change the
cost) and a TreeSHAP cache of the breast_cancer test split. The ratio verified / trusted of each
group is the price of never handing a damaged file to LightGBM or torch. Measured on 2 CPU cores
(medians, trusted -> verified): LightGBM model 4.10 -> 4.36 ms (1.06), ResNet-8 weights
11.32 -> 11.55 ms (1.02), TreeSHAP cache 0.42 -> 0.48 ms (1.15).
"""

from __future__ import annotations

import io
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
import torch

from bench.core.sealed import read_sealed, read_sealed_folder, seal_folder
from bench.core.specs import teacher_spec_for
from bench.data.bundle import DATASETS, DatasetLoaderOptions
from bench.models.resnet import ResNet
from bench.plan.profiles import PROFILES
from bench.results.folder import ResultsFolder
from bench.train.teachers import obtain_teacher

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("caches")
    entry = DATASETS.get("breast_cancer")
    bundle = entry.load(DatasetLoaderOptions())
    spec = teacher_spec_for(PROFILES.get("default"), entry.name, entry.version, entry.modality)
    teacher = obtain_teacher(spec, bundle, ResultsFolder(root).teacher_folder(spec), CPU)
    teacher.contributions(bundle.test.x)
    (treeshap,) = ResultsFolder(root).teacher_folder(spec).glob("treeshap-*.npz")
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(ResNet(3, 16, width=16, blocks=1).state_dict(), buffer)
    seal_folder(root / "resnet", {"model.pt": buffer.getvalue()})
    return {
        "lightgbm": ResultsFolder(root).teacher_folder(spec),
        "resnet": root / "resnet",
        "treeshap": treeshap,
    }


def _booster(data: bytes) -> lgb.Booster:
    return lgb.Booster(model_str=data.decode())


def _weights(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _arrays(data: bytes) -> dict:
    with np.load(io.BytesIO(data), allow_pickle=False) as cached:
        return {key: cached[key] for key in cached.files}


@pytest.mark.benchmark(group="verify-lightgbm-model")
def test_lightgbm_model_trusted(benchmark, caches):
    benchmark(lambda: _booster((caches["lightgbm"] / "model.txt").read_bytes()))


@pytest.mark.benchmark(group="verify-lightgbm-model")
def test_lightgbm_model_verified(benchmark, caches):
    benchmark(lambda: _booster(read_sealed_folder(caches["lightgbm"])["model.txt"]))


@pytest.mark.benchmark(group="verify-network-weights")
def test_network_weights_trusted(benchmark, caches):
    benchmark(lambda: _weights((caches["resnet"] / "model.pt").read_bytes()))


@pytest.mark.benchmark(group="verify-network-weights")
def test_network_weights_verified(benchmark, caches):
    benchmark(lambda: _weights(read_sealed_folder(caches["resnet"])["model.pt"]))


@pytest.mark.benchmark(group="verify-treeshap-cache")
def test_treeshap_cache_trusted(benchmark, caches):
    benchmark(lambda: _arrays(caches["treeshap"].read_bytes()))


@pytest.mark.benchmark(group="verify-treeshap-cache")
def test_treeshap_cache_verified(benchmark, caches):
    result = benchmark(lambda: _arrays(read_sealed(caches["treeshap"])))
    assert result["values"].shape[0] == 114
