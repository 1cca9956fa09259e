"""Paths under a root that no symbolic link, FIFO or device can redirect: how records, their locks
and the results folder's walk open what is on disk (README, "Threat model": everything on disk is
untrusted).

A path below the root is opened one component at a time from an open folder (`dir_fd`), each with
`O_NOFOLLOW`: `O_NOFOLLOW` on a whole path covers only its last component, so a linked folder in
the middle would still be followed. The root itself may be a link: a results folder moved to
another disk is used by pointing `--results` at it, or by linking the whole folder. A link below
it is refused, for reading as for writing, with one line that names it, so `report` never
silently leaves out what `status` counts. Files are opened `O_NONBLOCK`, so a FIFO cannot block
before `fstat` says what it is, and only regular files are read, up to a size cap per kind of
file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.core.errors import BenchError

# A record holds metrics, metadata and a training history: tens of kB. Anything far larger is
# not one (a link to /dev/zero used to exhaust memory).
RECORD_CAP = 16 << 20

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LINK_ERRORS = (errno.ELOOP, errno.ENOTDIR)


class RefusedPath(BenchError):
    """A path under a root that leads through a link, or names something that is not a file."""


class LinkRefused(RefusedPath):
    """A symbolic link below the root, on the way to a path or in its place."""


class NotRegular(RefusedPath):
    """Something that is not a regular file of a readable size: a FIFO, a device, a folder."""


def _refuse_link(path: Path, root: Path) -> LinkRefused:
    return LinkRefused(
        f"{path}: a symbolic link (or not a folder) inside {root}, refused: links inside a "
        "results folder could lead reads and writes out of it; point --results at the real "
        "folder, or link the whole folder"
    )


def relative_parts(root: Path, path: Path) -> tuple[str, ...]:
    """`path`'s components below `root`; an error if it is not below it."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        raise RefusedPath(f"{path} is not inside {root}") from None
    if not parts or ".." in parts:
        raise RefusedPath(f"{path} names no file inside {root}")
    return parts


@contextmanager
def open_folder(root: Path, parts: tuple[str, ...], create: bool = False) -> Iterator[int]:
    """A descriptor of `root/parts...`, reached without following a link below `root`;
    `create` makes the missing folders (and `root`)."""
    if create:
        root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, part in enumerate(parts, start=1):
            try:
                child = os.open(part, _FOLDER, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise FileNotFoundError(
                        errno.ENOENT, "No such file or directory", str(root.joinpath(*parts))
                    ) from None
                with contextlib.suppress(FileExistsError):  # another process made it first
                    os.mkdir(part, 0o777, dir_fd=fd)
                try:
                    child = os.open(part, _FOLDER, dir_fd=fd)
                except OSError as exc:  # a link planted between the two calls
                    if exc.errno in _LINK_ERRORS:
                        raise _refuse_link(root.joinpath(*parts[:depth]), root) from exc
                    raise
            except OSError as exc:
                if exc.errno in _LINK_ERRORS:
                    raise _refuse_link(root.joinpath(*parts[:depth]), root) from exc
                raise
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def open_file(
    folder: int, name: str, flags: int, shown: Path, root: Path, mode: int = 0o666
) -> int:
    """`name` in the open `folder`, not followed if a link, never blocking if a FIFO, and only if
    it is a regular file; `shown` and `root` name it in errors."""
    try:
        fd = os.open(
            name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=folder
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse_link(shown, root) from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegular(f"{shown} is not a regular file (a FIFO, device or folder), refused")
    return fd


def refuse_links(root: Path, path: Path) -> None:
    """Make the folders up to `path`'s own (below `root`), refusing (`LinkRefused`) a link on the
    way or in `path`'s place: for what is then handled by path (a teacher cache folder that is
    renamed into place or removed), after which a link planted on purpose in that moment is the
    one case left open."""
    parts = relative_parts(root, path)
    with open_folder(root, parts[:-1], create=True) as folder:
        try:
            mode = os.stat(parts[-1], dir_fd=folder, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
    if stat.S_ISLNK(mode):
        raise _refuse_link(path, root)


def read_regular(path: Path, cap: int, root: Path | None = None) -> bytes:
    """The bytes of the regular file `path`, at most `cap` of them; below `root` (default: its
    own folder) no link is followed. FileNotFoundError when it is absent."""
    root = root if root is not None else path.parent
    parts = relative_parts(root, path)
    with open_folder(root, parts[:-1]) as folder:
        fd = open_file(folder, parts[-1], os.O_RDONLY, path, root)
    try:
        size = os.fstat(fd).st_size
        if size > cap:
            raise NotRegular(f"{path} holds {size} bytes, more than the {cap} it may have")
        chunks, left = [], cap + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > cap:  # grew while being read
        raise NotRegular(f"{path} holds more than the {cap} bytes it may have")
    return data


def walk_files(root: Path, parts: tuple[str, ...], suffix: str) -> Iterator[Path]:
    """Every regular file ending in `suffix` below `root/parts...`, in path order; a link on the
    way is refused (`RefusedPath`), never skipped. Nothing when the folder is absent."""
    with contextlib.ExitStack() as stack:
        try:
            fd = stack.enter_context(open_folder(root, parts))
        except FileNotFoundError:
            return
        yield from _walk(fd, root.joinpath(*parts), root, suffix)


def _walk(fd: int, where: Path, root: Path, suffix: str) -> Iterator[Path]:
    with os.scandir(fd) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        if entry.is_symlink():
            raise _refuse_link(where / entry.name, root)
        if entry.is_dir(follow_symlinks=False):
            child = os.open(entry.name, _FOLDER, dir_fd=fd)
            try:
                yield from _walk(child, where / entry.name, root, suffix)
            finally:
                os.close(child)
        elif entry.name.endswith(suffix):
            yield where / entry.name
