"""Benchmarks import the harness first, as `python -m bench` does.

`bench/__init__.py` makes OpenMP threads wait passively; that only takes effect if it runs before
torch or LightGBM is first imported, and a benchmark module imports torch before bench (isort's
order). Without this, a busy machine makes both loops of `bench_training.py` several times slower
and the figures say nothing about the harness.
"""

import bench  # noqa: F401
from bench.core import registry

registry.load_plugins()
