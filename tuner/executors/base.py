"""The executor contract: run trials somewhere, hand back outcomes and epochs.

An executor never decides what to try. The orchestrator submits jobs and
polls; while polling, the executor passes every batch of epoch rows to the
``sink`` it was started with, and the sink answers with the trial numbers
that must stop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

from tuner.runtime import TrialJob, TrialOutcome

Sink = Callable[[list[dict[str, Any]]], set[int]]


class Executor(ABC):
    #: How many trials it can run at once (the orchestrator keeps at most this many in flight).
    capacity: int = 1

    #: Set by the orchestrator before it submits anything.
    sink: Sink = staticmethod(lambda rows: set())  # type: ignore[assignment]

    def check_workload(self, workload: Any) -> None:
        """Refuse, before anything is created, a workload this executor cannot hand to its workers."""

    def start(self, resources: dict[str, float], parallel: int) -> None:
        """Get ready to run trials needing ``resources`` each (refuse what cannot run)."""

    @abstractmethod
    def submit(self, job: TrialJob) -> None: ...

    @abstractmethod
    def poll(self, timeout: float) -> list[TrialOutcome]:
        """Outcomes of trials that ended, waiting at most ``timeout`` seconds for one."""

    def cancel(self, numbers: Iterable[int]) -> None:
        """Stop these trials now (their outcomes are not awaited)."""

    def close(self) -> None:
        """Release what ``start`` acquired."""
