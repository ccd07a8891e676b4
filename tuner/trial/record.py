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

# What a failed trial keeps in its attributes, which tables and messages show: a reason of at most
# MAX_REASON_CHARS and a traceback of at most MAX_TRACEBACK_CHARS (its start and its end). Where either is
# longer, the whole text is kept as the trial's artifact, named by FAIL_TEXT.
MAX_REASON_CHARS = 1000
MAX_TRACEBACK_CHARS = 8000
FAIL_TEXT = "fail_text"  # {artifact_id, path, chars}: the whole reason and traceback, as a text file
FAIL_TEXT_FILENAME = "failure.txt"


@dataclass(frozen=True)
class Failure:
    """Why a trial has no value."""

    reason: str
    kind: str | None = None  # one of the kinds above; None: the workload's own error
    traceback: str | None = None
    whole_text: Mapping[str, Any] | None = None  # where the whole text was kept, when it is too long to show

    @property
    def too_long(self) -> bool:
        """Whether the reason or the traceback is cut in the attributes (and its whole text worth keeping)."""
        return len(self.reason) > MAX_REASON_CHARS or len(self.traceback or "") > MAX_TRACEBACK_CHARS

    @property
    def text(self) -> str:
        """The whole reason and traceback, as one text."""
        return self.reason + (f"\n\n{self.traceback}" if self.traceback else "")

    @property
    def shown_reason(self) -> str:
        """The reason as the attributes keep it and messages show it: cut past MAX_REASON_CHARS."""
        if len(self.reason) <= MAX_REASON_CHARS:
            return self.reason
        cut = f" ... [cut at {MAX_REASON_CHARS} of {len(self.reason)} characters{self._where()}]"
        return self.reason[:MAX_REASON_CHARS] + cut

    def attrs(self) -> dict[str, Any]:
        out: dict[str, Any] = {FAIL_REASON: self.shown_reason}
        if self.kind is not None:
            out[FAIL_KIND] = self.kind
        if self.traceback:
            out[FAIL_TRACEBACK] = self._shown_traceback()
        if self.whole_text is not None:
            out[FAIL_TEXT] = dict(self.whole_text)
        return out

    def _shown_traceback(self) -> str:
        """Its start (where it was raised from) and its end (the innermost frames and the error)."""
        text = self.traceback or ""
        if len(text) <= MAX_TRACEBACK_CHARS:
            return text
        head, tail = MAX_TRACEBACK_CHARS // 4, MAX_TRACEBACK_CHARS * 3 // 4
        return f"{text[:head]}\n... [{len(text) - head - tail} characters cut{self._where()}] ...\n{text[-tail:]}"

    def _where(self) -> str:
        if self.whole_text is None:
            return ""
        if "path" in self.whole_text:
            return f"; the whole text: {self.whole_text['path']}"
        return f"; the whole text could not be kept: {self.whole_text.get('error', '')}"

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
