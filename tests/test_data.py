"""Datasets: deterministic stratified splits; bad data is refused with the dataset's name."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from bench.core.errors import BenchError
from bench.data.bundle import DATASETS, DatasetBundle, DatasetLoaderOptions, Split


@pytest.mark.parametrize("name", ["breast_cancer", "wine", "digits"])
def test_embedded_datasets_split_deterministically(name: str) -> None:
    first = DATASETS.get(name).load(DatasetLoaderOptions())
    second = DATASETS.get(name).load(DatasetLoaderOptions())
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(first, split).x, getattr(second, split).x)
        assert set(getattr(first, split).y) == set(range(first.num_classes))
    assert first.train.x.dtype == np.float32 and first.train.y.dtype == np.int64
    total = sum(first.sizes().values())
    assert first.sizes()["test"] == pytest.approx(0.2 * total, abs=2)
    # No row of the test split appears in the training split.
    train_rows = {row.tobytes() for row in first.train.x.reshape(len(first.train), -1)}
    assert not any(row.tobytes() in train_rows for row in first.test.x.reshape(len(first.test), -1))


def test_digits_are_nchw_images_in_unit_range() -> None:
    bundle = DATASETS.get("digits").load(DatasetLoaderOptions())
    assert bundle.input_shape == (1, 8, 8) and bundle.modality == "image"
    assert bundle.train.x.min() >= 0.0 and bundle.train.x.max() <= 1.0


def _bundle(x: np.ndarray, y: np.ndarray) -> DatasetBundle:
    split = Split(x.astype(np.float32), y)
    return DatasetBundle("bad", "1", "tabular", split, split, split, ("a", "b"))


def test_nan_features_are_refused() -> None:
    x = np.array([[1.0, np.nan], [0.0, 1.0]])
    with pytest.raises(BenchError, match="'bad': the train split has NaN"):
        _bundle(x, np.array([0, 1]))


def test_a_teachers_split_is_checked_like_the_others() -> None:
    good = _bundle(np.zeros((2, 2)), np.array([0, 1]))
    for bad_x, bad_y, message in (
        (np.array([[np.inf, 0.0]]), np.array([1]), "teacher_train split has NaN"),
        (np.zeros((1, 3)), np.array([1]), "different shapes"),
        (np.zeros((1, 2)), np.array([5]), "teacher_train labels must lie in 0..1"),
    ):
        with pytest.raises(BenchError, match=message):
            dataclasses.replace(good, teacher_train=Split(bad_x.astype(np.float32), bad_y))


def test_a_single_class_is_refused() -> None:
    with pytest.raises(BenchError, match="single class"):
        _bundle(np.zeros((3, 2)), np.array([0, 0, 0]))


def test_labels_out_of_range_are_refused() -> None:
    with pytest.raises(BenchError, match="labels must lie in 0..1"):
        _bundle(np.zeros((2, 2)), np.array([0, 2]))


def test_a_dataset_of_an_unknown_modality_is_refused_by_name() -> None:
    from bench.core.errors import BenchError
    from bench.data.bundle import DATASETS, register_dataset

    with pytest.raises(BenchError, match="dataset 'texts': modality 'text' is not one of tabular"):
        register_dataset("texts", modality="text", version="1")(lambda options: None)
    assert "texts" not in DATASETS


def test_modalities_and_roles_are_typed_and_read_back_as_their_strings(tmp_path) -> None:
    from bench.core.atomic import write_json_atomic
    from bench.core.vocabulary import Modality, Role
    from bench.data.bundle import DATASETS
    from bench.results.folder import read_record
    from bench.results.record import Record

    wine = DATASETS.get("wine")
    assert wine.modality is Modality.TABULAR and wine.modality == "tabular"
    fields = {
        "run_id": "r", "dataset": {"name": "wine"}, "method": {"name": "kd"}, "seed": 0,
        "profile": "smoke", "budget": {}, "environment": {}, "started": "2026-01-01T00:00:00",
    }  # fmt: skip
    record = Record(role="control", **fields)
    assert record.role is Role.CONTROL
    written = {**record.to_json(), "status": "ok"}
    write_json_atomic(tmp_path / "r.json", written)
    assert json.loads((tmp_path / "r.json").read_text())["role"] == "control"
    assert read_record(tmp_path / "r.json").role is Role.CONTROL
    with pytest.raises(ValueError, match="'referee' is not a valid Role"):
        Record(role="referee", **fields)
