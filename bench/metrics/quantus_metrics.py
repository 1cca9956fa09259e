"""Quantus metrics of the explanations: faithfulness, robustness, complexity, randomisation and
localisation (Hedström et al., Quantus, JMLR 2023).

Each metric is computed on the first `n_quantus` samples of the explained test subset with the
profile's `quantus_explainer`. Every metric hands back Quantus' per-sample scores (also
FaithfulnessCorrelation, whose own aggregate is `np.mean`: one NaN sample made the whole run null),
and `bench.metrics.score` averages the defined ones and records their coverage. Quantus treats
axis 1 as channels, so tables are handed over as (N, 1, F) with a leading `nn.Flatten()` on the
model.

RandomLogit (Sixt et al. 2020) is not scored: every model is explained through its class scores
centred over classes (`bench.explain.class_scores`), which sum to zero, so two classes'
explanations correlate at about -1/(K-1) by construction, for any model and at every K; on wine
(K = 3) that offset outweighed the spread between trained models and ranked the teacher below every
student (FINDINGS N7).

Whether a metric separates anything on a dataset — the teacher from the random control — is not
decided here but checked on the records (`bench.report.separation`), and the report flags metrics that
do not.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import quantus
import torch
from torch import nn

from bench.explain.explainers import EXPLAINERS, ClassScores, explain, explanation_rules
from bench.metrics import (
    CORRELATION,
    NON_NEGATIVE,
    SCORING_SEED,
    UNIT,
    Bounds,
    ScoringContext,
    register_metric,
    softmax,
)
from bench.metrics.explanation import spearman_per_sample

IMAGE = frozenset({"image"})
QuantusFn = Callable[[ScoringContext, str], np.ndarray]
BOTH = frozenset({"tabular", "image"})


class PredictorModule(nn.Module):
    """A tree teacher seen as a torch module, for Quantus' forward passes (no gradients needed)."""

    def __init__(self, predictor: Any) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.predictor.predict_logits(x.detach().cpu().numpy().astype(np.float32))
        return torch.as_tensor(logits, device=x.device)


def _is_tabular(ctx: ScoringContext) -> bool:
    return ctx.bundle.modality == "tabular"


def _model(ctx: ScoringContext) -> nn.Module:
    module = ctx.model.module if ctx.model.module is not None else PredictorModule(ctx.model)
    scores = ClassScores(module, ctx.bundle.num_classes)
    return (nn.Sequential(nn.Flatten(), scores) if _is_tabular(ctx) else scores).eval()


def _explain_func(ctx: ScoringContext, explainer: str) -> Callable[..., np.ndarray]:
    """Explains whatever model Quantus hands over (MPRT hands over randomised copies)."""
    explainer = ctx.explainer_override or explainer
    tabular = _is_tabular(ctx)

    def explain_func(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any):
        x = inputs.reshape(len(inputs), -1) if tabular else inputs
        targets = np.asarray(targets).astype(np.int64)
        scores = model[-1] if isinstance(model, nn.Sequential) else model
        if isinstance(scores.module, PredictorModule):
            attributions = ctx.model.explain(explainer, x, targets, ctx.explain_settings)
        else:
            attributions = explain(
                explainer,
                scores.module,
                x.astype(np.float32),
                targets,
                ctx.bundle.num_classes,
                ctx.explain_settings,
                ctx.model.device,
            )
        return attributions.reshape(len(x), 1, -1) if tabular else attributions

    return explain_func


def _batch(ctx: ScoringContext, explainer: str) -> dict[str, np.ndarray]:
    n = ctx.explanation.n_quantus
    x, y = ctx.explain_x[:n], ctx.explain_targets[:n]
    a = ctx.attributions(explainer)[:n]
    if _is_tabular(ctx):
        x, a = x[:, None, :], a[:, None, :]
    batch = {"x_batch": x, "y_batch": y, "a_batch": a}
    if ctx.bundle.test_masks is not None and not _is_tabular(ctx):
        batch["s_batch"] = ctx.bundle.test_masks[ctx.explain_index][:n][:, None].astype(float)
    return batch


def _scores(
    ctx: ScoringContext,
    explainer: str,
    metric: Any,
    with_masks: bool = False,
    random_order: int = 0,
) -> np.ndarray:
    """Quantus' raw output for the batch, as an array.

    `random_order`: when not 0, the attributions are replaced by uniform noise seeded by it, so
    that a perturbation curve follows a random order of the features (the reference of
    `deletion_gain`).
    """
    batch = _batch(ctx, explainer)
    if random_order:
        rng = np.random.default_rng([SCORING_SEED, random_order])
        batch["a_batch"] = rng.random(batch["a_batch"].shape).astype(np.float32)
    if not with_masks:
        batch.pop("s_batch", None)
    if not np.any(batch["a_batch"]):
        # An all-zero batch of explanations has no order for a metric to test (Quantus refuses
        # it with an assertion): every sample is unscored, and the coverage says so.
        return np.full(len(batch["x_batch"]), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(
            model=_model(ctx),
            **batch,
            explain_func=_explain_func(ctx, explainer),
            channel_first=True,
            device=str(ctx.model.device),
        )
    return np.asarray(scores, dtype=np.float64)


def _run(ctx: ScoringContext, explainer: str, metric: Any, with_masks: bool = False) -> np.ndarray:
    """A metric's per-sample scores."""
    return _scores(ctx, explainer, metric, with_masks).ravel()


def _spearman(a: np.ndarray, b: np.ndarray, batched: bool = False, **_: Any) -> np.ndarray:
    """Quantus' similarity-function contract, computed by the agreement metrics' row-wise
    Spearman: NaN for a constant explanation. Quantus' own `correlation_spearman` fails there
    (scipy hands back a bare float it then asks for a `.shape`), which failed whole runs of an
    untrained student's constant Grad-CAM maps, and it builds a (2B × 2B) matrix per batch."""
    rows = spearman_per_sample(np.atleast_2d(a), np.atleast_2d(b))
    return rows if batched else rows[0]


def _features(ctx: ScoringContext) -> int:
    return int(
        np.prod(ctx.bundle.input_shape[1:] if not _is_tabular(ctx) else ctx.bundle.input_shape)
    )


def _quiet() -> dict[str, Any]:
    return {"disable_warnings": True, "display_progressbar": False}


def _replace_by_baseline(arr: np.ndarray, indices: np.ndarray, baseline: np.ndarray, **_: Any):
    """Quantus' perturbation contract (a batch of flattened inputs, per-row feature indices):
    the features at `indices` take the explainer's own baseline values (tables: the training
    mean; images: black). Quantus' "black" and "mean" are statistics of each sample (its minimum,
    about -2 SD on a standardised table), not the reference the attributions are computed from."""
    perturbed = arr.copy()
    perturbed[np.arange(len(arr))[:, None], indices] = baseline.reshape(-1)[indices]
    return perturbed


def _perturbation(ctx: ScoringContext) -> dict[str, Any]:
    return {
        "perturb_func": _replace_by_baseline,
        "perturb_func_kwargs": {"baseline": ctx.explain_settings.baseline},
    }


def faithfulness_correlation(ctx: ScoringContext, explainer: str) -> np.ndarray:
    """Correlation between attribution mass of random feature subsets and the drop in the class
    score when they are set to the explainer's baseline (Bhatt et al. 2020)."""
    subset = max(1, math.ceil(0.25 * _features(ctx)))
    metric = quantus.FaithfulnessCorrelation(
        nr_runs=ctx.explanation.perturbations,
        subset_size=subset,
        return_aggregate=False,
        **_perturbation(ctx),
        **_quiet(),
    )
    return _run(ctx, explainer, metric)


DELETION_STEPS = 16
RANDOM_ORDERS = 4


def _deletion_area(curves: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Area under each deletion curve on x in [0, 1] (the share of features removed), the
    unperturbed probability `start` at x = 0. Quantus' own AUC integrates with dx = 1, so its
    scale grows with the number of steps."""
    points = np.concatenate([start[:, None], curves], axis=1)
    return np.trapezoid(points, dx=1.0 / curves.shape[1], axis=1)


# Fewer steps than this make no curve: a prime column count above `DELETION_STEPS` (17, 19, ...)
# would be removed in one step, where every order gives the same curve and the gain is 0.
MIN_DELETION_STEPS = 4


def deletion_step(features: int) -> int:
    """Features removed per step: the smallest divisor of `features` (Quantus needs one) of at
    least features / `DELETION_STEPS`, so a curve has at most that many steps. It is
    ⌈features / 16⌉ wherever that divides (every dataset before UCI Adult's 91 columns: 7, so
    13 steps)."""
    return next(
        d for d in range(1, features + 1) if features % d == 0 and d * DELETION_STEPS >= features
    )


def deletion_gain(ctx: ScoringContext, explainer: str) -> np.ndarray:
    """How much faster the true class's probability falls when features are set to the
    explainer's baseline in the explanation's order than in random orders: the area between the
    two deletion curves (Bach et al. 2015's pixel flipping; Samek et al. 2017), in [-1, 1]. 0: no
    better than random; higher is more faithful.

    The random-order curve of the same model is subtracted because models, not explainers, are
    compared: it removes how fragile a model is to any removal. This replaces a mean of ratios
    to the unperturbed probability, which was unbounded for misclassified samples (a per-sample
    SD of 12 on one digits record, FINDINGS N6).
    """
    step = deletion_step(_features(ctx))
    if _features(ctx) // step < MIN_DELETION_STEPS:  # no curve to compare: every sample unscored
        return np.full(len(ctx.explain_x[: ctx.explanation.n_quantus]), np.nan)
    metric = quantus.PixelFlipping(
        features_in_step=step, return_auc_per_sample=False, **_perturbation(ctx), **_quiet()
    )
    explained = _scores(ctx, explainer, metric)
    if explained.ndim == 1:  # nothing to order (`_scores`): every sample unscored
        return explained
    n = len(explained)  # n_quantus, or fewer on a small test split
    start = ctx.model.predict_logits(ctx.explain_x[:n])
    start = softmax(start.astype(np.float64))[np.arange(n), ctx.explain_targets[:n]]
    random = np.mean(
        [
            _deletion_area(_scores(ctx, explainer, metric, random_order=order), start)
            for order in range(1, RANDOM_ORDERS + 1)
        ],
        axis=0,
    )
    return random - _deletion_area(explained, start)


def max_sensitivity(ctx: ScoringContext, explainer: str) -> np.ndarray:
    """Largest change of the explanation under small uniform input noise (Yeh et al. 2019)."""
    metric = quantus.MaxSensitivity(nr_samples=ctx.explanation.perturbations, **_quiet())
    return _run(ctx, explainer, metric)


def sparseness(ctx: ScoringContext, explainer: str) -> np.ndarray:
    """Gini index of the absolute attributions (Chalasani et al. 2020): concentrated is better."""
    return _run(ctx, explainer, quantus.Sparseness(**_quiet()))


def complexity(ctx: ScoringContext, explainer: str) -> np.ndarray:
    """Entropy of the normalised absolute attributions (Bhatt et al. 2020): lower is simpler."""
    return _run(ctx, explainer, quantus.Complexity(**_quiet()))


def mprt(ctx: ScoringContext, explainer: str) -> np.ndarray:
    """Model parameter randomisation test (Adebayo et al. 2018): Spearman similarity between the
    explanation and that of the fully randomised model; explanations should change (lower)."""
    metric = quantus.MPRT(
        return_last_correlation=True,
        similarity_func=_spearman,
        seed=0,
        **_quiet(),
    )
    return _run(ctx, explainer, metric)


def pointing_game(ctx: ScoringContext, explainer: str) -> np.ndarray:
    """Share of samples whose highest attribution falls on the label object (Zhang et al. 2018)."""
    return _run(ctx, explainer, quantus.PointingGame(**_quiet()), with_masks=True)


def attribution_localisation(ctx: ScoringContext, explainer: str) -> np.ndarray:
    """Share of positive attribution mass inside the label object's mask (Kohlbrenner et al. 2020)."""
    return _run(ctx, explainer, quantus.AttributionLocalisation(**_quiet()), with_masks=True)


def _has_masks(ctx: ScoringContext) -> bool:
    return ctx.bundle.test_masks is not None


def _is_network(ctx: ScoringContext) -> bool:
    return ctx.model.module is not None


def _always(ctx: ScoringContext) -> bool:
    return True


# name, function, category, higher_is_better, bounds, modalities, extra applicability, version
# (complexity: an entropy, at most the log of the feature count; sparseness: a Gini index)
QUANTUS_METRICS = (
    # 2: perturbs to the explainer's baseline, not to each sample's minimum.
    ("faithfulness_correlation", faithfulness_correlation, "faithfulness", True, CORRELATION, BOTH, _always, 2),
    ("deletion_gain", deletion_gain, "faithfulness", True, CORRELATION, BOTH, _always, 1),
    ("max_sensitivity", max_sensitivity, "robustness", False, NON_NEGATIVE, BOTH, _always, 1),
    ("sparseness", sparseness, "complexity", True, UNIT, BOTH, _always, 1),
    ("complexity", complexity, "complexity", False, NON_NEGATIVE, BOTH, _always, 1),
    ("mprt", mprt, "randomisation", False, CORRELATION, IMAGE, _is_network, 1),
    ("pointing_game", pointing_game, "localisation", True, UNIT, IMAGE, _has_masks, 1),
    ("attribution_localisation", attribution_localisation, "localisation", True, UNIT, IMAGE, _has_masks, 1),
)  # fmt: skip


def _register(
    name: str,
    fn: QuantusFn,
    category: str,
    higher: bool,
    bounds: Bounds,
    modalities,
    applies,
    version: int,
) -> None:
    """`<metric>_<explainer>` for every explainer; it applies when it is the profile's Quantus one."""
    for explainer in EXPLAINERS.names():
        usable = modalities & EXPLAINERS.get(explainer).modalities
        if explainer == "random" or not usable:
            continue

        def compute(ctx: ScoringContext, explainer: str = explainer) -> np.ndarray:
            return fn(ctx, explainer)

        def active(ctx: ScoringContext, explainer: str = explainer) -> bool:
            budget = ctx.explanation
            return (
                budget is not None
                and budget.quantus_explainer == explainer
                and applies(ctx)
                and ctx.can_explain(explainer)
            )

        compute.__doc__ = fn.__doc__
        register_metric(
            f"{name}_{explainer}",
            category=f"quantus_{category}",
            higher_is_better=higher,
            bounds=bounds,
            modalities=usable,
            settings={
                "explainer": explainer,
                "quantus": quantus.__version__,
                "rules": explanation_rules(EXPLAINERS.get(explainer)),
            },
            applies=active,
            version=version,
        )(compute)


for _row in QUANTUS_METRICS:
    _register(*_row)
