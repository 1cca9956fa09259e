"""The dataset contract: a loader returns a `DatasetBundle` with fixed train / val / test splits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from bench.core.errors import BenchError, UnknownNameError
from bench.core.paths import check_name
from bench.core.registry import Registry, first_paragraph, source_file
from bench.core.vocabulary import Modality

# Every dataset is split with its own seed, never the run's, so that all runs of a dataset see the
# same test set and their scores are comparable.
SPLIT_SEED = 0


@dataclass(frozen=True)
class Split:
    """Features (float32; images NCHW) and integer labels of one split."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} feature rows but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


def as_modality(value: str, dataset: str) -> Modality:
    """`value` as a `Modality`, or an error naming the dataset and the valid modalities."""
    try:
        return Modality(value)
    except ValueError:
        valid = ", ".join(Modality)
        raise BenchError(f"dataset {dataset!r}: modality {value!r} is not one of {valid}") from None


# Tables are (samples, features); images (samples, channels, height, width).
FEATURE_DIMENSIONS: dict[str, int] = {"tabular": 2, "image": 4}


def _check_split(dataset: str, split_name: str, split: Split, modality: str) -> None:
    """The dtype and shape contract of a loader's output, checked before any library sees it."""
    where = f"dataset {dataset!r}: {split_name}"
    if not isinstance(split.x, np.ndarray) or split.x.dtype != np.float32:
        found = getattr(split.x, "dtype", type(split.x).__name__)
        raise BenchError(f"{where}.x must be a float32 numpy array, not {found}")
    if not isinstance(split.y, np.ndarray) or not np.issubdtype(split.y.dtype, np.integer):
        found = getattr(split.y, "dtype", type(split.y).__name__)
        raise BenchError(f"{where}.y must be a numpy array of integer labels, not {found}")
    if split.y.ndim != 1:
        raise BenchError(f"{where}.y must be 1-D (one label per sample), not shape {split.y.shape}")
    expected = FEATURE_DIMENSIONS.get(modality)
    if split.x.ndim != expected:
        raise BenchError(
            f"{where}.x must be {expected}-D for {modality} data, not shape {split.x.shape}"
        )


@dataclass(frozen=True)
class DatasetBundle:
    name: str
    version: str
    modality: Modality
    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...] = ()
    # Optional ground truth: per-sample object masks of the test split (localisation metrics).
    test_masks: np.ndarray | None = None
    extras: dict[str, object] = field(default_factory=dict)
    # A table whose categories are one-hot encoded: the original feature (an index into
    # `original_features`) of each column. Agreement metrics sum a feature's columns, and the
    # interventional Shapley game plays the original features (`bench.explain.shapley`). Empty:
    # every column is a feature of its own.
    feature_of_column: tuple[int, ...] = ()
    original_features: tuple[str, ...] = ()
    # The teacher's own, larger training split, when the students learn from a subset (e.g.
    # `fashion_mnist:12000`, whose teacher learns from every official training image but the
    # subset's validation ones): a teacher is trained on more than its students see, as in
    # practice. None: the teacher trains on `train`. It never overlaps `val` or `test`.
    teacher_train: Split | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "modality", as_modality(self.modality, self.name))
        # Bad data fails here, with the dataset's name, rather than as NaN losses deep in a run.
        shapes = set()
        splits = [("train", self.train), ("val", self.val), ("test", self.test)]
        if self.teacher_train is not None:
            splits.append(("teacher_train", self.teacher_train))
        for split_name, split in splits:
            _check_split(self.name, split_name, split, self.modality)
            shapes.add(split.x.shape[1:])
            if len(split) == 0:
                raise BenchError(f"dataset {self.name!r}: the {split_name} split is empty")
            if not np.isfinite(split.x).all():
                raise BenchError(
                    f"dataset {self.name!r}: the {split_name} split has NaN or infinite features; "
                    "impute or drop them in the loader"
                )
            if split.y.min() < 0 or split.y.max() >= len(self.class_names):
                raise BenchError(
                    f"dataset {self.name!r}: {split_name} labels must lie in "
                    f"0..{len(self.class_names) - 1}"
                )
        if len(shapes) > 1:
            raise BenchError(
                f"dataset {self.name!r}: the splits' samples have different shapes {sorted(shapes)}"
            )
        if len(np.unique(self.train.y)) < 2:
            raise BenchError(f"dataset {self.name!r}: the training split has a single class")
        self._check_feature_groups()

    def _check_feature_groups(self) -> None:
        """`feature_of_column` maps every column onto one of `original_features`, each used."""
        if not self.feature_of_column and not self.original_features:
            return
        columns = self.input_shape[0] if self.modality == "tabular" else None
        used = sorted(set(self.feature_of_column))
        if (
            columns is None
            or len(self.feature_of_column) != columns
            or used != list(range(len(self.original_features)))
        ):
            raise BenchError(
                f"dataset {self.name!r}: feature_of_column must give each of the table's "
                f"{columns} columns the index of one of its {len(self.original_features)} "
                "original_features, using each of them"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def sizes(self) -> dict[str, int]:
        sizes = {"train": len(self.train), "val": len(self.val), "test": len(self.test)}
        if self.teacher_train is not None:
            sizes["teacher_train"] = len(self.teacher_train)
        return sizes

    def for_teacher(self) -> DatasetBundle:
        """The bundle a teacher is trained on: `teacher_train` as its training split, if any."""
        if self.teacher_train is None:
            return self
        return replace(self, train=self.teacher_train, teacher_train=None)


@dataclass(frozen=True)
class DatasetLoaderOptions:
    """What a loader may need from the user: where local data lives."""

    data_dir: Path | None = None


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: what planning knows before any data is loaded."""

    name: str
    modality: Modality
    version: str
    loader: Callable[[DatasetLoaderOptions], DatasetBundle]
    description: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "modality", as_modality(self.modality, self.name))

    def load(self, options: DatasetLoaderOptions) -> DatasetBundle:
        bundle = self.loader(options)
        if (bundle.name, bundle.version, bundle.modality) != (
            self.name,
            self.version,
            self.modality,
        ):
            raise BenchError(
                f"dataset {self.name!r}: the loader returned {bundle.name!r} version "
                f"{bundle.version!r} ({bundle.modality}), registered as version {self.version!r} "
                f"({self.modality})"
            )
        return bundle


@dataclass(frozen=True)
class DatasetFamily:
    """Parameterised dataset names `<prefix>:<parameter>` (e.g. `openml:1590`), built on demand.

    The factory turns the parameter into a `DatasetEntry` without loading data, so planning and run
    ids work for names no one could register one by one; it raises `BenchError` for a malformed one.
    """

    prefix: str
    pattern: str  # how error messages show the family, e.g. "openml:<id>"
    factory: Callable[[str], DatasetEntry]


class DatasetRegistry(Registry[DatasetEntry]):
    """The dataset registry: exact names, then families of parameterised names."""

    def __init__(self) -> None:
        super().__init__("dataset")
        self._families: dict[str, DatasetFamily] = {}

    def register_family(self, family: DatasetFamily) -> None:
        known = self._families.get(family.prefix)
        if known is not None and known.factory is not family.factory:
            raise BenchError(f"dataset family {family.pattern!r} is registered twice")
        self._families[family.prefix] = family

    def patterns(self) -> list[str]:
        return sorted(f.pattern for f in self._families.values())

    def get(self, name: str) -> DatasetEntry:
        if name in self._items:
            return self._items[name]
        prefix, sep, parameter = name.partition(":")
        family = self._families.get(prefix) if sep else None
        if family is None:
            raise UnknownNameError(self.kind, name, [*self._items, *self.patterns()])
        entry = family.factory(parameter)
        check_name(entry.name, "dataset")  # the parameter comes from the user
        if entry.name != name:
            raise BenchError(f"dataset {name!r}: write it as {entry.name!r}")
        return entry

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except BenchError:
            return False
        return True


DATASETS: DatasetRegistry = DatasetRegistry()


def register_dataset(
    name: str, *, modality: Modality, version: str
) -> Callable[[Callable[[DatasetLoaderOptions], DatasetBundle]], Callable]:
    """Register a loader `f(options) -> DatasetBundle`; its docstring's first paragraph describes it.

    The version is declared here, not only in the bundle, so that planning (and run ids) need no
    data: a changed version redoes the dataset's runs.
    """

    def add(loader: Callable[[DatasetLoaderOptions], DatasetBundle]) -> Callable:
        description = first_paragraph(loader.__doc__)
        entry = DatasetEntry(name, modality, version, loader, description)
        DATASETS.register(name, source_file(loader))(entry)
        return loader

    return add


def register_dataset_family(
    prefix: str, *, pattern: str
) -> Callable[[Callable[[str], DatasetEntry]], Callable[[str], DatasetEntry]]:
    """Register `factory(parameter) -> DatasetEntry` for the names `<prefix>:<parameter>`.

    The entry's version must be known from the name alone (planning loads no data).
    """

    def add(factory: Callable[[str], DatasetEntry]) -> Callable[[str], DatasetEntry]:
        DATASETS.register_family(DatasetFamily(prefix, pattern, factory))
        return factory

    return add


def stratified_splits(
    x: np.ndarray, y: np.ndarray, *, val_fraction: float = 0.16, test_fraction: float = 0.2
) -> tuple[Split, Split, Split]:
    """Deterministic stratified train / val / test splits (seeded by `SPLIT_SEED`)."""
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=SPLIT_SEED
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=val_fraction / (1 - test_fraction),
        stratify=y_rest,
        random_state=SPLIT_SEED,
    )
    return (
        Split(x_train.astype(np.float32), y_train.astype(np.int64)),
        Split(x_val.astype(np.float32), y_val.astype(np.int64)),
        Split(x_test.astype(np.float32), y_test.astype(np.int64)),
    )


def sklearn_table(name: str, version: str, raw: Any) -> DatasetBundle:
    """A bundle from one of scikit-learn's bundled tables: stratified splits, standardised."""
    train, val, test = standardise(*stratified_splits(raw.data, raw.target))
    return DatasetBundle(
        name=name,
        version=version,
        modality="tabular",
        train=train,
        val=val,
        test=test,
        class_names=tuple(str(c) for c in raw.target_names),
        feature_names=tuple(raw.feature_names),
    )


def standardise(train: Split, *others: Split) -> tuple[Split, ...]:
    """Scale features by the training split's mean and std, so no statistic leaks from val/test."""
    mean = train.x.mean(axis=0)
    std = train.x.std(axis=0)
    std[std == 0] = 1.0
    return tuple(Split(((s.x - mean) / std).astype(np.float32), s.y) for s in (train, *others))
