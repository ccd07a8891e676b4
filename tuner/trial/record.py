"""What tuner keeps on a trial beyond Optuna's state and value, as types.

A trial's end is written as Optuna user attributes (the dashboard and the
``optuna`` CLI show them). The names live here once: the lifecycle builds
these records, the recorder writes ``attrs()``, and readers (``tuner show``,
the report, the dashboard notes) read the same keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from optuna.trial import FrozenTrial, TrialState

# Keys of a trial's user attributes.
FAIL_REASON, FAIL_KIND, FAIL_TRACEBACK = "fail_reason", "fail_kind", "fail_traceback"
PRUNE_RULE, PRUNE_EPOCH, PRUNE_VALUES, PRUNE_REASON = "prune_rule", "prune_epoch", "prune_values", "prune_reason"
EARLY_STOPPED, STOP_REASON = "early_stopped", "stop_reason"
ATTEMPT, RETRY_OF, WARM_START = "attempt", "retry_of", "warm_start"
VERDICT_WAITS = "verdict_waits_ms"  # per verdict the worker waited for: milliseconds

# Why a FAIL happened, where the reason is not the configuration's.
TIMEOUT = "timeout"  # ran past trial_timeout: counted (the configuration is too slow)
WORKER_DIED = "worker_died"  # died and no retries were left: counted
INTERRUPTED = "interrupted"  # the study stopped while it ran: not counted, its params run again at resume
RETRIED = "retried"  # the worker died and the params were queued again: not counted
NOT_COUNTED = (INTERRUPTED, RETRIED)

# A failed trial keeps the end of its workload's traceback (an attribute: bounded).
MAX_TRACEBACK_CHARS = 8000


@dataclass(frozen=True)
class Failure:
    """Why a trial has no value."""

    reason: str
    kind: str | None = None  # one of the kinds above; None: the workload's own error
    traceback: str | None = None

    def attrs(self) -> dict[str, Any]:
        out: dict[str, Any] = {FAIL_REASON: self.reason}
        if self.kind is not None:
            out[FAIL_KIND] = self.kind
        if self.traceback:
            out[FAIL_TRACEBACK] = self.traceback[-MAX_TRACEBACK_CHARS:]
        return out

    @property
    def counted(self) -> bool:
        return self.kind not in NOT_COUNTED


@dataclass(frozen=True)
class Pruning:
    """Why a trial was stopped as a bad one: an Optuna pruner, the diagnostics, or the workload itself."""

    rule: str  # "median", "diagnostics:diverged", "workload", ...
    reason: str
    epoch: int | None = None
    values: Mapping[str, Any] = field(default_factory=dict)

    def attrs(self) -> dict[str, Any]:
        out: dict[str, Any] = {PRUNE_RULE: self.rule, PRUNE_REASON: self.reason}
        if self.epoch is not None:
            out[PRUNE_EPOCH] = self.epoch
            out[PRUNE_VALUES] = dict(self.values)
        return out


@dataclass(frozen=True)
class EarlyStop:
    """Why a trial completed before its last epoch: its objective stopped improving."""

    reason: str

    def attrs(self) -> dict[str, Any]:
        return {EARLY_STOPPED: True, STOP_REASON: self.reason}


Why = Union[Failure, Pruning, EarlyStop, None]


@dataclass(frozen=True)
class Ending:
    """How a trial ends: its Optuna state and value, why, and what it cost (``facts``)."""

    state: TrialState
    value: float | list[float] | None = None  # one per objective in a multi-objective study
    why: Why = None
    facts: Mapping[str, Any] = field(default_factory=dict)  # summary, diagnosis, wall/GPU seconds, device, node
    constraint: float | None = None  # Optuna constraint "gap" (feasible when <= 0), for `max_gap`

    def attrs(self) -> dict[str, Any]:
        return {**self.facts, **(self.why.attrs() if self.why is not None else {})}

    @property
    def counted(self) -> bool:
        """Whether it uses up a trial of the budget (interrupted and retried trials do not)."""
        return not isinstance(self.why, Failure) or self.why.counted

    @property
    def ends_early(self) -> bool:
        """Whether rows that arrive after it are late ones, to be dropped."""
        return self.state != TrialState.COMPLETE or isinstance(self.why, EarlyStop)


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Whether a stored trial uses up the study's budget: finished or running, but not interrupted or retried."""
    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get(FAIL_KIND) not in NOT_COUNTED
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def why_stopped(attrs: Mapping[str, Any]) -> str:
    """Why a trial ended before its budget, from its user attrs: pruned, failed or early-stopped; else ""."""
    return attrs.get(PRUNE_REASON) or attrs.get(FAIL_REASON) or attrs.get(STOP_REASON) or ""
