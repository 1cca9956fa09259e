"""What `python -m bench report` costs: the reference set, and generated sets of 2 500 and 5 000.

Run: python -m pytest benchmarks/bench_report.py --benchmark-only -q
Each round is a fresh `python -m bench report` process writing a fresh site (no figure cache, no
warm interpreter), as a user types it; the catalogue cache is warm, as it is from the second
command after the code changed (`bench.plan.catalogue`): the reference's records predate method
descriptions in records, so the report reads the catalogue for them. The generated sets replicate
every student record of `reference/default-v2` under more seeds (seed k + 10 j, j = 1 ... copies)
with its metrics perturbed by 2 % noise and its teacher kept, so that the methods, metrics and
pairings are the reference's and only the seeds grow (the reference rows stay as they are).

The code before the report was split into `compute` and `render` (commit c78de14) is timed in the
same run when `XKD_REPORT_BEFORE` names a checkout of it:

    git worktree add --detach /tmp/xkd-report-before c78de14
    XKD_REPORT_BEFORE=/tmp/xkd-report-before python -m pytest benchmarks/bench_report.py \\
        --benchmark-only -q

It runs from that checkout (PYTHONPATH), writing its exports into a copy of the records, where
that code wrote them. Targets on the 2-core development machine: the reference under 3 s, 5 000
records under 30 s and no worse than linear in the records. Measured there in one run (medians of
5 rounds for the reference, the generated sets once each), before -> after: reference (225
records) 6.25 -> 2.47 s (0.40); 2 526 records 86.7 -> 10.3 s (0.12); 5 004 records 171.6 ->
17.3 s (0.10). Before, under cProfile, drawing figures with matplotlib took 5.0 of the
reference's 10.4 s, and the sign-flip tests 141 of 170 s at 5 004 records (100 000 Monte Carlo
sign patterns drawn again for every paired test of 17+ seeds); after, doubling the records costs
1.7 times the time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.plan.catalogue import CACHE_ENV

REFERENCE = Path(__file__).resolve().parent.parent / "reference" / "default-v2"
BEFORE = os.environ.get("XKD_REPORT_BEFORE")
SETS = {"reference": 0, "generated-2500": 13, "generated-5000": 27}  # copies of each student


def replicate(reference: Path, out: Path, copies: int) -> int:
    """`reference`'s records under `out/runs`, each student's `copies` times more at seed
    k + 10 j with its metrics perturbed; the number of records."""
    shutil.copytree(reference / "runs", out / "runs")
    rng = np.random.default_rng(0)
    count = 0
    for path in sorted((reference / "runs").rglob("seed*.json")):
        record = json.loads(path.read_text())
        count += 1
        if record.get("role") != "student":
            continue
        for j in range(1, copies + 1):
            seed = record["seed"] + 10 * j
            copy = {**record, "seed": seed, "run_id": f"{record['run_id']}-{j}",
                    "attribution_maps": None}  # fmt: skip
            copy["metrics"] = {
                name: None if v is None else v + float(rng.normal(0, 0.02 * (abs(v) + 0.01)))
                for name, v in record["metrics"].items()
            }
            folder = out / path.relative_to(reference).parent
            (folder / f"seed{seed}.json").write_text(json.dumps(copy))
            count += 1
    return count


@pytest.fixture(scope="module")
def record_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int]]:
    sets = {"reference": (REFERENCE, len(list((REFERENCE / "runs").rglob("seed*.json"))))}
    for name, copies in SETS.items():
        if copies:
            folder = tmp_path_factory.mktemp(name)
            sets[name] = (folder, replicate(REFERENCE, folder, copies))
    return sets


def command(code: str, root: Path) -> tuple[list[str], dict[str, str]]:
    """`python -m bench` of the current code or of the checkout before the split, and its
    environment: a catalogue cache of its own, built once here so that no round builds it.
    `-P`: `-m` would put the working folder first on the path, ahead of PYTHONPATH."""
    env = {**os.environ, CACHE_ENV: str(root / f"cache-{code}")}
    if code == "before":
        env["PYTHONPATH"] = BEFORE or ""
    argv = [sys.executable, "-P", "-m", "bench"]
    listed = subprocess.run([*argv, "list", "methods"], env=env, check=True, capture_output=True)
    assert listed.stdout, code
    return argv, env


@pytest.fixture(scope="module")
def commands(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], dict]]:
    root = tmp_path_factory.mktemp("commands")
    return {code: command(code, root) for code in ("after", "before") if code == "after" or BEFORE}


@pytest.mark.parametrize("code", ["before", "after"])
@pytest.mark.parametrize("name", list(SETS))
def test_report(benchmark, record_sets, commands, tmp_path: Path, name: str, code: str) -> None:
    if code not in commands:
        pytest.skip("set XKD_REPORT_BEFORE to a checkout of c78de14 to time the code before")
    results, count = record_sets[name]
    if code == "before":  # it writes its exports beside the records: into a copy of them
        shutil.copytree(results / "runs", tmp_path / "records" / "runs")
        results = tmp_path / "records"
    argv, env = commands[code]
    report = [*argv, "report", "--results", str(results), "--out", str(tmp_path / "site")]
    benchmark.group = f"report-{name}"
    benchmark.extra_info["records"] = count
    rounds = 5 if name == "reference" else 1
    benchmark.pedantic(
        subprocess.run, args=(report,), kwargs={"env": env, "check": True, "capture_output": True},
        rounds=rounds, warmup_rounds=1 if rounds > 1 else 0,
    )  # fmt: skip
    # Where the exports went says which code ran: beside the records before, in the site after.
    exports = results if code == "before" else tmp_path / "site"
    assert (exports / "leaderboard.csv").is_file() and (tmp_path / "site" / "index.html").is_file()
