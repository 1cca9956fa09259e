"""Efficiency: size, compression against the teacher, inference latency and training time."""

import time

from bench.metrics import NON_NEGATIVE, ScoringContext, register_metric

LATENCY_REPEATS = 3


@register_metric("parameters", category="efficiency", higher_is_better=False, bounds=NON_NEGATIVE)
def parameters(ctx: ScoringContext) -> float:
    """Trainable parameters (trees: one per leaf value, two per split)."""
    return float(ctx.model.n_params)


@register_metric("compression", category="efficiency", higher_is_better=True, bounds=NON_NEGATIVE)
def compression(ctx: ScoringContext) -> float:
    """Teacher parameters divided by this model's: how many times smaller than its teacher it is."""
    return ctx.teacher.n_params / ctx.model.n_params


@register_metric(
    "latency_ms",
    category="efficiency",
    higher_is_better=False,
    bounds=NON_NEGATIVE,
    settings={"repeats": LATENCY_REPEATS},
    measures_time=True,
)
def latency_ms(ctx: ScoringContext) -> float:
    """Inference time per test sample in milliseconds (best of 3 passes over the test split)."""
    x = ctx.bundle.test.x
    best = float("inf")
    for _ in range(LATENCY_REPEATS):
        start = time.perf_counter()
        ctx.model.predict_logits(x)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(x)


@register_metric(
    "train_seconds",
    category="efficiency",
    higher_is_better=False,
    bounds=NON_NEGATIVE,
    measures_time=True,
)
def train_seconds(ctx: ScoringContext) -> float:
    """Wall time spent training this model (teacher: its own training, not cache loading)."""
    return ctx.train_seconds
