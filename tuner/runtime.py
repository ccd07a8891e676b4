"""The worker's side of a trial: run a workload, collect its epochs, never crash.

Runs wherever the executor puts it (the driver process for ``inline``, a Ray
worker for ``ray``). It knows nothing of strategies or the store: it gets a
:class:`TrialJob` and returns a :class:`TrialOutcome`; epoch rows travel to
the orchestrator through ``deliver`` while the trial runs.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna

from tuner.diagnosis import DIVERGED, Finding, Thresholds, alarm

# Rows are sent in batches at most this often (seconds): cheap to record, and
# still live enough for the dashboard.
FLUSH_SECONDS = 0.5

Deliver = Callable[[list[dict[str, Any]]], "set[int] | None"]


@dataclass(frozen=True)
class TrialJob:
    """What a worker needs to run one trial."""

    number: int
    trial_id: int
    params: dict[str, Any]
    context: dict[str, Any]  # epochs, data, seed and fixed keys from the spec
    workload: Any  # "module:function" or a callable
    # Send rows this often (0: every epoch, when a pruner waits for them).
    flush_seconds: float = FLUSH_SECONDS
    # Diagnostics thresholds: when set, the worker stops the trial itself the
    # epoch it diverges or its gradients explode or vanish (no round trip).
    watch: dict[str, Any] | None = None
    timeout: float | None = None  # trial_timeout, enforced here where a signal can reach the workload

    @property
    def workload_params(self) -> dict[str, Any]:
        return {**self.context, **self.params}


@dataclass
class TrialOutcome:
    """How a trial ended, as the worker saw it."""

    number: int
    trial_id: int
    value: float | None = None
    error: str | None = None
    traceback: str | None = None
    pruned: bool = False
    stop: dict[str, Any] | None = None  # the diagnostics finding that stopped it
    crashed: bool = False  # the worker process or its node died: worth a retry
    timed_out: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)  # not yet delivered
    device: str = "cpu"
    node: str = ""
    wall_seconds: float = 0.0


class StopTrial(optuna.TrialPruned):
    """Raised from ``report`` when the trial must stop (the orchestrator or its diagnostics said so)."""

    def __init__(self, message: str, finding: Finding | None = None) -> None:
        super().__init__(message)
        self.finding = finding


class Reporter:
    """The ``report(epoch, **metrics)`` callable a workload receives."""

    def __init__(self, job: TrialJob, deliver: Deliver | None) -> None:
        self.job = job
        self.deliver = deliver
        self.pending: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.thresholds = Thresholds(**job.watch) if job.watch is not None else None
        self.epochs = 0
        self.device: str | None = None
        self._last_report = time.perf_counter()
        self._last_flush = self._last_report

    def __call__(self, epoch: int, **metrics: Any) -> None:
        now = time.perf_counter()
        row = _epoch_row(epoch, metrics)
        row.setdefault("seconds", now - self._last_report)
        row.setdefault("device", self.device or detect_device())
        self.device = row["device"]
        row["trial_id"] = self.job.trial_id
        self._last_report = now
        self.pending.append(row)
        self.epochs += 1
        # At the final epoch, stopping saves nothing: only a run with no value left (diverged) is stopped.
        final = self.epochs >= self.job.context.get("epochs", math.inf)
        if self.thresholds is not None:
            self.history.append(row)
            finding = alarm(self.history, self.thresholds)
            if finding is not None and (not final or finding.kind == DIVERGED):
                raise StopTrial(f"trial {self.job.number}: {finding.kind}: {finding.detail}", finding)
        if self.deliver is not None and now - self._last_flush >= self.job.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if not self.pending or self.deliver is None:
            return
        rows, self.pending = self.pending, []
        self._last_flush = time.perf_counter()
        stop = self.deliver(rows)
        if stop and self.job.number in stop:
            raise StopTrial(f"trial {self.job.number} stopped by the orchestrator")


def _epoch_row(epoch: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise TypeError(f"report(epoch, ...): epoch must be an int, but got {epoch!r}")
    row: dict[str, Any] = {"epoch": epoch}
    for key, value in metrics.items():
        if key == "device":
            row[key] = str(value)
            continue
        try:
            row[key] = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"report(epoch, {key}=...): metrics must be numbers, but got {value!r}"
            ) from None
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
    if callable(workload):
        return workload
    from tuner.spec import resolve_workload

    return resolve_workload(workload)


def run_trial(
    job: TrialJob, deliver: Deliver | None, node: str | None = None, own_process: bool = False
) -> TrialOutcome:
    """Run one trial to the end; every exception becomes part of the outcome.

    ``own_process``: the trial runs in a worker of its own (Ray), where a
    KeyboardInterrupt can only come from the workload, so it fails the trial
    like any error. In the driver (inline) it is the user's Ctrl-C and stops
    the study.
    """
    caught: tuple[type[BaseException], ...] = (Exception, SystemExit)
    if own_process:
        caught += (KeyboardInterrupt,)
    start = time.perf_counter()
    report = Reporter(job, deliver)
    outcome = TrialOutcome(job.number, job.trial_id, node=node or socket.gethostname())
    try:
        with _deadline(job.timeout):
            returned = resolve(job.workload)(dict(job.workload_params), report)
        outcome.value = _returned_value(returned)
    except TrialTimeout as exc:
        outcome.error, outcome.timed_out = str(exc), True
        _free_gpu_memory()
    except optuna.TrialPruned as exc:
        outcome.pruned = True
        finding = getattr(exc, "finding", None)
        if finding is not None:
            outcome.stop = {"kind": finding.kind, "epoch": finding.epoch, "detail": finding.detail,
                            "values": finding.values}
    except caught as exc:
        outcome.error = _describe(exc)
        outcome.traceback = traceback.format_exc()
        _free_gpu_memory()
    outcome.rows = report.pending
    outcome.device = report.device or detect_device()
    outcome.wall_seconds = time.perf_counter() - start
    return outcome


class TrialTimeout(Exception):
    """The trial ran past its trial_timeout."""


def timeout_reason(seconds: float) -> str:
    return f"trial_timeout: still running after {seconds:g} s, so it was stopped"


@contextlib.contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise TrialTimeout in the workload after ``seconds`` (main thread only: signals)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TrialTimeout(timeout_reason(seconds))

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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


def is_bad_number(value: float | None) -> bool:
    return value is None or not math.isfinite(value)
