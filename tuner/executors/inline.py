"""Run trials one after another in this process: for debugging and tests."""

from __future__ import annotations

from collections import deque

from tuner.executors.base import Executor
from tuner.runtime import TrialJob, TrialOutcome, run_trial


class InlineExecutor(Executor):
    """No Ray, no subprocess: a breakpoint in a workload stops right there."""

    capacity = 1

    def __init__(self) -> None:
        self.queue: deque[TrialJob] = deque()

    def submit(self, job: TrialJob) -> None:
        self.queue.append(job)

    def poll(self, timeout: float) -> list[TrialOutcome]:
        if not self.queue:
            return []
        return [run_trial(self.queue.popleft(), self.sink)]
