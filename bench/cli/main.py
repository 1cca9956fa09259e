"""`python -m bench`: run, list, status, report.

The only layer that prints; everything below logs or raises. A `BenchError` (bad usage or input)
becomes one line on stderr and exit status 2, a file-system fault (full disk, a file where a
folder should be) one line naming the path and exit status 1, never a traceback. SIGTERM is
handled as Ctrl-C (locks released, finished runs kept), with exit status 143.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.core import registry
from bench.core.errors import BenchError, Terminated
from bench.core.kernels import pin_cpu_kernels
from bench.core.terminal import exception_message, printable
from bench.run.progress import TerminalProgress, clock

if TYPE_CHECKING:
    from bench.plan.planner import Plan
    from bench.results.record import Record

LIST_KINDS = ("methods", "datasets", "metrics", "profiles")


def _parser() -> argparse.ArgumentParser:
    from bench.plan.planner import PRESETS

    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark suite for explainable knowledge distillation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="train and score (dataset, method, seed) runs")
    run.add_argument("--all", action="store_true", help="every compatible run of the profile")
    run.add_argument("--dataset", nargs="+", metavar="NAME", help="datasets to run")
    run.add_argument("--method", nargs="+", metavar="NAME", help="methods to run")
    run.add_argument("--seeds", nargs="+", type=int, metavar="N", help="seeds (default: profile's)")
    run.add_argument("--force", action="store_true", help="redo runs that have finished")
    run.add_argument(
        "--executor",
        choices=("local", "process", "ray"),
        help="where runs execute: local (this process, the default), process (--jobs N worker "
        "processes; implied by --jobs N > 1), ray (Ray tasks; implied by --ray-address)",
    )
    run.add_argument(
        "--jobs", type=int, metavar="N", help="runs in parallel (default: process: all cores)"
    )
    run.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="join this Ray cluster (e.g. auto); default: a new local one",
    )
    run.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where networks train and are scored: auto (CUDA when torch sees it, else the CPU), "
        "cpu, or cuda (an error without CUDA)",
    )
    run.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="METHOD.PARAM=VALUE",
        help="override a method hyper-parameter; makes a variant row such as kd[temperature=2]",
    )
    run.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="run every method with a preset's parameters (--set still overrides them): "
        + "; ".join(f"{name}: {what}" for name, what in PRESETS.items()),
    )
    run.add_argument("--data-dir", type=Path, help="folder with downloaded datasets")

    meta = commands.add_parser(
        "metaquantus",
        help="MetaQuantus's noise-resilience and adversarial-reactivity tests of the Quantus "
        "metrics (teacher and two students of seed 0 per dataset; the report reads them)",
    )
    meta.add_argument("--dataset", nargs="+", metavar="NAME", help="datasets (default: profile's)")

    listing = commands.add_parser("list", help="list registered components")
    listing.add_argument("kind", choices=LIST_KINDS, help="what to list")

    status = commands.add_parser(
        "status", help="done / failed / missing runs of a profile, and variants on disk"
    )

    show = commands.add_parser("show", help="one run's record: metrics, timings, provenance, error")
    show.add_argument(
        "run",
        metavar="RUN",
        help="<dataset>/<method>/seed<k> (e.g. wine/kd/seed0, or wine/kd[temperature=2]/seed1), "
        "or a run id or its first 6+ characters",
    )

    report = commands.add_parser(
        "report", help="write the site (report/index.html) and its CSV/JSON exports"
    )
    report.add_argument(
        "--out",
        type=Path,
        default=Path("report"),
        help="folder of the site and the exports (leaderboard.csv, ...; default: report)",
    )
    report.add_argument(
        "--reference",
        type=Path,
        metavar="DIR",
        help="a reference result set (e.g. reference/default-v3) to rank your runs among; your "
        "rows are marked, and environments that differ are named",
    )

    for sub in (run, status, show, meta):
        sub.add_argument(
            "--results",
            type=Path,
            default=Path("results"),
            help="results folder (default: results)",
        )
    report.add_argument(
        "--results",
        type=Path,
        nargs="+",
        default=[Path("results")],
        metavar="RESULTS",
        help="results folder(s) (default: results); several make one site, e.g. "
        "reference/real-v1 reference/default-v8",
    )
    for sub in (run, status, meta):
        sub.add_argument("--profile", default="default", help="budget profile (default: default)")
    report.add_argument("--profile", default=None, help="only this profile (default: all found)")
    show.add_argument(
        "--profile", default=None, help="the run's profile, when several hold it (default: any)"
    )
    for sub in (run, listing, status):
        sub.add_argument(
            "--plugin", nargs="+", action="extend", default=[], metavar="FILE",
            help="Python file(s) registering extra methods or datasets",
        )  # fmt: skip
    return parser


def _run(args: argparse.Namespace) -> int:
    from bench.plan.catalogue import load_catalogue
    from bench.plan.planner import Selection, make_plan
    from bench.results.folder import ResultsFolder
    from bench.run.resume import FinishedRecords

    if not (args.all or args.dataset or args.method):
        raise BenchError("say what to run: --all, or --dataset NAME... and/or --method NAME...")
    selection = Selection(
        profile=args.profile,
        datasets=tuple(args.dataset) if args.dataset else None,
        methods=tuple(args.method) if args.method else None,
        seeds=tuple(args.seeds) if args.seeds is not None else None,
        overrides=tuple(args.overrides),
        preset=args.preset,
    )
    started = time.perf_counter()
    plan = make_plan(selection, load_catalogue(args.plugin))
    _announce_plugin_datasets(plan)
    _check_writable(args.results)
    if not args.force:
        finished = FinishedRecords(ResultsFolder(args.results, plan.metric_bounds))
        if not finished.stages(plan, finished.todo(plan)):
            # Nothing to train or score: answered from the records, without importing torch.
            seconds = clock(time.perf_counter() - started)
            print(f"{len(plan.runs)} runs ({len(plan.runs)} done) in {seconds}; "
                  f"records in {args.results}")  # fmt: skip
            return 0
    # Work to do: the plan from the catalogue is the plan run (the catalogue equals the
    # registries it was built from: tests/test_catalogue.py); the workers import the registries.
    registry.load_plugins(args.plugin)
    return _execute(plan, args)


def _announce_plugin_datasets(plan: Plan) -> None:
    """Say, first, which datasets of plugins the plan adds to its profile's: `run` and `status`
    count the same runs, and neither adds a dataset silently."""
    if plan.plugin_datasets:
        names = ", ".join(plan.plugin_datasets)
        print(
            f"including the plugin datasets {names}, which profile {plan.profile.name} does not "
            "list (--dataset chooses datasets)"
        )


def _execute(plan: Plan, args: argparse.Namespace) -> int:
    from bench.run.backends import make_backend
    from bench.run.context import RunOptions
    from bench.run.runner import run_suite

    backend = make_backend(args.executor, args.jobs, args.ray_address)
    progress = TerminalProgress()
    try:
        device = backend.resolve_device(args.device)
        options = RunOptions(
            results=args.results, device=device, force=args.force, data_dir=args.data_dir
        )
        summary = run_suite(plan, options, progress, backend)
    finally:
        progress.close()
        backend.close()
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items()) if n)
    print(
        f"{len(plan.runs)} runs ({counts}) in {clock(summary.seconds)}; records in {args.results}"
    )
    if summary.counts["locked"]:
        print(
            f"{summary.counts['locked']} runs were being executed by another process and were "
            "left to it (locked); `status` shows them once they finish",
            file=sys.stderr,
        )
    if summary.exit_status:
        print("some runs failed: their records hold the traceback (see `status`)", file=sys.stderr)
    return summary.exit_status


def _metaquantus(args: argparse.Namespace) -> int:
    from bench.core.atomic import write_atomic
    from bench.plan.catalogue import load_catalogue
    from bench.plan.planner import Selection, make_plan
    from bench.results.folder import ResultsFolder
    from bench.run.context import RunOptions
    from bench.run.environment import resolve_device
    from bench.run.metaquantus import STUDENTS, metaquantus_table

    selection = Selection(
        profile=args.profile,
        datasets=tuple(args.dataset) if args.dataset else None,
        methods=STUDENTS,
        seeds=(0,),
    )
    plan = make_plan(selection, load_catalogue(()))
    _check_writable(args.results)
    registry.load_plugins([])  # the built-in methods, datasets and metrics, in this process
    started = time.perf_counter()
    device = resolve_device("auto")
    progress = TerminalProgress()
    try:
        table = metaquantus_table(plan, RunOptions(results=args.results, device=device), progress)
    finally:
        progress.close()
    path = ResultsFolder(args.results).metaquantus_file
    write_atomic(path, lambda f: f.write(table.to_csv(index=False).encode()))
    print(
        f"{len(table)} (dataset, metric) tested in {clock(time.perf_counter() - started)}: "
        f"{int(table.noise_resilient.sum())} noise-resilient, "
        f"{int(table.adversarially_reactive.sum())} adversarially reactive; wrote {path}"
    )
    return 0


def _check_writable(results: Path) -> None:
    try:
        results.mkdir(parents=True, exist_ok=True)
        # A probe file of its own: with a fixed name, two `bench run`s starting together on one
        # folder could each delete the other's probe and report the folder unwritable.
        with tempfile.NamedTemporaryFile(dir=results, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise BenchError(
            f"results folder {str(results)!r} is not writable: {exc.strerror}"
        ) from exc


def _list(kind: str, plugins: Sequence[str]) -> int:
    from bench.plan.catalogue import load_catalogue
    from bench.plan.profiles import PROFILES

    catalogue = load_catalogue(plugins)
    rows: list[tuple[str, ...]] = []
    if kind == "methods":
        for name, method in sorted(catalogue.methods.items()):
            rows.append((name, "+".join(method.modalities), method.description))
            # Parameters on lines of their own: gbdt2nn's alone would widen every row.
            if method.hyperparameters:
                params = ", ".join(f"{k}={v}" for k, v in method.hyperparameters.items())
                rows.append(("", "", f"defaults: {params}"))
            if method.paper_changes:
                params = ", ".join(f"{k}={v}" for k, v in method.paper_changes.items())
                rows.append(("", "", f"--preset paper: {params}"))
    elif kind == "datasets":
        for name, dataset in sorted(catalogue.datasets.items()):
            rows.append((name, dataset.modality, f"v{dataset.version}", dataset.description))
    elif kind == "metrics":
        for name, metric in sorted(catalogue.metrics.items()):
            arrow = "↑" if metric.higher_is_better else "↓"
            modalities = "+".join(metric.modalities)
            rows.append((name, arrow, metric.category, modalities, metric.description))
    else:
        for name in PROFILES:
            profile = PROFILES.get(name)
            summary = f"seeds {list(profile.seeds)}, datasets {', '.join(profile.datasets)}"
            rows.append((name, summary, profile.description))
            for dataset in profile.datasets:
                methods = profile.methods_for(dataset)
                if methods is not None and methods != profile.methods:
                    rows.append(("", f"{dataset}: only {', '.join(methods)}", ""))
    print("\n".join(aligned(rows)))
    return 0


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of text columns, each column as wide as its longest cell (the last one left ragged)."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join(
            [*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]
        ).rstrip()
        for row in rows
    ]


def _status(args: argparse.Namespace) -> int:
    from bench.core.vocabulary import REFERENCE_ROWS
    from bench.plan.catalogue import load_catalogue
    from bench.plan.planner import Selection, make_plan
    from bench.results.folder import ResultsFolder

    plan = make_plan(Selection(profile=args.profile), load_catalogue(args.plugin))
    _announce_plugin_datasets(plan)
    folder = ResultsFolder(args.results, plan.metric_bounds)
    # Every record read once, so a damaged one is warned about once.
    on_disk = {folder.path_of(record): record for record in folder.iter_records(plan.profile.name)}
    counts: Counter = Counter()
    planned = set()
    for spec in plan.runs:
        path = folder.run_path(spec)
        planned.add(path)
        record = on_disk.get(path)
        if record is None:
            state = "missing"
        elif record.run_id != spec.run_id:
            state = "stale"  # settings or code changed since: the next run redoes it
        else:
            state = str(record.status)
        counts[state] += 1
        if state not in ("ok", "missing"):
            print(printable(f"{state:<8} {spec.label}{_first_error_line(record)}"))
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    print(f"profile {plan.profile.name}: {len(plan.runs)} runs: {summary}")
    # Runs on disk the profile's plan does not hold: `--set` variants and methods run by name.
    others: dict[tuple[str, str], Counter] = {}
    for path, record in on_disk.items():
        if record.row in REFERENCE_ROWS or path in planned:
            continue
        others.setdefault((record.dataset_name, record.row), Counter())[str(record.status)] += 1
        if not record.ok:
            print(printable(f"{record.status:<8} {record.label}{_first_error_line(record)}"))
    if others:
        print(f"also on disk, outside the profile's plan ({len(others)} variants or methods):")
        for (dataset, name), states in sorted(others.items()):
            listed = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
            print(printable(f"  {dataset}/{name}: {listed}"))
    return 0


def _first_error_line(record: Record | None) -> str:
    error = (record.error if record else None) or {}
    if not error:
        return ""
    message = (error.get("message") or "").strip().splitlines()
    return f": {error.get('type')}: {message[0] if message else ''}"


def _show(args: argparse.Namespace) -> int:
    from bench.cli.show import describe_run, find_run
    from bench.plan.catalogue import load_catalogue

    bounds = load_catalogue(()).metric_bounds()
    print(printable(describe_run(find_run(args.results, args.run, args.profile, bounds))))
    return 0


def _report(args: argparse.Namespace) -> int:
    from bench.report.compute import compute
    from bench.report.render import render
    from bench.results.folder import ResultsFolder

    for folder in args.results:
        if not ResultsFolder(folder).has_runs():
            raise BenchError(f"no runs under {folder}: run `python -m bench run --all` first")
    index = render(compute(args.results, args.profile, args.reference), args.out)
    print(f"wrote {index} and {args.out / 'leaderboard.csv'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    pin_cpu_kernels()  # before a command imports torch (`bench.core.kernels`)
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, handlers=[handler]
    )
    signal.signal(signal.SIGTERM, _terminate)
    try:
        # Each command imports what it needs, and the components only when it trains or scores:
        # `list`, `status` and planning read the catalogue (`bench.plan.catalogue`) instead.
        if args.command == "run":
            return _run(args)
        if args.command == "list":
            return _list(args.kind, args.plugin)
        if args.command == "status":
            return _status(args)
        if args.command == "show":
            return _show(args)
        if args.command == "metaquantus":
            return _metaquantus(args)
        return _report(args)
    except BenchError as exc:
        print(f"error: {printable(exception_message(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {printable(describe_os_error(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(
            "\ninterrupted: finished runs are kept; run the same command to resume", file=sys.stderr
        )
        return 143 if isinstance(exc, Terminated) else 130


class PrintableFormatter(logging.Formatter):
    """Log lines with control characters escaped: warnings quote records and plugins."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def describe_os_error(exc: OSError) -> str:
    """`/x/y: No space left on device`: the path and the cause, in one line."""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    cause = exc.strerror or str(exc) or type(exc).__name__
    return f"{' -> '.join(paths)}: {cause}" if paths else cause
