"""Wisconsin breast cancer (569 rows, 30 features, 2 classes), from scikit-learn's bundled files."""

from sklearn.datasets import load_breast_cancer

from bench.data.bundle import DatasetBundle, DatasetLoaderOptions, register_dataset, sklearn_table

VERSION = "sklearn-1"


@register_dataset("breast_cancer", modality="tabular", version=VERSION)
def load(options: DatasetLoaderOptions) -> DatasetBundle:
    """Breast cancer Wisconsin (diagnostic): binary, 30 numeric features, no network needed."""
    return sklearn_table("breast_cancer", VERSION, load_breast_cancer())
