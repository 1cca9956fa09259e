"""How fast the CLI answers: each command a fresh `python -m bench` process, as a user types it.

Run: python -m pytest benchmarks/bench_cli.py --benchmark-only -q
`python -c "import torch"` is timed in the same run: the ratio of each command to it is what to
compare across machines, the absolute times what a user waits. Targets on the 2-core development
machine: `--help`, `list methods` and `status` under 1 s, a rerun of the finished default suite
under 2 s. None of them imports torch (checked once per command with `-X importtime`, untimed).
The catalogue cache is warm, as it is from the second command after the code changed
(`bench.plan.catalogue`); the finished suite is the default profile's plan, with every record written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench_planning import write_finished_plan

from bench.plan.catalogue import CACHE_ENV
from bench.plan.planner import Selection, make_plan
from bench.run.context import RunOptions, SuiteContext

HEAVY = ("torch", "captum", "quantus", "lightgbm")


@pytest.fixture(scope="module")
def finished_default(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A finished default suite and an environment whose catalogue cache is built."""
    import torch

    root = tmp_path_factory.mktemp("cli")
    results = root / "results"
    plan = make_plan(Selection(profile="default"))
    ctx = SuiteContext(plan.profile, RunOptions(results=results, device=torch.device("cpu")))
    write_finished_plan(ctx, plan)
    env = {**os.environ, CACHE_ENV: str(root / "cache")}
    subprocess.run([sys.executable, "-m", "bench", "list", "methods"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    return results, env


COMMANDS = {
    "help": ["--help"],
    "list_methods": ["list", "methods"],
    "status": ["status", "--results", "{results}"],
    "rerun_finished_default": ["run", "--all", "--results", "{results}"],
}


def command(name: str, results: Path) -> list[str]:
    return [sys.executable, "-m", "bench", *(a.format(results=results) for a in COMMANDS[name])]


@pytest.mark.benchmark(group="cli")
def test_import_torch_for_scale(benchmark) -> None:
    benchmark.pedantic(
        subprocess.run, args=([sys.executable, "-c", "import torch"],),
        kwargs={"check": True}, rounds=5, warmup_rounds=1,
    )  # fmt: skip


@pytest.mark.benchmark(group="cli")
@pytest.mark.parametrize("name", list(COMMANDS))
def test_cli_command(benchmark, finished_default, name: str) -> None:
    results, env = finished_default
    argv = command(name, results)
    traced = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, text=True,
                            capture_output=True, check=True)  # fmt: skip
    imported = {line.split("|")[-1].strip() for line in traced.stderr.splitlines()}
    assert not imported & set(HEAVY), f"{name} imported {sorted(imported & set(HEAVY))}"
    benchmark.pedantic(
        subprocess.run, args=(argv,),
        kwargs={"env": env, "check": True, "capture_output": True}, rounds=5, warmup_rounds=1,
    )  # fmt: skip
