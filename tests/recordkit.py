"""Writing run records by hand, on the `Record` the runner builds them on (`bench.results.record`).

The statistics and report tests need exact, known numbers (to compare with values computed by
hand), which a real training run cannot give; these records follow the documented layout so that
the real store, aggregation and report code read them like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.core.atomic import write_json_atomic
from bench.results.folder import ResultsFolder
from bench.results.record import Record

METADATA = {
    "accuracy": ("prediction", True, "Top-1 accuracy on the test split."),
    "log_loss": ("prediction", False, "Mean negative log-likelihood of the true class."),
    "expl_spearman_ig": ("explanation", True, "Spearman agreement of ig attributions."),
    "expl_spearman_shapley": ("explanation", True, "Spearman agreement of shapley attributions."),
    "expl_spearman_gradcam": ("explanation", True, "Spearman agreement of gradcam attributions."),
    "concept_detectors": ("dissection", True, "Units that detect a concept (best IoU > 0.04)."),
    "parameters": ("efficiency", False, "Parameter count."),
}


def make_record(
    profile: str,
    dataset: str,
    method: str,
    seed: int,
    metrics: dict[str, float | None],
    *,
    role: str = "student",
    modality: str = "tabular",
    explainers: tuple[str, ...] = ("ig",),
    params: dict[str, Any] | None = None,
    status: str = "ok",
) -> dict[str, Any]:
    record = Record(
        run_id=f"{dataset}-{method}-{seed}",
        role=role,
        dataset={"name": dataset, "version": "1", "modality": modality},
        method={"name": method, "base": method, "params": params or {}, "citation": ""},
        seed=seed,
        profile=profile,
        budget={"explanation": {"explainers": list(explainers)}},
        environment={"python": "3.11", "device": "cpu", "git_revision": "0123456789abcdef"},
        started="2026-01-01T00:00:00+00:00",
    ).to_json()
    record.update(
        status=status,
        metrics=metrics,
        metric_metadata={
            name: {
                "category": METADATA[name][0],
                "higher_is_better": METADATA[name][1],
                "description": METADATA[name][2],
            }
            for name in metrics
            if name in METADATA
        },
        timings={"train": 1.0, "score": 0.5, "total": 1.5},
    )
    return record


def write_records(results: Path, records: list[dict[str, Any]]) -> Path:
    for record in records:
        path = ResultsFolder(results).path_of(Record.coerce(record))
        write_json_atomic(path, record)
    return results


def seeded(
    profile: str, dataset: str, method: str, values: dict[str, list[float]], **kwargs: Any
) -> list[dict[str, Any]]:
    """One record per seed 0..n-1, the i-th value of every metric going to seed i."""
    n = len(next(iter(values.values())))
    return [
        make_record(profile, dataset, method, s, {m: v[s] for m, v in values.items()}, **kwargs)
        for s in range(n)
    ]
