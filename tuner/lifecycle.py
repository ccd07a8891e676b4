"""How a running trial goes on or ends: pure decisions, one per event.

Given what the driver knows of a trial (:class:`Run`) and one event, each
function returns a :class:`Step`: stop the worker, end the trial (an
:class:`~tuner.trial.record.Ending`: Optuna state, value, why, facts), queue
its params again. Nothing here reads or writes the store or talks to an
executor, so every way a trial can end is tested without Ray or a database;
the orchestrator applies the steps and the recorder writes them.

The one input that needs the store is the Optuna pruner's verdict, which reads
the study's intermediate values: it comes in as a function (``prune``), asked
only when a pruner is on and the epoch is one it may judge.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import TrialState

from tuner.plan import Plan
from tuner.trial import diagnosis, metrics, record
from tuner.trial.messages import Completed, Crashed, Ended, Failed, Pruned, TimedOut
from tuner.trial.record import EarlyStop, Ending, Failure, Pruning, Why
from tuner.trial.worker import timeout_reason

# The Optuna pruner's verdict on the trial's epochs so far: (prune?, the value it judged).
PruneQuery = Callable[[], "tuple[bool, float | None]"]
# A trial's value: one number, or one per objective of a multi-objective study.
Value = float | list[float] | None


@dataclass
class Run:
    """A running trial as the driver knows it."""

    number: int
    trial_id: int
    params: dict[str, Any]
    started: float  # time.monotonic() at submission
    attempt: int = 1
    rows: list[dict[str, Any]] = field(default_factory=list)
    judged_epoch: int = -1  # none yet (an Optuna objective reports from step 0)
    repeats: int = 0  # reports of an epoch the trial had reported already: ignored
    first_repeat: int | None = None  # the epoch of the first of them
    _epochs: set[int] = field(default_factory=set, repr=False)

    def fresh(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Those of ``rows`` whose epoch the trial had not reported yet, now its own (in ``rows``).

        The first report of an epoch is the one that counts, in the trial's
        value as in the store (which keeps one row per epoch) and as Optuna's
        ``trial.report`` does with a step given twice; a later one is ignored
        and counted in ``repeats``.
        """
        taken = []
        for row in rows:
            if row["epoch"] in self._epochs:
                self.repeats += 1
                self.first_repeat = row["epoch"] if self.first_repeat is None else self.first_repeat
                continue
            self._epochs.add(row["epoch"])
            taken.append(row)
        self.rows.extend(taken)
        return taken


@dataclass(frozen=True)
class Retry:
    """Run these params again as a new trial (the worker died through no fault of theirs)."""

    params: dict[str, Any]
    attempt: int
    retry_of: int


@dataclass(frozen=True)
class Step:
    end: Ending | None = None  # None: the trial goes on
    stop: bool = False  # its worker is still running and must stop
    retry: Retry | None = None


GO_ON = Step()


def on_epochs(run: Run, plan: Plan, prune: PruneQuery, now: float) -> Step:
    """The trial reported epochs (already in ``run.rows``): early stopping, then the Optuna pruner."""
    epoch = run.rows[-1]["epoch"]
    if epoch <= run.judged_epoch:
        return GO_ON
    run.judged_epoch = epoch
    spec = plan.spec
    if spec.epochs is not None and len(run.rows) >= spec.epochs:
        return GO_ON  # its whole budget ran: stopping it now saves nothing and loses a result
    stop = spec.early_stopping
    if stop is not None:
        best = metrics.best_row(run.rows, lambda r: metrics.score(r, spec.objective), spec.direction, stop.min_delta)
        if best is not None and epoch - best["epoch"] >= stop.patience:
            why = EarlyStop(f"no improvement for {stop.patience} epochs after epoch {best['epoch']}")
            if spec.multi_objective:
                value, _ = _values(run.rows, plan, "best")
            else:
                value = metrics.objective_value(run.rows, spec.objective, spec.direction, "best")
            return Step(end(run, plan, TrialState.COMPLETE, value, why, now), stop=True)
    if spec.pruner.type == "none":
        return GO_ON
    pruned, value = prune()
    if not pruned:
        return GO_ON
    why = Pruning(
        spec.pruner.type, epoch=epoch, values={spec.objective.metric: value},
        reason=f"{spec.pruner.type} pruner at epoch {epoch}: {spec.objective.metric} {metrics.fmt(value)} "
               "ranks too low among the trials there",
    )
    return Step(end(run, plan, TrialState.PRUNED, None, why, now), stop=True)


# How close a reported name must be to an objective's metric to be taken for a misspelling of it (difflib's
# ratio): val_acc for val_accuracy (0.74), eval_loss for val_loss (0.94), but not train_loss for val_loss (0.67).
MISSPELT = 0.7
# Keys of a row that tuner adds or the workload does not report as metrics: never named as what it reported.
_NOT_REPORTED = ("trial_id", "epoch", "device", "checkpoint", "seconds", "gap_loss", "gap_acc")


def misnamed(row: dict[str, Any], plan: Plan, number: int) -> str | None:
    """At a trial's first epoch: why the study must stop when an objective's metric is missing from it and a
    name it does report is that metric misspelt (no trial could ever be judged on it); else None."""
    reported = [k for k in row if k not in _NOT_REPORTED]
    for metric in plan.spec.metric_names:
        if metric in row:
            continue
        near = difflib.get_close_matches(metric, reported, n=1, cutoff=MISSPELT)
        if near:
            return (f"objective metric {metric!r} is not among what trial {number} reported at epoch {row['epoch']}: "
                    f"{', '.join(reported)}. Did you mean {near[0]!r}? Fix: set `metric: {near[0]}` under "
                    f"objective: in the spec, or report(epoch, {metric}=...) in the workload.")
    return None


def what_it_reported(rows: Sequence[dict[str, Any]], metric: str) -> str:
    """For a message about a metric the workload never reported: what it did report, and the nearest name."""
    reported = list(dict.fromkeys(k for row in rows for k in row if k not in _NOT_REPORTED))
    if not reported:
        return "it reported no metric (it only returned its result)"
    near = difflib.get_close_matches(metric, reported, n=1)
    return f"it reported {', '.join(reported)}" + (f" (did you mean {near[0]!r}?)" if near else "")


def on_ended(run: Run, ended: Ended, plan: Plan, now: float) -> Step:
    """The trial's worker finished (its last rows already in ``run.rows``)."""
    result = ended.result
    facts = {"now": now, "wall": ended.wall_seconds, "device": ended.device, "node": ended.node,
             "waits": ended.waits}
    if isinstance(result, Pruned):
        return Step(end(run, plan, TrialState.PRUNED, None, _pruning(result), **facts))
    if isinstance(result, Crashed):
        return _crashed(run, plan, result.error, facts)
    if isinstance(result, TimedOut):
        return Step(end(run, plan, TrialState.FAIL, None, Failure(result.error, record.TIMEOUT), **facts))
    if isinstance(result, Failed):
        return Step(end(run, plan, TrialState.FAIL, None, Failure(result.error, None, result.traceback), **facts))
    assert isinstance(result, Completed)
    value, problem = _value(result, run, plan)
    if problem is not None:
        return Step(end(run, plan, TrialState.FAIL, None, Failure(problem), **facts))
    return Step(end(run, plan, TrialState.COMPLETE, value, None, **facts))


def on_deadline(run: Run, plan: Plan, now: float) -> Step:
    """The trial outlived trial_timeout and did not stop itself (a hung worker): kill it."""
    limit = plan.spec.trial_timeout or 0
    return Step(end(run, plan, TrialState.FAIL, None, Failure(timeout_reason(limit), record.TIMEOUT), now),
                stop=True)


def on_abort(run: Run, plan: Plan, reason: str, now: float) -> Ending:
    """The study stops while the trial runs: it fails, uncounted, and runs again at resume.

    Its epochs so far are diagnosed as any failed trial's: ``failed`` with the reason, unless they show more.
    """
    return end(run, plan, TrialState.FAIL, None, Failure(reason, record.INTERRUPTED), now)


def past_deadline(run: Run, plan: Plan, now: float, grace: float) -> bool:
    limit = plan.spec.trial_timeout
    return limit is not None and now - run.started > limit + grace


def starves_the_pruner(run: Run, ended: Ended, plan: Plan) -> bool:
    """A trial that completed without one per-epoch value: a pruner with nothing to read would never prune.

    Not for an Optuna objective(trial): reporting is its choice there, and one that never calls trial.report is
    never pruned, as in Optuna.
    """
    if plan.spec.pruner.type == "none" or not isinstance(ended.result, Completed):
        return False
    if plan.define_by_run:
        return False
    return not any(metrics.score(r, plan.spec.objective) is not None for r in run.rows)


def reaches_target(ending: Ending, plan: Plan) -> bool:
    """Whether a trial's end reaches `objective.target`: a feasible COMPLETE trial at or beyond it."""
    feasible = ending.constraint is None or ending.constraint <= 0
    return ending.state == TrialState.COMPLETE and feasible and meets_target(ending.value, plan.spec)


def meets_target(value: float | None, spec: Any) -> bool:
    target = spec.objective.target
    if target is None or value is None:
        return False
    return value <= target if spec.direction == "minimize" else value >= target


# ---------------------------------------------------------------------- the ending and its facts


def end(
    run: Run, plan: Plan, state: TrialState, value: Value, why: Why, now: float | None = None, *,
    wall: float = 0.0, device: str = "", node: str = "", waits: Sequence[float] = (),
) -> Ending:
    """The trial's Ending, with what its rows add up to and what it cost.

    A COMPLETE trial without a finite value (an early stop whose every epoch
    diverged) ends FAIL: Optuna takes no NaN as a completed value.
    """
    spec = plan.spec
    if state == TrialState.COMPLETE and not _finite(value):
        state, why = TrialState.FAIL, Failure(f"no finite value of {spec.objective.metric} in any epoch")
    wall = wall or (now - run.started if now is not None else 0.0)
    device = device or (run.rows[-1].get("device", "cpu") if run.rows else "cpu")
    failed = (getattr(why, "reason", None) or "no reason recorded") if state == TrialState.FAIL else None
    facts: dict[str, Any] = {
        **_rows_summary(run, plan, failed),
        "wall_seconds": round(wall, 3),
        "device": device,
        "gpu_seconds": round(wall * spec.resources.gpu, 3) if str(device).startswith("cuda") else 0.0,
    }
    if node:
        facts["node"] = node
    if waits:  # how long the worker waited for each verdict, to see what waiting costs
        facts[record.VERDICT_WAITS] = [round(w * 1000, 1) for w in waits]
    constraint = None
    if state == TrialState.COMPLETE and spec.objective.max_gap is not None:
        gap = metrics.gap_at_best(run.rows, spec.objective, spec.direction)
        constraint = (gap if gap is not None else math.inf) - spec.objective.max_gap
    return Ending(state, value, why, facts, constraint)


def _finite(value: Value) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(v is not None and math.isfinite(v) for v in values)


def _rows_summary(run: Run, plan: Plan, failed: str | None = None) -> dict[str, Any]:
    spec = plan.spec
    return {**metrics.trial_summary(run.rows, spec.objective, spec.direction),
            **diagnosis.diagnose(run.rows, spec.diagnostics, failed).as_attrs()}


def _pruning(result: Pruned) -> Pruning:
    finding = result.finding
    if finding is None:
        return Pruning("workload", "the workload raised optuna.TrialPruned")
    return Pruning(f"diagnostics:{finding['kind']}", f"{finding['kind']} at epoch {finding['epoch']}: "
                   f"{finding['detail']}", epoch=finding["epoch"], values=finding["values"])


def _crashed(run: Run, plan: Plan, error: str, facts: dict[str, Any]) -> Step:
    """The worker died: the same params run again, up to `retries` times."""
    if run.attempt > plan.spec.retries:
        why = Failure(f"{error} (attempt {run.attempt}, no retries left)", record.WORKER_DIED)
        return Step(end(run, plan, TrialState.FAIL, None, why, **facts))
    why = Failure(f"{error}; retrying with the same params", record.RETRIED)
    return Step(end(run, plan, TrialState.FAIL, None, why, **facts),
                retry=Retry(dict(run.params), run.attempt + 1, run.number))


def _value(result: Completed, run: Run, plan: Plan) -> tuple[Value, str | None]:
    """The trial's objective value (a list of them for several objectives), or why it has none."""
    spec = plan.spec
    if spec.multi_objective:
        if result.value is not None:
            return None, (f"the workload returned one value, but the study has {len(spec.objectives)} objectives, "
                          f"read from what it reports. Fix: return None and call report(epoch, "
                          f"{', '.join(f'{m}=...' for m in spec.metric_names if m != 'seconds')}) each epoch.")
        return _values(run.rows, plan)
    metric = spec.objective.metric
    value = result.value
    if value is None:
        value = metrics.objective_value(run.rows, spec.objective, spec.direction)
    if value is None and plan.define_by_run:  # Optuna's objective(trial): its fix is in Optuna's words
        return None, ("the objective(trial) returned None and never called trial.report(value, step), so the "
                      "trial has no value. Fix: return the value from the objective (e.g. `return accuracy`), "
                      "or call trial.report(value, step) each step.")
    if value is None:
        return None, (f"the workload returned no value and never reported {metric!r}: "
                      f"{what_it_reported(run.rows, metric)}. Fix: call report(epoch, {metric}=...) each epoch, "
                      "or return the value.")
    if not math.isfinite(value):
        return None, f"the objective {metric} is {value} (the run diverged)"
    return value, None


def _values(rows: Sequence[dict[str, Any]], plan: Plan, mode: str | None = None) -> tuple[Value, str | None]:
    """A multi-objective trial's values, all from the epoch the first objective keeps, or why it has none."""
    spec = plan.spec
    values = metrics.objective_values(rows, spec.objectives, mode)
    first = spec.objective.metric
    if not values:
        return None, (f"the workload never reported {first!r}, the first objective: "
                      f"{what_it_reported(rows, first)}. Fix: call report(epoch, {first}=...) each epoch.")
    for metric, value in zip(spec.metric_names, values):
        if value is None:
            return None, (f"the workload did not report {metric!r} at the epoch the first objective ({first}) "
                          f"keeps. Fix: call report(epoch, {metric}=...) every epoch.")
        if not math.isfinite(value):
            return None, f"the objective {metric} is {value} (the run diverged)"
    return values, None
