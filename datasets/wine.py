"""UCI wine recognition (178 rows, 13 features, 3 classes), from scikit-learn's bundled files."""

from sklearn.datasets import load_wine

from bench.data.bundle import DatasetBundle, DatasetLoaderOptions, register_dataset, sklearn_table

VERSION = "sklearn-1"


@register_dataset("wine", modality="tabular", version=VERSION)
def load(options: DatasetLoaderOptions) -> DatasetBundle:
    """Wine recognition: 3 cultivars, 13 chemical features, no network needed."""
    return sklearn_table("wine", VERSION, load_wine())
