"""`run --ray-address` against a real head started by `ray start --head`, as docs/scaling.md tells
a user to start one: since Ray 2.59 such a head requires a token, and a driver that joins without
`RAY_AUTH_MODE=token` must end with one line saying what to do, not only "Failed to connect".

Marked slow (a head starts in ~10 s, a refused join retries for ~30 s): `python -m pytest -m slow
tests/test_ray_cluster.py`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import read_records

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_head() -> Iterator[tuple[str, dict[str, str]]]:
    """A head of one CPU with token authentication, its token generated into a private HOME
    (`~/.ray/auth_token`) and its session in a private folder; its address and the environment
    of a driver on this machine."""
    pytest.importorskip("ray", reason='the ray executor needs `pip install -e ".[ray]"`')
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the `ray` command is not installed")
    home = Path(tempfile.mkdtemp(prefix="rayhome-", dir="/tmp"))
    session = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # socket paths stay < 108 chars
    env = {**os.environ, "HOME": str(home), "RAY_TMPDIR": str(session), "RAY_AUTH_MODE": "token"}
    generated = subprocess.run(
        [ray_cli, "get-auth-token", "--generate"], env=env, capture_output=True, timeout=120
    )
    assert generated.returncode == 0, generated.stderr[-2000:]
    port = free_port()
    started = subprocess.run(
        [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1",
         "--disable-usage-stats", "--include-dashboard=false"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        driver = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
        yield f"127.0.0.1:{port}", driver
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(session, ignore_errors=True)


def bench_run(address: str, env: dict[str, str], results: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "run", "--profile", "smoke", "--dataset", "wine",
         "--method", "kd", "--ray-address", address, "--results", str(results)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_token_head_refuses_a_driver_without_the_token_and_the_error_says_what_to_do(
    ray_head: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    address, driver = ray_head
    refused = bench_run(address, driver, tmp_path / "refused")
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot join the Ray cluster at '{address}'")
    assert "RAY_AUTH_MODE=token" in last and "RAY_AUTH_MODE=disabled" in last
    assert "Traceback" not in refused.stderr

    joined = bench_run(address, {**driver, "RAY_AUTH_MODE": "token"}, tmp_path / "joined")
    assert joined.returncode == 0, joined.stderr[-2000:]
    assert "1 runs (1 ok)" in joined.stdout
    assert read_records(tmp_path / "joined")["smoke/wine/kd/seed0.json"]["status"] == "ok"
