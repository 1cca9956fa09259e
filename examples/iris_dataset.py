"""A dataset plugin: Fisher's iris (150 rows, 4 features, 3 classes), from scikit-learn's
bundled copy, so it needs no network."""

from sklearn.datasets import load_iris

from bench import (
    DatasetBundle,
    DatasetLoaderOptions,
    register_dataset,
    standardise,
    stratified_splits,
)

VERSION = "1"  # part of every run id: bump it whenever the data or its preparation changes


@register_dataset("iris", modality="tabular", version=VERSION)
def load(options: DatasetLoaderOptions) -> DatasetBundle:
    """Fisher's iris: three species by their sepals and petals."""
    raw = load_iris()
    # Stratified 64 / 16 / 20 % splits with the benchmark's fixed split seed, then every split
    # standardised with the training split's statistics.
    train, val, test = standardise(*stratified_splits(raw.data, raw.target))
    return DatasetBundle(
        name="iris",
        version=VERSION,
        modality="tabular",
        train=train,
        val=val,
        test=test,
        class_names=tuple(raw.target_names),
        feature_names=tuple(raw.feature_names),
    )
