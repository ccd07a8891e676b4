"""Loggers that run in a process of their own, so that their CPU never competes with the epoch path.

TensorBoard spends ~0.1 ms a scalar and MLflow's file store about as much a
metric. On a thread of the driver's process that time still holds the GIL the
epoch path needs: with either attached, the store benchmark's epoch rate fell
to half. A logger whose class sets ``separate_process = True`` (tuner's
TensorBoard and MLflow loggers do) is pickled instead to a child Python that
runs its calls in order; the driver's side only queues each call, and a feeder
thread pickles it down the child's stdin. Whatever queued up while the child
was busy goes down as one batch of rows a trial (:func:`merged`), so a logger
that falls behind catches up in fewer, larger calls.

The child loads the study from the store's URL (the loggers are given a real
``optuna.Study``), runs at a lower priority (``nice 10``), ignores Ctrl-C (the
driver ends the session and closes it), and exits once its stdin ends, after
every queued call has run: a driver that dies leaves no process behind. The first failure of each logger comes back on
a pipe of its own and the driver logs it; the child's stdout and stderr are
the driver's.

    python -m tuner.integrations._process FD    # started by LoggerProcess, never by hand
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

log = logging.getLogger("tuner")
READY = -1  # the child's first message: the loggers are imported, the study loaded
MAX_MERGED = 1000  # calls queued for the child that the feeder takes at once, and merges (see merged())


class LoggerProcess:
    """``loggers`` of the study ``study_name`` in ``storage_url``, called in a child process.

    :meth:`call` queues ``getattr(loggers[index], method)(study, *args)``
    (``close`` without the study); :meth:`close` waits for every queued call,
    ``patience`` seconds in silence, then with a warning. ``failed(index,
    error, first_line)`` hears of a logger's failure, once per logger.
    """

    def __init__(self, loggers: Sequence[Any], study_name: str, storage_url: str,
                 failed: Callable[[int, str, str], None]) -> None:
        self._init = (list(loggers), study_name, storage_url)
        self._failed = failed
        self._calls: queue.SimpleQueue[tuple[int, str, tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._child: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._starting = threading.Lock()
        self._ready = threading.Event()
        self._gone = False  # the child died: later calls are dropped, not queued for nobody

    def start(self) -> None:
        """Start the child now (else the first call does), so that its imports overlap the study's start-up."""
        with self._starting:  # writers on several threads: one child
            if self._child is None:
                self._start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Whether the child has imported the loggers and loaded the study, waiting up to ``timeout`` seconds."""
        self.start()
        return self._ready.wait(timeout) and self._child is not None and self._child.poll() is None

    def call(self, index: int, method: str, *args: Any) -> None:
        if self._gone:
            return
        if self._child is None:
            self.start()
        self._calls.put((index, method, args))

    def close(self, patience: float) -> None:
        if self._child is None:
            return
        self._calls.put(None)
        try:
            self._child.wait(patience)
        except subprocess.TimeoutExpired:
            log.warning("waiting for the loggers' process to finish what is queued (a slow tracker?)")
            self._child.wait()
        for thread in self._threads:
            thread.join()
        if self._child.returncode != 0:
            self._warn_gone()
        self._child, self._threads = None, []

    def _warn_gone(self) -> None:
        with self._starting:
            if self._gone:
                return
            self._gone = True
        try:
            code = self._child.wait(5) if self._child is not None else None
        except subprocess.TimeoutExpired:
            code = None
        log.warning("the loggers' process is gone (exit code %s): its loggers log nothing more; the study goes on "
                    "(its store has every epoch)", code)

    def _start(self) -> None:
        read, write = os.pipe()
        try:
            self._child = subprocess.Popen([sys.executable, "-m", __name__, str(write)], stdin=subprocess.PIPE,
                                           pass_fds=(write,))
        finally:
            os.close(write)
        failures = os.fdopen(read, "rb")
        self._threads = [threading.Thread(target=self._feed, args=(self._child.stdin,), daemon=True,
                                          name="tuner-loggers-feed"),
                         threading.Thread(target=self._hear, args=(failures,), daemon=True,
                                          name="tuner-loggers-failures")]
        for thread in self._threads:
            thread.start()

    def _feed(self, pipe: BinaryIO) -> None:
        try:
            pickle.dump(list(sys.path), pipe)  # first, so that the loggers' classes import as they do here
            pickle.dump(self._init, pipe)
            pipe.flush()
            ended = False
            while not ended:
                queued = [self._calls.get()]  # waits for the next call, then takes what else is queued
                while queued[-1] is not None and len(queued) < MAX_MERGED and not self._calls.empty():
                    queued.append(self._calls.get())
                ended = queued[-1] is None
                for item in merged(queued[:-1] if ended else queued):
                    try:
                        message = pickle.dumps(item)
                    except Exception as exc:  # an argument pickle cannot take: that call only is lost
                        self._failed(item[0], type(exc).__name__, f"cannot be sent to the loggers' process: {exc}")
                        continue
                    pipe.write(message)
                pipe.flush()
        except OSError:  # the child is gone: its logging stops, the study goes on
            self._warn_gone()
        finally:
            try:
                pipe.close()
            except OSError:
                pass

    def _hear(self, pipe: BinaryIO) -> None:
        with pipe:
            while True:
                try:
                    index, error, first_line = pickle.load(pipe)
                except (EOFError, OSError, pickle.UnpicklingError):
                    self._ready.set()  # it is gone: nobody waits for it any more
                    return
                if index == READY:
                    self._ready.set()
                else:
                    self._failed(index, error, first_line)


def merged(calls: Sequence[tuple[int, str, tuple[Any, ...]]]) -> list[tuple[int, str, tuple[Any, ...]]]:
    """``calls`` with the ``on_epochs`` calls of one trial to one logger between two other calls made one.

    The rows of a logger that has fallen behind then reach it as a few large
    batches instead of many small ones (one MLflow ``log_batch`` for a hundred
    of the driver's). Every row is kept, a trial's in the order it came, and
    any other call keeps its place: a trial's end still follows its epochs.
    """
    out: list[tuple[int, str, tuple[Any, ...]]] = []
    pending: dict[tuple[int, int], tuple[int, str, tuple[Any, ...]]] = {}
    for index, method, args in calls:
        if method != "on_epochs":
            out += pending.values()
            pending.clear()
            out.append((index, method, args))
            continue
        number, params, rows = args
        if (index, number) in pending:
            pending[index, number][2][2].extend(rows)
        else:  # a list of its own: one batch of rows is handed to every logger
            pending[index, number] = (index, method, (number, params, list(rows)))
    return out + list(pending.values())


def _serve(calls: BinaryIO, failures: BinaryIO) -> None:
    try:
        sys.path[:] = pickle.load(calls)
        loggers, study_name, storage_url = pickle.load(calls)
    except EOFError:  # the driver ended before it sent them
        return
    failed: set[int] = set()
    study = None
    try:
        study = _load(study_name, storage_url)
    except Exception:
        pass  # the database is out: the first call tries again, and a failure then is reported
    pickle.dump((READY, "", ""), failures)
    failures.flush()
    while True:
        try:
            index, method, args = pickle.load(calls)
        except EOFError:
            return
        try:
            if method == "close":
                getattr(loggers[index], method)()
                continue
            if study is None:
                study = _load(study_name, storage_url)
            getattr(loggers[index], method)(study, *args)
        except Exception as exc:  # a tracker that is down must not cost the study its trials
            if index not in failed:
                failed.add(index)
                pickle.dump((index, type(exc).__name__, first_line(exc)), failures)
                failures.flush()


def first_line(exc: BaseException) -> str:
    """What a callback's failure is shown as: its message's first line."""
    return (str(exc).strip().splitlines() or [""])[0]


def _load(study_name: str, storage_url: str) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(storage_url, skip_compatibility_check=True)
    return optuna.load_study(study_name=study_name, storage=storage)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(10)  # background work: where cores are short, the driver's epoch path runs first
    with os.fdopen(int(sys.argv[1]), "wb") as out:
        _serve(sys.stdin.buffer, out)
