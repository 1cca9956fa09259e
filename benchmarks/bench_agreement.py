"""Explanation agreement with the teacher, vectorised over samples, against a per-sample loop.

Run: python -m pytest benchmarks/bench_agreement.py --benchmark-only -q
`bench.metrics.explanation` scores every explained sample at once (ranks, norms and top-k masks
over a 2-D array); the loop is what one writes first: scipy's `spearmanr`, a dot product and a set
intersection, one sample at a time. Both give the same numbers (checked here); the sizes are the
default profile's: 512 tabular rows of 30 features, 256 images of 3x32x32.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from bench.metrics.explanation import (
    TOP_FRACTION,
    cosine_per_sample,
    spearman_per_sample,
    top_k_intersection_per_sample,
)

SHAPES = {"tabular": (512, 30), "image": (256, 3, 32, 32)}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def attributions(request) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=SHAPES[request.param]).astype(np.float32)
    # A student that half agrees with its teacher, as distilled students do.
    student = (0.5 * teacher + rng.normal(size=teacher.shape)).astype(np.float32)
    return student, teacher


def loop_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)])


def loop_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = []
    for x, y in zip(a, b, strict=True):
        x, y = x.ravel().astype(np.float64), y.ravel().astype(np.float64)
        out.append(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))))
    return np.array(out)


def loop_top_k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    k = max(1, math.ceil(TOP_FRACTION * a[0].size))
    out = []
    for x, y in zip(a, b, strict=True):
        top_x = set(np.argsort(-np.abs(x.ravel()))[:k].tolist())
        top_y = set(np.argsort(-np.abs(y.ravel()))[:k].tolist())
        out.append(len(top_x & top_y) / k)
    return np.array(out)


PAIRS = {
    "spearman": (spearman_per_sample, loop_spearman),
    "cosine": (cosine_per_sample, loop_cosine),
    "topk": (top_k_intersection_per_sample, loop_top_k),
}


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_vectorised_and_loop_agree(attributions, kind: str) -> None:
    vectorised, loop = PAIRS[kind]
    np.testing.assert_allclose(vectorised(*attributions), loop(*attributions), rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_vectorised(benchmark, attributions, kind: str) -> None:
    benchmark.group = f"agreement-{kind}-{attributions[0].shape}"
    values = benchmark(PAIRS[kind][0], *attributions)
    assert values.shape == (len(attributions[0]),) and np.isfinite(values).all()


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_per_sample_loop(benchmark, attributions, kind: str) -> None:
    benchmark.group = f"agreement-{kind}-{attributions[0].shape}"
    values = benchmark.pedantic(PAIRS[kind][1], args=attributions, rounds=3)
    assert values.shape == (len(attributions[0]),)
