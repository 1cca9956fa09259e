"""Planning a suite whose 1 000 runs have all finished: what `run --all` costs the second time.

Run: python -m pytest benchmarks/bench_planning.py --benchmark-only -q
The default profile, with as many seeds as make 1 000 runs or more, plans them; every one has a
finished record, written by the real writer with a realistic body (metrics, metadata, a 60-epoch
loss history), and so have the teachers' reference rows. The benchmark expands the plan and has the runner decide that
nothing is left to do, reading every record: all `run --all` does before it exits (Python's
start-up and imports aside). Target: under a second.
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.core import registry
from bench.core.atomic import write_json_atomic
from bench.core.vocabulary import REFERENCE_ROWS, TEACHER_ROW
from bench.plan.planner import Selection, make_plan
from bench.run.context import RunOptions, SuiteContext
from bench.run.runner import run_suite
from bench.run.student_stage import student_record

registry.load_plugins()
RUNS = 1000
EPOCHS = 60


def finished_record(ctx: SuiteContext, spec) -> dict:
    record = student_record(ctx, spec, None).to_json()
    metrics = {f"metric_{i}": 0.5 + i / 100 for i in range(40)}
    record.update(
        status="ok",
        metrics=metrics,
        metric_metadata={
            name: {
                "category": "prediction",
                "higher_is_better": True,
                "measures_time": False,
                "description": "a sentence saying what the metric measures and on which samples",
                "settings": {"explainer": "ig", "n_explain": 512, "target": "true class"},
            }
            for name in metrics
        },
        training={
            "best_epoch": EPOCHS - 1,
            "history": {
                key: [1.0 / (e + 1) for e in range(EPOCHS)]
                for key in ("loss/ce", "loss/kd", "val_accuracy")
            },
        },
        timings={"train": 1.0, "score": 1.0, "total": 2.0},
    )
    return record


def reference_record(ctx: SuiteContext, plan, teacher, row: str) -> dict:
    """A finished reference row (the teacher or a control) of `teacher`, with the dataset, row,
    role and seed of the path it is filed at: a record filed elsewhere is not read as done there,
    and the run would train the teacher again."""
    spec = next(s for s in plan.runs if s.teacher.key == teacher.key)
    record = finished_record(ctx, spec)
    record.update(
        run_id=plan.reference_ids[teacher.key],
        method={**record["method"], "name": row, "base": row},
        role="teacher" if row == TEACHER_ROW else "control",
        seed=teacher.seed,
    )
    return record


def write_finished_plan(ctx: SuiteContext, plan) -> None:
    """Every run of `plan` and every reference row of its teachers, finished."""
    for spec in plan.runs:
        write_json_atomic(ctx.path_of(spec), finished_record(ctx, spec))
    for teacher in plan.teachers:
        for row in REFERENCE_ROWS:
            write_json_atomic(
                ctx.reference_path(teacher, row), reference_record(ctx, plan, teacher, row)
            )


@pytest.fixture(scope="module")
def finished_suite(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    per_seed = len(make_plan(Selection(profile="default", seeds=(0,))).runs)
    selection = Selection(profile="default", seeds=tuple(range(math.ceil(RUNS / per_seed))))
    plan = make_plan(selection)
    assert len(plan.runs) >= RUNS
    options = RunOptions(results=results, device=torch.device("cpu"))
    ctx = SuiteContext(plan.profile, options)
    write_finished_plan(ctx, plan)
    return selection, options, len(plan.runs)


def plan_and_skip(selection: Selection, options: RunOptions):
    return run_suite(make_plan(selection), options)


@pytest.mark.benchmark(group="planning")
def test_plan_a_suite_of_1000_finished_runs(benchmark, finished_suite) -> None:
    selection, options, n_runs = finished_suite
    summary = benchmark.pedantic(
        plan_and_skip, args=(selection, options), rounds=5, warmup_rounds=1
    )
    assert summary.counts == {"done": n_runs}  # nothing retrained, no teacher stage
    benchmark.extra_info["runs"] = n_runs
