"""Wisconsin breast cancer (569 rows, 30 features, 2 classes), from scikit-learn's bundled files."""

from sklearn.datasets import load_breast_cancer

from bench.data import (
    DatasetBundle,
    DatasetLoaderOptions,
    register_dataset,
    standardise,
    stratified_splits,
)

VERSION = "sklearn-1"


@register_dataset("breast_cancer", modality="tabular", version=VERSION)
def load(options: DatasetLoaderOptions) -> DatasetBundle:
    """Breast cancer Wisconsin (diagnostic): binary, 30 numeric features, no network needed."""
    raw = load_breast_cancer()
    train, val, test = standardise(*stratified_splits(raw.data, raw.target))
    return DatasetBundle(
        name="breast_cancer",
        version=VERSION,
        modality="tabular",
        train=train,
        val=val,
        test=test,
        class_names=tuple(str(c) for c in raw.target_names),
        feature_names=tuple(raw.feature_names),
    )
