"""Tables from OpenML by integer id (`openml:<id>`), through the `openml` package and its cache.

The `openml` package keeps its own cache (`OPENML_CACHE_DIR`, else the `cachedir` of its config
file, else `~/.cache/openml`), laid out as `org/openml/www/datasets/<id>/` with `description.xml`
and `dataset.arff` (or `dataset_<id>.pq`). We go through it rather than around it, so a cache a
user already has is used as is and a download made here serves their other tools too. Ids only:
looking a dataset up by name always asks the server, and an id names one immutable version.

Preprocessing, in this order (the loader's part of the version string, `v1`):
- rows without a label are dropped; labels become 0..C−1 in the order of OpenML's class list,
  unused classes removed; classes with fewer than `MIN_CLASS_ROWS` rows are dropped (a stratified
  three-way split needs a few of each) and named in `extras["dropped_classes"]`;
- categorical columns become ordinal codes (category order as OpenML declares it; a missing value
  is a level of its own). Ordinal rather than one-hot keeps one column, hence one attribution, per
  original feature, which is what TreeSHAP and the students' explanations are compared on, and
  LightGBM splits ordinal codes well; the cost is an arbitrary order for the MLP students;
- the deterministic stratified split of `bench.data.bundle` (its own seed, not the run's);
- missing numeric values get the training split's median, then every feature is standardised with
  the training split's mean and standard deviation, so no statistic leaks from val or test.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.core.errors import BenchError, DatasetUnavailable
from bench.core.locks import hold_lock
from bench.data.bundle import (
    DatasetBundle,
    DatasetEntry,
    DatasetLoaderOptions,
    Split,
    register_dataset_family,
    standardise,
    stratified_splits,
)

log = logging.getLogger(__name__)

LOADER_VERSION = "v1"
CACHE_ENV = "OPENML_CACHE_DIR"
MIN_CLASS_ROWS = 10
MAX_CLASSES = 100
# OpenML's error code for an id it does not know.
UNKNOWN_DATASET = 111


@register_dataset_family("openml", pattern="openml:<id>")
def openml_entry(parameter: str) -> DatasetEntry:
    """The entry of `openml:<id>`; its version needs no download (an id is one immutable version)."""
    if not parameter.isdigit() or int(parameter) == 0:
        raise BenchError(
            f"dataset 'openml:{parameter}': OpenML datasets are named by positive integer id, "
            "e.g. openml:1590"
        )
    dataset_id = int(parameter)
    return DatasetEntry(
        name=f"openml:{dataset_id}",
        modality="tabular",
        version=f"openml-{dataset_id}-{LOADER_VERSION}",
        loader=functools.partial(load_openml, dataset_id),
        description=f"OpenML dataset {dataset_id}, through the openml package's cache",
    )


def cache_directory(openml: Any) -> Path:
    """Where openml keeps its files, after honouring `OPENML_CACHE_DIR` as openml itself does.

    openml reads the variable once, when it is imported; setting it later (as a test or a
    notebook may) takes effect here too, with the same precedence over its config file.
    """
    root = os.environ.get(CACHE_ENV)
    if root:
        openml.config.set_root_cache_directory(Path(root).expanduser())
    return Path(openml.config.get_cache_directory())


def how_to_get(dataset_id: int, cache: Path, reason: BaseException) -> str:
    return (
        f"OpenML dataset {dataset_id} is not in the openml cache ({cache / 'datasets'}) and could "
        f"not be downloaded ({type(reason).__name__}: {reason}). How to get it: run once with "
        f"network access, or copy an OpenML cache holding "
        f"org/openml/www/datasets/{dataset_id}/ to ${CACHE_ENV} (or to the cachedir of openml's "
        "config file)."
    )


def fetch(dataset_id: int) -> tuple[pd.DataFrame, pd.Series, list[bool], str]:
    """Features, target, categorical flags and name of an OpenML dataset, from cache or server."""
    import openml

    cache = cache_directory(openml)
    # openml's cache is not safe for concurrent writers: parallel workers loading the same id take
    # turns (the lock file is removed when released, so nothing is left in the user's cache).
    with hold_lock(cache / "datasets" / f".{dataset_id}.xkd-bench.lock"):
        return _fetch_unlocked(openml, dataset_id, cache)


def _fetch_unlocked(
    openml: Any, dataset_id: int, cache: Path
) -> tuple[pd.DataFrame, pd.Series, list[bool], str]:
    import requests
    import urllib3
    from openml.exceptions import OpenMLServerError, OpenMLServerException

    try:
        dataset = openml.datasets.get_dataset(
            dataset_id,
            download_data=True,
            download_qualities=False,
            download_features_meta_data=False,
        )
        target = dataset.default_target_attribute
        if not target or "," in target:
            raise BenchError(
                f"dataset 'openml:{dataset_id}' ({dataset.name}) has no single default target "
                f"(it declares {target!r}); only classification tables with one target are usable"
            )
        x, y, categorical, _ = dataset.get_data(target=target)
    except OpenMLServerException as exc:
        if exc.code == UNKNOWN_DATASET:
            raise BenchError(f"OpenML has no dataset with id {dataset_id}") from exc
        raise DatasetUnavailable(how_to_get(dataset_id, cache, exc)) from exc
    except (OpenMLServerError, requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise DatasetUnavailable(how_to_get(dataset_id, cache, exc)) from exc
    except (ConnectionError, TimeoutError, socket.gaierror) as exc:  # below requests' wrappers
        raise DatasetUnavailable(how_to_get(dataset_id, cache, exc)) from exc
    return x, y, list(categorical), dataset.name


def encode_features(frame: pd.DataFrame, categorical: list[bool]) -> tuple[np.ndarray, list[str]]:
    """Numbers as floats (NaN where missing); categories as ordinal codes, missing a level.

    Returns the matrix and the names of the columns encoded as categories (those OpenML flags,
    plus any column of strings it does not).
    """
    columns, encoded = [], []
    for is_categorical, (column, series) in zip(categorical, frame.items(), strict=True):
        if is_categorical or not pd.api.types.is_numeric_dtype(series):
            values = series.astype("category")
            codes = values.cat.codes.to_numpy().astype(np.float64)
            codes[codes < 0] = len(values.cat.categories)
            columns.append(codes)
            encoded.append(str(column))
        else:
            columns.append(series.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.stack(columns, axis=1), encoded


def encode_labels(y: pd.Series, name: str) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """Labels 0..C−1 with their class names, and the mask of rows kept (labelled, class not rare)."""
    if pd.api.types.is_float_dtype(y) and not np.allclose(y.dropna(), np.round(y.dropna())):
        raise BenchError(
            f"dataset {name!r}: the target is continuous; only classification is usable"
        )
    labels = y.astype("category").cat.remove_unused_categories()
    counts = labels.value_counts()
    rare = [c for c in labels.cat.categories if counts[c] < MIN_CLASS_ROWS]
    if rare:
        labels = labels.cat.remove_categories(rare)
    keep = labels.notna().to_numpy()
    labels = labels[keep].cat.remove_unused_categories()
    if not 2 <= len(labels.cat.categories) <= MAX_CLASSES:
        raise BenchError(
            f"dataset {name!r}: {len(labels.cat.categories)} usable classes; "
            f"classification needs 2 to {MAX_CLASSES} with {MIN_CLASS_ROWS}+ rows each"
        )
    names = tuple(str(c) for c in labels.cat.categories)
    return labels.cat.codes.to_numpy().astype(np.int64), names, keep


def impute_with_train_medians(train: Split, *others: Split) -> tuple[Split, ...]:
    """Missing values take the training split's median (0 for a column empty in training)."""
    present = ~np.isnan(train.x)
    medians = np.array(
        [
            np.median(train.x[present[:, j], j]) if present[:, j].any() else 0.0
            for j in range(train.x.shape[1])
        ],
        dtype=np.float32,
    )
    return tuple(
        Split(np.where(np.isnan(s.x), medians, s.x).astype(np.float32), s.y)
        for s in (train, *others)
    )


def load_openml(dataset_id: int, options: DatasetLoaderOptions) -> DatasetBundle:
    """An OpenML classification table, encoded, imputed and standardised (module docstring)."""
    name = f"openml:{dataset_id}"
    frame, target, categorical, title = fetch(dataset_id)
    y, class_names, keep = encode_labels(target, name)
    features, encoded = encode_features(frame, categorical)
    x = features[keep]
    dropped = sorted(set(map(str, target.dropna().unique())) - set(class_names))
    if dropped:
        log.warning(
            "%s: dropped classes with fewer than %d rows: %s", name, MIN_CLASS_ROWS, dropped
        )
    train, val, test = standardise(*impute_with_train_medians(*stratified_splits(x, y)))
    return DatasetBundle(
        name=name,
        version=f"openml-{dataset_id}-{LOADER_VERSION}",
        modality="tabular",
        train=train,
        val=val,
        test=test,
        class_names=class_names,
        feature_names=tuple(str(c) for c in frame.columns),
        extras={
            "openml_id": dataset_id,
            "openml_name": title,
            "categorical": encoded,
            "dropped_classes": dropped,
        },
    )
