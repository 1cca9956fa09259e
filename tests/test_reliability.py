"""Faults injected with real files and processes: nothing on disk is trusted until verified, no
name escapes the results folder, and every fault ends in a clear message (DESIGN §3, §10).

Each test names the fault it injects; `test_bad_input.py`, `test_crash_safety.py` and
`test_failures.py` hold the older cases (kill -9, locks, bad data, raising methods).
"""

from __future__ import annotations

import csv
import json
import logging
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import SCHEMA_VERSION, DatasetBundle, Split
from bench.core.errors import BenchError
from bench.core.paths import UnsafeNameError, check_name, inside
from bench.core.sealed import MANIFEST, read_sealed_folder
from bench.report.figures import bar_chart
from bench.report.leaderboard import spreadsheet_safe, write_leaderboard
from bench.results.folder import read_record
from bench.results.record import record_problems
from tests.conftest import read_records, teacher_cache

PLUGINS = Path(__file__).parent / "plugins"
BROKEN = PLUGINS / "broken_methods.py"
WINE = ("run", "--profile", "smoke", "--dataset", "wine")


def teacher_folder(results: Path, dataset: str = "wine") -> Path:
    return teacher_cache(results, "smoke", dataset)


# --- 1. caches are verified before use -----------------------------------------------------------
def test_a_lightgbm_model_missing_one_byte_is_rebuilt_not_parsed(cli, tmp_path, caplog) -> None:
    # Before: LightGBM aborted the process (rc 134) on every rerun.
    assert cli(*WINE, "--method", "scratch", "--results", tmp_path).code == 0
    model = teacher_folder(tmp_path) / "model.txt"
    reference = json.loads((tmp_path / "runs/smoke/wine/teacher/seed0.json").read_text())
    text = model.read_bytes()
    model.write_bytes(text[: len(text) // 2] + text[len(text) // 2 + 1 :])
    with caplog.at_level(logging.WARNING):
        result = cli(*WINE, "--method", "scratch", "--force", "--results", tmp_path)
    assert result.code == 0
    assert "does not match its SHA-256 digest" in caplog.text and "retraining" in caplog.text
    rebuilt = json.loads((tmp_path / "runs/smoke/wine/teacher/seed0.json").read_text())
    assert rebuilt["teacher"]["from_cache"] is False
    assert rebuilt["metrics"]["accuracy"] == reference["metrics"]["accuracy"]
    assert model.read_bytes() == text


def test_network_weights_with_a_flipped_byte_are_rebuilt_not_loaded(cli, tmp_path, caplog) -> None:
    # Before: flipped bytes in model.pt loaded silently as other weights.
    suite = ("run", "--profile", "smoke", "--dataset", "digits", "--method", "scratch")
    assert cli(*suite, "--results", tmp_path).code == 0
    weights = teacher_folder(tmp_path, "digits") / "model.pt"
    original = weights.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) - 100] ^= 0xFF
    weights.write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING):
        assert cli(*suite, "--force", "--results", tmp_path).code == 0
    assert "model.pt does not match its SHA-256 digest" in caplog.text
    assert weights.read_bytes() == original  # retrained, bit for bit the same teacher


def test_a_damaged_explanation_cache_is_recomputed(cli, tmp_path, caplog) -> None:
    assert cli(*WINE, "--method", "scratch", "--results", tmp_path).code == 0
    folder = teacher_folder(tmp_path)
    (entry, *_) = sorted(folder.glob("treeshap-*.npz"))
    good = entry.read_bytes()
    entry.write_bytes(good[:-10] + b"0123456789")
    stale = folder / f".{entry.name}.abc123.tmp"  # what a killed writer leaves
    stale.write_bytes(b"half")
    with caplog.at_level(logging.WARNING):
        assert cli(*WINE, "--method", "scratch", "--force", "--results", tmp_path).code == 0
    assert f"{entry.name} does not match its SHA-256 digest" in caplog.text
    assert entry.read_bytes() == good
    assert not stale.exists()


def test_a_cache_without_digests_is_rebuilt(cli, tmp_path, caplog) -> None:
    # A cache written before digests existed, or whose writer died before its manifest.
    assert cli(*WINE, "--method", "scratch", "--results", tmp_path).code == 0
    (teacher_folder(tmp_path) / MANIFEST).unlink()
    with caplog.at_level(logging.WARNING):
        assert cli(*WINE, "--method", "scratch", "--force", "--results", tmp_path).code == 0
    assert f"no readable {MANIFEST}" in caplog.text
    assert set(read_sealed_folder(teacher_folder(tmp_path))) == {"model.txt", "info.json"}


def test_damaged_attribution_maps_are_left_out_of_the_gallery(cli, tmp_path, caplog) -> None:
    suite = ("run", "--profile", "smoke", "--dataset", "digits", "--method", "scratch")
    assert cli(*suite, "--results", tmp_path).code == 0
    maps = tmp_path / "runs/smoke/digits/scratch/seed0.maps.npy"
    maps.write_bytes(maps.read_bytes()[:-4] + b"\0\0\0\1")
    with caplog.at_level(logging.WARNING):
        report = cli("report", "--results", tmp_path, "--out", tmp_path / "site")
    assert report.code == 0
    assert "skipping damaged array" in caplog.text and "seed0.maps.npy" in caplog.text


# --- 2. a teacher cache removed mid-suite ----------------------------------------------------------
def test_a_teacher_cache_deleted_mid_suite_is_written_back(cli, tmp_path, caplog) -> None:
    # Before: FileNotFoundError for every later student of the teacher.
    with caplog.at_level(logging.WARNING):
        result = cli(
            *WINE, "--method", "drops_teacher_cache", "scratch", "kd_expl",
            "--plugin", BROKEN, "--results", tmp_path,
        )  # fmt: skip
    assert result.code == 0, result.err
    records = read_records(tmp_path)
    assert {r["status"] for r in records.values()} == {"ok"}
    assert "vanished; writing the teacher back" in caplog.text
    assert set(read_sealed_folder(teacher_folder(tmp_path))) == {"model.txt", "info.json"}


# --- 3. records are validated on read ------------------------------------------------------------
CORRUPTIONS = {
    # record (relative to runs/smoke/wine) -> how its text is damaged
    "scratch/seed0.json": lambda text: text.replace('"accuracy": ', '"accuracy": "banana", "x": ', 1),
    "random_explainer/seed0.json": lambda text: text.replace('"expl_cosine_ig": ', '"expl_cosine_ig": 1e999, "x": ', 1),
    "permuted_teacher/seed0.json": lambda text: text.replace(
        '"expl_cosine_gxi": ', f'"expl_cosine_gxi": {10**400}, "x": ', 1
    ),
    "untrained_student/seed0.json": lambda text: text.replace('"error": null', '"error": "boom"', 1),
    "kd/seed0.json": lambda text: text.replace('"status": "ok"', '"status": "fine"', 1),
}  # fmt: skip


def test_corrupt_records_are_skipped_by_report_and_status_and_redone_by_run(
    cli, tmp_path, caplog
) -> None:
    # Before: counted done, then a traceback in report/status, or `inf` on the leaderboard.
    suite = (*WINE, "--method", "scratch", "kd", "--results", tmp_path)
    assert cli(*suite).code == 0
    root = tmp_path / "runs/smoke/wine"
    for name, damage in CORRUPTIONS.items():
        path = root / name
        damaged = damage(path.read_text())
        assert damaged != path.read_text(), name
        path.write_text(damaged)
        assert read_record(path) is None, name
    with caplog.at_level(logging.WARNING):
        status = cli("status", "--profile", "smoke", "--results", tmp_path)
        report = cli("report", "--results", tmp_path, "--out", tmp_path / "site")
    assert status.code == 0 and report.code == 0
    assert "Traceback" not in status.err + report.err
    # A 400-digit integer is refused as it is parsed ("unreadable"), the others once read.
    skipped = caplog.text.count("skipping corrupt record")
    assert skipped + caplog.text.count("skipping unreadable record") >= len(CORRUPTIONS)
    assert "inf" not in (tmp_path / "site" / "leaderboard.csv").read_text().split("\n", 1)[1]
    rerun = cli(*suite)
    assert rerun.code == 0
    assert all(read_record(root / name) is not None for name in CORRUPTIONS)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"seed": -1}, "seed -1 is not an integer"),
        ({"seed": True}, "seed True is not an integer"),
        ({"role": "judge"}, "role 'judge'"),
        ({"metrics": {"accuracy": float("nan")}}, "metrics not a finite number"),
        ({"metrics": {"accuracy": False}}, "metrics not a finite number"),
        ({"timings": {"train": "slow"}}, "timings"),
        ({"method": {"name": "../../x"}}, "method name '../../x' is not a safe name"),
        ({"dataset": "wine"}, "dataset has no name"),
        ({"run_id": 7}, "run_id is not a non-empty string"),
    ],
)
def test_record_validation_names_the_problem(change: dict, problem: str) -> None:
    record = {
        "schema_version": SCHEMA_VERSION, "run_id": "abc", "status": "ok", "role": "student",
        "seed": 0,
        "profile": "smoke", "dataset": {"name": "wine"}, "method": {"name": "kd"},
        "metrics": {"accuracy": 0.9}, "timings": {"train": 1.0}, "error": None,
    }  # fmt: skip
    assert record_problems(record) == []
    problems = record_problems({**record, **change})
    assert any(problem in p for p in problems), problems


# --- 4. no name escapes the results folder ---------------------------------------------------------
def test_a_set_value_cannot_lead_a_record_outside_the_results(cli, tmp_path) -> None:
    outside = tmp_path / "x"
    plugin = tmp_path / "free_text.py"
    plugin.write_text(
        "from bench import Method, register_method\n"
        '@register_method("free_text")\nclass M(Method):\n    defaults = {"note": "a"}\n'
    )
    result = cli(
        "run", "--profile", "smoke", "--dataset", "digits", "--method", "free_text",
        "--plugin", plugin, "--set", f"free_text.note=/../../../../../../../..{outside}",
        "--results", tmp_path / "res",
    )  # fmt: skip
    assert result.code == 2
    assert "is not allowed" in result.err and "no path separators" in result.err
    assert not outside.exists() and not (tmp_path / "res" / "runs").exists()


@pytest.mark.parametrize(
    ("plugin", "name"),
    [
        (
            '@register_dataset("../../x", modality="tabular", version="1")\ndef f(o): pass',
            "../../x",
        ),
        ('@register_method("..")\nclass M(Method):\n    pass', ".."),
        ('@register_method("a/b")\nclass M(Method):\n    pass', "a/b"),
    ],
)
def test_unsafe_plugin_names_are_refused_at_registration(cli, tmp_path, plugin, name) -> None:
    path = tmp_path / "unsafe.py"
    path.write_text(f"from bench import Method, register_dataset, register_method\n{plugin}\n")
    result = cli("run", "--all", "--profile", "smoke", "--plugin", path, "--results", tmp_path)
    assert result.code == 2
    assert repr(name) in result.err and "is not allowed" in result.err
    assert not (tmp_path / "runs").exists()


def test_paths_are_built_from_checked_names_only(tmp_path) -> None:
    root = tmp_path / "results"
    assert inside(root, "runs", "openml:31", "kd[temperature=2]") == (
        root / "runs" / "openml_31" / "kd[temperature=2]"
    )
    for bad in ("..", ".", "", "a/b", "a\\b", "a b", "x\0", "-rf", "a" * 161, 3):
        with pytest.raises(UnsafeNameError):
            check_name(bad, "test")
        with pytest.raises(UnsafeNameError):
            inside(root, "runs", bad)  # type: ignore[arg-type]


# --- 5. a method cannot end the suite --------------------------------------------------------------
def test_sys_exit_in_a_method_is_a_failed_record(cli, tmp_path) -> None:
    # Before: exit status 3 with no message and no record (local executor).
    result = cli(*WINE, "--method", "exits", "scratch", "--plugin", BROKEN, "--results", tmp_path)
    assert result.code == 1
    records = read_records(tmp_path)
    exits = records["smoke/wine/exits/seed0.json"]
    assert exits["status"] == "failed" and exits["error"]["type"] == "SystemExit"
    assert records["smoke/wine/scratch/seed0.json"]["status"] == "ok"


# --- 6. names cannot break the report --------------------------------------------------------------
def test_dollar_signs_in_names_are_shown_as_typed(tmp_path) -> None:
    # Before: matplotlib's mathtext raised on an unbalanced `$` and no index.html was written.
    path = bar_chart(["cost $5", "a$b$c", "$"], [1.0, 2.0, 3.0], [0.1, 0.1, 0.1],
                     ["student"] * 3, "price in $", tmp_path / "bars.svg")  # fmt: skip
    text = path.read_text()
    assert all(f">{name}<" in text for name in ("cost $5", "a$b$c", "price in $"))


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path) -> None:
    frame = pd.DataFrame(
        {"method": ["=HYPERLINK(\"x\")", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "kd"],
         "mean": [-1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]}
    )  # fmt: skip
    write_leaderboard(frame, tmp_path)
    with (tmp_path / "leaderboard.csv").open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert header == ["method", "mean"] and len(rows) == 7
    assert all(method.startswith("'") for method, _ in rows[:6])
    assert rows[6] == ["kd", "7.0"] and rows[0][1] == "-1.0"  # numbers are left alone
    assert list(spreadsheet_safe(frame).method[:1]) == ['\'=HYPERLINK("x")']


# --- 7. disk and permission faults end cleanly -----------------------------------------------------
def test_an_out_folder_that_is_a_file_is_one_line_and_exit_1(cli, tmp_path) -> None:
    assert cli(*WINE, "--method", "scratch", "--results", tmp_path).code == 0
    out = tmp_path / "site"
    out.write_text("keep me")
    result = cli("report", "--results", tmp_path, "--out", out)
    assert result.code == 1
    assert result.err.startswith("error: ") and str(out) in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert out.read_text() == "keep me"


def test_a_record_path_that_is_a_folder_is_one_line_and_exit_1(cli, tmp_path) -> None:
    assert cli(*WINE, "--method", "scratch", "--results", tmp_path).code == 0
    blocked = tmp_path / "runs/smoke/wine/kd/seed0.json"
    blocked.mkdir(parents=True)
    result = cli(*WINE, "--method", "scratch", "kd", "--results", tmp_path)
    assert result.code == 1
    assert "Is a directory" in result.err and "seed0.json" in result.err
    assert "Traceback" not in result.err
    assert read_record(tmp_path / "runs/smoke/wine/scratch/seed0.json") is not None
    assert not list(blocked.parent.glob(".seed0.*.tmp"))


def _full_disk(limit: int):
    """A child whose files cannot grow past `limit` bytes: writes fail as on a full disk."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_during_report_loses_nothing(cli, tmp_path) -> None:
    assert cli(*WINE, "--method", "scratch", "--results", tmp_path).code == 0
    site = tmp_path / "site"
    assert cli("report", "--results", tmp_path, "--out", site).code == 0
    before = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "report", "--results", tmp_path, "--out", site],
        capture_output=True, text=True, preexec_fn=_full_disk(2000), timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "File too large" in done.stderr and "Traceback" not in done.stderr
    # One error line; before it at most warnings of caches that could not be written either.
    *warnings, error = done.stderr.strip().splitlines()
    assert error.startswith("error: ") and all(w.startswith("WARNING ") for w in warnings)
    after = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}
    assert not [p for p in after if p.name.endswith(".tmp")]
    # Every file is either the old one or a complete new one: the large pages are the old ones.
    assert {p: b for p, b in after.items() if len(b) > 2000} == {
        p: b for p, b in before.items() if len(b) > 2000
    }


def test_two_reports_at_once_both_finish(cli, tmp_path) -> None:
    # Before: a fixed temporary name made one of them fail in 2 of 6 rounds.
    assert cli(*WINE, "--method", "scratch", "--results", tmp_path).code == 0
    command = [
        sys.executable,
        "-m",
        "bench",
        "report",
        "--results",
        tmp_path,
        "--out",
        tmp_path / "s",
    ]
    for _ in range(2):
        both = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        errors = [p.communicate(timeout=300)[1] for p in both]
        assert [p.returncode for p in both] == [0, 0], errors
    assert not list((tmp_path / "s").rglob("*.tmp"))


# --- 8. input validated at the door ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--seeds", "-1"), "seed -1 is outside 0 ... 4294967295"),
        (("--seeds", "4294967296"), "seed 4294967296 is outside"),
        (("--set", "kd.temperature=2", "kd.temperature=3"), "--set kd.temperature is given twice"),
    ],
)
def test_bad_seeds_and_repeated_settings_are_usage_errors(cli, tmp_path, args, message) -> None:
    result = cli(*WINE, "--method", "kd", *args, "--results", tmp_path)
    assert result.code == 2 and message in result.err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("x", "y", "modality", "message"),
    [
        (np.zeros((8, 3)), np.arange(8) % 2, "tabular", "train.x must be a float32 numpy array, not float64"),
        (np.zeros((8, 3), np.float32), (np.arange(8) % 2).astype(float), "tabular", "train.y must be a numpy array of integer labels"),
        (np.zeros((8, 3), np.float32), (np.arange(16) % 2).reshape(8, 2), "tabular", "train.y must be 1-D"),
        (np.zeros((8, 3, 4), np.float32), np.arange(8) % 2, "image", "train.x must be 4-D for image data"),
        (np.zeros((8, 1, 3, 4), np.float32), np.arange(8) % 2, "tabular", "train.x must be 2-D for tabular data"),
    ],
)  # fmt: skip
def test_a_loaders_output_is_checked_field_by_field(x, y, modality, message) -> None:
    split = Split(x, y)
    with pytest.raises(BenchError, match=message.replace(".", r"\.").replace("(", r"\(")):
        DatasetBundle("toy", "1", modality, split, split, split, ("a", "b"))


def test_sigterm_is_handled_like_ctrl_c(tmp_path) -> None:
    slow = tmp_path / "slow.py"
    slow.write_text(
        "import time\nfrom bench import Method, register_method\n"
        "@register_method('slow')\nclass Slow(Method):\n"
        "    def fit(self, ctx):\n        time.sleep(120)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", *WINE, "--method", "slow", "--plugin", slow,
         "--results", tmp_path / "res"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lock = tmp_path / "res/runs/smoke/wine/slow/seed0.json.lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lock.exists(), "the slow run never started"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143
    assert "interrupted: finished runs are kept" in err and "Traceback" not in err
    assert not lock.exists()  # released: the next run can take it
    assert not (tmp_path / "res/runs/smoke/wine/slow/seed0.json").exists()


# --- 9. contracts named in the message -------------------------------------------------------------
def test_a_loss_that_returns_a_tensor_names_the_contract(cli, tmp_path) -> None:
    result = cli(*WINE, "--method", "returns_tensor", "--plugin", BROKEN, "--results", tmp_path)
    assert result.code == 1
    record = read_records(tmp_path)["smoke/wine/returns_tensor/seed0.json"]
    assert record["status"] == "failed" and record["error"]["type"] == "TypeError"
    assert "loss() must return a dict of named scalar tensors" in record["error"]["message"]
    assert "it returned Tensor" in record["error"]["message"]


def test_a_method_registered_by_two_files_names_both(cli, tmp_path) -> None:
    plugin = "from bench import Method, register_method\n@register_method('twice')\nclass M(Method):\n    pass\n"
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text(plugin)
    second.write_text(plugin)
    result = cli(*WINE, "--method", "twice", "--plugin", first, second, "--results", tmp_path)
    assert result.code == 2
    assert "method 'twice' is registered twice" in result.err
    assert str(first) in result.err and str(second) in result.err
