"""xkd-bench: does a distilled student predict as well as its teacher, and for the same reasons?"""

__version__ = "0.1.0"

# Bumped whenever the meaning of a record's fields changes: it is part of every run id, so a
# schema change redoes runs instead of mixing old and new records on one leaderboard.
SCHEMA_VERSION = 1

# The public API of plugin files: everything a new method or dataset needs, from one import.
from bench.data import DatasetBundle, DatasetLoaderOptions, Split, register_dataset  # noqa: E402
from bench.errors import BenchError, DatasetUnavailable  # noqa: E402
from bench.method import Batch, Method, ModelOutput, register_method  # noqa: E402
from bench.metrics import ScoringContext, register_metric  # noqa: E402
from bench.training import TrainContext  # noqa: E402

__all__ = [
    "Batch",
    "BenchError",
    "DatasetBundle",
    "DatasetLoaderOptions",
    "DatasetUnavailable",
    "Method",
    "ModelOutput",
    "ScoringContext",
    "Split",
    "TrainContext",
    "register_dataset",
    "register_method",
    "register_metric",
]
