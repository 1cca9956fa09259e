"""Interventional Shapley values of a class score: one game, played alike by trees and networks.

The player set is the features; the value of a coalition S for a sample x is the class score
averaged over a background sample of training rows b, each with the features outside S taken
from b (Janzing et al. 2020's interventional game; KernelSHAP's and SHAP's `Independent`
masker's, Lundberg & Lee 2017):

    v(S) = mean_b s_c(x_S, b_¬S),   s_c = z_c − mean_k z_k   (`bench.explain.class_scores`).

φ_i is feature i's Shapley value in that game, so Σ_i φ_i = s_c(x) − mean_b s_c(b) (efficiency).
Only the model's outputs are read, never its gradients or its trees, so a LightGBM teacher and a
network student are explained by the very same computation: the same background rows, the same
coalitions, hence the same pattern of sampling noise. That is the point of this explainer: TreeSHAP
(`bench.explain.treeshap`) plays the path-dependent game of the trees' own training cover, and the
gradient explainers are local, so neither is this game (for a linear model they all coincide,
(w_c − mean_k w_k) ⊙ (x − mean_b b)).

Players. Without `groups` every column is a player. A table with one-hot encoded categories
(UCI Adult) passes `groups`, the original feature of each column: the players are then the
original features, a coalition takes all of a feature's columns from x or all from b (one category
at a time, never two hot or none), and each feature's value is spread evenly over its columns, so
that summing a feature's columns (`ScoringContext.per_feature`) gives its Shapley value exactly.

Estimator. Up to `EXACT_MAX_FEATURES` players every coalition is evaluated and φ is exact (given
the background). Beyond, φ is the mean over random feature orders of each feature's marginal
contribution when it joins the features before it (Castro et al. 2009), drawn in antithetic pairs
(each order and its reverse, Mitchell et al. 2022), from a generator seeded by the settings' seed:
the same orders for every sample and every model. Each order's contributions add up to
v(all) − v(∅), so efficiency holds exactly for the sampled estimate too. Both estimators are one
linear map of the coalition values, φ = V·M (`_exact_weights`, `_permutation_weights`).

Defaults, measured on breast_cancer (30 features; the default profile's LightGBM teacher, 313
trees, and an MLP 64×2 trained 60 epochs by a plain loop of the scratch recipe, which the script
has since replaced by the suite's own training; 24 test samples; wall time on 2 CPU cores, which
varied up to 2× with the machine's load; `python benchmarks/shapley_defaults.py grid`). Three
repeats per setting, repeat r drawing both its background and its orders with seed r; SE: the SD over repeats per value, over the mean |φ| of the
reference (the whole training split, 364 rows, as background; 32 pairs), in brackets with the
background fixed and only the orders redrawn; ρ: mean per-sample Spearman between repeats and
with the reference:

                 teacher (313 trees)                 student (MLP 64×2)
    pairs rows   ms/sample SE (orders) ρ rep. ρ ref   ms/sample SE (orders) ρ rep. ρ ref
      2   128       60     0.12 (0.04) 0.989  0.994      9     0.15 (0.09) 0.972  0.985
      4   128      128     0.12 (0.03) 0.989  0.994     15     0.14 (0.06) 0.977  0.988
      8   128      261     0.12 (0.02) 0.990  0.994     37     0.13 (0.04) 0.979  0.989
      4    32       35     0.21 (0.03) 0.968  0.983      4     0.27 (0.07) 0.921  0.960
      4    64       61     0.14 (0.03) 0.984  0.991      8     0.19 (0.06) 0.955  0.977
      4   256      240     0.04 (0.03) 0.996  0.997     30     0.08 (0.07) 0.990  0.994

The background's draw, not the orders, dominates the error: 4 pairs leave an order-only SE of
3–6 % (antithetic pairs are exact for games of pairwise interactions, so the rest is higher-order),
and 128 rows rank features as the whole training split does at ρ 0.99 for both models; 256 rows
double the cost for +0.003–0.006. With the background fixed, two seeds of orders agree at
ρ 0.992–0.997 (wine, 13 features, all 113 training rows: 0.987–0.999). Hence 4 pairs, 128 rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import product

import numpy as np

from bench.core.errors import BenchError
from bench.explain.class_scores import centre_over_classes

# Exact enumeration evaluates 2^d coalitions, sampling at most 2·pairs·(d − 1) + 2 (∅ and all
# features are shared by every order): with the default pairs, 256 against 58 at 8 features,
# 1024 against 74 at 10.
EXACT_MAX_FEATURES = 8
PERMUTATION_PAIRS = 4
BACKGROUND_SIZE = 128
# Input floats per model call (rows × features), which bounds the memory of the rows (128 MB) and
# of the model's activations: about a million rows of 30 features. Calls of 17k to 1.1M rows took
# the same time within the noise of a shared 2-core machine; the chunking decides how a network's
# sums are batched, so it is part of what a record's numbers depend on.
CHUNK_FLOATS = 1 << 25
# Part of the cache keys of these explanations and of the settings (so the run ids) of every
# metric scored on them: a change of estimator is recomputed, not trusted.
RULES = (
    f"interventional-shapley-v1;exact<={EXACT_MAX_FEATURES};pairs={PERMUTATION_PAIRS};"
    f"background={BACKGROUND_SIZE};chunk={CHUNK_FLOATS}"
)

Logits = Callable[[np.ndarray], np.ndarray]


def background_sample(train_x: np.ndarray, seed: int, size: int = BACKGROUND_SIZE) -> np.ndarray:
    """`size` training rows drawn without replacement by a generator seeded by `seed` (all rows
    when there are fewer): the background every model's game is played against."""
    if len(train_x) <= size:
        return train_x.astype(np.float32)
    rows = np.random.default_rng(seed).choice(len(train_x), size=size, replace=False)
    return train_x[np.sort(rows)].astype(np.float32)


def interventional_shapley(
    logits: Logits,
    x: np.ndarray,
    targets: np.ndarray,
    background: np.ndarray | None,
    seed: int,
    pairs: int = PERMUTATION_PAIRS,
    exact_up_to: int = EXACT_MAX_FEATURES,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """φ (samples, columns), float32: each sample's Shapley values of its target class's centred
    score in the interventional game against `background` (module docstring).

    `logits` maps an (n, columns) float32 array to (n, classes) logits. `groups`: the player
    (original feature, 0..G−1) of each column, or None for a player per column; a player's value
    is spread evenly over its columns. Exact up to `exact_up_to` players, else from `pairs`
    antithetic pairs of player orders drawn with `seed`.
    """
    x = np.asarray(x)
    _check(x, targets, background, pairs)
    players = np.arange(x.shape[1]) if groups is None else np.asarray(groups)
    if players.shape != (x.shape[1],) or set(players) != set(range(players.max() + 1)):
        raise BenchError(
            f"shapley's groups must give each of the {x.shape[1]} columns a player 0..G−1, "
            "using each player"
        )
    n_players = int(players.max()) + 1
    if n_players <= exact_up_to:
        masks, weights = _exact_weights(n_players)
    else:
        masks, weights = _permutation_weights(n_players, pairs, seed)
    values = _coalition_values(logits, x, np.asarray(targets), background, masks[:, players])
    phi = values @ weights
    columns_per_player = np.bincount(players, minlength=n_players)
    return (phi[:, players] / columns_per_player[players]).astype(np.float32)


def _check(x: np.ndarray, targets: np.ndarray, background: np.ndarray | None, pairs: int) -> None:
    if background is None:
        raise BenchError(
            "shapley needs a background sample of training rows (ExplainSettings.background); "
            "it is set for tables only"
        )
    if x.ndim != 2:
        raise BenchError(f"shapley explains tables (samples, features), not shape {x.shape}")
    if background.ndim != 2 or background.shape[1] != x.shape[1] or not len(background):
        raise BenchError(
            f"shapley's background must be a non-empty (rows, {x.shape[1]}) array like the "
            f"inputs, not shape {background.shape}"
        )
    if len(targets) != len(x):
        raise BenchError(f"{len(x)} samples but {len(targets)} targets")
    if pairs < 1:
        raise BenchError(f"shapley needs at least one pair of feature orders, not {pairs}")


def _exact_weights(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Every coalition, and M with φ = V·M the Shapley formula: feature i gains
    |S|!(d − |S| − 1)!/d! · (v(S ∪ i) − v(S)) from each coalition S without it."""
    masks = np.array(list(product([False, True], repeat=n_features)), dtype=bool)
    sizes = masks.sum(axis=1)
    share = np.array(
        [math.factorial(s) * math.factorial(n_features - s - 1) for s in range(n_features)]
    ) / math.factorial(n_features)
    with_i = share[np.maximum(sizes - 1, 0)][:, None]
    without_i = share[np.minimum(sizes, n_features - 1)][:, None]
    return masks, np.where(masks, with_i, -without_i)


def _permutation_weights(n_features: int, pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The coalitions the orders' prefixes visit, and M with φ = V·M the mean over orders of
    v(prefix ending in i) − v(prefix before i). Prefixes shared by several orders (∅, all
    features, ...) are evaluated once."""
    generator = np.random.default_rng(seed)
    drawn = [generator.permutation(n_features) for _ in range(pairs)]
    orders = np.array([o for order in drawn for o in (order, order[::-1])])
    # prefixes[p, j]: the first j features of order p, as a mask (j = 0 .. d).
    ranks = np.argsort(orders, axis=1)  # ranks[p, i]: where feature i comes in order p
    prefixes = ranks[:, None, :] < np.arange(n_features + 1)[None, :, None]
    masks, coalition = np.unique(prefixes.reshape(-1, n_features), axis=0, return_inverse=True)
    coalition = coalition.reshape(len(orders), n_features + 1)
    weights = np.zeros((len(masks), n_features))
    step = 1 / len(orders)
    for p, order in enumerate(orders):
        # Feature order[j] joins prefix j, making prefix j + 1.
        np.add.at(weights, (coalition[p, 1:], order), step)
        np.add.at(weights, (coalition[p, :-1], order), -step)
    return masks, weights


def _coalition_values(
    logits: Logits,
    x: np.ndarray,
    targets: np.ndarray,
    background: np.ndarray,
    masks: np.ndarray,
) -> np.ndarray:
    """V (samples, coalitions): v(S) of each sample's target class, float64, evaluated on
    samples × coalitions × background rows in calls of at most `CHUNK_FLOATS` input floats
    (one coalition's rows at least)."""
    n_coalitions, rows_per_value = len(masks), len(background)
    values = np.empty(len(x) * n_coalitions)
    per_call = max(1, CHUNK_FLOATS // (rows_per_value * x.shape[1]))
    x32, background32 = x.astype(np.float32), background.astype(np.float32)
    for start in range(0, len(values), per_call):
        index = np.arange(start, min(start + per_call, len(values)))
        sample, coalition = np.divmod(index, n_coalitions)
        rows = np.where(masks[coalition][:, None, :], x32[sample][:, None, :], background32)
        raw = np.asarray(logits(rows.reshape(-1, x.shape[1])), dtype=np.float64)
        scores = centre_over_classes(raw).reshape(len(index), rows_per_value, -1)
        values[index] = scores.mean(axis=1)[np.arange(len(index)), targets[sample]]
    return values.reshape(len(x), n_coalitions)
