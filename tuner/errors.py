"""Errors that tuner raises for a user's mistake.

The CLI prints these without a traceback and exits with status 2; the Python
API lets them propagate. Each message names where the problem is, the rule it
breaks, the value it got, and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence


class TunerError(Exception):
    """A problem in what the user asked for, reported without a traceback."""

    exit_code = 2


class SpecError(TunerError, ValueError):
    """A search-space file (or its overrides) breaks one or more rules."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1:
            return f"{self.source}: {self.problems[0]}"
        lines = [f"{self.source}: {len(self.problems)} problems"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class StorageError(TunerError):
    """The study store cannot be opened, or a study is missing or already exists."""


class StudyFailedError(TunerError):
    """The study stopped early because its first trials all failed."""

    exit_code = 1

    def __init__(self, message: str, study: str, workload_traceback: str | None = None) -> None:
        super().__init__(message)
        self.study = study
        self.workload_traceback = workload_traceback  # the first failed trial's, shown by --debug


class NoResultError(TunerError, ValueError):
    """A study's best trial was asked for, but it has none: no trial completed. The message says why.

    A ValueError too, as Optuna's ``best_value`` raises for a study without a completed trial.
    """

    exit_code = 1


class StoreUnreachable(TunerError):
    """The study store stayed unreachable past the outage bound: the study stopped, and a resume continues it."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM (`kill`, `docker stop`, systemd): stop as for Ctrl-C, and say which.

    ``received`` stays set once it came: Ray's blocking calls turn any exception
    a signal handler raises into a plain KeyboardInterrupt.
    """

    received = False

    @classmethod
    def seen(cls, exc: BaseException) -> bool:
        return isinstance(exc, cls) or (isinstance(exc, KeyboardInterrupt) and cls.received)
