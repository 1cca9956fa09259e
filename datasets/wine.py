"""UCI wine recognition (178 rows, 13 features, 3 classes), from scikit-learn's bundled files."""

from sklearn.datasets import load_wine

from bench.data import (
    DatasetBundle,
    DatasetLoaderOptions,
    register_dataset,
    standardise,
    stratified_splits,
)

VERSION = "sklearn-1"


@register_dataset("wine", modality="tabular", version=VERSION)
def load(options: DatasetLoaderOptions) -> DatasetBundle:
    """Wine recognition: 3 cultivars, 13 chemical features, no network needed."""
    raw = load_wine()
    train, val, test = standardise(*stratified_splits(raw.data, raw.target))
    return DatasetBundle(
        name="wine",
        version=VERSION,
        modality="tabular",
        train=train,
        val=val,
        test=test,
        class_names=tuple(str(c) for c in raw.target_names),
        feature_names=tuple(raw.feature_names),
    )
