"""The live progress display of `bench run`: a line per finished run, and a status line with the
current stage, its own elapsed time and epoch, and an ETA from a per-stage cost model.

The ETA used to be the mean time of the runs so far times the runs left; a suite whose teachers
train for minutes before any student starts, and whose datasets differ tenfold in cost, made it
say 6:39 left at 50 % when 48 minutes were left. Now every piece of work is one of three kinds,
a dataset's teacher stage, the training alone of its `other_teacher` (a stage of its own when
several slots run) or a student run, and each piece is estimated by what the same kind
cost on the same dataset: measured as the suite goes, else what records already on disk say it
cost (the results folder's own, and the reference set of the profile; `bench.run.cost_priors`),
scaled by how much faster or slower this machine has been than those records so far. Work of a
kind that neither measured nor recorded is "?", never priced like another dataset's (an
unmeasured 26 s image run used to be priced like a 2 s table run). The percentage is of the
estimated time, not of the runs, once every piece has an estimate.

The status line is redrawn every `refresh` seconds by a background thread, so it never stands
still during a long stage, and is cut to the terminal's width (a wrapped line would leave a new
partial line at every redraw). When the output is not a terminal there is no status line, only
a plain line per finished run. No colour is used, so `NO_COLOR` has nothing to turn off.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Literal, Protocol, TextIO

from bench.core.terminal import printable

WorkKind = Literal["teacher", "training", "run"]
Work = tuple[WorkKind, str]  # (kind, dataset)


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def epoch_detail(epoch: int, epochs: int) -> str:
    """How the status line shows an epoch (from 1) of a stage: `epoch 3/30`."""
    return f"epoch {epoch}/{epochs}"


def dataset_of(label: str) -> str:
    """The dataset of a run label (`digits/kd/seed0`) or of a teacher stage's (`digits`)."""
    return label.partition("/")[0]


class CostModel:
    """Seconds per piece of work, measured as the suite goes, and what the rest should take.

    `priors`: seconds per piece of work as records on disk say it cost, on whatever machine
    wrote them; they are scaled by `speed`, this machine's pace relative to them so far.
    """

    def __init__(self, priors: dict[Work, float] | None = None) -> None:
        self.measured: dict[Work, list[float]] = defaultdict(list)
        self.priors = {work: s for work, s in (priors or {}).items() if s > 0}

    def record(self, work: Work, seconds: float) -> None:
        self.measured[work].append(seconds)

    def speed(self) -> float:
        """Seconds this suite took per second the records say: the median ratio over the pieces
        measured here that have a prior (robust to one slow piece; per piece rather than per
        kind, which halved the ETA's misses at a tenth of a replayed default run); 1 before
        any is."""
        ratios = [
            seconds / self.priors[work]
            for work, values in self.measured.items()
            if work in self.priors
            for seconds in values
        ]
        return statistics.median(ratios) if ratios else 1.0

    def estimate(self, work: Work) -> float | None:
        """The mean of this kind on this dataset measured here; else its prior at this machine's
        speed; else None (unknown: never another dataset's cost)."""
        own = self.measured.get(work)
        if own:
            return statistics.fmean(own)
        prior = self.priors.get(work)
        return prior * self.speed() if prior is not None else None

    def spent(self) -> float:
        """Seconds of work finished so far, summed over the pieces."""
        return sum(sum(values) for values in self.measured.values())

    def remaining(
        self, pending: Counter[Work], running: Iterable[tuple[Work, float]], slots: int
    ) -> float | None:
        """Seconds until `pending` work and the `running` (work, seconds so far) are done, with
        `slots` pieces at a time; None while some kind of pending work has no estimate."""
        work = self.remaining_work(pending, running)
        return None if work is None else work / max(slots, 1)

    def remaining_work(
        self, pending: Counter[Work], running: Iterable[tuple[Work, float]]
    ) -> float | None:
        """Seconds of work left in `pending` and `running`, summed over the pieces."""
        total = 0.0
        for work, count in pending.items():
            if count <= 0:
                continue
            estimate = self.estimate(work)
            if estimate is None:
                return None
            total += estimate * count
        for work, elapsed in running:
            estimate = self.estimate(work)
            if estimate is None:
                return None
            total += max(estimate - elapsed, 0.0)
        return total


class Progress(Protocol):
    """What the runner and the executors report as a suite goes; the CLI draws it."""

    def start(
        self,
        total: int,
        already_done: int,
        work: Iterable[Work] = (),
        slots: int = 1,
        priors: dict[Work, float] | None = None,
    ) -> None: ...

    def began(self, label: str, work: Work) -> None: ...

    def stage(self, label: str, stage: str, detail: str = "") -> None: ...

    def epoch(self, label: str, stage: str, epoch: int, epochs: int) -> None: ...

    def teacher_finished(self, label: str, work: Work, seconds: float) -> None: ...

    def finished(self, label: str, status: str, seconds: float) -> None: ...


class SilentProgress:
    """A `Progress` that ignores what it is told (a worker's; the default of tests)."""

    def start(
        self,
        total: int,
        already_done: int,
        work: Iterable[Work] = (),
        slots: int = 1,
        priors: dict[Work, float] | None = None,
    ) -> None:
        pass

    def began(self, label: str, work: Work) -> None:
        pass

    def stage(self, label: str, stage: str, detail: str = "") -> None:
        pass

    def epoch(self, label: str, stage: str, epoch: int, epochs: int) -> None:
        pass

    def teacher_finished(self, label: str, work: Work, seconds: float) -> None:
        pass

    def finished(self, label: str, status: str, seconds: float) -> None:
        pass


class TerminalProgress:
    """Prints a line per finished run and, on a terminal, keeps a status line below them.

    `clock` is injectable so that the ETA can be tested against a fake one.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
        refresh: float = 1.0,
    ) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.now = clock
        self.refresh = refresh
        self.total = 0
        self.completed = 0
        self.slots = 1
        self.started = self.now()
        self.statuses: Counter = Counter()
        self.costs = CostModel()
        self.pending: Counter[Work] = Counter()
        # By label: the work under way and when it began; its stage, detail and since when.
        self.running: dict[str, tuple[Work, float]] = {}
        self.doing: dict[str, tuple[str, str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # --- what the runner and the executors report ------------------------------------------
    def start(
        self,
        total: int,
        already_done: int,
        work: Iterable[Work] = (),
        slots: int = 1,
        priors: dict[Work, float] | None = None,
    ) -> None:
        """The suite's plan: `work` lists every teacher stage and run still to do; `priors`
        what records on disk say each kind of work cost (`CostModel`)."""
        with self._lock:
            self.total, self.completed, self.slots = total, already_done, slots
            self.started = self.now()
            self.pending = Counter(work)
            self.costs = CostModel(priors)
        todo = total - already_done
        self._print(f"{total} runs planned: {already_done} already done, {todo} to run")
        if self.live and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()

    def began(self, label: str, work: Work) -> None:
        """A piece of work started: it leaves the pending work, and counts as what is left of
        its estimate until it finishes."""
        with self._lock:
            if label not in self.running and self.pending[work] > 0:
                self.pending[work] -= 1
            self.running[label] = (work, self.now())

    def stage(self, label: str, stage: str, detail: str = "") -> None:
        """What `label` is doing now (`detail`: where within the stage); its stage clock
        restarts when the stage changes, not when only the detail does. Ignored once `label`
        is no longer under way (a worker's report can arrive after its job's result)."""
        with self._lock:
            if label not in self.running:
                return
            known = self.doing.get(label)
            since = known[2] if known is not None and known[0] == stage else self.now()
            self.doing[label] = (stage, detail, since)
        self._draw()

    def epoch(self, label: str, stage: str, epoch: int, epochs: int) -> None:
        """Epoch `epoch` (from 1) of `epochs` of `label`'s `stage` has begun."""
        self.stage(label, stage, epoch_detail(epoch, epochs))

    def teacher_finished(self, label: str, work: Work, seconds: float) -> None:
        with self._lock:
            self._done(label, work, seconds)
        self._draw()

    def finished(self, label: str, status: str, seconds: float) -> None:
        with self._lock:
            self.completed += 1
            self.statuses[status] += 1
            measured = status in ("ok", "failed", "diverged")
            self._done(label, ("run", dataset_of(label)), seconds if measured else None)
        width = len(str(self.total))
        self._print(
            f"[{self.completed:>{width}}/{self.total}] {status:<8} {label} ({seconds:.1f}s)"
        )

    def _done(self, label: str, work: Work, seconds: float | None) -> None:
        """Called with the lock held: `work` is no longer running (or, if it never began, as a
        run recorded as skipped, no longer pending)."""
        self.doing.pop(label, None)
        if self.running.pop(label, None) is None and self.pending[work] > 0:
            self.pending[work] -= 1
        if seconds is not None:
            self.costs.record(work, seconds)

    # --- what the display says ---------------------------------------------------------------
    def eta(self) -> float | None:
        with self._lock:
            now = self.now()
            running = [(work, now - since) for work, since in self.running.values()]
            return self.costs.remaining(self.pending, running, self.slots)

    def fraction_done(self) -> float | None:
        """The share of the suite's estimated work done (finished pieces and the elapsed part
        of running ones); None while some piece has no estimate."""
        with self._lock:
            now = self.now()
            running = [(work, now - since) for work, since in self.running.values()]
            left = self.costs.remaining_work(self.pending, running)
            done = self.costs.spent() + sum(
                min(elapsed, self.costs.estimate(work) or elapsed) for work, elapsed in running
            )
        if left is None:
            return None
        return 1.0 if done + left <= 0 else done / (done + left)

    def status_line(self, width: int | None = None) -> str:
        """`[runs done/planned] share of the estimated time | what runs now | elapsed | ETA`,
        at most `width` characters: what runs now is cut first, the counts and the ETA never."""
        eta, fraction = self.eta(), self.fraction_done()
        with self._lock:
            now = self.now()
            doing = [
                f"{label}: {' '.join(filter(None, (stage, detail)))} ({clock(now - since)})"
                for label, (stage, detail, since) in self.doing.items()
            ]
            elapsed = clock(now - self.started)
        current = "; ".join(doing[:2]) + (f"; +{len(doing) - 2} more" if len(doing) > 2 else "")
        idle = "done" if self.completed >= self.total else "waiting"
        percent = "?" if fraction is None else f"{int(100 * fraction)}"
        head = f"[{self.completed}/{self.total}] {percent}% | "
        tail = f" | elapsed {elapsed} | ETA {clock(eta) if eta is not None else '?'}"
        middle = current or idle
        if width is not None and len(head) + len(middle) + len(tail) > width:
            room = width - len(head) - len(tail)
            middle = middle[: room - 1] + "…" if room > 1 else ""
            if len(head) + len(middle) + len(tail) > width:  # too narrow even for the counts
                return (head + middle + tail)[: max(width, 0)]
        return head + middle + tail

    def _tick(self) -> None:
        while not self._stop.wait(self.refresh):
            self._draw()

    def _draw(self) -> None:
        if self.live:
            # One column short of the width: a line that fills it wraps on some terminals.
            columns = shutil.get_terminal_size().columns
            line = printable(self.status_line(columns - 1))
            with self._lock:
                self.stream.write("\r\033[K" + line)
                self.stream.flush()

    def _print(self, line: str) -> None:
        with self._lock:
            if self.live:
                self.stream.write("\r\033[K")
            self.stream.write(printable(line) + "\n")
        self._draw()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self.live:
            with self._lock:
                self.stream.write("\r\033[K")
                self.stream.flush()
