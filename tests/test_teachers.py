"""Teachers are trained once, cached in safe formats, and rebuilt when the cache is damaged."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core.specs import teacher_spec_for
from bench.data.bundle import DATASETS, DatasetLoaderOptions
from bench.plan.profiles import PROFILES
from bench.results.folder import ResultsFolder
from bench.train.teachers import obtain_teacher

CPU = torch.device("cpu")


def spec_and_bundle(dataset: str):
    entry = DATASETS.get(dataset)
    spec = teacher_spec_for(PROFILES.get("smoke"), entry.name, entry.version, entry.modality)
    return spec, entry.load(DatasetLoaderOptions())


@pytest.mark.parametrize(("dataset", "model_file"), [("wine", "model.txt"), ("digits", "model.pt")])
def test_second_call_loads_the_cached_teacher(
    tmp_path: Path, dataset: str, model_file: str
) -> None:
    spec, bundle = spec_and_bundle(dataset)
    trained = obtain_teacher(spec, bundle, ResultsFolder(tmp_path).teacher_folder(spec), CPU)
    assert trained.info["from_cache"] is False
    assert (ResultsFolder(tmp_path).teacher_folder(spec) / model_file).is_file()
    loaded = obtain_teacher(spec, bundle, ResultsFolder(tmp_path).teacher_folder(spec), CPU)
    assert loaded.info["from_cache"] is True
    np.testing.assert_allclose(
        loaded.predict_logits(bundle.test.x), trained.predict_logits(bundle.test.x), rtol=1e-5
    )


def test_damaged_cache_is_rebuilt_not_trusted(tmp_path: Path, caplog) -> None:
    spec, bundle = spec_and_bundle("digits")
    reference = obtain_teacher(
        spec, bundle, ResultsFolder(tmp_path).teacher_folder(spec), CPU
    ).predict_logits(bundle.test.x)
    weights = ResultsFolder(tmp_path).teacher_folder(spec) / "model.pt"
    weights.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING):
        rebuilt = obtain_teacher(spec, bundle, ResultsFolder(tmp_path).teacher_folder(spec), CPU)
    assert "model.pt does not match its SHA-256 digest" in caplog.text
    assert rebuilt.info["from_cache"] is False
    np.testing.assert_allclose(rebuilt.predict_logits(bundle.test.x), reference, rtol=1e-5)


def test_lightgbm_teacher_stops_early_on_validation(tmp_path: Path) -> None:
    spec, bundle = spec_and_bundle("breast_cancer")
    teacher = obtain_teacher(spec, bundle, ResultsFolder(tmp_path).teacher_folder(spec), CPU)
    assert 1 <= teacher.info["best_iteration"] <= spec.settings["n_estimators"]
    assert teacher.booster.num_trees() == teacher.info["best_iteration"]
    logits = teacher.predict_logits(bundle.test.x)
    # Binary raw scores become two logits [0, s]: softmax of them is LightGBM's own probability.
    probability = teacher.booster.predict(bundle.test.x)
    softmax = torch.softmax(torch.as_tensor(logits), dim=1)[:, 1].numpy()
    np.testing.assert_allclose(softmax, probability, rtol=1e-5)


def test_precomputed_teacher_features_equal_a_live_forward_pass(tmp_path: Path) -> None:
    from bench.train.method import Batch
    from bench.train.teachers import FeatureHooks

    spec, bundle = spec_and_bundle("digits")
    teacher = obtain_teacher(spec, bundle, ResultsFolder(tmp_path).teacher_folder(spec), CPU)
    index = torch.tensor([5, 0, 17, 3])
    x = torch.as_tensor(bundle.train.x)[index]
    out = teacher.outputs(Batch(x, torch.zeros(4, dtype=torch.long), index), ["layer2", "layer3"])
    with torch.no_grad(), FeatureHooks(teacher.module, ["layer2", "layer3"]) as hooks:
        logits = teacher.module(x)
        for layer in ("layer2", "layer3"):
            torch.testing.assert_close(out.features[layer], hooks.features[layer])
    torch.testing.assert_close(out.logits, logits, rtol=1e-5, atol=1e-5)


def test_default_lightgbm_teachers_differ_by_seed_and_stop_before_their_cap(
    tmp_path: Path,
) -> None:
    """Bagging and feature subsampling make the seed matter; the default cap lies beyond the
    validation optimum (before both, three seeds gave one model that ran to its cap)."""
    entry = DATASETS.get("breast_cancer")
    bundle = entry.load(DatasetLoaderOptions())
    teachers = []
    for seed in (0, 1):
        spec = teacher_spec_for(
            PROFILES.get("default"), entry.name, entry.version, entry.modality, seed
        )
        teachers.append(
            obtain_teacher(spec, bundle, ResultsFolder(tmp_path).teacher_folder(spec), CPU)
        )
    for teacher in teachers:
        assert teacher.info["stopped_early"] is True
        assert teacher.info["best_iteration"] < teacher.spec.settings["n_estimators"]
        assert teacher.info["validation_log_loss"] > 0
    first, second = (t.predict_logits(bundle.test.x) for t in teachers)
    assert np.abs(first - second).max() > 1e-3
