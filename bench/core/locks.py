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

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from pathlib import Path

from bench.core.confined import open_file, open_folder, relative_parts


def lock_path(path: Path) -> Path:
    """The lock file that guards `path` (its name plus `.lock`: not a `.json`, so never a record)."""
    return path.with_name(path.name + ".lock")


def _acquire(path: Path, blocking: bool, root: Path | None) -> int | None:
    """Lock `path` and return its descriptor, or None when another live process holds it."""
    while True:
        with _lock_folder(path, root, create=True) as folder:
            fd = open_file(
                folder, path.name, os.O_RDWR | os.O_CREAT, path, root or path.parent, 0o644
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            try:
                current = os.stat(path.name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                current = None
        held = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            # Who holds it, for a person looking at the folder; the lock itself is the flock.
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
            return fd
        os.close(fd)  # its holder removed this file while we waited: lock the new one


def _lock_folder(path: Path, root: Path | None, create: bool = False) -> ContextManager[int]:
    """The open folder of the lock file `path`, reached from `root` (default: that folder itself)
    without following a link on the way (`bench.core.confined`): a lock's folder that is a link
    out of the results folder is refused like a record's."""
    root = root if root is not None else path.parent
    return open_folder(root, relative_parts(root, path)[:-1], create=create)


def _release(path: Path, fd: int, root: Path | None) -> None:
    # Remove first, unlock second: whoever locks the old file after us sees that it is gone.
    try:
        with contextlib.suppress(FileNotFoundError), _lock_folder(path, root) as folder:
            os.unlink(path.name, dir_fd=folder)
    finally:
        os.close(fd)


@contextmanager
def try_lock(path: Path, wait: float = 0.0, root: Path | None = None) -> Iterator[bool]:
    """Hold the lock on `path` if no other process does; yields whether this process holds it.
    Below `root` (default: the lock's folder) no link is followed; missing folders are made.

    `wait`: seconds to keep trying, for a holder known to be ending (a worker that was just
    killed: its parent can learn of the death a moment before the kernel drops its locks).
    """
    deadline = time.monotonic() + wait
    fd = _acquire(path, blocking=False, root=root)
    while fd is None and time.monotonic() < deadline:
        time.sleep(0.05)
        fd = _acquire(path, blocking=False, root=root)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            _release(path, fd, root)


@contextmanager
def hold_lock(path: Path, root: Path | None = None) -> Iterator[None]:
    """Hold the lock on `path`, waiting for another process to release it first; below `root`
    (default: the lock's folder) no link is followed."""
    fd = _acquire(path, blocking=True, root=root)
    assert fd is not None  # a blocking flock returns only once it holds the lock
    try:
        yield
    finally:
        _release(path, fd, root)


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock on `path`; never creates the file."""
    try:
        with _lock_folder(path, None) as folder:
            fd = open_file(folder, path.name, os.O_RDONLY, path, path.parent)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
