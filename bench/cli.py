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
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.errors import BenchError

LIST_KINDS = ("methods", "datasets", "metrics", "profiles")


def _parser() -> argparse.ArgumentParser:
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
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    run.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="METHOD.PARAM=VALUE",
        help="override a method hyper-parameter; makes a variant row such as kd[temperature=2]",
    )
    run.add_argument("--data-dir", type=Path, help="folder with downloaded datasets")

    listing = commands.add_parser("list", help="list registered components")
    listing.add_argument("kind", choices=LIST_KINDS)

    status = commands.add_parser("status", help="done / failed / missing runs of a profile")

    report = commands.add_parser("report", help="write the leaderboard and report/index.html")
    report.add_argument("--out", type=Path, default=Path("report"), help="report folder")

    for sub in (run, status, report):
        sub.add_argument("--results", type=Path, default=Path("results"), help="results folder")
    for sub in (run, status):
        sub.add_argument("--profile", default="default", help="budget profile (default: default)")
    report.add_argument("--profile", default=None, help="only this profile (default: all found)")
    for sub in (run, listing, status):
        sub.add_argument(
            "--plugin", nargs="+", action="extend", default=[], metavar="FILE",
            help="Python file(s) registering extra methods or datasets",
        )  # fmt: skip
    return parser


def _run(args: argparse.Namespace) -> int:
    from bench.environment import resolve_device
    from bench.executors import make_executor
    from bench.planner import Selection, make_plan
    from bench.progress import TerminalProgress, clock
    from bench.runner import RunOptions, SuiteRunner

    if not (args.all or args.dataset or args.method):
        raise BenchError("say what to run: --all, or --dataset NAME... and/or --method NAME...")
    selection = Selection(
        profile=args.profile,
        datasets=tuple(args.dataset) if args.dataset else None,
        methods=tuple(args.method) if args.method else None,
        seeds=tuple(args.seeds) if args.seeds is not None else None,
        overrides=tuple(args.overrides),
    )
    plan = make_plan(selection)
    _check_writable(args.results)
    executor = make_executor(args.executor, args.jobs, args.ray_address)
    progress = TerminalProgress()
    try:
        device = executor.resolve_device(args.device) if executor else resolve_device(args.device)
        options = RunOptions(
            results=args.results, device=device, force=args.force, data_dir=args.data_dir
        )
        summary = SuiteRunner(plan, options, progress, executor).run()
    finally:
        progress.close()
        if executor is not None:
            executor.close()
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


def _list(kind: str) -> int:
    from bench.data import DATASETS
    from bench.method import METHODS
    from bench.metrics import METRICS
    from bench.profiles import PROFILES

    if kind == "methods":
        for name in METHODS:
            cls = METHODS.get(name)
            params = ", ".join(f"{k}={v}" for k, v in cls.defaults.items())
            modalities = "+".join(sorted(cls.modalities))
            print(f"{name:<18} {modalities:<14} {params:<30} {cls.describe()}")
    elif kind == "datasets":
        for name in DATASETS:
            entry = DATASETS.get(name)
            print(f"{name:<16} {entry.modality:<8} v{entry.version:<12} {entry.description}")
    elif kind == "metrics":
        for name in METRICS:
            metric = METRICS.get(name)
            arrow = "↑" if metric.higher_is_better else "↓"
            modalities = "+".join(sorted(metric.modalities))
            print(f"{name:<20} {arrow} {metric.category:<12} {modalities:<14} {metric.description}")
    else:
        for name in PROFILES:
            profile = PROFILES.get(name)
            print(
                f"{name:<10} seeds {list(profile.seeds)}, datasets {', '.join(profile.datasets)}: "
                f"{profile.description}"
            )
            for dataset in profile.datasets:
                methods = profile.methods_for(dataset)
                if methods is not None and methods != profile.methods:
                    print(f"{'':<10} {dataset}: only {', '.join(methods)}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from bench.planner import Selection, make_plan
    from bench.store import read_record, record_path

    plan = make_plan(Selection(profile=args.profile))
    counts: Counter = Counter()
    for spec in plan.runs:
        record = read_record(
            record_path(args.results, spec.profile, spec.dataset, spec.variant, spec.seed)
        )
        if record is None:
            state = "missing"
        elif record["run_id"] != spec.run_id:
            state = "stale"  # settings or code changed since: the next run redoes it
        else:
            state = record["status"]
        counts[state] += 1
        if state not in ("ok", "missing"):
            error = (record or {}).get("error") or {}
            detail = f": {error.get('type')}: {error.get('message')}" if error else ""
            print(f"{state:<8} {spec.label}{detail}")
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    print(f"profile {plan.profile.name}: {len(plan.runs)} runs: {summary}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from bench.report import render_report

    if not (args.results / "runs").is_dir():
        raise BenchError(f"no runs under {args.results}: run `python -m bench run --all` first")
    index = render_report(args.results, args.out, args.profile)
    print(f"wrote {index} and {args.results / 'leaderboard.csv'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from bench.registry import load_plugins

    signal.signal(signal.SIGTERM, _terminate)
    try:
        load_plugins(getattr(args, "plugin", []))
        if args.command == "run":
            return _run(args)
        if args.command == "list":
            return _list(args.kind)
        if args.command == "status":
            return _status(args)
        return _report(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(
            "\ninterrupted: finished runs are kept; run the same command to resume", file=sys.stderr
        )
        return 143 if isinstance(exc, Terminated) else 130


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so that the same cleanup runs."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def describe_os_error(exc: OSError) -> str:
    """`/x/y: No space left on device`: the path and the cause, in one line."""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    cause = exc.strerror or str(exc) or type(exc).__name__
    return f"{' -> '.join(paths)}: {cause}" if paths else cause
