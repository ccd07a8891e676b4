"""Run trials one after another in this process, in a thread: for debugging and tests.

The trial runs in a thread so that the driver's loop stays the same as with
Ray: the thread hands each epoch's rows over as an event as it reports them
and, where a verdict may fall, waits until the driver has handled them (the
next ``poll``), so a stop takes effect before the next epoch. A breakpoint
in a workload stops right there.

A thread cannot be killed: when the study stops (Ctrl-C, SIGTERM) its
trial is told to stop at its next report, and ``close`` waits for that
(up to STOP_WAIT seconds). A daemon thread still inside a native library
(torch) when the interpreter exits would abort the process ("terminate
called without an active exception") instead of letting it exit with its
status.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from tuner.executors.base import Executor
from tuner.trial.messages import Call, Ended, Epochs, Event, TrialJob
from tuner.trial.worker import run_trial

log = logging.getLogger("tuner")

# How long close() waits for a stopped trial to reach its next report and end.
STOP_WAIT = 60.0


class WorkloadExit(BaseException):
    """A workload called ``os._exit`` in the driver's process: it fails its trial instead of ending the study."""


class _ExitGuard:
    """While inline trials may run, ``os._exit`` from a trial's thread fails that trial (a WorkloadExit) instead
    of ending the driver at once, with no exit handler run, its exit status 0 and the trial left RUNNING. Any
    other thread (the main one, a user's own), and a process forked from this one, exit as asked."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.real = os._exit
        self.pid = 0
        self.trial_threads: set[int] = set()

    @contextlib.contextmanager
    def trial(self) -> Iterator[None]:
        """Mark the calling thread as a trial's while the block runs."""
        self.trial_threads.add(threading.get_ident())
        try:
            yield
        finally:
            self.trial_threads.discard(threading.get_ident())

    def __enter__(self) -> None:
        with self.lock:
            if self.users == 0:
                self.real, self.pid = os._exit, os.getpid()
                os._exit = self._exit  # type: ignore[assignment]
            self.users += 1

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                os._exit = self.real

    def _exit(self, status: int) -> None:
        if os.getpid() == self.pid and threading.get_ident() in self.trial_threads:
            raise WorkloadExit(
                f"the workload called os._exit({status}), which would end the study's own process: with "
                "--executor inline its trials run inside it. Fix: return (or raise) from the workload instead, or "
                "run it on Ray, where each trial has a process of its own"
            )
        self.real(status)


_EXIT_GUARD = _ExitGuard()


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
        self.closed = threading.Event()
        self.guarded = False
        self.thread: threading.Thread | None = None  # the trial's, until close() saw it end

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
        return self._take(got)

    def delivered(self) -> list[Event]:
        return self._take([])

    def _take(self, got: list[tuple[Event, threading.Event | None]]) -> list[Event]:
        """``got`` and every event queued after it, as poll returns them."""
        while True:
            try:
                got.append(self.events.get_nowait())
            except queue.Empty:
                break
        events: list[Event] = []
        for event, handled in got:
            if isinstance(event, Epochs) and events and isinstance(events[-1], Epochs):
                events[-1] = Epochs(events[-1].rows + event.rows)  # one batch of rows: one write
            else:
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
        if not self.guarded:
            _EXIT_GUARD.__enter__()
            self.guarded = True

        def deliver(rows: list[dict[str, Any]], wait: bool) -> bool:
            if not wait:  # the rows are the driver's now; a stop is heard at the next delivery
                self.events.put((Epochs(rows), None))
                return job.trial_id in self.stopping
            handled = threading.Event()
            self.events.put((Epochs(rows), handled))
            while not handled.wait(0.1):
                if self.closed.is_set():  # no poll will hand these rows over any more
                    return True
            return job.trial_id in self.stopping

        calls = itertools.count(1)

        def ask(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
            call = Call(job.trial_id, next(calls), method, args, kwargs)
            handled = threading.Event()
            self.events.put((call, handled))
            while not handled.wait(0.1):
                if self.closed.is_set():  # no poll will hand the call over any more
                    break
            return self.replies.pop((job.trial_id, call.seq), ("stop", f"trial {job.number} was stopped"))

        def trial() -> None:
            with _EXIT_GUARD.trial():
                ended = run_trial(job, deliver, ask=ask)
            self.events.put((ended, None))

        self.thread = threading.Thread(target=trial, name=f"tuner-trial-{job.number}", daemon=True)
        self.thread.start()

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
        stopping = self.running
        self.cancel([j.trial_id for j in self.waiting] + ([self.running.trial_id] if self.running else []))
        self.closed.set()
        try:
            self._join(stopping)
        finally:
            if self.guarded:  # after the trial's end: an os._exit while it stops still fails only the trial
                _EXIT_GUARD.__exit__()
                self.guarded = False

    def _join(self, job: TrialJob | None) -> None:
        """Wait until the last trial's thread ends: told to stop, it does at its next report."""
        thread, self.thread = self.thread, None
        if thread is None or thread is threading.current_thread():
            return
        thread.join(1.0)
        if not thread.is_alive():
            return
        number = job.number if job is not None else thread.name.rsplit("-", 1)[-1]
        log.warning("waiting for trial %s to stop at its next report (up to %.0f s; Ctrl-C again quits at once)",
                    number, STOP_WAIT)
        thread.join(STOP_WAIT - 1.0)
        if thread.is_alive():
            log.warning("trial %s did not stop within %.0f s: its workload never reported; exiting while it runs",
                        number, STOP_WAIT)
