"""The worker's side of a trial: run a workload, collect its epochs, never crash.

Runs wherever the executor puts it (a thread of the driver for ``inline``, a
Ray worker for ``ray``). It knows nothing of strategies or the store: it gets a
:class:`TrialJob` and returns an :class:`Ended`; epoch rows travel to the
driver through ``deliver`` while the trial runs, and ``deliver`` answers
whether the driver wants the trial stopped.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import importlib
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import optuna

from tuner.trial import limits, metrics
from tuner.trial.checkpoint import Checkpoint, pack
from tuner.trial.diagnosis import DIVERGED, Finding, Thresholds, alarm
from tuner.trial.messages import RESENT, Completed, Crashed, Ended, Failed, Pruned, Result, TimedOut, TrialJob

# Takes a batch of rows and whether to wait for the driver's verdict on them;
# answers True when the driver wants the trial stopped. An empty batch with a
# wait asks only for the verdict on the rows delivered before.
Deliver = Callable[[list[dict[str, Any]], bool], bool]
# Asks the driver to call a method of the trial's Optuna ``Trial`` (method, args, kwargs) and waits for its
# reply: ("value", v), ("error", exception type name, message) or ("stop", why) (see tuner/trial/optuna_trial.py).
Ask = Callable[[str, tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]


class StopTrial(optuna.TrialPruned):
    """Raised from ``report`` when the trial must stop (the driver or its diagnostics said so)."""

    def __init__(self, message: str, finding: Finding | None = None) -> None:
        super().__init__(message)
        self.finding = finding


class Reporter:
    """The ``report(epoch, checkpoint=None, **metrics)`` callable a workload receives.

    Each epoch's row is delivered as it is reported, without waiting for
    the driver (except where a verdict may fall): whatever ends the trial, a
    crash of its worker or a hang it is killed for, every epoch reported
    before is the driver's.

    ``checkpoint`` (a file path, bytes, or a state dict) is kept with the
    trial; checkpoints travel at most every ``flush_seconds`` (and at the
    last epoch, and where a verdict may fall): of those reported in between
    only the last one, and the one of the epoch that best meets the job's
    objective so far (the model the trial's value describes), each with a
    copy of its epoch's row. A function that returns one costs less: it is
    called only at an epoch that beats the trial's best, when checkpoints
    travel or at the last epoch, inside that epoch's ``report`` call, so the
    epochs in between save nothing. ``restored`` is the checkpoint a trial
    run again after a worker death starts from (None otherwise): its
    workload goes on at ``restored.epoch + 1``.
    """

    def __init__(self, job: TrialJob, deliver: Deliver | None, ask: Ask | None = None) -> None:
        self.job = job
        self.deliver = deliver
        self.ask = ask  # the channel an Optuna objective's trial asks the driver's study through
        self.pending: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.thresholds = Thresholds(**job.watch) if job.watch is not None else None
        self.restored: Checkpoint | None = job.restore
        self.epochs = job.restore.reported if job.restore is not None else 0
        self._kept: dict[str, Any] | None = None  # the pending row that holds the latest checkpoint
        self._best: dict[str, Any] | None = None  # the pending row that holds the best epoch's checkpoint
        self._best_score: float | None = job.best_score  # the objective at the best epoch with a checkpoint
        self._later: tuple[dict[str, Any], Callable[[], Any]] | None = None  # a checkpoint function of this epoch
        self.waits: list[float] = []  # seconds spent waiting for each verdict
        self.device: str | None = None
        self._last_report = time.perf_counter()
        self._last_flush = self._last_report  # when checkpoints last travelled
        self.closed = False  # the trial ended: a late report() (a thread the workload left) is refused

    def close(self) -> None:
        self.closed = True

    def __call__(self, epoch: int, checkpoint: Any = None, **metrics: Any) -> None:
        if self.closed:
            raise RuntimeError(
                f"report({epoch!r}, ...) was called after trial {self.job.number} ended, so it is not recorded "
                "(a thread of the workload outlived it?). Fix: wait for the threads that report (join them) "
                "before the workload returns."
            )
        now = time.perf_counter()
        row = _epoch_row(epoch, metrics)
        row.setdefault("seconds", now - self._last_report)
        row.setdefault("device", self.device or detect_device())
        self.device = row["device"]
        row["trial_id"] = self.job.trial_id
        self._last_report = now
        self.pending.append(row)
        self.epochs += 1
        self._checkpoint(row, checkpoint)
        # At the final epoch, stopping saves nothing: only a run with no value left (diverged) is stopped.
        final = self.epochs >= self.job.context.get("epochs", math.inf)
        if final:
            self._call_later()
        if self.thresholds is not None:
            self.history.append(row)
            finding = alarm(self.history, self.thresholds)
            if finding is not None and (not final or finding.kind == DIVERGED):
                raise StopTrial(f"trial {self.job.number}: {finding.kind}: {finding.detail}", finding)
        if self.deliver is None:
            return
        # Where a verdict may fall, hear it before the next epoch starts; elsewhere the row goes without a wait.
        self.flush(wait=not final and self.job.waits_at(epoch), final=final)

    def _checkpoint(self, row: dict[str, Any], given: Any) -> None:
        # A function not called in its own epoch never is: by the next, the state it returns has moved on.
        best = given is not None and self._improves(row)
        self._later = (row, given) if callable(given) and not best else None
        if given is not None and self._later is None:
            self._keep(row, pack(given() if callable(given) else given, row["epoch"]), best)

    def _improves(self, row: dict[str, Any]) -> bool:
        """Whether the row beats the best epoch with a checkpoint so far (never without an objective: the
        latest checkpoint is then the trial's model)."""
        found = metrics.improves(row, self.job.objective, self._best_score) if self.job.objective else None
        if found is None:
            return False
        self._best_score = found
        return True

    def _call_later(self) -> None:
        if self._later is not None:
            row, function = self._later
            self._later = None
            self._keep(row, pack(function(), row["epoch"]), False)

    def _keep(self, row: dict[str, Any], checkpoint: Checkpoint, best: bool) -> None:
        """Put the checkpoint on its row, in place of older ones not delivered yet: the latest's, and the best's
        when this one is the best."""
        if self._kept is not None and (best or self._kept is not self._best):  # the latest stays as the best
            self._kept.pop("checkpoint", None)
        if best and self._best is not None:
            self._best.pop("checkpoint", None)
        row["checkpoint"] = dataclasses.replace(checkpoint, reported=self.epochs)
        self._kept = row
        if best:
            self._best = row

    def flush(self, wait: bool = False, final: bool = False) -> None:
        """Deliver the rows not delivered yet, with the kept checkpoints when they are due; with ``wait``, hear
        the driver's verdict on the last epoch reported (also when its rows went already) and raise StopTrial
        if it ends the trial."""
        if self.deliver is None or not (self.pending or (wait and self.epochs)):
            return
        due = wait or final or time.perf_counter() - self._last_flush >= self.job.flush_seconds
        rows = self.remaining() if due else [_without_checkpoint(r) for r in self.pending]
        self.pending = []
        start = time.perf_counter()
        stop = self.deliver(rows, wait)
        if wait:
            self.waits.append(time.perf_counter() - start)
        if stop:
            raise StopTrial(f"trial {self.job.number} stopped by the orchestrator")

    def remaining(self, ended: bool = False) -> list[dict[str, Any]]:
        """What is left to deliver, checkpoints and all: the rows not delivered yet, after a copy of each
        delivered row that holds a kept checkpoint (marked RESENT: the driver takes only its checkpoint).
        ``ended``: the trial is over, and a checkpoint function of its last epoch is not called any more."""
        if not ended:
            self._call_later()
        pending = {id(r) for r in self.pending}
        held = {id(r): r for r in (self._best, self._kept) if r is not None and id(r) not in pending
                and "checkpoint" in r}
        resent = [{**r, RESENT: True} for r in sorted(held.values(), key=lambda r: r["epoch"])]
        rows = resent + [dict(r) for r in self.pending]
        for row in (*held.values(), *self.pending):
            row.pop("checkpoint", None)  # it travels now
        self._kept, self._best = None, None
        self._last_flush = time.perf_counter()
        return rows


def _without_checkpoint(row: dict[str, Any]) -> dict[str, Any]:
    """A copy of a row to deliver before its checkpoint is due (the worker's own row keeps it until then)."""
    return {k: v for k, v in row.items() if k != "checkpoint"}


def _epoch_row(epoch: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """The row of one report, each value as the store holds it (tuner/trial/limits.py refuses what it cannot)."""
    row: dict[str, Any] = {"epoch": limits.epoch(epoch)}
    for key, value in metrics.items():
        if key == "device":
            row[key] = limits.text(key, value)
        elif key == "iterations":
            row[key] = limits.iterations(value)
        else:
            row[limits.name(key)] = limits.number_of(key, value)
    if "train_loss" in row and "val_loss" in row:
        row["gap_loss"] = row["val_loss"] - row["train_loss"]
    if "train_acc" in row and "val_acc" in row:
        row["gap_acc"] = row["train_acc"] - row["val_acc"]
    return row


def detect_device() -> str:
    """``cuda:N`` (N as Ray assigned it in CUDA_VISIBLE_DEVICES) or ``cpu``."""
    torch = sys.modules.get("torch")  # a workload that never imported torch ran on the CPU
    if torch is None or not torch.cuda.is_available():
        return "cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return f"cuda:{visible.split(',')[0] if visible else torch.cuda.current_device()}"


def resolve(workload: Any) -> Callable[..., Any]:
    """The workload's function: itself, ``module:function`` or ``path/to/file.py:function`` imported
    (ImportError if it can't)."""
    if callable(workload):
        return workload
    module_name, _, func_name = workload.rpartition(":")  # a path may hold ':', a function name never
    try:
        module = import_file(module_name) if is_path(module_name) else importlib.import_module(module_name)
    except ImportError as exc:
        if is_path(module_name):
            raise
        raise ImportError(f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # a module that raises on import is as broken as a missing one
        raise ImportError(f"{type(exc).__name__}: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ImportError(f"module {module_name!r} has no function {func_name!r}")
    return func


def is_path(module: str) -> bool:
    """Whether a workload's module part names a file (``./train.py``, ``src/train.py``) rather than a module."""
    return module.endswith(".py") or "/" in module or os.sep in module or module.startswith("~")


def import_root(file: str) -> tuple[str, str]:
    """The folder to import ``file`` from and its module name there: the first folder up from it that is
    no package (holds no ``__init__.py``), so that ``pkg/sub.py`` imports as ``pkg.sub``."""
    folder, name = os.path.split(os.path.abspath(file))
    parts = [] if name == "__init__.py" else [name.removesuffix(".py")]
    while os.path.isfile(os.path.join(folder, "__init__.py")) and os.path.dirname(folder) != folder:
        folder, package = os.path.split(folder)
        parts.insert(0, package)
    return folder, ".".join(parts)


def import_file(path: str) -> Any:
    """The module of the Python file ``path`` (relative to the working directory), imported as its
    package layout says; its folder goes on ``sys.path``, as a script's own folder does."""
    file = os.path.abspath(os.path.expanduser(path))
    if not file.endswith(".py") or not os.path.isfile(file):
        what = "is not a .py file" if os.path.exists(file) else "does not exist"
        raise ImportError(f"the file {file} {what}")
    root, name = import_root(file)
    if root not in sys.path:
        sys.path.insert(0, root)
    loaded = sys.modules.get(name)
    try:
        if loaded is None or os.path.abspath(getattr(loaded, "__file__", None) or "") == file:
            return importlib.import_module(name)
        # Another file of the same module name is imported already (a second study in this
        # process): run this one as a module of its own rather than hand back the other.
        from importlib.util import module_from_spec, spec_from_file_location

        found = spec_from_file_location(name, file)
        module = module_from_spec(found)
        found.loader.exec_module(module)
        return module
    except Exception as exc:  # a module that raises on import is as broken as a missing one
        raise ImportError(f"{type(exc).__name__}: {exc}") from exc


def run_trial(job: TrialJob, deliver: Deliver | None, node: str | None = None, ask: Ask | None = None) -> Ended:
    """Run one trial to the end; every exception the workload raises becomes part of the result.

    Every one, BaseExceptions too (KeyboardInterrupt, SystemExit,
    GeneratorExit, a class of the workload's own): a trial runs in a thread
    of the driver (inline) or a worker of its own (Ray), never in the
    driver's main thread, where alone the user's Ctrl-C arrives, so what
    its workload raises is the trial's failure and the driver learns of it.
    """
    start = time.perf_counter()
    report = Reporter(job, deliver, ask)
    try:
        result = _run(job, report)
    finally:
        report.close()
    return Ended(
        job.number, job.trial_id, result, rows=report.remaining(ended=True),
        device=report.device or detect_device(), node=node or socket.gethostname(),
        wall_seconds=time.perf_counter() - start, waits=report.waits,
    )


def _run(job: TrialJob, report: Reporter) -> Result:
    try:
        with _deadline(job.timeout):
            returned = resolve(job.workload)(dict(job.workload_params), report)
        return Completed(_returned_value(returned))
    except TrialTimeout:
        _free_gpu_memory()
        return TimedOut(timeout_reason(job.timeout or 0))
    except optuna.TrialPruned as exc:
        finding = getattr(exc, "finding", None)
        if finding is None:
            return Pruned()
        return Pruned({"kind": finding.kind, "epoch": finding.epoch, "detail": finding.detail,
                       "values": finding.values})
    except BaseException as exc:  # noqa: BLE001 - the workload's, whatever it is: see run_trial
        _free_gpu_memory()
        return Failed(_describe(exc), traceback.format_exc())


def crashed(job: TrialJob, error: str) -> Ended:
    """The end of a trial whose worker died before it could say anything."""
    return Ended(job.number, job.trial_id, Crashed(error))


class TrialTimeout(Exception):
    """The trial ran past its trial_timeout."""


def timeout_reason(seconds: float) -> str:
    return f"trial_timeout: still running after {seconds:g} s, so it was stopped"


@contextlib.contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise TrialTimeout in the workload after ``seconds``.

    In a main thread (a Ray worker) a SIGALRM does it, which also interrupts a
    sleep; elsewhere (the inline executor's trial thread) the exception is
    raised in the thread asynchronously, at its next Python instruction.
    """
    if not seconds:
        yield
        return
    if threading.current_thread() is threading.main_thread():
        with _alarm(seconds):
            yield
        return
    timer = threading.Timer(seconds, _raise_in, (threading.get_ident(),))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        _raise_in(threading.get_ident(), None)  # withdraw one that fired as the workload returned


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise TrialTimeout(timeout_reason(seconds))

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _raise_in(thread_id: int, exc: type[BaseException] | None = TrialTimeout) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


def _returned_value(returned: Any) -> float | None:
    if returned is None:
        return None
    try:
        return float(returned)
    except (TypeError, ValueError):
        raise TypeError(
            f"the workload must return a number or None, but returned {returned!r}"
        ) from None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _free_gpu_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
