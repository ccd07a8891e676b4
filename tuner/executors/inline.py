"""Run trials one after another in this process, in a thread: for debugging and tests.

The trial runs in a thread so that the driver's loop stays the same as with
Ray: the thread hands each batch of rows over as an event and waits until
the driver has handled it (the next ``poll``), so a stop takes effect before
the next epoch. A breakpoint in a workload stops right there.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

from tuner.executors.base import Executor
from tuner.trial.messages import Call, Ended, Epochs, Event, TrialJob
from tuner.trial.worker import run_trial


class InlineExecutor(Executor):
    """No Ray, no subprocess: one trial at a time, in a thread of the driver."""

    capacity = 1

    def __init__(self) -> None:
        self.waiting: deque[TrialJob] = deque()
        self.events: queue.Queue[tuple[Event, threading.Event | None]] = queue.Queue()
        self.running: TrialJob | None = None
        self.stopping: set[int] = set()
        self.unanswered: list[threading.Event] = []
        self.replies: dict[tuple[int, int], tuple[Any, ...]] = {}  # (trial id, seq) -> the driver's reply

    def submit(self, job: TrialJob) -> None:
        self.waiting.append(job)

    def poll(self, timeout: float) -> list[Event]:
        self._answer()
        if self.running is None and self.waiting:
            self._start(self.waiting.popleft())
        if self.running is None:
            return []
        try:
            got = [self.events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while not self.events.empty():
            got.append(self.events.get_nowait())
        events = []
        for event, handled in got:
            events.append(event)
            if handled is not None:
                self.unanswered.append(handled)
            if isinstance(event, Ended) and self.running is not None and event.trial_id == self.running.trial_id:
                self.running = None
        return events

    def handled(self) -> None:
        self._answer()

    def _answer(self) -> None:
        """The driver handled what the last poll returned: let the trial go on to its next epoch."""
        for handled in self.unanswered:
            handled.set()
        self.unanswered = []

    def _start(self, job: TrialJob) -> None:
        self.running = job

        def deliver(rows: list[dict[str, Any]], wait: bool) -> bool:
            # Always waits: in one process the verdict costs a hand-over, not a round trip.
            handled = threading.Event()
            self.events.put((Epochs(rows), handled))
            handled.wait()
            return job.trial_id in self.stopping

        calls = itertools.count(1)

        def ask(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
            call = Call(job.trial_id, next(calls), method, args, kwargs)
            handled = threading.Event()
            self.events.put((call, handled))
            handled.wait()
            return self.replies.pop((job.trial_id, call.seq), ("stop", f"trial {job.number} was stopped"))

        def trial() -> None:
            self.events.put((run_trial(job, deliver, ask=ask), None))

        threading.Thread(target=trial, name=f"tuner-trial-{job.number}", daemon=True).start()

    def reply(self, call: Call, reply: tuple[Any, ...]) -> None:
        self.replies[(call.trial_id, call.seq)] = reply

    def stop(self, trial_ids: Iterable[int]) -> None:
        self.stopping.update(trial_ids)

    def cancel(self, trial_ids: Iterable[int]) -> None:
        # A thread cannot be killed: it is told to stop at its next report, and its end is not awaited.
        wanted = set(trial_ids)
        self.stopping |= wanted
        self.waiting = deque(j for j in self.waiting if j.trial_id not in wanted)
        if self.running is not None and self.running.trial_id in wanted:
            self.running = None
        self._answer()

    def close(self) -> None:
        self.cancel([j.trial_id for j in self.waiting] + ([self.running.trial_id] if self.running else []))
