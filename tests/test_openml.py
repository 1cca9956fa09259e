"""`openml:<id>` datasets: loaded through openml's own cache, offline, with a deterministic split.

Every test points `OPENML_CACHE_DIR` at a folder it writes in OpenML's layout and makes openml's
network calls fail at once, so nothing here depends on (or waits for) the OpenML server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openml
import pandas as pd
import pytest
import requests

from bench.core.errors import BenchError, DatasetUnavailable
from bench.data.bundle import DATASETS, DatasetLoaderOptions, Split
from bench.datasets.openml_tables import encode_features, encode_labels, impute_with_train_medians
from tests.conftest import record_json

DATASET_ID = 4242
COLOURS = ("red", "green", "blue")


def write_cached_dataset(root: Path, dataset_id: int, rows: int = 80) -> Path:
    """A small classification table in openml's cache layout, as openml 0.15 leaves it.

    `colour` is categorical with one missing value, `income` numeric with one missing value.
    """
    folder = root / "org" / "openml" / "www" / "datasets" / str(dataset_id)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(dataset_id)
    lines = []
    for i in range(rows):
        age = 20 + i % 50
        colour = "?" if i == 3 else COLOURS[i % 3]
        income = "?" if i == 5 else f"{rng.normal(50, 10):.2f}"
        label = "yes" if (age > 40) ^ (i % 7 == 0) else "no"
        lines.append(f"{age},{colour},{income},{label}")
    (folder / "dataset.arff").write_text(
        "@RELATION tiny\n\n"
        "@ATTRIBUTE age NUMERIC\n"
        "@ATTRIBUTE colour {red,green,blue}\n"
        "@ATTRIBUTE income NUMERIC\n"
        "@ATTRIBUTE class {no,yes}\n\n"
        "@DATA\n" + "\n".join(lines) + "\n"
    )
    oml = 'xmlns:oml="http://openml.org/openml"'
    (folder / "description.xml").write_text(
        f"<oml:data_set_description {oml}>\n"
        f"  <oml:id>{dataset_id}</oml:id>\n"
        "  <oml:name>tiny-test-table</oml:name>\n"
        "  <oml:version>1</oml:version>\n"
        "  <oml:description>Written by the test suite.</oml:description>\n"
        "  <oml:format>ARFF</oml:format>\n"
        "  <oml:upload_date>2024-01-01T00:00:00</oml:upload_date>\n"
        "  <oml:licence>Public</oml:licence>\n"
        f"  <oml:url>https://api.openml.org/data/v1/download/{dataset_id}/tiny.arff</oml:url>\n"
        f"  <oml:file_id>{dataset_id}</oml:file_id>\n"
        "  <oml:default_target_attribute>class</oml:default_target_attribute>\n"
        "  <oml:visibility>public</oml:visibility>\n"
        "  <oml:status>active</oml:status>\n"
        "</oml:data_set_description>\n"
    )
    features = [("age", "numeric", 0), ("colour", "nominal", 1), ("income", "numeric", 1)]
    features.append(("class", "nominal", 0))
    (folder / "features.xml").write_text(
        f"<oml:data_features {oml}>\n"
        + "".join(
            f"  <oml:feature><oml:index>{i}</oml:index><oml:name>{name}</oml:name>"
            f"<oml:data_type>{kind}</oml:data_type>"
            f"<oml:is_target>{str(name == 'class').lower()}</oml:is_target>"
            "<oml:is_ignore>false</oml:is_ignore><oml:is_row_identifier>false"
            "</oml:is_row_identifier>"
            f"<oml:number_of_missing_values>{missing}</oml:number_of_missing_values>"
            "</oml:feature>\n"
            for i, (name, kind, missing) in enumerate(features)
        )
        + "</oml:data_features>\n"
    )
    (folder / "qualities.xml").write_text(
        f"<oml:data_qualities {oml}>\n"
        f"  <oml:quality><oml:name>NumberOfInstances</oml:name><oml:value>{rows}.0</oml:value>"
        "</oml:quality>\n"
        "  <oml:quality><oml:name>NumberOfFeatures</oml:name><oml:value>4.0</oml:value>"
        "</oml:quality>\n"
        "</oml:data_qualities>\n"
    )
    return folder


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """An OpenML cache in a temporary folder, found through OPENML_CACHE_DIR, and no network."""
    calls: list[str] = []

    def no_network(*args, **kwargs):
        url = kwargs.get("url", args[1] if len(args) > 1 else "?")
        calls.append(url)
        raise requests.exceptions.ConnectionError(f"network disabled in tests: {url}")

    before = openml.config.get_config_as_dict()["cachedir"]
    root = tmp_path / "openml-cache"
    write_cached_dataset(root, DATASET_ID)
    monkeypatch.setenv("OPENML_CACHE_DIR", str(root))
    monkeypatch.setattr(openml._api_calls, "_send_request", no_network)
    yield {"root": root, "calls": calls}
    openml.config.set_root_cache_directory(before)


def load(name: str):
    return DATASETS.get(name).load(DatasetLoaderOptions())


def test_loads_offline_from_openmls_cache_with_categories_and_missing_values(offline_cache) -> None:
    bundle = load(f"openml:{DATASET_ID}")
    assert offline_cache["calls"] == []  # everything came from the cache
    assert not list((offline_cache["root"] / "org/openml/www/datasets").glob("*.lock"))
    assert bundle.version == f"openml-{DATASET_ID}-v1" and bundle.modality == "tabular"
    assert sum(bundle.sizes().values()) == 80
    assert bundle.class_names == ("no", "yes")
    assert bundle.feature_names == ("age", "colour", "income")
    assert bundle.extras["categorical"] == ["colour"]
    x = np.concatenate([bundle.train.x, bundle.val.x, bundle.test.x])
    assert np.isfinite(x).all()  # both missing values were handled
    # Three colours plus "missing" as a level of its own.
    assert len(np.unique(x[:, 1])) == 4
    # Standardised with the training split's statistics.
    np.testing.assert_allclose(bundle.train.x.mean(axis=0), 0.0, atol=1e-5)


def test_split_is_deterministic_across_loads_and_fresh_caches(
    offline_cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load(f"openml:{DATASET_ID}")
    second = load(f"openml:{DATASET_ID}")  # now through openml's own parsed-data cache
    fresh = tmp_path / "fresh-cache"
    write_cached_dataset(fresh, DATASET_ID)
    monkeypatch.setenv("OPENML_CACHE_DIR", str(fresh))
    third = load(f"openml:{DATASET_ID}")
    assert (fresh / "org/openml/www/datasets" / str(DATASET_ID) / "dataset.pkl.py3").exists()
    for other in (second, third):
        pairs = zip(
            (first.train, first.val, first.test), (other.train, other.val, other.test), strict=True
        )
        for a, b in pairs:
            np.testing.assert_array_equal(a.x, b.x)
            np.testing.assert_array_equal(a.y, b.y)


def test_a_missing_id_is_unavailable_at_once_with_instructions(offline_cache) -> None:
    started = time.perf_counter()
    with pytest.raises(DatasetUnavailable) as error:
        load("openml:999999")
    assert time.perf_counter() - started < 2.0
    message = str(error.value)
    assert "OPENML_CACHE_DIR" in message and "run once with network" in message
    assert "org/openml/www/datasets/999999/" in message
    assert offline_cache["calls"]  # it did try the server, through openml


def test_unavailable_openml_runs_are_skipped_not_failed(offline_cache, cli, tmp_path) -> None:
    results = tmp_path / "results"
    result = cli(
        "run", "--profile", "smoke", "--dataset", "openml:999999", "--method", "scratch",
        "--results", results,
    )  # fmt: skip
    assert result.code == 0
    record = record_json(results, "smoke", "openml:999999", "scratch", 0)
    assert record is not None and record["status"] == "skipped"
    assert "run once with network" in record["error"]["message"]


def test_a_cached_openml_table_runs_end_to_end(offline_cache, cli, tmp_path) -> None:
    results = tmp_path / "results"
    name = f"openml:{DATASET_ID}"
    result = cli(
        "run", "--profile", "smoke", "--dataset", name, "--method", "kd", "--results", results
    )
    assert result.code == 0, result.err
    record = record_json(results, "smoke", name, "kd", 0)
    assert record is not None and record["status"] == "ok", record and record["error"]
    assert record["dataset"]["version"] == f"openml-{DATASET_ID}-v1"


def test_names_are_parsed_without_data() -> None:
    entry = DATASETS.get("openml:1590")
    assert (entry.name, entry.version, entry.modality) == (
        "openml:1590",
        "openml-1590-v1",
        "tabular",
    )
    assert "openml:1590" in DATASETS and "openml:adult" not in DATASETS
    with pytest.raises(BenchError, match="positive integer id"):
        DATASETS.get("openml:adult")
    with pytest.raises(BenchError, match="write it as 'openml:1590'"):
        DATASETS.get("openml:01590")
    with pytest.raises(BenchError, match=r"openml:<id>"):
        DATASETS.get("no_such_dataset")
    assert "openml:1590" not in DATASETS.names()  # families are not listed as names


def test_categories_become_ordinal_codes_with_missing_as_a_level() -> None:
    frame = pd.DataFrame(
        {
            "c": pd.Categorical(["b", None, "a", "b"], categories=["b", "a"]),
            "s": ["x", "y", "x", None],  # strings OpenML does not flag are encoded too
            "n": [1.0, np.nan, 3.0, 4.0],
        }
    )
    x, encoded = encode_features(frame, [True, False, False])
    np.testing.assert_array_equal(x[:, 0], [0, 2, 1, 0])
    np.testing.assert_array_equal(x[:, 1], [0, 1, 0, 2])
    assert np.isnan(x[1, 2]) and encoded == ["c", "s"]


def test_missing_numbers_take_the_training_median_in_every_split() -> None:
    train = Split(np.array([[1.0], [np.nan], [3.0], [10.0]], dtype=np.float32), np.zeros(4, int))
    test = Split(np.array([[np.nan]], dtype=np.float32), np.zeros(1, int))
    imputed_train, imputed_test = impute_with_train_medians(train, test)
    assert imputed_train.x[1, 0] == 3.0 and imputed_test.x[0, 0] == 3.0


def test_labels_drop_rare_classes_and_refuse_continuous_targets() -> None:
    y = pd.Series(pd.Categorical(["a"] * 12 + ["b"] * 15 + ["c"] * 2 + [None]))
    codes, names, keep = encode_labels(y, "t")
    assert names == ("a", "b") and keep.sum() == 27 and set(codes) == {0, 1}
    with pytest.raises(BenchError, match="continuous"):
        encode_labels(pd.Series(np.linspace(0, 1, 50)), "t")
