"""TreeSHAP of the LightGBM teacher: efficiency property, class convention and caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core.specs import teacher_spec_for
from bench.data.bundle import DATASETS, DatasetLoaderOptions
from bench.plan.profiles import PROFILES
from bench.results.folder import ResultsFolder
from bench.train.teachers import obtain_teacher


def teacher_for(dataset: str, results: Path):
    entry = DATASETS.get(dataset)
    bundle = entry.load(DatasetLoaderOptions())
    spec = teacher_spec_for(PROFILES.get("smoke"), entry.name, entry.version, entry.modality)
    return obtain_teacher(
        spec, bundle, ResultsFolder(results).teacher_folder(spec), torch.device("cpu")
    ), bundle


@pytest.mark.parametrize("dataset", ["breast_cancer", "wine"])
def test_contributions_plus_bias_equal_the_raw_score(tmp_path: Path, dataset: str) -> None:
    teacher, bundle = teacher_for(dataset, tmp_path)
    contributions = teacher.contributions(bundle.test.x)
    assert contributions.values.shape == (
        len(bundle.test),
        bundle.num_classes,
        bundle.train.x.shape[1],
    )
    logits = teacher.predict_logits(bundle.test.x).astype(np.float64)
    # Every class is explained by its score centred over classes (binary: ± half the margin).
    expected = logits - logits.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(contributions.raw_scores(), expected, rtol=1e-4, atol=1e-4)
    # Centred contributions sum to zero over classes, feature by feature: no shared offset left.
    np.testing.assert_allclose(contributions.values.sum(axis=1), 0, atol=1e-5)


def test_target_class_selection(tmp_path: Path) -> None:
    teacher, bundle = teacher_for("wine", tmp_path)
    contributions = teacher.contributions(bundle.test.x[:5])
    targets = np.array([0, 1, 2, 1, 0])
    chosen = contributions.for_targets(targets)
    for i, target in enumerate(targets):
        np.testing.assert_array_equal(chosen[i], contributions.values[i, target])


def test_explanations_are_cached_and_a_damaged_cache_is_recomputed(tmp_path: Path) -> None:
    teacher, bundle = teacher_for("breast_cancer", tmp_path)
    first = teacher.contributions(bundle.test.x)
    cached = list(teacher.folder.glob("treeshap-*.npz"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    np.testing.assert_array_equal(teacher.contributions(bundle.test.x).values, first.values)
    assert cached[0].stat().st_mtime_ns == before  # read, not rewritten
    cached[0].write_bytes(b"garbage")
    np.testing.assert_array_equal(teacher.contributions(bundle.test.x).values, first.values)
