"""Optuna's define-by-run ``objective(trial)`` run as it is, on the worker's side.

The worker hands the objective a :class:`RemoteTrial`. Each ``suggest_*`` and
``set_user_attr`` travels to the driver over the executor's channel (the one
that carries epoch rows and verdicts) and is answered there by Optuna's real
``Trial`` of the study, so the sampler, its relative and independent sampling
and the params as stored are Optuna's own. ``report(value, step)`` is an epoch
of tuner's (``step`` is the epoch, ``value`` the objective's metric; more
metrics as keywords, e.g. ``train_loss=``, give the diagnostics their input);
``should_prune()`` waits for tuner's scheduler's verdict on the last step
reported; the returned value is the trial's.

Nothing here imports the driver: this module travels to Ray workers.
"""

from __future__ import annotations

import builtins
import datetime
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from tuner.trial.worker import Reporter, StopTrial

# What the worker may ask of the driver's Optuna trial (the suggest_* of Optuna 5.1, deprecated ones included).
SUGGESTS = ("suggest_float", "suggest_int", "suggest_categorical", "suggest_uniform", "suggest_loguniform",
            "suggest_discrete_uniform")
CALLS = (*SUGGESTS, "set_user_attr")


class OptunaObjective:
    """An Optuna ``objective(trial)`` as a tuner workload ``train(params, report)``: it is what a worker runs."""

    def __init__(self, objective: Callable[..., Any], metric: str) -> None:
        self.objective = objective
        self.metric = metric  # what trial.report's value is recorded as: the study's objective metric

    def __call__(self, params: dict[str, Any], report: Reporter) -> Any:
        trial = RemoteTrial(report, params, self.metric)
        try:
            returned = self.objective(trial)
        except optuna.TrialPruned:
            if trial.stopped is not None:  # the objective heard the stop (should_prune): end as the stop says
                raise trial.stopped from None
            raise
        if trial.stopped is not None:  # stopped, yet it ran on to the end: the stop is its end
            raise trial.stopped
        return returned

    def __repr__(self) -> str:
        return f"OptunaObjective({getattr(self.objective, '__qualname__', self.objective)!r})"


def answer_of(reply: tuple[Any, ...]) -> Any:
    """The value a driver's reply carries, or the error it reports raised here (the type Optuna raised, where
    it is a builtin)."""
    kind = reply[0]
    if kind == "value":
        return reply[1]
    if kind == "stop":
        raise StopTrial(reply[1])
    error = getattr(builtins, reply[1], None)
    if not (isinstance(error, type) and issubclass(error, Exception)):
        error = RuntimeError
    raise error(reply[2])


class RemoteTrial:
    """What ``objective(trial)`` gets on a worker: Optuna's ``Trial`` API, answered by the driver.

    Supported: ``suggest_float``, ``suggest_int``, ``suggest_categorical`` (and
    Optuna's deprecated ``suggest_uniform``, ``suggest_loguniform``,
    ``suggest_discrete_uniform``), ``report``, ``should_prune``,
    ``set_user_attr``, ``user_attrs``, ``params``, ``number`` and
    ``datetime_start``. ``report`` also takes tuner's metrics as keywords
    (``trial.report(acc, epoch, train_loss=tl, val_loss=vl)``) and a
    ``checkpoint=``, as tuner's ``report(epoch, ...)`` does.
    """

    def __init__(self, report: Reporter, context: dict[str, Any], metric: str) -> None:
        self._report = report
        self._metric = metric
        self._params: dict[str, Any] = {}
        self._user_attrs: dict[str, Any] = {}
        self._steps: set[int] = set()
        # Why the trial must stop (the driver's scheduler, or the worker's diagnostics), once known: Optuna's
        # report never raises, so the objective hears it from should_prune.
        self.stopped: StopTrial | None = None
        self.context = dict(context)  # tuner's keys: epochs, seed, data and the spec's fixed ones
        self.datetime_start = datetime.datetime.now()

    @property
    def number(self) -> int:
        return self._report.job.number

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._params)

    @property
    def user_attrs(self) -> dict[str, Any]:
        return dict(self._user_attrs)

    # ------------------------------------------------------------------ suggestions: asked of the driver

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return self._suggest("suggest_float", name, (low, high), {"step": step, "log": log})

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._suggest("suggest_int", name, (low, high), {"step": step, "log": log})

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._suggest("suggest_categorical", name, (list(choices),), {})

    def suggest_uniform(self, name: str, low: float, high: float) -> float:
        return self._suggest("suggest_uniform", name, (low, high), {})

    def suggest_loguniform(self, name: str, low: float, high: float) -> float:
        return self._suggest("suggest_loguniform", name, (low, high), {})

    def suggest_discrete_uniform(self, name: str, low: float, high: float, q: float) -> float:
        return self._suggest("suggest_discrete_uniform", name, (low, high, q), {})

    def _suggest(self, method: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        value = self._ask(method, (name, *args), kwargs)
        self._params[name] = value
        return value

    def set_user_attr(self, key: str, value: Any) -> None:
        self._ask("set_user_attr", (key, value), {})
        self._user_attrs[key] = value

    def _ask(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        ask = self._report.ask
        if ask is None:
            raise RuntimeError(f"trial.{method}: this trial has no channel to the driver's study")
        return answer_of(ask(method, args, kwargs))

    # ------------------------------------------------------------------ pruning: tuner's epochs and scheduler

    def report(self, value: float, step: int, checkpoint: Any = None, **metrics: Any) -> None:
        """Optuna's ``report``: ``value`` at ``step``, an epoch of tuner's (a step reported twice keeps its first)."""
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"trial.report: the value must be a float, but got {value!r}") from None
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"trial.report: the step must be an int, but got {step!r}")
        if step < 0:
            raise ValueError(f"trial.report: the step must be 0 or more, but got {step}. Fix: count steps 0, 1, "
                             "2, ... (e.g. the epoch).")
        if step in self._steps:
            warnings.warn(f"The reported value is ignored because this `step` {step} is already reported.",
                          stacklevel=2)
            return
        if self.stopped is not None:  # the objective went on past a stop should_prune said: it ends now
            raise self.stopped
        self._steps.add(step)
        try:
            self._report(step, checkpoint=checkpoint, **{**metrics, self._metric: value})
        except StopTrial as stop:
            self.stopped = stop

    def should_prune(self) -> bool:
        """Whether tuner's scheduler (the study's pruner, early stopping) ends the trial at the last step reported.

        Asked of the driver, which answers once it has recorded and judged that step.
        """
        if self.stopped is None:
            try:
                self._report.flush(wait=True)
            except StopTrial as stop:
                self.stopped = stop
        return self.stopped is not None

    # ------------------------------------------------------------------ what a worker cannot have

    @property
    def study(self) -> Any:
        raise AttributeError("trial.study: the study lives in the driver, not on the worker that runs the trial. "
                             "Fix: read what the objective needs before launch, or use trial.user_attrs.")

    def set_system_attr(self, key: str, value: Any) -> None:
        raise AttributeError("trial.set_system_attr was removed from Optuna; use trial.set_user_attr.")

