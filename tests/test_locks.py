"""Run locks: exclusive between live processes, never stale after a kill, removed when released."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.cli.main import _check_writable
from bench.core.errors import BenchError
from bench.core.locks import hold_lock, is_locked, lock_path, try_lock

HOLDER = """
import sys, time
from pathlib import Path
from bench.core.locks import try_lock
with try_lock(Path(sys.argv[1])) as held:
    print("held" if held else "busy", flush=True)
    time.sleep(600)
"""


@contextmanager
def held_by_another_process(path: Path) -> Iterator[subprocess.Popen]:
    """A real second process holding the lock on `path` until the block ends (or it is killed)."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.kill()
        child.wait()


def test_lock_path_is_never_taken_for_a_record(tmp_path: Path) -> None:
    path = lock_path(tmp_path / "seed0.json")
    assert path.name == "seed0.json.lock"
    assert path.suffix != ".json"  # records are found by `*.json`


def test_a_lock_held_by_a_live_process_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    with held_by_another_process(path):
        assert is_locked(path)
        with try_lock(path) as held:
            assert not held
        assert path.exists()  # a process that did not get the lock leaves the holder's file


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    with held_by_another_process(path) as child:
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert path.exists()  # the file stays behind, but it locks nothing
        assert not is_locked(path)
        with try_lock(path) as held:
            assert held
            assert is_locked(path)
    assert not path.exists()


def test_a_waiter_locks_the_file_that_is_there_not_the_removed_one(tmp_path: Path) -> None:
    path = tmp_path / "teacher.lock"
    events: list[str] = []
    waiter_holds = threading.Event()
    finish = threading.Event()

    def waiter() -> None:
        with hold_lock(path):
            # Holding a lock on a file that was removed would lock nothing anyone else can see.
            events.append(f"waiter holds; file present: {path.exists()}")
            waiter_holds.set()
            finish.wait(30)

    with hold_lock(path):
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.3)  # the waiter now blocks on the file we hold, which we remove on release
        assert not waiter_holds.is_set()
    assert waiter_holds.wait(30)
    assert events == ["waiter holds; file present: True"]
    assert is_locked(path)  # another descriptor sees the waiter's lock on the path's file
    finish.set()
    thread.join(30)
    assert not path.exists()


def test_try_lock_can_wait_for_a_holder_that_is_ending(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    with held_by_another_process(path) as child:
        threading.Timer(0.5, child.kill).start()
        with try_lock(path) as held:
            assert not held  # without waiting: still held
        with try_lock(path, wait=20) as held:
            assert held


def test_concurrent_starts_probe_the_results_folder_without_tripping_each_other(tmp_path):
    """Two `bench run`s starting together once failed: each deleted the other's probe file."""
    errors: list[Exception] = []

    def probe_repeatedly() -> None:
        for _ in range(300):
            try:
                _check_writable(tmp_path)
            except BenchError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=probe_repeatedly) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert list(tmp_path.iterdir()) == []  # no probe is left behind
