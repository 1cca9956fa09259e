"""Per-run and per-teacher locks, so that processes sharing a results folder never do work twice.

A lock is an exclusive `flock` on a small file beside what it protects (`seed0.json.lock`, or
`<teacher key>.lock` in the teacher cache). The kernel drops a `flock` when its holder exits for
any reason, kill -9 included, so a lock is never stale: the file a killed process leaves behind
locks nothing, and the next process takes it over. On NFS, Linux emulates `flock` with POSIX byte
range locks, which NFSv4 servers honour across machines, as a Ray cluster on a shared folder needs.

The holder deletes the file before unlocking it. A process that opened the file just before
(and so locks a file no longer in the folder) notices that the path now names another file, or
none, and starts again; without this check two processes could each hold a "lock" on a
different file of the same name.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.core.confined import open_file, open_folder


def lock_path(path: Path) -> Path:
    """The lock file that guards `path` (its name plus `.lock`: not a `.json`, so never a record)."""
    return path.with_name(path.name + ".lock")


def _acquire(path: Path, blocking: bool) -> int | None:
    """Lock `path` and return its descriptor, or None when another live process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = _open_lock_file(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        held = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            # Who holds it, for a person looking at the folder; the lock itself is the flock.
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
            return fd
        os.close(fd)  # its holder removed this file while we waited: lock the new one


def _open_lock_file(path: Path, flags: int) -> int:
    """The lock file, never through a link and only if it is a regular file: a planted link in
    its place would otherwise be truncated and written through (README, "Threat model")."""
    with open_folder(path.parent, ()) as folder:
        return open_file(folder, path.name, flags, path, path.parent, 0o644)


def _release(path: Path, fd: int) -> None:
    # Remove first, unlock second: whoever locks the old file after us sees that it is gone.
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


@contextmanager
def try_lock(path: Path, wait: float = 0.0) -> Iterator[bool]:
    """Hold the lock on `path` if no other process does; yields whether this process holds it.

    `wait`: seconds to keep trying, for a holder known to be ending (a worker that was just
    killed: its parent can learn of the death a moment before the kernel drops its locks).
    """
    deadline = time.monotonic() + wait
    fd = _acquire(path, blocking=False)
    while fd is None and time.monotonic() < deadline:
        time.sleep(0.05)
        fd = _acquire(path, blocking=False)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            _release(path, fd)


@contextmanager
def hold_lock(path: Path) -> Iterator[None]:
    """Hold the lock on `path`, waiting for another process to release it first."""
    fd = _acquire(path, blocking=True)
    assert fd is not None  # a blocking flock returns only once it holds the lock
    try:
        yield
    finally:
        _release(path, fd)


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock on `path`; never creates the file."""
    try:
        fd = _open_lock_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
