"""The process and Ray executors: same records, progress, summary and exit status as `local`."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import read_records
from tests.test_determinism import comparable_metrics

SUITE = (
    "run", "--profile", "smoke", "--dataset", "wine", "digits", "--method", "scratch", "kd",
    "--device", "cpu",
)  # fmt: skip
PLUGINS = Path(__file__).parent / "plugins"


def test_process_executor_records_every_run_reports_each_and_repeats_its_numbers(
    cli, tmp_path: Path
) -> None:
    result = cli(*SUITE, "--executor", "process", "--jobs", "2", "--results", tmp_path / "a")
    assert result.code == 0, result.err
    assert "4 runs (4 ok)" in result.out
    # Every run's line reaches the parent's display, whichever worker executed it.
    for label in ("wine/scratch/seed0", "wine/kd/seed0", "digits/scratch/seed0", "digits/kd/seed0"):
        assert f"ok       {label}" in result.err
    records = read_records(tmp_path / "a")
    assert len(records) == 18  # 2 datasets x (2 methods + teacher + 6 control rows)
    assert {r["status"] for r in records.values()} == {"ok"}
    # Two workers on this machine's cores: each got its share of threads, recorded as provenance.
    student = records["smoke/wine/kd/seed0.json"]
    assert student["environment"]["torch_threads"] >= 1
    assert not list((tmp_path / "a").rglob("*.lock"))
    again = cli(*SUITE, "--executor", "process", "--jobs", "2", "--results", tmp_path / "a")
    assert again.code == 0 and "4 runs (4 done)" in again.out
    # The same seed in another folder: the same numbers.
    assert (
        cli(*SUITE, "--executor", "process", "--jobs", "2", "--results", tmp_path / "b").code == 0
    )
    assert comparable_metrics(tmp_path / "a") == comparable_metrics(tmp_path / "b")


def test_workers_load_plugin_files_and_failures_give_exit_status_1(cli, tmp_path: Path) -> None:
    result = cli(
        "run", "--profile", "smoke", "--dataset", "wine", "--method", "raises", "nan_loss",
        "soft_target", "--plugin", PLUGINS / "broken_methods.py", PLUGINS / "extra_method.py",
        "--jobs", "2", "--results", tmp_path,
    )  # fmt: skip
    assert result.code == 1
    assert "some runs failed" in result.err
    records = read_records(tmp_path)
    assert records["smoke/wine/raises/seed0.json"]["status"] == "failed"
    assert (
        "deliberate failure inside loss()"
        in records["smoke/wine/raises/seed0.json"]["error"]["traceback"]
    )
    assert records["smoke/wine/nan_loss/seed0.json"]["status"] == "diverged"
    assert records["smoke/wine/soft_target/seed0.json"]["status"] == "ok"


def test_a_run_that_kills_its_worker_fails_alone(cli, tmp_path: Path) -> None:
    plugin = tmp_path / "killer.py"
    plugin.write_text(
        "import os, signal\n"
        "from bench import Method, register_method\n"
        "@register_method('kills_worker')\n"
        "class KillsWorker(Method):\n"
        "    citation = 'Test plugin.'\n"
        "    def loss(self, batch, student_out, teacher_out, ctx):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = cli(
        "run", "--profile", "smoke", "--dataset", "wine", "--method", "kills_worker", "scratch",
        "--plugin", plugin, "--executor", "process", "--jobs", "2", "--results", tmp_path / "res",
    )  # fmt: skip
    assert result.code == 1
    records = read_records(tmp_path / "res")
    killed = records["smoke/wine/kills_worker/seed0.json"]
    assert killed["status"] == "failed"
    assert killed["error"]["type"] == "WorkerLost"
    assert "2 attempts" in killed["error"]["message"]
    # The other run, in flight when the pool broke at the first death, was retried and finished.
    assert records["smoke/wine/scratch/seed0.json"]["status"] == "ok"


@pytest.fixture
def ray_session(monkeypatch: pytest.MonkeyPatch):
    """Ray's session files in a short private folder (its socket paths must stay < 108 chars)."""
    pytest.importorskip("ray", reason='the ray executor needs `pip install -e ".[ray]"`')
    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    yield folder
    import ray

    assert not ray.is_initialized()  # the executor shut its instance down
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def test_ray_executor_gives_the_numbers_of_the_process_executor_and_reports_failures_alike(
    cli, tmp_path: Path, ray_session: Path
) -> None:
    """One Ray instance for both checks: starting one costs more than the smoke runs."""
    # --jobs 2: a local Ray instance of 2 CPUs, one torch thread per task, as process --jobs 2.
    suite = (*SUITE, "--method", "scratch", "kd", "raises", "--plugin", PLUGINS / "broken_methods.py",
             "--jobs", "2")  # fmt: skip
    ray_run = cli(*suite, "--executor", "ray", "--results", tmp_path / "ray")
    assert ray_run.code == 1, ray_run.err
    assert "6 runs (2 failed, 4 ok)" in ray_run.out
    assert "ok       digits/kd/seed0" in ray_run.err
    assert any(ray_session.iterdir())  # the session lived in the folder we gave it
    records = read_records(tmp_path / "ray")
    assert records["smoke/wine/raises/seed0.json"]["status"] == "failed"
    assert records["smoke/wine/scratch/seed0.json"]["status"] == "ok"
    process_run = cli(*suite, "--results", tmp_path / "process")
    assert process_run.code == 1
    assert comparable_metrics(tmp_path / "ray") == comparable_metrics(tmp_path / "process")


def test_ray_executor_without_ray_says_how_to_install_it(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    result = cli(*SUITE, "--executor", "ray", "--results", tmp_path)
    assert result.code == 2
    assert 'pip install -e ".[ray]"' in result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--jobs", "0"), "--jobs must be 1 or more, not 0"),
        (("--jobs", "-3"), "--jobs must be 1 or more, not -3"),
        (("--executor", "local", "--jobs", "2"), "use --executor process"),
        (("--executor", "process", "--ray-address", "auto"), "it needs --executor ray"),
    ],
)
def test_bad_executor_arguments_exit_2(cli, tmp_path: Path, args, expected: str) -> None:
    result = cli(*SUITE, *args, "--results", tmp_path)
    assert result.code == 2
    assert expected in result.err
    assert not (tmp_path / "runs").exists()


def test_unknown_executor_lists_the_valid_ones(capsys) -> None:
    from bench.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--all", "--executor", "slurm"])
    assert exit_info.value.code == 2
    assert "choose from 'local', 'process', 'ray'" in capsys.readouterr().err


HEAD = """
import sys, ray
ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes our stdin
ray.shutdown()
"""


def test_ray_executor_joins_a_running_cluster(
    cli, tmp_path: Path, ray_session: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray 2.5x+ issues a per-cluster token; a test cluster on one machine needs none.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert head.stdout is not None
        address = head.stdout.readline().strip()
        assert address, "the test cluster did not start"
        result = cli(
            "run", "--profile", "smoke", "--dataset", "wine", "--method", "scratch", "kd",
            "--ray-address", address, "--results", tmp_path,
        )  # fmt: skip
        assert result.code == 0, result.err
        assert "2 runs (2 ok)" in result.out
        records = read_records(tmp_path)
        assert records["smoke/wine/kd/seed0.json"]["status"] == "ok"
        assert head.poll() is None  # leaving the cluster did not stop it
    finally:
        head.communicate(timeout=60)  # closes its stdin: it shuts its cluster down
