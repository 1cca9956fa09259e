"""The one exception family users see: the CLI turns it into a message and exit status 2."""

from collections.abc import Iterable


class BenchError(Exception):
    """Bad usage or bad input: the message says what was wrong and what is valid."""


class UnknownNameError(BenchError):
    """A name that no registry holds; the message lists the names that are valid."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        choices = ", ".join(sorted(valid)) or "(none registered)"
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {choices}")
        self.kind, self.name = kind, name


class DatasetUnavailable(BenchError):
    """Data that is neither on disk nor reachable: the message says how to get it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so that the same cleanup runs."""


class Interrupted(KeyboardInterrupt):
    """The user's Ctrl-C (SIGINT) while a plugin file is imported: raised by the signal handler
    `bench.core.registry` installs there, so that it is told apart from a plugin that raises
    KeyboardInterrupt itself (a broken plugin)."""


class Diverged(RuntimeError):
    """Training produced a non-finite loss; the run is recorded as `diverged`, not `failed`."""
