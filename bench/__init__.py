"""xkd-bench: does a distilled student predict as well as its teacher, and for the same reasons?"""

import os as _os

# OpenMP threads (torch's and LightGBM's) spin while they wait at a barrier by default; on a busy or
# shared machine a spinning thread holds the core that the thread it waits for needs. Measured on 2
# busy cores: a small LightGBM teacher took 7-23 s instead of 0.02 s, the smoke suite 58-170 s
# instead of 12-16 s. Passive waiting costs little on an idle machine. It must be set before torch
# is imported; a value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# Bumped whenever the meaning of a record's fields changes: it is part of every run id, so a
# schema change redoes runs instead of mixing old and new records on one leaderboard.
SCHEMA_VERSION = 2

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
