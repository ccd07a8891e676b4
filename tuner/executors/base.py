"""The executor contract: run trials somewhere, hand back what happened as events.

An executor never decides what to try and never calls back into the driver.
The orchestrator submits jobs and polls; ``poll`` returns the events since the
last poll (epoch rows as they were reported, trials that ended), and the
orchestrator answers with ``stop`` for the trials it has ended, then says
``handled()``. An executor may hold a worker at an epoch until then, so that a
stop takes effect before its next epoch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

from tuner.trial.messages import Call, Event, TrialJob


class Executor(ABC):
    #: How many trials it can run at once (the orchestrator keeps at most this many in flight).
    capacity: int = 1

    def at_once(self, parallel: int) -> int:
        """How many trials it runs at once when the spec asks for ``parallel``."""
        return min(parallel, self.capacity)

    def check_workload(self, workload: Any) -> None:
        """Refuse, before anything is created, a workload this executor cannot hand to its workers."""

    def start(self, resources: dict[str, float], parallel: int) -> None:
        """Get ready to run trials needing ``resources`` each (refuse what cannot run)."""

    @abstractmethod
    def submit(self, job: TrialJob) -> None: ...

    @abstractmethod
    def poll(self, timeout: float) -> list[Event]:
        """What happened since the last poll, waiting at most ``timeout`` seconds for something."""

    def handled(self) -> None:
        """The driver has handled every event the last ``poll`` returned (and said which trials to stop)."""

    def reply(self, call: Call, reply: tuple[Any, ...]) -> None:
        """Answer a :class:`Call` that ``poll`` returned (its trial waits for it), by ``handled()`` at the latest."""
        raise NotImplementedError(f"{type(self).__name__} cannot answer a trial's calls")

    def stop(self, trial_ids: Iterable[int]) -> None:
        """Ask these trials to stop at their next report (the driver has ended them)."""

    def delivered(self) -> list[Event]:
        """What workers delivered that ``poll`` has not returned yet, without waiting: taken before a trial is
        ended without its worker's word (killed at its deadline), so that no epoch it reported is lost."""
        return []

    def cancel(self, trial_ids: Iterable[int]) -> None:
        """Stop these trials now, if the executor can (their ends are not awaited)."""

    def close(self) -> None:
        """Release what ``start`` acquired."""
