"""The live progress display of `bench run`: a status line with stage, elapsed time and ETA."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TextIO


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TerminalProgress:
    """Prints a line per finished run and, on a terminal, redraws a status line below them.

    The ETA is the mean time of the runs executed so far times the runs left, so it sharpens as
    the suite goes; runs that had finished before do not count.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.total = 0
        self.completed = 0
        self.executed_seconds = 0.0
        self.executed = 0
        self.started = time.perf_counter()
        self.statuses: Counter = Counter()
        self.current = ""

    def start(self, total: int, already_done: int) -> None:
        self.total, self.completed = total, already_done
        self.started = time.perf_counter()
        todo = total - already_done
        self._print(f"{total} runs planned: {already_done} already done, {todo} to run")

    def stage(self, label: str, stage: str) -> None:
        self.current = f"{label}: {stage}"
        self._draw()

    def finished(self, label: str, status: str, seconds: float) -> None:
        self.completed += 1
        self.statuses[status] += 1
        if status in ("ok", "failed", "diverged"):
            self.executed += 1
            self.executed_seconds += seconds
        width = len(str(self.total))
        self._print(
            f"[{self.completed:>{width}}/{self.total}] {status:<8} {label} ({seconds:.1f}s)"
        )

    def eta(self) -> float | None:
        if not self.executed:
            return None
        return self.executed_seconds / self.executed * (self.total - self.completed)

    def _status_line(self) -> str:
        elapsed = clock(time.perf_counter() - self.started)
        eta = self.eta()
        percent = 100 * self.completed // max(self.total, 1)
        return (
            f"[{self.completed}/{self.total}] {percent}% | {self.current} | elapsed {elapsed}"
            f" | ETA {clock(eta) if eta is not None else '?'}"
        )

    def _draw(self) -> None:
        if self.live:
            self.stream.write("\r\033[K" + self._status_line())
            self.stream.flush()

    def _print(self, line: str) -> None:
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.write(line + "\n")
        self._draw()

    def close(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()
