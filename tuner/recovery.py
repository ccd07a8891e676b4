"""What a study finds when it starts again: trials nobody runs any more, points still to run.

On resume (and, on PostgreSQL, while other orchestrators share the study),
RUNNING trials whose orchestrator is gone are ended FAIL through the recorder
and their params queued again; a grid gets its uncovered points queued.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from tuner import strategies
from tuner.plan import Plan
from tuner.recorder import DB_RETRY_SECONDS, Recorder
from tuner.store.lock import study_mutex
from tuner.trial import record
from tuner.trial.record import counts_toward_budget
from tuner.errors import TunerError
from tuner.store import internals

if TYPE_CHECKING:
    from tuner.store import Store
    from tuner.orchestrator import Orchestrator, Progress

# A RUNNING trial whose Optuna heartbeat is older than this has no live orchestrator.
HEARTBEAT_GRACE = 30
HEARTBEAT_SECONDS = 5  # how often a live one beats

log = logging.getLogger("tuner")


def count_existing(study: optuna.Study, planned: int) -> Progress:
    """The progress a resumed study starts from: finished trials count toward the budget, interrupted ones do not."""
    from tuner.orchestrator import Progress

    progress = Progress(planned=planned)
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.COMPLETE:
            progress.complete += 1
        elif trial.state == TrialState.PRUNED:
            progress.pruned += 1
        elif trial.state == TrialState.FAIL and counts_toward_budget(trial):
            progress.failed += 1
    if len(study.directions) > 1:  # several objectives: the Pareto front so far, no single best
        progress.front = [(t.number, list(t.values)) for t in study.best_trials]
        return progress
    try:
        best = study.best_trial  # read once here; afterwards the loop tracks the values it tells
    except ValueError:  # no (feasible) COMPLETE trial yet
        return progress
    progress.best_value, progress.best_trial = best.value, best.number
    return progress


def refuse_if_run_elsewhere(store: Store, name: str, doing: str, force: str | None = None) -> None:
    """On PostgreSQL (no study lock): refuse ``doing`` while a trial of the study has a fresh heartbeat.

    A RUNNING trial whose heartbeat is younger than HEARTBEAT_GRACE has a live orchestrator
    somewhere, whose next write would fail on a deleted study. ``force`` names how to go on anyway
    (the orchestrator may be gone: its heartbeats go stale within HEARTBEAT_GRACE seconds).
    SQLite needs none: the study's lock refuses (see tuner.store.lock.study_lock).
    """
    if store.engine.dialect.name == "sqlite" or not store.has_study(name):
        return
    study = store.load_study(name)
    sid = internals.study_id(study)
    running = {internals.trial_id(t) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    live = running - set(internals.stale_trial_ids(store.storage, sid, HEARTBEAT_SECONDS, HEARTBEAT_GRACE))
    live -= set(internals.unbeaten_trial_ids(store.storage, sid))
    if live:
        also = f", or {force} if that process is gone" if force else ""
        raise TunerError(
            f"study {name!r} is being run by another tuner process: {len(live)} of its trials RUNNING had a "
            f"heartbeat in the last {HEARTBEAT_GRACE} s. Fix: wait for it to finish, or stop it, then {doing}{also}."
        )


def recover(plan: Plan, recorder: Recorder, every_running: bool) -> None:
    """End FAIL the RUNNING trials that no orchestrator runs any more, and queue their params again.

    With the study's lock held (SQLite) every RUNNING trial is stale;
    otherwise (PostgreSQL, where orchestrators may share a study) only those
    whose heartbeat stopped more than HEARTBEAT_GRACE seconds ago. Every
    interrupted trial's params run again once, as after a worker death.
    """
    study = recorder.study
    with study_mutex(recorder.store.engine, internals.study_id(study)):
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not every_running:
            # One whose orchestrator stopped between asking it and its first heartbeat (an outage it gave up
            # on, kill -9) would never be stale: a heartbeat now starts its grace, as a live owner's next does.
            for trial_id in internals.unbeaten_trial_ids(recorder.store.storage, internals.study_id(study)):
                recorder.store.storage.record_heartbeat(trial_id)
            stale = set(internals.stale_trial_ids(recorder.store.storage, internals.study_id(study),
                                                  HEARTBEAT_SECONDS, HEARTBEAT_GRACE))
            running = [t for t in running if internals.trial_id(t) in stale]
        recorder.fail_stale(running, {record.FAIL_REASON: "the orchestrator stopped while this trial ran",
                                      record.FAIL_KIND: record.INTERRUPTED})
        _requeue_interrupted(plan, recorder)
        if plan.is_grid:
            _queue_grid(plan, recorder)


def _requeue_interrupted(plan: Plan, recorder: Recorder) -> None:
    study = recorder.study
    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs.get(record.RETRY_OF) for t in trials}
    for t in trials:
        # A trial stopped while it was being asked has no whole configuration to run again.
        if t.user_attrs.get(record.FAIL_KIND) == record.INTERRUPTED and t.number not in requeued \
                and strategies.fits(plan.spec, t.params):
            recorder.enqueue(t.params, {
                record.ATTEMPT: int(t.user_attrs.get(record.ATTEMPT, 1)), record.RETRY_OF: t.number,
            })


def _queue_grid(plan: Plan, recorder: Recorder) -> None:
    """Queue, in grid order, the points no trial covers, as many as the budget has room for.

    A grid cut short by its budget queues only the points it runs; a resume
    that raises the budget gets the next points of the grid, not random ones.
    """
    trials = recorder.study.get_trials(deepcopy=False)
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    covered = {strategies.point_key(t.system_attrs.get("fixed_params", {})) for t in waiting}
    covered |= {strategies.point_key(t.params) for t in trials if counts_toward_budget(t)}
    room = plan.trials - sum(map(counts_toward_budget, trials)) - len(waiting)
    missing = [p for p in plan.grid_points() if strategies.point_key(p) not in covered]
    for params in missing[:max(room, 0)]:
        recorder.enqueue(params)


class Waiting:
    """With nothing of its own running, whether a study goes on because other trials of it are RUNNING."""

    def __init__(self) -> None:
        self.said = False

    def for_others(self, orchestrator: Orchestrator) -> bool:
        """On PostgreSQL they belong to another live orchestrator, which finishes
        them, or to one that died: once their heartbeat is HEARTBEAT_GRACE
        seconds old they are ended FAIL and run again here. Either way the
        study is not done while they run. (SQLite: the study's lock means none.)
        """
        if orchestrator.store.backend == "sqlite":
            return False
        recorder = orchestrator.recorder
        others = recorder.trials((TrialState.RUNNING,))
        if not others:
            return False
        if not self.said:
            self.said = True
            log.warning("trials %s are RUNNING elsewhere: waiting for them to finish, or to be run again "
                        "here once their heartbeat is %d s old", ", ".join(str(t.number) for t in others),
                        HEARTBEAT_GRACE)
        time.sleep(DB_RETRY_SECONDS)
        recorder.db(recover, orchestrator.plan, recorder, False)
        return True
