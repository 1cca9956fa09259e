"""`bench show`: one run's record as a person reads it, found by its path-like name or run id."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError
from bench.core.paths import check_name
from bench.core.vocabulary import Role
from bench.results.folder import ResultsFolder
from bench.results.record import MetricBounds, Record

RUN_ID_PREFIX = re.compile(r"[0-9a-f]{6,64}")
RUN_NAME = re.compile(r"(?P<dataset>[^/]+)/(?P<method>[^/]+)/seed(?P<seed>\d+)")


def find_run(
    results: Path, run: str, profile: str | None = None, bounds: MetricBounds | None = None
) -> Record:
    """The record `run` names: `<dataset>/<method>/seed<k>`, or a run id (a unique prefix will do);
    records are read against the metrics' declared `bounds`."""
    folder = ResultsFolder(results, bounds or {})
    if not folder.has_runs():
        raise BenchError(f"no runs under {results}: run `python -m bench run --all` first")
    named = RUN_NAME.fullmatch(run)
    if named is None:
        if not RUN_ID_PREFIX.fullmatch(run):
            raise BenchError(
                f"{run!r} names no run: give <dataset>/<method>/seed<k> (e.g. wine/kd/seed0) or a "
                "run id (6 or more of its hex digits)"
            )
        found = [r for r in folder.iter_records(profile) if r.run_id.startswith(run)]
        what = f"run id {run}"
    else:
        dataset, method = (check_name(named[k], k) for k in ("dataset", "method"))
        profiles = [profile] if profile else folder.profiles()
        seed = int(named.group("seed"))
        paths = [folder.record_path(p, dataset, method, seed) for p in profiles]
        found = [r for r in map(folder.read, paths) if r is not None]
        what = run
    if not found:
        raise BenchError(f"no readable record of {what} under {results}")
    if len(found) > 1:
        where = ", ".join(f"{r.profile}/{r.label}" for r in found)
        raise BenchError(f"{what} matches {len(found)} records ({where}); say which with --profile")
    return found[0]


def _number(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def describe_run(record: Record) -> str:
    """The record as text: what ran, its metrics by category, timings, provenance and error."""
    method = record.method
    teacher = record.teacher if isinstance(record.teacher, dict) else {}  # old: a key
    lines = [
        f"{record.label} (profile {record.profile}, {record.role}): {record.status}",
        f"run id      {record.run_id}",
        f"method      {method.get('base', method['name'])}"
        + (f", {method['citation']}" if method.get("citation") else ""),
    ]
    params = method.get("params") or {}
    if params and record.role is Role.STUDENT:
        lines.append("parameters  " + ", ".join(f"{k}={v}" for k, v in sorted(params.items())))
    if teacher:
        lines.append(
            f"teacher     {teacher.get('kind')} seed {record.teacher_seed}, key {teacher.get('key')}"
        )
    student = record.student or {}
    if student:
        lines.append(
            f"student     {student.get('architecture')}, {student.get('parameters')} parameters"
        )
    metrics, meta = record.metrics, record.metric_metadata
    if metrics:
        lines.append("metrics")
        by_category: dict[str, list[str]] = {}
        for name in sorted(metrics):
            info = meta.get(name) or {}
            arrow = {True: "↑", False: "↓"}.get(info.get("higher_is_better"), " ")
            coverage = info.get("coverage")
            note = f"  coverage {coverage:.3f}" if coverage is not None and coverage < 1 else ""
            by_category.setdefault(info.get("category", "other"), []).append(
                f"    {name:<36} {_number(metrics[name]):>10} {arrow}{note}"
            )
        for category, rows in by_category.items():
            lines += [f"  {category}", *rows]
    timings = record.timings
    if timings:
        lines.append(
            "timings     "
            + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if v is not None)
        )
    env = record.environment
    if env:
        versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
        lines += [
            f"ran         {record.started} → {record.ended} on {env.get('device')} "
            f"({env.get('gpu') or env.get('cpu')}, {env.get('torch_threads')} threads)",
            f"code        bench {env.get('bench')}, git {env.get('git_revision')}",
            f"libraries   {versions}",
        ]
    error = record.error
    if error:
        lines += [
            f"error       {error.get('type')} in {error.get('stage') or 'the run'}: {error.get('message')}",
            (error.get("traceback") or "").rstrip(),
        ]
    return "\n".join(line for line in lines if line)
