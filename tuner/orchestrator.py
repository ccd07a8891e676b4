"""The study loop: ask -> submit -> collect -> record -> stop?

The strategy (an Optuna sampler and pruner) proposes and judges; the executor
runs; the store records. Every way a trial can end becomes an Optuna state in
one place, :meth:`Orchestrator._conclude`.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from tuner import diagnosis, strategies, summary
from tuner.errors import StudyFailedError, Terminated
from tuner.executors import Executor
from tuner.runtime import FLUSH_SECONDS, TrialJob, TrialOutcome, timeout_reason
from tuner.spec import StudySpec
from tuner.store import Store
from tuner.store.lock import study_mutex

# When this many trials have ended and every one failed, the workload is
# broken: stop, rather than spend the whole budget finding that out.
FAIL_FAST_TRIALS = 3
POLL_SECONDS = 0.05
# Failures of these kinds do not use up the budget: the trial never got to
# finish through no fault of its configuration (and a retried one runs again).
INTERRUPTED = "interrupted"
RETRIED = "retried"
NOT_COUNTED = (INTERRUPTED, RETRIED)
# Running trials get an Optuna heartbeat this often; a RUNNING trial whose
# heartbeat is older than HEARTBEAT_GRACE has no live orchestrator.
HEARTBEAT_SECONDS = 5
HEARTBEAT_GRACE = 30
# A Ray trial past trial_timeout gets this long to stop itself before it is killed.
KILL_AFTER_SECONDS = 2.0
# How long the study waits out a database outage (a PostgreSQL restart) before giving up.
DB_OUTAGE_SECONDS = 300
DB_RETRY_SECONDS = 1.0
# A failed trial keeps the end of its workload's traceback (an attribute: bounded).
MAX_TRACEBACK_CHARS = 8000

log = logging.getLogger("tuner")
# Which orchestrator concluded a trial, when several share a study.
ORCHESTRATOR_ID = f"{socket.gethostname()}:{os.getpid()}"


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


def counts_toward_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial uses up the study's budget: finished or running, but not interrupted or retried."""
    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get("fail_kind") not in NOT_COUNTED
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


@dataclass
class Progress:
    """A snapshot for progress displays."""

    planned: int
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    retried: int = 0  # failed through no fault of their params: not counted in `finished`
    running: int = 0
    best_value: float | None = None
    best_trial: int | None = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at


@dataclass
class _Running:
    trial: optuna.Trial
    params: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    rows: list[dict[str, Any]] = field(default_factory=list)
    judged_epoch: int = 0


@dataclass(frozen=True)
class _Verdict:
    """Why the orchestrator ends a running trial early."""

    state: TrialState
    attrs: dict[str, Any]


class Orchestrator:
    """Runs one study to its budget on one started executor."""

    def __init__(
        self,
        spec: StudySpec,
        store: Store,
        study: optuna.Study,
        executor: Executor,
        workload: Any = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.spec = spec
        self.store = store
        self.study = study
        self.executor = executor
        self.workload = workload if workload is not None else spec.workload_target
        self.on_progress = on_progress
        self.pruner = strategies.make_pruner(spec)
        # Trials whose rows the orchestrator must see every epoch to judge them.
        self.judging = spec.pruner.type != "none" or spec.early_stopping is not None
        self.running: dict[int, _Running] = {}
        self.stopped: set[int] = set()  # trial ids ended early; late rows are dropped
        self.progress = Progress(planned=strategies.planned_trials(spec))
        self.first_error: tuple[int, str] | None = None
        self.last_heartbeat = 0.0
        self._in_db = False
        self._asked: optuna.Trial | None = None  # asked, not yet submitted (kept across an outage)
        self._waiting_said = False
        self._count_existing()

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        """Run trials until the budget or the timeout is used up."""
        deadline = time.monotonic() + self.spec.timeout if self.spec.timeout else math.inf
        self.executor.sink = self._record_epochs
        try:
            while True:
                if time.monotonic() < deadline:
                    self._launch_more()
                if not self.running and not self._wait_for_others():
                    break
                for outcome in self.executor.poll(POLL_SECONDS):
                    self._finish(outcome)
                self._enforce_trial_timeout()
                self._heartbeat()
                self._report_progress()
                self._fail_fast()
        except BaseException as exc:
            if Terminated.seen(exc):
                reason = "stopped by SIGTERM"
            elif isinstance(exc, KeyboardInterrupt):
                reason = "interrupted by the user (Ctrl-C)"
            else:
                reason = f"study stopped: {type(exc).__name__}: {exc}"
            self._abort(reason)
            raise
        finally:
            self.executor.close()
            self._report_progress()

    def _launch_more(self) -> None:
        slots = min(self.spec.parallel, self.executor.capacity) - len(self.running)
        for _ in range(max(slots, 0)):
            asked = self._db(self._ask_next)
            if asked is None:
                return
            trial, params = asked
            self.running[trial.number] = _Running(trial, params)
            self.executor.submit(TrialJob(
                trial.number, trial._trial_id, params, self.spec.context(), self.workload,
                flush_seconds=0.0 if self.judging else FLUSH_SECONDS,
                watch=self.spec.diagnostics.model_dump() if self.spec.pruner.diagnostics else None,
                timeout=self.spec.trial_timeout,
            ))
            self._db(self.store.storage.record_heartbeat, trial._trial_id)
        self.progress.running = len(self.running)

    def _record_epochs(self, rows: list[dict[str, Any]]) -> set[int]:
        """The executors' sink: store rows as they arrive; answer which trials must stop."""
        rows = [r for r in rows if r["trial_id"] not in self.stopped]
        self._db(self.store.record_epochs, rows, self._score)
        by_id = {r.trial._trial_id: r for r in self.running.values()}
        touched = {}
        for row in rows:
            run = by_id.get(row["trial_id"])
            if run is not None:
                run.rows.append(row)
                touched[run.trial.number] = run
        stops = set()
        for number, run in touched.items():
            verdict = self._judge(run)
            if verdict is not None:
                self.running.pop(number)
                self._conclude(run, verdict.state, None, verdict.attrs)
                stops.add(number)
        return stops

    def _ask_next(self) -> tuple[optuna.Trial, dict[str, Any]] | None:
        """The next trial and its params, or None when the budget is used up.

        Counting and asking happen under the study's mutex, so orchestrators
        sharing a study (PostgreSQL) never start more trials than the budget.
        Retried as a whole by :meth:`_db`: a trial asked before an outage is
        kept for the next attempt, never asked twice (it would stay RUNNING).
        """
        if self._asked is None:
            with study_mutex(self.store.engine, self.study._study_id):
                if self._remaining() <= 0:
                    return None
                self._asked = self.study.ask()
        params = strategies.suggest(self._asked, self.spec)  # a retry gets the params already set
        trial, self._asked = self._asked, None
        return trial, params

    def budget_reached(self) -> bool:
        """Whether the study has nothing left to run: its budget is used up and no trial of it runs."""
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return not running and self._remaining() <= 0

    def _remaining(self) -> int:
        """Trials still to start: the budget less what every orchestrator finished or runs."""
        if self.store.backend == "sqlite":  # the study lock: this orchestrator is the only one
            return self.progress.planned - self.progress.finished - len(self.running)
        return self.progress.planned - sum(map(counts_toward_budget, self.study.get_trials(deepcopy=False)))

    def _db(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a store call, waiting out an outage of the database instead of failing the study.

        The one retry layer: a call made inside another ``_db`` call runs
        plainly, so an outage is waited out once, for at most
        DB_OUTAGE_SECONDS, with one warning. While the database is away,
        workers keep training and their epochs wait in the executor's channel;
        they are written once it is back.
        """
        if self._in_db:
            return call(*args, **kwargs)
        self._in_db = True
        try:
            for attempt in itertools.count():
                try:
                    result = call(*args, **kwargs)
                except Exception as exc:
                    cause = outage_cause(exc)
                    if cause is None or attempt * DB_RETRY_SECONDS >= DB_OUTAGE_SECONDS:
                        raise
                    if attempt == 0:
                        reason = self.store.redact(str(cause.orig or cause).strip().splitlines()[0])
                        log.warning("the study store %s is unreachable (%s); retrying for up to %d s",
                                    self.store.safe_url, reason, DB_OUTAGE_SECONDS)
                    time.sleep(DB_RETRY_SECONDS)
                    continue
                if attempt:
                    log.warning("the study store is back after %d s; the study goes on", attempt * DB_RETRY_SECONDS)
                return result
        finally:
            self._in_db = False
        raise AssertionError("unreachable")

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self.last_heartbeat < HEARTBEAT_SECONDS:
            return
        self.last_heartbeat = now
        for run in self.running.values():
            self._db(self.store.storage.record_heartbeat, run.trial._trial_id)

    def _enforce_trial_timeout(self) -> None:
        """Kill trials that outlived trial_timeout (a hung worker cannot stop itself)."""
        limit = self.spec.trial_timeout
        if limit is None:
            return
        now = time.monotonic()
        for number, run in list(self.running.items()):
            if now - run.started > limit + KILL_AFTER_SECONDS:
                self.executor.cancel([number])
                self.running.pop(number)
                self._conclude(run, TrialState.FAIL, None, {
                    "fail_reason": timeout_reason(limit),
                    "fail_kind": "timeout",
                })

    # ------------------------------------------------------------------ judging

    def _score(self, row: dict[str, Any]) -> float | None:
        return summary.score(row, self.spec.objective)

    def _judge(self, run: _Running) -> _Verdict | None:
        """Early stopping, then the Optuna pruner, on the epochs seen so far."""
        epoch = run.rows[-1]["epoch"]
        if epoch <= run.judged_epoch:
            return None
        run.judged_epoch = epoch
        if len(run.rows) >= self.spec.epochs:
            return None  # its whole budget ran: stopping it now saves nothing and loses a result
        stop = self.spec.early_stopping
        if stop is not None:
            best = summary.best_row(run.rows, self._score, self.spec.direction, stop.min_delta)
            if best is not None and epoch - best["epoch"] >= stop.patience:
                return _Verdict(TrialState.COMPLETE, {
                    "early_stopped": True,
                    "stop_reason": f"no improvement for {stop.patience} epochs after epoch {best['epoch']}",
                })
        if self.spec.pruner.type == "none":
            return None
        frozen = self._db(self.study._storage.get_trial, run.trial._trial_id)
        if not self.pruner.prune(self.study, frozen):
            return None
        value = frozen.intermediate_values.get(frozen.last_step) if frozen.last_step is not None else None
        return _Verdict(TrialState.PRUNED, {
            "prune_rule": self.spec.pruner.type,
            "prune_epoch": epoch,
            "prune_values": {self.spec.objective.metric: value},
            "prune_reason": f"{self.spec.pruner.type} pruner at epoch {epoch}: "
                            f"{self.spec.objective.metric} {summary.fmt(value)} ranks too low among the trials there",
        })

    # ------------------------------------------------------------------ outcomes

    def _finish(self, outcome: TrialOutcome) -> None:
        run = self.running.pop(outcome.number, None)
        if run is None:  # ended already (stopped early, or aborted)
            return
        run.rows.extend(outcome.rows)
        self._db(self.store.record_epochs, outcome.rows, self._score)
        if outcome.stop is not None:
            finding = outcome.stop
            self._conclude(run, TrialState.PRUNED, None, {
                "prune_rule": f"diagnostics:{finding['kind']}",
                "prune_epoch": finding["epoch"],
                "prune_values": finding["values"],
                "prune_reason": f"{finding['kind']} at epoch {finding['epoch']}: {finding['detail']}",
            }, outcome)
        elif outcome.pruned:
            self._conclude(run, TrialState.PRUNED, None, {
                "prune_rule": "workload", "prune_reason": "the workload raised optuna.TrialPruned",
            }, outcome)
        elif outcome.crashed:
            self._conclude(run, TrialState.FAIL, None, self._retry(run, outcome.error or "worker died"), outcome)
        else:
            value, error = self._value(outcome, run.rows)
            state = TrialState.COMPLETE if error is None else TrialState.FAIL
            extra: dict[str, Any] = {"fail_reason": error} if error else {}
            if error and outcome.traceback:  # the workload's own, for --debug and the dashboard
                extra["fail_traceback"] = outcome.traceback[-MAX_TRACEBACK_CHARS:]
            if outcome.timed_out:
                extra["fail_kind"] = "timeout"
            self._conclude(run, state, value, extra, outcome)
            self._check_pruner_has_values(outcome, run)

    def _retry(self, run: _Running, reason: str) -> dict[str, Any]:
        """Queue the same params again after a worker death, up to `retries` times."""
        attempt = int(run.trial.user_attrs.get("attempt", 1))
        if attempt > self.spec.retries:
            return {"fail_reason": f"{reason} (attempt {attempt}, no retries left)", "fail_kind": "worker_died"}
        self._db(self.study.enqueue_trial, run.params, user_attrs={"attempt": attempt + 1, "retry_of": run.trial.number})
        return {"fail_reason": f"{reason}; retrying with the same params", "fail_kind": RETRIED}

    def _value(self, outcome: TrialOutcome, rows: list[dict[str, Any]]) -> tuple[float | None, str | None]:
        """The trial's objective value, or why it has none."""
        if outcome.error is not None:
            return None, outcome.error
        metric = self.spec.objective.metric
        value = outcome.value
        if value is None:
            value = summary.objective_value(rows, self.spec.objective, self.spec.direction)
        if value is None:
            return None, (
                f"the workload returned no value and never reported {metric!r}. Fix: call "
                f"report(epoch, {metric}=...) each epoch, or return the value."
            )
        if not math.isfinite(value):
            return None, f"the objective {metric} is {value} (the run diverged)"
        return value, None

    def _conclude(
        self, run: _Running, state: TrialState, value: float | None, extra: dict[str, Any],
        outcome: TrialOutcome | None = None,
    ) -> None:
        """Record how a trial ended: its summary, diagnosis, cost, and its Optuna state."""
        trial_id = run.trial._trial_id
        if state != TrialState.COMPLETE or extra.get("early_stopped"):
            self.stopped.add(trial_id)
        if value is None and state == TrialState.COMPLETE:  # stopped early: keep its best epoch
            value = summary.objective_value(run.rows, self.spec.objective, self.spec.direction, "best")
        wall = outcome.wall_seconds if outcome is not None and outcome.wall_seconds else time.monotonic() - run.started
        device = outcome.device if outcome is not None else (run.rows[-1].get("device") if run.rows else "cpu")
        attrs = {
            **summary.trial_summary(run.rows, self.spec.objective, self.spec.direction),
            **diagnosis.diagnose(run.rows, self.spec.diagnostics).as_attrs(),
            "wall_seconds": round(wall, 3),
            "device": device,
            "gpu_seconds": round(wall * self.spec.resources.gpu, 3) if str(device).startswith("cuda") else 0.0,
            **extra,
        }
        if outcome is not None and outcome.node:
            attrs["node"] = outcome.node
        attrs["orchestrator"] = ORCHESTRATOR_ID
        self._db(self.store.set_trial_attrs, trial_id, attrs)
        if state == TrialState.COMPLETE and self.spec.objective.max_gap is not None:
            gap = summary.gap_at_best(run.rows, self.spec.objective, self.spec.direction)
            self._db(run.trial.set_constraint, "gap",
                     (gap if gap is not None else math.inf) - self.spec.objective.max_gap)
        if extra.get("fail_kind") in NOT_COUNTED:
            self._db(self.study.tell, run.trial.number, state=TrialState.FAIL, skip_if_finished=True)
            self.progress.retried += 1
        elif state == TrialState.COMPLETE and value is not None and math.isfinite(value):
            self._db(self.study.tell, run.trial.number, value, skip_if_finished=True)
            self.progress.complete += 1
            self._update_best(run.trial.number, value)
        elif state == TrialState.PRUNED:
            self._db(self.study.tell, run.trial.number, state=TrialState.PRUNED, skip_if_finished=True)
            self.progress.pruned += 1
        else:
            self._db(self.study.tell, run.trial.number, state=TrialState.FAIL, skip_if_finished=True)
            self.progress.failed += 1
            self.first_error = self.first_error or (run.trial.number, extra.get("fail_reason", "no value"))
        self.progress.running = len(self.running)

    def _check_pruner_has_values(self, outcome: TrialOutcome, run: _Running) -> None:
        """A pruner with nothing to read would never prune: say so after the first trial."""
        if self.spec.pruner.type == "none" or outcome.error is not None:
            return
        if any(self._score(r) is not None for r in run.rows):
            return
        self._abort("study stopped: the pruner has no per-epoch values")
        raise StudyFailedError(
            f"pruner {self.spec.pruner.type!r} needs a value of {self.spec.objective.metric!r} every "
            f"epoch, but trial {outcome.number} reported none (it only returned its result). Fix: call "
            f"report(epoch, {self.spec.objective.metric}=...) each epoch, or set `pruner: none`.",
            study=self.study.study_name,
        )

    def _update_best(self, number: int | None = None, value: float | None = None) -> None:
        """Track the best from the values told here; read it from the store only at start.

        (Optuna's ``best_trial`` queries every trial: at 10,000 trials that was
        the orchestrator's largest per-trial cost.)
        """
        if number is None:
            try:
                best = self.study.best_trial
            except ValueError:
                return
            self.progress.best_value, self.progress.best_trial = best.value, best.number
            return
        current = self.progress.best_value
        if current is None or (value < current if self.spec.direction == "minimize" else value > current):
            self.progress.best_value, self.progress.best_trial = value, number

    def _fail_fast(self) -> None:
        if self.progress.complete or self.progress.pruned or self.first_error is None:
            return
        if self.progress.failed < FAIL_FAST_TRIALS or self.progress.finished >= self.progress.planned:
            return  # too few failures to judge, or nothing left to save
        number, error = self.first_error
        failed = self.progress.failed
        self._abort("study stopped: its first trials all failed")
        first = self._db(self.study._storage.get_trial, self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number))
        raise StudyFailedError(
            f"the first {failed} trials all failed, so the study stopped instead of "
            f"spending its budget. Trial {number} failed with: {error}. Fix the workload.",
            study=self.study.study_name, workload_traceback=first.user_attrs.get("fail_traceback"),
        )

    def _abort(self, reason: str) -> None:
        """End every running trial as FAIL with ``reason``: nothing is left RUNNING."""
        self.executor.cancel(list(self.running))
        if self._asked is not None:  # asked, stopped before it was submitted
            self.running[self._asked.number], self._asked = _Running(self._asked, {}), None
        for number, run in list(self.running.items()):
            attrs = summary.trial_summary(run.rows, self.spec.objective, self.spec.direction)
            attrs.update(fail_reason=reason, fail_kind=INTERRUPTED)
            self._db(self.store.set_trial_attrs, run.trial._trial_id, attrs)
            self._db(self.study.tell, number, state=TrialState.FAIL, skip_if_finished=True)
            self.progress.failed += 1
        self.running.clear()
        self.progress.running = 0

    # ------------------------------------------------------------------ bookkeeping

    def recover(self, every_running: bool) -> None:
        """Mark FAIL the RUNNING trials that no orchestrator runs any more, and queue their params again.

        With the study's lock held (SQLite) every RUNNING trial is stale;
        otherwise (PostgreSQL, where orchestrators may share a study) only those
        whose heartbeat stopped more than HEARTBEAT_GRACE seconds ago. Every
        interrupted trial's params run again once, as after a worker death.
        """
        with study_mutex(self.store.engine, self.study._study_id):
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not every_running:
                stale = set(self._stale_trial_ids())
                running = [t for t in running if t._trial_id in stale]
            for trial in running:
                self.store.set_trial_attrs(trial._trial_id, {
                    "fail_reason": "the orchestrator stopped while this trial ran", "fail_kind": INTERRUPTED,
                })
                self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            self._requeue_interrupted()
            if strategies.resolved(self.spec) == "grid":
                self._queue_grid()

    def _requeue_interrupted(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        requeued = {t.user_attrs.get("retry_of") for t in trials}
        for t in trials:
            # A trial stopped while it was being asked has no whole configuration to run again.
            if t.user_attrs.get("fail_kind") == INTERRUPTED and t.number not in requeued and strategies.fits(
                self.spec, t.params
            ):
                self.study.enqueue_trial(dict(t.params), user_attrs={
                    "attempt": int(t.user_attrs.get("attempt", 1)), "retry_of": t.number,
                })

    def _queue_grid(self) -> None:
        """Queue, in grid order, the points no trial covers, as many as the budget has room for.

        A grid cut short by its budget queues only the points it runs; a resume
        that raises the budget gets the next points of the grid, not random ones.
        """
        trials = self.study.get_trials(deepcopy=False)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        covered = {strategies.point_key(t.system_attrs.get("fixed_params", {})) for t in waiting}
        covered |= {strategies.point_key(t.params) for t in trials if counts_toward_budget(t)}
        room = self.progress.planned - sum(map(counts_toward_budget, trials)) - len(waiting)
        missing = [p for p in strategies.grid_points(self.spec) if strategies.point_key(p) not in covered]
        for params in missing[:max(room, 0)]:
            self.study.enqueue_trial(params)

    def _stale_trial_ids(self) -> list[int]:
        storage = self.store.storage
        # Optuna reads these two to judge staleness; left set, they would make
        # every later ask() warn that heartbeats belong to Study.optimize.
        storage.heartbeat_interval, storage.grace_period = HEARTBEAT_SECONDS, HEARTBEAT_GRACE
        try:
            return storage._get_stale_trial_ids(self.study._study_id)
        finally:
            storage.heartbeat_interval = storage.grace_period = None

    def _wait_for_others(self) -> bool:
        """With nothing of its own running, whether to go on: other trials of the study are still RUNNING.

        On PostgreSQL they belong to another live orchestrator, which finishes
        them, or to one that died: once their heartbeat is HEARTBEAT_GRACE
        seconds old they are marked FAIL and run again here. Either way the
        study is not done while they run. (SQLite: the study's lock means none.)
        """
        if self.store.backend == "sqlite":
            return False
        others = self._db(self.study.get_trials, deepcopy=False, states=(TrialState.RUNNING,))
        if not others:
            return False
        if not self._waiting_said:
            self._waiting_said = True
            log.warning("trials %s are RUNNING elsewhere: waiting for them to finish, or to be run again "
                        "here once their heartbeat is %d s old", ", ".join(str(t.number) for t in others),
                        HEARTBEAT_GRACE)
        time.sleep(DB_RETRY_SECONDS)
        self._db(self.recover, every_running=False)
        return True

    def _count_existing(self) -> None:
        """On resume, finished trials count toward the budget, interrupted ones do not."""
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state == TrialState.COMPLETE:
                self.progress.complete += 1
            elif trial.state == TrialState.PRUNED:
                self.progress.pruned += 1
            elif trial.state == TrialState.FAIL and counts_toward_budget(trial):
                self.progress.failed += 1
        self._update_best()

    def _report_progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)
