"""What passes between the driver and a worker: the job, the events, the outcomes.

Small frozen dataclasses with no I/O, importable on a Ray worker. An executor's
``poll()`` returns :data:`Event` values; the driver answers none of them by
calling back: it decides (tuner/lifecycle.py), writes (tuner/recorder.py) and
tells the executor which trials to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from tuner.trial.checkpoint import Checkpoint

# Checkpoints travel at most this often (seconds), and the driver reads what
# workers delivered this often: cheap to record, and still live enough for the
# dashboard. Each epoch's row leaves its worker as it is reported.
FLUSH_SECONDS = 0.5
# Marks a copy of a delivered row that comes again to bring its checkpoint: the driver takes the checkpoint only.
RESENT = "_resent"


@dataclass(frozen=True)
class Scoring:
    """How an epoch is scored against the objective (what :func:`tuner.trial.metrics.score` reads): the
    spec's objective without the spec, so that a worker never imports it."""

    metric: str
    resolved_direction: str
    gap_penalty: float = 0.0

    @classmethod
    def of(cls, objective: Any) -> Scoring:
        return cls(objective.metric, objective.resolved_direction, objective.gap_penalty)


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
    timeout: float | None = None  # trial_timeout, enforced where a signal can reach the workload
    # Where the driver may stop the trial (a pruner's rungs, early stopping's epochs): there the
    # worker waits for its verdict, so that no epoch runs after a stop. Elsewhere it does not wait.
    wait_at: tuple[int, ...] = ()
    wait_from: int | None = None  # and at every epoch from this one on
    # The last checkpoint of the trial this one runs again (its worker died): the workload resumes after it.
    restore: Checkpoint | None = None
    # The objective whose best epoch a trial's value may be read at: that epoch's checkpoint travels too.
    # None: the value is the last epoch's, and so is the model.
    objective: Scoring | None = None
    best_score: float | None = None  # the objective at the best epoch ``restore``'s trial kept a checkpoint of

    @property
    def workload_params(self) -> dict[str, Any]:
        return {**self.context, **self.params}

    def waits_at(self, epoch: int) -> bool:
        return epoch in self.wait_at or (self.wait_from is not None and epoch >= self.wait_from)


# ---------------------------------------------------------------------- outcomes: how the worker saw the end


@dataclass(frozen=True)
class Completed:
    """The workload returned; ``value`` is what it returned (None: take it from its reports)."""

    value: float | None = None


@dataclass(frozen=True)
class Pruned:
    """The trial stopped before its budget: ``finding`` is the diagnostics' (diverged, …), None when the
    workload raised optuna.TrialPruned itself or the driver asked it to stop."""

    finding: dict[str, Any] | None = None


@dataclass(frozen=True)
class Failed:
    """The workload raised: its configuration (or code) is at fault."""

    error: str
    traceback: str | None = None


@dataclass(frozen=True)
class Crashed:
    """The worker process or its node died: no fault of the params, worth a retry."""

    error: str


@dataclass(frozen=True)
class TimedOut:
    """The trial ran past its trial_timeout."""

    error: str


Result = Union[Completed, Pruned, Failed, Crashed, TimedOut]


# ---------------------------------------------------------------------- events: what poll() returns


@dataclass(frozen=True)
class Epochs:
    """Epoch rows of running trials, in the order they were reported (each row holds its ``trial_id``)."""

    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class Ended:
    """A trial's worker finished: how, and the rows it had not delivered yet."""

    number: int
    trial_id: int
    result: Result
    rows: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    node: str = ""
    wall_seconds: float = 0.0
    waits: list[float] = field(default_factory=list)  # seconds the worker waited for each verdict


@dataclass(frozen=True)
class Call:
    """A running trial asks the driver to call a method of its Optuna ``Trial`` (an Optuna objective's
    ``suggest_*`` or ``set_user_attr``); the driver replies through the executor (``Executor.reply``)."""

    trial_id: int
    seq: int  # the trial's count of calls: which one a reply answers
    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


Event = Union[Epochs, Ended, Call]
