"""Optuna's define-by-run ``objective(trial)`` run as it is: the driver's side.

``tuner.launch(objective=objective, n_trials=..., direction=...)`` takes the
objective an Optuna user hands to ``study.optimize``. Its search space is
whatever it asks for: each trial runs on a worker with a
:class:`~tuner.trial.optuna_trial.RemoteTrial`, whose ``suggest_*`` calls
arrive here as :class:`~tuner.trial.messages.Call` events and are answered by
the real Optuna ``Trial`` that ``study.ask()`` made for it, so the study's
sampler draws them and they are stored as Optuna's own params.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import optuna

from tuner.errors import TunerError
from tuner.recorder import outage_cause
from tuner.trial.messages import Call
from tuner.trial.optuna_trial import CALLS, SUGGESTS, OptunaObjective

# What trial.report's value is recorded as when the launch names no metric (Optuna's name for a trial's value).
METRIC = "value"


def takes_trial(objective: Callable[..., Any]) -> bool:
    """Whether ``objective`` is Optuna's shape ``objective(trial)`` rather than tuner's ``train(params, report)``:
    it takes one argument and not two, or its first argument is named ``trial``."""
    try:
        signature = inspect.signature(objective)
    except (TypeError, ValueError):  # a builtin with no signature: tuner's shape, as before
        return False
    first = next(iter(signature.parameters.values()), None)
    if first is not None and first.name == "trial" and first.kind != inspect.Parameter.KEYWORD_ONLY:
        return True
    try:
        signature.bind(None, None)
        return False
    except TypeError:
        pass
    try:
        signature.bind(None)
        return True
    except TypeError:
        return False


def wrap(objective: Callable[..., Any], metric: str) -> OptunaObjective:
    """The workload a worker runs for ``objective(trial)``; ``trial.report``'s value is recorded as ``metric``."""
    return OptunaObjective(objective, metric)


def answer(trial: optuna.Trial, call: Call) -> tuple[Any, ...]:
    """Carry out a worker's call on the trial's Optuna ``Trial``: its reply (see tuner.trial.worker.Ask).

    Optuna's own errors (a bad range, a distribution that changed) go back to
    the worker, which raises them in the objective; a lost database is raised
    here, for the recorder to wait out.
    """
    if call.method not in CALLS:
        return ("error", "AttributeError", f"trial.{call.method} cannot be called from a worker")
    try:
        return ("value", getattr(trial, call.method)(*call.args, **call.kwargs))
    except Exception as exc:
        if outage_cause(exc) is not None:
            raise
        return ("error", type(exc).__name__, str(exc))


def suggested(call: Call, reply: tuple[Any, ...]) -> tuple[str, Any] | None:
    """The param a call drew (its name and value), or None for any other call."""
    if call.method in SUGGESTS and reply[0] == "value":
        return call.args[0], reply[1]
    return None


# Optuna's samplers as tuner's strategies, for the fix a sampler object gets.
_STRATEGY_OF = {"TPESampler": "tpe", "GPSampler": "gp", "RandomSampler": "random", "CmaEsSampler": "cmaes",
                "QMCSampler": "qmc", "GridSampler": "grid"}


def create_study_keywords(overrides: dict[str, Any]) -> dict[str, Any]:
    """``optuna.create_study``'s keywords as tuner's: ``study_name=`` names the study; a sampler or pruner object
    is refused with the name that builds it (tuner saves a study's settings with it, to resume it)."""
    out = dict(overrides)
    if "study_name" in out and "name" not in out:
        out["name"] = out.pop("study_name")
    if "directions" in out:
        raise TunerError(
            f"directions=: an Optuna objective(trial) run by tuner returns one value, so its study has one "
            f"direction, but got directions={out['directions']!r}. Fix: direction='minimize' (or 'maximize') and "
            "return one number; for a Pareto front, write train(params, report) with a spec whose objective: is "
            "a list (README: Several objectives)."
        )
    sampler = out.get("sampler")
    if sampler is not None:
        kind = type(sampler).__name__
        strategy = _STRATEGY_OF.get(kind)
        raise TunerError(
            f"sampler=: tuner builds the study's sampler from strategy= and seed=, so that it can save and "
            f"resume it, but got a {kind} object. Fix: "
            + (f"strategy={strategy!r}" if strategy else "strategy='tpe' (or gp, random, cmaes, qmc)")
            + " and seed=N in its place."
        )
    pruner = out.get("pruner")
    if isinstance(pruner, optuna.pruners.BasePruner):
        kind = type(pruner).__name__
        named = {"MedianPruner": "median", "PercentilePruner": "percentile", "SuccessiveHalvingPruner":
                 "successive_halving", "HyperbandPruner": "hyperband", "ThresholdPruner": "threshold",
                 "NopPruner": "none"}.get(kind, "median")
        raise TunerError(
            f"pruner=: tuner builds the study's pruner from its name and options, so that it can save and "
            f"resume it, but got a {kind} object. Fix: pruner={named!r}, or with options "
            f"pruner={{'type': {named!r}, ...}} (e.g. 'n_warmup_steps': 5: the object's own keywords)."
        )
    return out
