"""The driver's one writer to the study store, and the one place that waits out a database outage.

Every Optuna state change of a trial goes through :meth:`Recorder.end` (or
:meth:`Recorder.fail_stale` for trials no orchestrator runs any more), so a
trial's attributes, its constraint and its state are written together, in
that order: a reader that sees the state sees why. Study callbacks hear of
each write after it is committed (:class:`Callbacks`).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import pickle
import queue
import shlex
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy as sa
from optuna.artifacts import upload_artifact
from optuna.trial import FrozenTrial, TrialState

from tuner import checkpoints
from tuner.checkpoints import Checkpoints
from tuner.errors import StoreUnreachable
from tuner.integrations._process import LoggerProcess, first_line
from tuner.trial import diagnosis, metrics, record
from tuner.trial.checkpoint import Checkpoint
from tuner.spec import CALLABLE_PREFIX, StudySpec
from tuner.store import Store
from tuner.store.lock import study_mutex
from tuner.trial.record import EarlyStop, Ending, Failure
from tuner.store import internals

# How long the study waits out a database outage (a PostgreSQL restart) before giving up.
DB_OUTAGE_SECONDS = 300
DB_RETRY_SECONDS = 1.0
# How long the session's end waits in silence for the study callbacks to finish what is queued.
CALLBACK_PATIENCE_SECONDS = 10.0
# Which orchestrator concluded a trial, when several share a study.
ORCHESTRATOR_ID = f"{socket.gethostname()}:{os.getpid()}"

log = logging.getLogger("tuner")
T = TypeVar("T")


def outage_cause(exc: BaseException) -> sa.exc.DBAPIError | None:
    """The lost-connection error behind ``exc``, or None when ``exc`` is no outage.

    Optuna re-raises the driver's failure as ``StorageInternalError`` (from the
    SQLAlchemy error), so the chain of causes is searched, not the type alone.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sa.exc.OperationalError) or (
            isinstance(seen, sa.exc.DBAPIError) and seen.connection_invalidated
        ):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class Recorder:
    """Writes one study's epochs and trial endings; every call waits out an outage of the database."""

    def __init__(self, spec: StudySpec, store: Store, study: optuna.Study, callbacks: Sequence[Any] = ()) -> None:
        self.spec = spec
        self.store = store
        self.study = study
        self.callbacks = Callbacks(study, callbacks, store.url)
        self.checkpoints = Checkpoints(store, study, spec.checkpoints.keep,
                                       spec.objective if spec.value_at_best else None)
        self._in_db = False
        self.lost: str | None = None  # why the study stopped, once an outage outlasted DB_OUTAGE_SECONDS

    # ------------------------------------------------------------------ writes

    def epochs(self, rows: Sequence[dict[str, Any]], runs: Mapping[int, Any] | None = None,
               resent: Sequence[dict[str, Any]] = ()) -> None:
        """Write one batch of epoch rows, then the checkpoints they carry (and those of ``resent``: rows
        written before, sent again with their checkpoint); then each trial of ``runs`` (by trial id) that has
        rows here is logged."""
        if rows or resent:
            saved = checkpoints.take(sorted([*resent, *rows], key=lambda r: r["epoch"]))  # each trial's in order
            self.db(self.store.record_epochs, list(rows), lambda r: metrics.score(r, self.spec.objective))
            for trial_id, taken in saved.items():
                self.db(self.checkpoints.save, trial_id, taken)
            self.callbacks.epochs(rows, runs or {})

    def resume_point(self, trial: optuna.Trial) -> tuple[Checkpoint, list[dict[str, Any]], float | None] | None:
        """For a trial that runs a dead worker's params again: the last checkpoint it resumes from, the
        epochs before it, now recorded as the trial's own (with the checkpoints), so that its curve, its
        pruner and its budget count them, and the objective at the best of them its model is from (for its
        worker to beat). None: it starts from its first epoch."""
        found = self.db(self.checkpoints.resume_point, trial)
        if found is None:
            return None
        checkpoint, rows, taken = found
        trial_id = internals.trial_id(trial)
        rows = [{**{k: v for k, v in r.items() if k != "trial" and v is not None}, "trial_id": trial_id}
                for r in rows]
        self.epochs(rows)
        self.db(self.checkpoints.save, trial_id, taken)
        return checkpoint, rows, self.checkpoints.best_score(trial_id)

    def end(self, number: int, trial_id: int, ending: Ending) -> Ending:
        """Write how a trial ended: its attributes, its constraint, then its Optuna state; then tell the callbacks.

        Returns the ending as written (a failure too long to show names the file that keeps its whole text)."""
        if isinstance(ending.why, Failure) and ending.why.too_long:
            ending = dataclasses.replace(ending, why=self._keep_whole_text(trial_id, ending.why))
        self.db(self._end, number, trial_id, ending)
        if trial_id in self.checkpoints.ids:  # a study without checkpoints never pays for the look
            if self.spec.objective.mode == "last" and not isinstance(ending.why, EarlyStop):
                self.db(self.checkpoints.model_is_last, trial_id)  # its value is its last epoch's
            self.db(self.checkpoints.retain, self.spec.direction)
        if self.callbacks:
            self.callbacks.ended(self.frozen(trial_id))
        return ending

    def _keep_whole_text(self, trial_id: int, failure: Failure) -> Failure:
        """Keep a failure's whole text as the trial's artifact (optuna-dashboard lists it on the trial's page);
        its attributes show it cut, and name the file. One that cannot be written is said there instead."""
        text = failure.text
        try:  # the temporary file too: a full /tmp must not keep the trial from ending
            with tempfile.TemporaryDirectory(prefix="tuner-failure-") as folder:
                path = Path(folder, record.FAIL_TEXT_FILENAME)
                path.write_text(text, encoding="utf-8", errors="backslashreplace")
                artifact_id = self.db(upload_artifact, artifact_store=self.checkpoints.artifacts, file_path=str(path),
                                      study_or_trial=optuna.Trial(self.study, trial_id), mimetype="text/plain",
                                      encoding="utf-8")
        except OSError as exc:  # a full or read-only disk: the trial still ends, with the text cut
            whole = {"error": f"{type(exc).__name__}: {exc}", "chars": len(text)}
        else:
            whole = {"artifact_id": artifact_id, "chars": len(text),
                     "path": str(self.checkpoints.directory.resolve() / artifact_id)}
        return dataclasses.replace(failure, whole_text=whole)

    def _end(self, number: int, trial_id: int, ending: Ending) -> None:
        self.store.set_trial_attrs(trial_id, {**ending.attrs(), "orchestrator": ORCHESTRATOR_ID})
        if ending.constraint is not None:
            optuna.Trial(self.study, trial_id).set_constraint("gap", ending.constraint)
        self._tell(number, ending.state, ending.value)

    def _tell(self, number: int, state: TrialState, value: float | None = None) -> None:
        """The one call that changes a trial's Optuna state."""
        if state == TrialState.COMPLETE:
            self.study.tell(number, value, skip_if_finished=True)
        else:
            self.study.tell(number, state=state, skip_if_finished=True)

    def fail_stale(self, trials: Sequence[FrozenTrial], attrs: Mapping[str, Any]) -> None:
        """End as FAIL trials left RUNNING by an orchestrator that is gone (the caller holds the study mutex).

        Each is diagnosed from the epochs it recorded, as any failed trial: ``failed`` with the reason in
        ``attrs``, unless its epochs show more.
        """
        rows: dict[int, list[dict[str, Any]]] = {t.number: [] for t in trials}
        if trials:
            for row in self.db(self.store.epochs, self.study, list(rows)):
                rows[row["trial"]].append(row)
        for trial in trials:
            found = diagnosis.diagnose(rows[trial.number], self.spec.diagnostics,
                                       str(attrs.get(record.FAIL_REASON) or "no reason recorded"))
            self.store.set_trial_attrs(internals.trial_id(trial), {**found.as_attrs(), **attrs})
            self._tell(trial.number, TrialState.FAIL)
            if self.callbacks:  # the session that ran it never saw it end (an MLflow run it left RUNNING)
                self.callbacks.ended(self.frozen(internals.trial_id(trial)))

    def enqueue(self, params: Mapping[str, Any], attrs: Mapping[str, Any] | None = None) -> None:
        self.db(self.study.enqueue_trial, dict(params), user_attrs=dict(attrs) if attrs else None)

    def heartbeat(self, trial_ids: Sequence[int]) -> None:
        for trial_id in trial_ids:
            self.db(self.store.storage.record_heartbeat, trial_id)

    # ------------------------------------------------------------------ reads the loop needs

    def ask(self, room: Callable[[], int]) -> optuna.Trial | None:
        """A new trial, or None when ``room()`` says the budget is used up.

        Counting and asking happen under the study's mutex, so orchestrators
        sharing a study (PostgreSQL) never start more trials than the budget.
        """
        with study_mutex(self.store.engine, internals.study_id(self.study)):
            return self.study.ask() if room() > 0 else None

    def frozen(self, trial_id: int) -> FrozenTrial:
        return self.db(internals.frozen_trial, self.study, trial_id)

    def trials(self, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        return self.db(self.study.get_trials, deepcopy=False, states=tuple(states) if states else None)

    def close(self) -> None:
        self.callbacks.close()

    # ------------------------------------------------------------------ the one retry layer

    def db(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store call, waiting out an outage of the database instead of failing the study.

        The one retry layer: a call made inside another ``db`` call runs
        plainly, so an outage is waited out once, for at most
        DB_OUTAGE_SECONDS, with one warning. While the database is away,
        workers keep training and their epochs wait in the executor's channel;
        they are written once it is back. An outage that outlasts the bound
        stops the study with :class:`StoreUnreachable`, which says how to
        resume it; from then on a call that meets the outage raises it at once
        (the study's end waits no second time).
        """
        if self._in_db:
            return call(*args, **kwargs)
        self._in_db = True
        started = time.monotonic()
        try:
            for attempt in itertools.count():
                try:
                    result = call(*args, **kwargs)
                except Exception as exc:
                    cause = outage_cause(exc)
                    if cause is None:
                        raise
                    # The bound holds on the wall clock too: a connect attempt may itself take seconds.
                    waited = max(attempt * DB_RETRY_SECONDS, time.monotonic() - started)
                    if self.lost is None and waited >= DB_OUTAGE_SECONDS:
                        self.lost = self._stopped(cause, waited)
                    if self.lost is not None:
                        raise StoreUnreachable(self.lost) from exc
                    if attempt == 0:
                        log.warning("the study store %s is unreachable (%s); retrying for up to %d s",
                                    self.store.safe_url, self._reason(cause), DB_OUTAGE_SECONDS)
                    time.sleep(DB_RETRY_SECONDS)
                    continue
                if attempt:
                    waited = max(attempt * DB_RETRY_SECONDS, time.monotonic() - started)
                    log.warning("the study store is back after %d s; the study goes on", waited)
                return result
        finally:
            self._in_db = False
        raise AssertionError("unreachable")

    def _reason(self, cause: sa.exc.DBAPIError) -> str:
        return self.store.redact(str(cause.orig or cause).strip().splitlines()[0])

    def _stopped(self, cause: sa.exc.DBAPIError, waited: float) -> str:
        name = self.study.study_name
        if self.spec.workload.startswith(CALLABLE_PREFIX):
            again = f"tuner.resume({name!r}, objective=...) with the same function"
        else:
            again = f"`tuner resume {shlex.quote(name)}`"
        return (f"the study store {self.store.safe_url} stayed unreachable for {waited:.0f} s ({self._reason(cause)}), "
                f"so study {name!r} stopped; its running trials are left to a resume. Fix: once the database is "
                f"back, run {again}: it marks them interrupted, runs them again and goes on to the budget.")


class Callbacks:
    """A session's study callbacks, each called after the write it reports; one that raises never stops the study.

    Optuna's ``callback(study, frozen_trial)`` once a trial has ended (its
    attributes and state written); ``on_epochs(study, number, params, rows)``,
    where a callback has it, once per trial per batch of rows committed; and
    ``close()`` at the end of the session (see tuner/integrations/__init__.py).

    They run in order on one thread of their own, so that a logger's wait
    (a remote MLflow's round trip a batch) never slows the epoch path. Those
    whose class sets ``separate_process = True`` (tuner's TensorBoard and
    MLflow loggers) run in a process of their own instead, so that their CPU
    does not either (:mod:`tuner.integrations._process`); that needs the
    store's ``storage_url``. :meth:`close` waits until every call has run. A
    failure is logged once per callback, with its error, and the study goes on.
    """

    def __init__(self, study: optuna.Study, callbacks: Sequence[Any], storage_url: str | None = None) -> None:
        self.study = study
        self.all = list(callbacks)
        self.per_epoch = [c for c in self.all if callable(getattr(c, "on_epochs", None))]
        self.failures: dict[int, int] = {}  # id(callback) -> how many of its calls raised
        self._calls: queue.SimpleQueue[tuple[Any, Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        apart = [c for c in self.all if storage_url and getattr(type(c), "separate_process", False) and _travels(c)]
        self._apart = {id(c): i for i, c in enumerate(apart)}
        self._process = None
        if apart:
            self._process = LoggerProcess(apart, study.study_name, storage_url,
                                          lambda index, error, line: self._failed(apart[index], error, line))

    def __bool__(self) -> bool:
        return bool(self.all)

    def start(self, wait: float | None = 0.0) -> bool:
        """Start the loggers' process now, if there is one, and wait up to ``wait`` seconds (None: as long as it
        takes) for it to be ready; whether it is."""
        return self._process is None or self._process.wait_ready(wait)

    def epochs(self, rows: Sequence[dict[str, Any]], runs: Mapping[int, Any]) -> None:
        if not self.per_epoch:
            return
        by_trial: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            by_trial.setdefault(row["trial_id"], []).append(dict(row))
        for trial_id, batch in by_trial.items():
            run = runs.get(trial_id)
            for callback in self.per_epoch if run is not None else ():
                self._dispatch(callback, "on_epochs", run.number, dict(run.params), batch)

    def ended(self, trial: FrozenTrial) -> None:
        for callback in self.all:
            self._dispatch(callback, "__call__", trial)

    def close(self) -> None:
        """Run what is queued, then each callback's ``close()``; return once all have run."""
        for callback in self.all:
            if callable(getattr(callback, "close", None)):
                self._dispatch(callback, "close")
        if self._process is not None:
            self._process.close(CALLBACK_PATIENCE_SECONDS)
        if self._thread is None:
            return
        self._calls.put(None)
        self._thread.join(CALLBACK_PATIENCE_SECONDS)
        if self._thread.is_alive():
            log.warning("waiting for the study callbacks to finish what is queued (a slow tracker?)")
            self._thread.join()
        self._thread = None

    def _dispatch(self, callback: Any, method: str, *args: Any) -> None:
        """Queue ``callback.<method>(study, *args)`` (``close()`` without the study) where the callback runs."""
        if id(callback) in self._apart:
            self._process.call(self._apart[id(callback)], method, *args)
        elif method == "close":
            self._submit(callback, callback.close)
        else:
            self._submit(callback, getattr(callback, method), self.study, *args)

    def _failed(self, callback: Any, error: str, line: str) -> None:
        """Count a callback's failure; the first one is logged, with its error's first line."""
        seen = self.failures.get(id(callback), 0)
        self.failures[id(callback)] = seen + 1
        if not seen:
            log.warning("study callback %s raised %s: %s; the study goes on (its later failures are not shown)",
                        _name(callback), error, line)

    def _submit(self, callback: Any, call: Callable[..., Any], *args: Any) -> None:
        if self._thread is None:
            with self._starting:  # callers on several threads: one thread runs them all, in order
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name="tuner-callbacks", daemon=True)
                    self._thread.start()
        self._calls.put((callback, call, args))

    def _work(self) -> None:
        while (item := self._calls.get()) is not None:
            self._call(*item)

    def _call(self, callback: Any, call: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            call(*args)
        except Exception as exc:  # a tracker that is down must not cost the study its trials
            self._failed(callback, type(exc).__name__, first_line(exc))


def _travels(callback: Any) -> bool:
    """Whether pickle takes it to the loggers' process; one that cannot runs on the thread, as any other."""
    try:
        pickle.dumps(callback)
        return True
    except Exception:
        return False


def _name(callback: Any) -> str:
    target = callback if hasattr(callback, "__qualname__") else type(callback)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
