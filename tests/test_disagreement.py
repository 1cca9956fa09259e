"""Krishna et al. 2022's agreement measures (`bench.metrics.disagreement`): each equals its
definition computed the slow way, sits at its chance level for unrelated explanations, and is 1
for an explanation against itself."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.metrics import METRICS
from bench.metrics.disagreement import MEASURES, disagreement_measure, patches
from bench.metrics.explanation import TOP_FRACTION


def _slow(name: str, a: np.ndarray, b: np.ndarray) -> float:
    """One sample by the paper's words, no vectorisation."""
    features = len(a)
    k = max(1, math.ceil(TOP_FRACTION * features))
    top_a = sorted(range(features), key=lambda f: (-abs(a[f]), f))[:k]
    top_b = sorted(range(features), key=lambda f: (-abs(b[f]), f))[:k]
    same_sign = lambda f: np.sign(a[f]) == np.sign(b[f])  # noqa: E731
    if name == "feature_agreement":
        return len(set(top_a) & set(top_b)) / k
    if name == "rank_agreement":
        return sum(fa == fb for fa, fb in zip(top_a, top_b, strict=True)) / k
    if name == "sign_agreement":
        return sum(same_sign(f) for f in set(top_a) & set(top_b)) / k
    if name == "signed_rank_agreement":
        return sum(fa == fb and same_sign(fa) for fa, fb in zip(top_a, top_b, strict=True)) / k
    pairs = [(i, j) for i in range(features) for j in range(i + 1, features)]
    order = lambda x, i, j: np.sign(abs(x[i]) - abs(x[j]))  # noqa: E731
    return sum(order(a, i, j) == order(b, i, j) for i, j in pairs) / len(pairs)


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_each_measure_equals_its_definition(name: str) -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 13))
    b = a + rng.normal(scale=0.7, size=a.shape)
    b[0, 3] = a[0, 3] = 0.0  # a tie in the pairwise measure
    expected = [_slow(name, row_a, row_b) for row_a, row_b in zip(a, b, strict=True)]
    np.testing.assert_allclose(disagreement_measure(name, a, b), expected)


def test_unrelated_explanations_sit_at_the_chance_levels_and_self_agreement_is_one() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3000, 30)), rng.normal(size=(3000, 30))
    k, features = 6, 30
    chance = {
        "feature_agreement": k / features,
        "rank_agreement": 1 / features,
        "sign_agreement": k / (2 * features),
        "signed_rank_agreement": 1 / (2 * features),
        "pairwise_rank_agreement": 0.5,
    }
    for name, level in chance.items():
        assert disagreement_measure(name, a, b).mean() == pytest.approx(level, abs=0.01)
        assert disagreement_measure(name, a, a).mean() == 1.0


def test_images_are_compared_on_patches_and_left_out_pixels_drop_out_of_them() -> None:
    maps = np.arange(2 * 32 * 32, dtype=np.float64).reshape(2, 1, 32, 32)
    cells = patches(maps)
    assert cells.shape == (2, 64)
    assert cells[1, 9] == maps[1, 0, 4:8, 4:8].sum()
    maps[0, 0, :4, :4] = np.nan  # a whole cell left out
    maps[0, 0, 4, 4] = np.nan  # one pixel of another
    cells = patches(maps)
    assert math.isnan(cells[0, 0])
    assert cells[0, 9] == np.nansum(maps[0, 0, 4:8, 4:8])
    digits = np.ones((2, 1, 8, 8))  # too small for the grid: pixels stay features
    assert patches(digits).shape == (2, 64)


def test_sign_measures_exist_only_for_signed_explainers() -> None:
    assert "expl_sign_agreement_ig" in METRICS
    assert "expl_sign_agreement_saliency" not in METRICS
    assert "expl_pairwise_rank_agreement_gradcam" in METRICS


def test_a_constant_explanation_has_no_top_k() -> None:
    a = np.ones((1, 10))
    b = np.arange(10.0)[None]
    for name in MEASURES:
        assert math.isnan(disagreement_measure(name, a, b)[0])
