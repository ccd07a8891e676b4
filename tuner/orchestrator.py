"""The study loop: ask -> submit -> collect -> record -> stop?

The strategy (an Optuna sampler) proposes; the executor runs; the store
records. Every way a trial can end is turned into an Optuna state in one
place, :meth:`Orchestrator._finish`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner import strategies, summary
from tuner.errors import StudyFailedError
from tuner.executors import Executor
from tuner.runtime import TrialJob, TrialOutcome
from tuner.spec import StudySpec
from tuner.store import Store

# When this many trials have ended and every one failed, the workload is
# broken: stop, rather than spend the whole budget finding that out.
FAIL_FAST_TRIALS = 3
POLL_SECONDS = 0.2
# Failures recorded with this kind do not use up the budget: the trial never
# got to finish through no fault of its configuration.
INTERRUPTED = "interrupted"


@dataclass
class Progress:
    """A snapshot for progress displays."""

    planned: int
    complete: int = 0
    failed: int = 0
    running: int = 0
    best_value: float | None = None
    best_trial: int | None = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.complete + self.failed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at


@dataclass
class _Running:
    trial: optuna.Trial
    params: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


class Orchestrator:
    """Runs one study to its budget on one executor."""

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
        self.running: dict[int, _Running] = {}
        self.progress = Progress(planned=strategies.planned_trials(spec))
        self.first_error: tuple[int, str] | None = None
        self._count_existing()

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        """Run trials until the budget or the timeout is used up; the executor must be started."""
        deadline = time.monotonic() + self.spec.timeout if self.spec.timeout else math.inf
        self.executor.sink = self._record_epochs
        try:
            while True:
                if time.monotonic() < deadline:
                    self._launch_more()
                if not self.running:
                    break
                for outcome in self.executor.poll(POLL_SECONDS):
                    self._finish(outcome)
                self._report_progress()
                self._fail_fast()
        except BaseException as exc:
            reason = "interrupted by the user (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else (
                f"study stopped: {type(exc).__name__}: {exc}"
            )
            self._abort(reason)
            raise
        finally:
            self.executor.close()
            self._report_progress()

    def _launch_more(self) -> None:
        slots = min(self.spec.parallel, self.executor.capacity) - len(self.running)
        remaining = self.progress.planned - self.progress.finished - len(self.running)
        for _ in range(min(slots, remaining)):
            trial = self.study.ask()
            params = strategies.suggest(trial, self.spec)
            self.running[trial.number] = _Running(trial, params)
            job = TrialJob(trial.number, trial._trial_id, params, self.spec.context(), self.workload)
            self.executor.submit(job)
        self.progress.running = len(self.running)

    def _record_epochs(self, rows: list[dict[str, Any]]) -> set[int]:
        """The executors' sink: store rows as they arrive; answer which trials must stop."""
        by_id = {r.trial._trial_id: r for r in self.running.values()}
        for row in rows:
            if row["trial_id"] in by_id:
                by_id[row["trial_id"]].rows.append(row)
        self.store.record_epochs(rows, self.spec.objective.metric)
        return set()

    # ------------------------------------------------------------------ outcomes

    def _finish(self, outcome: TrialOutcome) -> None:
        run = self.running.pop(outcome.number, None)
        if run is None:  # already ended (cancelled, or reported twice)
            return
        run.rows.extend(outcome.rows)
        self.store.record_epochs(outcome.rows, self.spec.objective.metric)
        value, error = self._value(outcome, run.rows)
        attrs = {
            **summary.trial_summary(run.rows, self.spec.objective.metric, self.spec.direction),
            "wall_seconds": round(outcome.wall_seconds, 3),
            "device": outcome.device,
            "node": outcome.node,
        }
        if error is not None:
            attrs["fail_reason"] = error
        self.store.set_trial_attrs(outcome.trial_id, attrs)
        if error is None:
            self.study.tell(outcome.number, value)
            self.progress.complete += 1
        else:
            self.study.tell(outcome.number, state=TrialState.FAIL)
            self.progress.failed += 1
            self.first_error = self.first_error or (outcome.number, error)
        self._update_best()
        self.progress.running = len(self.running)

    def _value(self, outcome: TrialOutcome, rows: list[dict[str, Any]]) -> tuple[float | None, str | None]:
        """The trial's objective value, or why it has none."""
        if outcome.error is not None:
            return None, outcome.error
        metric = self.spec.objective.metric
        value = outcome.value
        if value is None:
            value = summary.objective_value(rows, metric, self.spec.direction, self.spec.objective.mode)
        if value is None:
            return None, (
                f"the workload returned no value and never reported {metric!r}. Fix: call "
                f"report(epoch, {metric}=...) each epoch, or return the value."
            )
        if not math.isfinite(value):
            return None, f"the objective {metric} is {value} (the run diverged)"
        return value, None

    def _update_best(self) -> None:
        try:
            best = self.study.best_trial
        except ValueError:
            return
        self.progress.best_value, self.progress.best_trial = best.value, best.number

    def _fail_fast(self) -> None:
        if self.progress.complete or self.first_error is None:
            return
        if self.progress.failed < FAIL_FAST_TRIALS or self.progress.finished >= self.progress.planned:
            return  # too few failures to judge, or nothing left to save
        number, error = self.first_error
        failed = self.progress.failed
        self._abort("study stopped: its first trials all failed")
        raise StudyFailedError(
            f"the first {failed} trials all failed, so the study stopped instead of "
            f"spending its budget. Trial {number} failed with: {error}. Fix the workload, then "
            "run one trial in this process to see the traceback: --executor inline --trials 1 --debug."
        )

    def _abort(self, reason: str) -> None:
        """End every running trial as FAIL with ``reason``: nothing is left RUNNING."""
        self.executor.cancel(list(self.running))
        for number, run in list(self.running.items()):
            self.store.record_epochs(
                [r for r in run.rows if "trial_id" in r], self.spec.objective.metric
            )
            attrs = {**summary.trial_summary(run.rows, self.spec.objective.metric, self.spec.direction)}
            attrs.update(fail_reason=reason, fail_kind=INTERRUPTED)
            self.store.set_trial_attrs(run.trial._trial_id, attrs)
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            self.progress.failed += 1
        self.running.clear()
        self.progress.running = 0

    # ------------------------------------------------------------------ bookkeeping

    def _count_existing(self) -> None:
        """On resume, finished trials count toward the budget, interrupted ones do not."""
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state == TrialState.COMPLETE:
                self.progress.complete += 1
            elif trial.state == TrialState.FAIL and trial.user_attrs.get("fail_kind") != INTERRUPTED:
                self.progress.failed += 1
        self.progress.planned = max(self.progress.planned, 0)
        self._update_best()

    def _report_progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)
