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

# The public API of plugin files: everything a new method or dataset needs, from one import. It is
# imported on first use (PEP 562) rather than here, because it brings torch, captum and quantus
# (seconds), which `--help`, `list`, `status` and a finished suite's rerun never need.
_PUBLIC = {
    "Batch": "bench.train.method",
    "BenchError": "bench.core.errors",
    "DatasetBundle": "bench.data.bundle",
    "DatasetLoaderOptions": "bench.data.bundle",
    "DatasetUnavailable": "bench.core.errors",
    "Method": "bench.train.method",
    "ModelOutput": "bench.train.method",
    "ScoringContext": "bench.metrics",
    "Split": "bench.data.bundle",
    "TrainContext": "bench.train.loop",
    "register_dataset": "bench.data.bundle",
    "register_method": "bench.train.method",
    "register_metric": "bench.metrics",
    "standardise": "bench.data.bundle",
    "stratified_splits": "bench.data.bundle",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
