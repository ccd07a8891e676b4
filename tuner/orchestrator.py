"""The study loop: launch -> poll events -> decide -> record -> stop?

The plan (tuner/plan.py) says what the study does; the executor runs trials
and returns events; the lifecycle (tuner/lifecycle.py) decides, for each
event, whether a trial goes on or how it ends; the recorder (tuner/recorder.py)
is the only writer. This module only moves events from one to the next.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner import lifecycle, optuna_objective, recovery, strategies
from tuner.errors import StudyFailedError, Terminated
from tuner.executors import Executor
from tuner.lifecycle import Run, Step
from tuner.plan import Plan
from tuner.recovery import HEARTBEAT_SECONDS
from tuner.recorder import Recorder
from tuner.spec import StudySpec
from tuner.store import Store
from tuner.trial import metrics, record
from tuner.trial.messages import RESENT, Call, Ended, Epochs, Event, TrialJob
from tuner.trial.record import Ending, counts_toward_budget
from tuner.store import internals

POLL_SECONDS = 0.05
# A trial past trial_timeout gets this long to stop itself before it is killed.
KILL_AFTER_SECONDS = 2.0

log = logging.getLogger("tuner")


@dataclass
class Progress:
    """A snapshot for progress displays."""

    planned: int
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    retried: int = 0  # failed through no fault of their params: not counted in `finished`
    interrupted: int = 0  # stopped with the study (Ctrl-C, SIGTERM): not finished, they run again at resume
    running: int = 0
    best_value: float | None = None
    best_trial: int | None = None
    # Several objectives: the Pareto front so far, as (trial number, values) of the trials no other beats.
    front: list[tuple[int, list[float]]] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def count(self, number: int, ending: Ending, directions: Sequence[str]) -> None:
        """Add one trial's end (``directions``: one per objective)."""
        if not ending.counted:  # it did not finish: its params run again
            if getattr(ending.why, "kind", None) == record.RETRIED:
                self.retried += 1
            else:
                self.interrupted += 1
        elif ending.state == TrialState.COMPLETE:
            self.complete += 1
            if isinstance(ending.value, list):  # several objectives have a Pareto front, not one best value
                self._onto_front(number, ending.value, directions)
                return
            direction = directions[0]
            if self.best_value is None or metrics.better(ending.value, self.best_value, direction):
                self.best_value, self.best_trial = ending.value, number
        elif ending.state == TrialState.PRUNED:
            self.pruned += 1
        else:
            self.failed += 1

    def _onto_front(self, number: int, values: list[float], directions: Sequence[str]) -> None:
        def dominates(a: Sequence[float], b: Sequence[float]) -> bool:  # as Optuna's best_trials counts it
            no_worse = all(not metrics.better(y, x, d) for x, y, d in zip(a, b, directions))
            return no_worse and any(metrics.better(x, y, d) for x, y, d in zip(a, b, directions))

        if any(dominates(kept, values) for _, kept in self.front):
            return
        self.front = [(n, kept) for n, kept in self.front if not dominates(values, kept)] + [(number, values)]


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
        plan: Plan | None = None,
        callbacks: Sequence[Any] = (),
    ) -> None:
        self.plan = plan or Plan.of(spec)
        self.spec = spec
        self.store = store
        self.study = study
        self.executor = executor
        self.workload = workload if workload is not None else spec.workload_target
        self.on_progress = on_progress
        self.recorder = Recorder(spec, store, study, callbacks)
        self.running: dict[int, Run] = {}  # by trial id
        self.asked: dict[int, optuna.Trial] = {}  # the Optuna trial of each running one, by trial id
        self.progress = recovery.count_existing(study, self.plan.trials)
        # (trial number, value) of the trial that reached `objective.target`: no new trial starts.
        self.reached: tuple[int, float] | None = None
        if lifecycle.meets_target(self.progress.best_value, spec):  # a resume, reached already
            self._reach(self.progress.best_trial, self.progress.best_value)
        self.first_error: tuple[Run, str] | None = None  # the first trial that failed, and why
        self.last_heartbeat = 0.0
        self._asked: optuna.Trial | None = None  # asked, not yet submitted (kept across an outage)
        self._waiting = recovery.Waiting()

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        """Run trials until the budget or the timeout is used up, or a trial reaches the target."""
        deadline = time.monotonic() + self.spec.timeout if self.spec.timeout else math.inf
        try:
            self.recorder.callbacks.start()  # the loggers' process imports its libraries while trials start
            while True:
                if time.monotonic() < deadline and self.reached is None:
                    self._launch_more()
                if not self.running and not self._waiting.for_others(self):
                    break
                for event in self.executor.poll(POLL_SECONDS):
                    self._handle(event)
                self.executor.handled()  # a worker waiting for a verdict hears it now
                self._expire_deadlines()
                self._heartbeat()
                self._report_progress()
                self._fail_fast()
        except BaseException as exc:
            self._abort(_stop_reason(exc))
            raise
        finally:
            try:
                self.executor.close()  # may wait for a stopped trial (Ctrl-C again ends the wait)
            finally:
                self.recorder.close()
                self._report_progress()

    def _launch_more(self) -> None:
        slots = self.executor.at_once(self.spec.parallel) - len(self.running)
        for _ in range(max(slots, 0)):
            asked = self.recorder.db(self._ask_next)
            if asked is None:
                break
            trial, params = asked
            run = Run(trial.number, internals.trial_id(trial), params, time.monotonic(),
                      attempt=int(trial.user_attrs.get(record.ATTEMPT, 1)))
            self.running[run.trial_id] = run
            self.asked[run.trial_id] = trial
            self.executor.submit(self._resumed(trial, run, self.plan.job(trial, params, self.workload)))
        self.progress.running = len(self.running)

    def _resumed(self, trial: optuna.Trial, run: Run, job: TrialJob) -> TrialJob:
        """A trial that runs a dead worker's params again starts after that worker's last checkpoint."""
        if record.RETRY_OF not in trial.user_attrs:
            return job
        found = self.recorder.resume_point(trial)
        if found is None:
            return job
        checkpoint, rows, best_score = found
        run.fresh(rows)
        run.judged_epoch = checkpoint.epoch
        log.info("trial %d resumes from trial %s's checkpoint at epoch %d", run.number,
                 trial.user_attrs[record.RETRY_OF], checkpoint.epoch)
        return dataclasses.replace(job, restore=checkpoint, best_score=best_score)

    def _ask_next(self) -> tuple[optuna.Trial, dict[str, Any]] | None:
        """The next trial and its params, or None when the budget is used up.

        Retried as a whole by the recorder: a trial asked before an outage is
        kept for the next attempt, never asked twice (it would stay RUNNING).
        """
        if self._asked is None:
            self._asked = self.recorder.ask(self._remaining)
            if self._asked is None:
                return None
        # Its first heartbeat at once: a trial that never had one is never stale, and one this orchestrator
        # leaves RUNNING (killed, or stopped by an outage) must be, for a resume on PostgreSQL to run it again.
        self.recorder.heartbeat([internals.trial_id(self._asked)])
        params = strategies.suggest(self._asked, self.spec)  # a retry gets the params already set
        trial, self._asked = self._asked, None
        return trial, params

    # ------------------------------------------------------------------ events

    def _handle(self, event: Event) -> None:
        now = time.monotonic()
        if isinstance(event, Epochs):
            self._on_epochs(event, now)
            return
        if isinstance(event, Call):
            self._on_call(event)
            return
        run = self.running.get(event.trial_id)
        if run is None:  # ended already (stopped early, timed out, or aborted)
            return
        rows, resent = self._fresh(run, event.rows)
        self.recorder.epochs(rows, {run.trial_id: run}, resent)
        self._apply(run, lifecycle.on_ended(run, event, self.plan, now))
        if lifecycle.starves_the_pruner(run, event, self.plan):
            self._starved(run, event)

    def _on_epochs(self, event: Epochs, now: float) -> None:
        rows, resent, touched = [], [], {}
        for row in event.rows:
            run = self.running.get(row["trial_id"])
            if run is not None:  # a stopped trial's late rows go
                fresh, again = self._fresh(run, [row])
                rows += fresh
                resent += again
                touched[run.trial_id] = run
        self.recorder.epochs(rows, self.running, resent)
        for run in touched.values():
            self._apply(run, lifecycle.on_epochs(run, self.plan, lambda: self._pruner_verdict(run), now))

    def _fresh(self, run: Run, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The rows of epochs the trial had not reported yet (now in ``run.rows``), and the copies of rows
        sent again with their checkpoint (messages.RESENT); a repeated epoch is said once a trial."""
        resent = [r for r in rows if r.pop(RESENT, False)]
        repeats, first = run.repeats, not run.rows
        taken = run.fresh(r for r in rows if not any(r is again for again in resent))
        if first and taken:
            self._check_names(run, taken[0])
        if run.repeats and not repeats:
            log.warning("trial %d reported epoch %d again; the first report of an epoch is the one that counts "
                        "(as in Optuna's trial.report), later ones are ignored. Fix: report each epoch once, "
                        "with all its metrics", run.number, run.first_repeat)
        return taken, resent

    def _on_call(self, call: Call) -> None:
        """An Optuna objective's trial asks its Optuna ``Trial`` (a suggest_*): the study's sampler answers."""
        run, trial = self.running.get(call.trial_id), self.asked.get(call.trial_id)
        if run is None or trial is None:  # ended meanwhile: its worker stops
            self.executor.reply(call, ("stop", "the trial has ended"))
            return
        reply = self.recorder.db(optuna_objective.answer, trial, call)
        param = optuna_objective.suggested(call, reply)
        if param is not None:  # a retry of the trial runs these params again
            run.params[param[0]] = param[1]
        self.executor.reply(call, reply)

    def _apply(self, run: Run, step: Step) -> None:
        """Carry out a lifecycle step: stop the worker, queue a retry, write the end."""
        if step.end is None:
            return
        del self.running[run.trial_id]
        self.asked.pop(run.trial_id, None)
        if step.stop:
            self.executor.stop([run.trial_id])
        if step.retry is not None:
            self.recorder.enqueue(step.retry.params, {record.ATTEMPT: step.retry.attempt,
                                                      record.RETRY_OF: step.retry.retry_of})
        ending = self.recorder.end(run.number, run.trial_id, step.end)
        self.progress.count(run.number, ending, self.spec.directions)
        self.progress.running = len(self.running)
        if ending.state == TrialState.FAIL and ending.counted and self.first_error is None:
            why = ending.why
            self.first_error = (run, why.shown_reason if isinstance(why, record.Failure) else "no value")
        if self.reached is None and lifecycle.reaches_target(step.end, self.plan):
            self._reach(run.number, step.end.value)

    def _pruner_verdict(self, run: Run) -> tuple[bool, float | None]:
        frozen = self.recorder.frozen(run.trial_id)
        if not self.plan.pruner.prune(self.study, frozen):
            return False, None
        return True, frozen.intermediate_values.get(frozen.last_step) if frozen.last_step is not None else None

    def _expire_deadlines(self) -> None:
        """Kill trials that outlived trial_timeout (a hung worker cannot stop itself)."""
        now = time.monotonic()
        expired = [run for run in self.running.values() if lifecycle.past_deadline(run, self.plan, now,
                                                                                    KILL_AFTER_SECONDS)]
        if not expired:
            return
        for event in self.executor.delivered():  # what they reported up to now is theirs: recorded first
            self._handle(event)
        for run in expired:
            if run.trial_id in self.running:  # not ended by what it delivered
                self.executor.cancel([run.trial_id])
                self._apply(run, lifecycle.on_deadline(run, self.plan, now))

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self.last_heartbeat >= HEARTBEAT_SECONDS:
            self.last_heartbeat = now
            self.recorder.heartbeat(list(self.running))

    # ------------------------------------------------------------------ the study's end

    def _starved(self, run: Run, ended: Ended) -> None:
        """A pruner with nothing to read would never prune: say so after the first trial."""
        self._abort("study stopped: the pruner has no per-epoch values")
        metric = self.spec.objective.metric
        raise StudyFailedError(
            f"pruner {self.spec.pruner.type!r} needs a value of {metric!r} every epoch, but trial "
            f"{ended.number} reported none: {lifecycle.what_it_reported(run.rows, metric)}. Fix: call "
            f"report(epoch, {metric}=...) each epoch, or set `pruner: none`.",
            study=self.study.study_name,
        )

    def _check_names(self, run: Run, row: dict[str, Any]) -> None:
        """At a trial's first epoch, an objective's metric it reports misspelt stops the study there."""
        problem = lifecycle.misnamed(row, self.plan, run.number)
        if problem is not None:
            self._abort("study stopped: the objective's metric is not what the workload reports")
            raise StudyFailedError(problem, study=self.study.study_name)

    def _reach(self, number: int | None, value: float | None) -> None:
        """A trial reached `objective.target`: the study starts no new trial; those running finish (as W&B's)."""
        self.reached = (number if number is not None else -1, value if value is not None else math.nan)
        objective = self.spec.objective
        log.info("target reached: trial %s has %s %s %s %s (objective.target); no new trial starts%s", number,
                 objective.metric, metrics.fmt(value), "<=" if self.spec.direction == "minimize" else ">=",
                 metrics.fmt(objective.target), f", the {len(self.running)} running finish" if self.running else "")

    def _fail_fast(self) -> None:
        """When the first `max_failed_trials` trials to end all failed, the workload is broken: stop."""
        if self.progress.complete or self.progress.pruned or self.first_error is None:
            return
        if self.progress.failed < self.spec.max_failed_trials or self.progress.finished >= self.progress.planned:
            return  # too few failures to judge, or nothing left to save
        run, error = self.first_error
        number, failed = run.number, self.progress.failed
        self._abort("study stopped: its first trials all failed")
        first = self.recorder.frozen(run.trial_id)  # one trial read, not the whole study
        raise StudyFailedError(
            f"the first {failed} trials all failed (max_failed_trials: {self.spec.max_failed_trials}), so the study "
            f"stopped instead of spending its budget. Trial {number} failed with: {error}. Fix the workload.",
            study=self.study.study_name, workload_traceback=first.user_attrs.get(record.FAIL_TRACEBACK),
        )

    def _abort(self, reason: str) -> None:
        """End every running trial as FAIL with ``reason``: nothing is left RUNNING.

        Except where the study stopped because its store stayed unreachable:
        nothing can be written there, so the trials stay RUNNING, their
        heartbeats stop, and a resume ends them as interrupted and runs them
        again (as after kill -9).
        """
        self.executor.cancel(list(self.running))
        if self.recorder.lost is not None:
            return
        if self._asked is not None:  # asked, stopped before it was submitted
            asked, self._asked = self._asked, None
            self.running[internals.trial_id(asked)] = Run(asked.number, internals.trial_id(asked), {}, time.monotonic())
        for run in list(self.running.values()):
            self._apply(run, Step(lifecycle.on_abort(run, self.plan, reason, time.monotonic())))

    # ------------------------------------------------------------------ budget

    def budget_reached(self) -> bool:
        """Whether the study has nothing left to run: its budget is used up and no trial of it runs."""
        return not self.recorder.trials((TrialState.RUNNING,)) and self._remaining() <= 0

    def _remaining(self) -> int:
        """Trials still to start: the budget less what every orchestrator finished or runs."""
        if self.store.backend == "sqlite":  # the study lock: this orchestrator is the only one
            return self.progress.planned - self.progress.finished - len(self.running)
        return self.progress.planned - sum(map(counts_toward_budget, self.study.get_trials(deepcopy=False)))

    def recover(self, every_running: bool) -> None:
        """Fail the RUNNING trials no orchestrator runs any more and queue their params again (see recovery)."""
        recovery.recover(self.plan, self.recorder, every_running)

    def _report_progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)


def _stop_reason(exc: BaseException) -> str:
    if Terminated.seen(exc):
        return "stopped by SIGTERM"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by the user (Ctrl-C)"
    return f"study stopped: {type(exc).__name__}: {exc}"
