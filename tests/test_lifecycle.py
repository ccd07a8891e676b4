"""Every way a trial can end, decided by the pure lifecycle and carried out by the loop.

The first half calls ``tuner.lifecycle`` directly: no Ray, no database, no
training. The second drives the real orchestrator and recorder (on a real
SQLite file) with a scripted executor, in the spirit of Syne Tune's simulator
backend: each trial is a script of epochs and an end, played one epoch per
poll, so the order of events is exact and a stop's effect can be counted.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tuner import lifecycle
from tuner.api import _create
from tuner.executors.base import Executor
from tuner.lifecycle import Run
from tuner.orchestrator import Orchestrator
from tuner.plan import Plan
from tuner.spec import load_spec
from tuner.store import Store
from tuner.trial import record
from tuner.trial.messages import Completed, Crashed, Ended, Epochs, Event, Failed, Pruned, Result, TimedOut, TrialJob

X = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def plan(**overrides: Any) -> Plan:
    spec = {"name": "life", "workload": "tests.workloads:quadratic", "strategy": "random", "trials": 4,
            "epochs": 5, "seed": 0, "pruner": "none", "params": X, **overrides}
    return Plan.of(load_spec(spec))


def run_with(losses: Iterable[float], **extra: float) -> Run:
    run = Run(number=0, trial_id=1, params={"x": 0.5}, started=0.0)
    run.rows = [{"trial_id": 1, "epoch": e, "val_loss": v, "train_loss": v, **extra}
                for e, v in enumerate(losses, start=1)]
    return run


def never_asked() -> tuple[bool, float | None]:
    raise AssertionError("the pruner was asked")


# ---------------------------------------------------------------------- the decisions alone


def test_a_completed_trial_takes_the_value_it_returned_else_its_best_epoch() -> None:
    p = plan()
    ended = Ended(0, 1, Completed(0.25), wall_seconds=2.0, device="cpu", node="n1")
    ending = lifecycle.on_ended(run_with([0.9, 0.4]), ended, p, now=9.0).end
    assert (ending.state, ending.value, ending.counted) == (TrialState.COMPLETE, 0.25, True)
    assert ending.attrs()["wall_seconds"] == 2.0 and ending.attrs()["node"] == "n1"
    ending = lifecycle.on_ended(run_with([0.9, 0.4, 0.6]), Ended(0, 1, Completed()), p, now=9.0).end
    assert ending.value == 0.4  # mode best
    assert ending.attrs()["wall_seconds"] == 9.0  # the worker said nothing: the driver's clock


@pytest.mark.parametrize(("result", "state", "kind", "reason"), [
    (Failed("ValueError: bad", "Traceback ..."), TrialState.FAIL, None, "ValueError: bad"),
    (TimedOut("trial_timeout: still running after 3 s, so it was stopped"), TrialState.FAIL, record.TIMEOUT,
     "trial_timeout: still running after 3 s"),
    (Pruned(), TrialState.PRUNED, None, "the workload raised optuna.TrialPruned"),
    (Pruned({"kind": "diverged", "epoch": 2, "detail": "val_loss is nan", "values": {"val_loss": math.nan}}),
     TrialState.PRUNED, None, "diverged at epoch 2: val_loss is nan"),
    (Completed(math.inf), TrialState.FAIL, None, "the objective val_loss is inf (the run diverged)"),
], ids=["failed", "timed-out", "pruned-by-workload", "pruned-by-diagnostics", "diverged-value"])
def test_each_end_of_a_worker_becomes_one_state_with_its_reason(result: Result, state: TrialState, kind: str | None,
                                                                reason: str) -> None:
    step = lifecycle.on_ended(run_with([1.0]), Ended(0, 1, result), plan(), now=1.0)
    attrs = step.end.attrs()
    assert step.end.state == state and not step.stop and step.retry is None
    assert attrs.get(record.FAIL_KIND) == kind
    assert record.why_stopped(attrs).startswith(reason)
    if isinstance(result, Failed):
        assert attrs[record.FAIL_TRACEBACK] == "Traceback ..."


def test_no_value_and_no_report_fails_with_the_fix() -> None:
    step = lifecycle.on_ended(Run(0, 1, {}, 0.0), Ended(0, 1, Completed()), plan(), now=1.0)
    assert step.end.state == TrialState.FAIL
    assert step.end.attrs()[record.FAIL_REASON] == ("the workload returned no value and never reported 'val_loss': "
                                                    "it reported no metric (it only returned its result). "
                                                    "Fix: call report(epoch, val_loss=...) each epoch, or return "
                                                    "the value.")


def test_a_dead_worker_is_retried_with_the_same_params_until_the_retries_are_spent() -> None:
    p = plan(retries=1)
    first = lifecycle.on_ended(run_with([1.0]), Ended(0, 1, Crashed("worker died: OOM")), p, now=1.0)
    assert first.end.state == TrialState.FAIL and not first.end.counted
    assert first.end.attrs()[record.FAIL_KIND] == record.RETRIED
    assert first.retry == lifecycle.Retry({"x": 0.5}, attempt=2, retry_of=0)
    second_run = run_with([1.0])
    second_run.attempt = 2
    last = lifecycle.on_ended(second_run, Ended(0, 1, Crashed("worker died: OOM")), p, now=1.0)
    assert last.retry is None and last.end.counted
    assert last.end.attrs()[record.FAIL_REASON] == "worker died: OOM (attempt 2, no retries left)"


def test_early_stopping_completes_the_trial_with_its_best_epoch_and_stops_the_worker() -> None:
    p = plan(early_stopping={"patience": 2})
    run = run_with([0.5, 0.3, 0.4, 0.45])
    step = lifecycle.on_epochs(run, p, never_asked, now=1.0)
    assert step.stop and step.end.state == TrialState.COMPLETE and step.end.value == 0.3
    assert step.end.attrs()[record.STOP_REASON] == "no improvement for 2 epochs after epoch 2"
    assert step.end.ends_early


def test_the_pruner_is_asked_only_when_on_and_never_at_the_final_epoch() -> None:
    assert lifecycle.on_epochs(run_with([1.0, 2.0]), plan(), never_asked, now=1.0) is lifecycle.GO_ON
    with_pruner = plan(pruner="median")
    asked = []

    def prune() -> tuple[bool, float | None]:
        asked.append(True)
        return True, 2.0

    step = lifecycle.on_epochs(run_with([1.0, 2.0]), with_pruner, prune, now=1.0)
    assert asked and step.stop and step.end.state == TrialState.PRUNED
    assert step.end.attrs()[record.PRUNE_REASON] == ("median pruner at epoch 2: val_loss 2 ranks too low among the "
                                                     "trials there")
    final = run_with([1.0] * 5)  # epochs: 5
    assert lifecycle.on_epochs(final, with_pruner, never_asked, now=1.0) is lifecycle.GO_ON
    seen = run_with([1.0, 2.0])
    seen.judged_epoch = 2  # this epoch was judged already (rows came twice)
    assert lifecycle.on_epochs(seen, with_pruner, never_asked, now=1.0) is lifecycle.GO_ON


def test_a_hung_trial_is_killed_past_its_deadline_and_an_aborted_one_runs_again() -> None:
    p = plan(trial_timeout=3.0)
    run = run_with([1.0])
    assert not lifecycle.past_deadline(run, p, now=4.0, grace=2.0)
    assert lifecycle.past_deadline(run, p, now=5.5, grace=2.0)
    step = lifecycle.on_deadline(run, p, now=5.5)
    assert step.stop and step.end.attrs()[record.FAIL_KIND] == record.TIMEOUT
    aborted = lifecycle.on_abort(run, p, "interrupted by the user (Ctrl-C)", now=6.0)
    assert aborted.state == TrialState.FAIL and not aborted.counted
    assert aborted.attrs()[record.FAIL_KIND] == record.INTERRUPTED


def test_max_gap_sets_the_constraint_from_the_gap_at_the_best_epoch() -> None:
    p = plan(objective={"metric": "val_loss", "max_gap": 0.1})
    run = run_with([0.5, 0.3])
    run.rows[1]["gap_loss"] = 0.25
    ending = lifecycle.on_ended(run, Ended(0, 1, Completed()), p, now=1.0).end
    assert ending.constraint == pytest.approx(0.15)


# ---------------------------------------------------------------------- the loop, with a scripted executor


@dataclass
class Script:
    """A trial as the fake worker plays it: val_loss per epoch, then how it ends (None: it never ends)."""

    losses: list[float]
    result: Result | None = field(default_factory=Completed)


class ScriptedExecutor(Executor):
    """Plays each submitted trial's script, one epoch per poll, honouring stops before the next epoch."""

    def __init__(self, scripts: dict[int, Script], capacity: int = 2) -> None:
        self.scripts = scripts
        self.capacity = capacity
        self.running: dict[int, tuple[TrialJob, deque[float]]] = {}
        self.stopping: set[int] = set()
        self.epochs_run: dict[int, int] = {}  # by trial number: what the "workload" trained
        self.epochs_after_stop = 0

    def submit(self, job: TrialJob) -> None:
        self.running[job.trial_id] = (job, deque(self.scripts[job.number].losses))
        self.epochs_run[job.number] = 0

    def poll(self, timeout: float) -> list[Event]:
        events: list[Event] = []
        for trial_id, (job, left) in list(self.running.items()):
            if trial_id in self.stopping:
                del self.running[trial_id]
                events.append(Ended(job.number, trial_id, Pruned()))
                continue
            if left:
                self.epochs_run[job.number] += 1
                epoch = self.epochs_run[job.number]
                loss = left.popleft()
                events.append(Epochs([{"trial_id": trial_id, "epoch": epoch, "val_loss": loss,
                                       "train_loss": loss}]))
                continue
            result = self.scripts[job.number].result
            if result is not None:
                del self.running[trial_id]
                events.append(Ended(job.number, trial_id, result))
        return events

    def stop(self, trial_ids: Iterable[int]) -> None:
        self.stopping.update(trial_ids)

    def cancel(self, trial_ids: Iterable[int]) -> None:
        for trial_id in trial_ids:
            self.running.pop(trial_id, None)


def drive(storage: str, scripts: dict[int, Script], **spec: Any) -> tuple[optuna.Study, ScriptedExecutor]:
    p = plan(**{"trials": len(scripts), **spec})
    store = Store(storage)
    study = _create(store, "life", p)
    executor = ScriptedExecutor(scripts)
    Orchestrator(p.spec, store, study, executor, "tests.workloads:quadratic", plan=p).run()
    return study, executor


def test_every_ending_in_one_study_leaves_nothing_running_and_each_reason_recorded(storage: str) -> None:
    scripts = {
        0: Script([0.5, 0.4, 0.3, 0.2, 0.1]),
        1: Script([0.9, 0.8], Failed("RuntimeError: CUDA out of memory")),
        2: Script([0.6], Crashed("worker died: node lost")),
        3: Script([0.7, 0.6, 0.5, 0.4, 0.35], TimedOut("trial_timeout: still running after 9 s, so it was stopped")),
        4: Script([0.6, 0.5, 0.45, 0.44, 0.43]),  # the retry of trial 2: same params
    }
    study, executor = drive(storage, scripts, trials=4, retries=1)
    trials = study.get_trials()
    states = [t.state for t in trials]
    print(f"\nscripted study: states {[s.name for s in states]}, epochs run {executor.epochs_run}")
    assert TrialState.RUNNING not in states
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    (retry,) = [t for t in trials if t.user_attrs.get(record.RETRY_OF) == 2]
    assert retry.params == trials[2].params and retry.user_attrs[record.ATTEMPT] == 2
    assert trials[2].user_attrs[record.FAIL_KIND] == record.RETRIED
    assert trials[3].user_attrs[record.FAIL_KIND] == record.TIMEOUT
    assert trials[1].user_attrs[record.FAIL_REASON] == "RuntimeError: CUDA out of memory"
    assert trials[0].value == pytest.approx(0.1) and trials[0].user_attrs["best_epoch"] == 5
    assert all(t.user_attrs["orchestrator"] for t in trials)


def test_a_stop_takes_effect_before_the_next_epoch(storage: str) -> None:
    scripts = {n: Script([1.0 + n] * 8) for n in range(6)}  # later trials are worse at every epoch
    study, executor = drive(storage, scripts, epochs=8, parallel=2,
                            pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1})
    pruned = [t for t in study.get_trials() if t.state == TrialState.PRUNED]
    assert pruned, "the median pruner pruned nothing"
    for t in pruned:
        # The worker ran exactly the epochs the driver saw, not one more.
        assert executor.epochs_run[t.number] == t.user_attrs[record.PRUNE_EPOCH] == len(t.intermediate_values)
    print(f"\npruned {[t.number for t in pruned]} at epochs "
          f"{[t.user_attrs[record.PRUNE_EPOCH] for t in pruned]}; epochs run {executor.epochs_run}")


def test_a_worker_that_never_ends_is_failed_at_its_deadline(storage: str) -> None:
    study, _ = drive(storage, {0: Script([1.0], result=None)}, trials=1, trial_timeout=0.2)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[record.FAIL_REASON] == "trial_timeout: still running after 0.2 s, so it was stopped"


def test_ctrl_c_fails_the_running_trials_uncounted(storage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = plan(trials=2, parallel=2)
    store = Store(storage)
    study = _create(store, "life", p)
    executor = ScriptedExecutor({0: Script([1.0] * 4), 1: Script([1.0] * 4)})
    real_poll, polls = executor.poll, []

    def interrupted_poll(timeout: float) -> list[Event]:
        polls.append(1)
        if len(polls) == 2:
            raise KeyboardInterrupt
        return real_poll(timeout)

    monkeypatch.setattr(executor, "poll", interrupted_poll)
    with pytest.raises(KeyboardInterrupt):
        Orchestrator(p.spec, store, study, executor, plan=p).run()
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert {t.user_attrs[record.FAIL_KIND] for t in trials} == {record.INTERRUPTED}
    assert not any(record.counts_toward_budget(t) for t in trials)


# ---------------------------------------------------------------------- what a worker loads


def test_the_worker_side_loads_nothing_of_the_driver() -> None:
    code = ("import sys, tuner.trial.worker, tuner.trial.optuna_trial, tuner.executors.ray; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy' or m in "
            "('tuner.store', 'tuner.orchestrator', 'tuner.api', 'tuner.spec', 'tuner.recorder')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
