"""Strategy names -> Optuna samplers, and the spec's params -> Optuna suggestions.

A strategy only proposes configurations: it never imports torch, ray or
sqlalchemy and never knows how a trial runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import optuna

from tuner.spec import PRUNERS, CategoricalParam, FloatParam, IntParam, StudySpec


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``spec.strategy``, seeded with ``spec.seed``."""
    seed = spec.seed
    if spec.strategy == "grid":
        # Every grid point is enqueued up front (see grid_points), so the sampler
        # only answers for params a point leaves out; it is never the one choosing.
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.strategy == "tpe":
        # multivariate + group model the joint and conditional structure of
        # deep-learning spaces (lr x batch size, optimizer -> momentum).
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if spec.strategy == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if spec.strategy == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if spec.strategy == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True)
    raise ValueError(f"unknown strategy {spec.strategy!r}")  # spec validation prevents this


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """Optuna's pruner for ``spec.pruner`` (tuner's diagnostics pruner runs beside it)."""
    return getattr(optuna.pruners, PRUNERS[spec.pruner.type])(**spec.pruner.options)


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Ask the trial for every active param, in file order (define-by-run).

    A param with ``when`` is asked only when its condition holds, so samplers
    see the real conditional structure instead of unused values.
    """
    params: dict[str, Any] = {}
    for name, param in spec.params.items():
        if _active(param, params):
            params[name] = _suggest_one(trial, name, param)
    return params


def _active(param: Any, chosen: dict[str, Any]) -> bool:
    return all(chosen.get(other, _MISSING) == value for other, value in (param.when or {}).items())


_MISSING = object()


def _suggest_one(trial: optuna.Trial, name: str, param: Any) -> Any:
    if isinstance(param, CategoricalParam):
        return trial.suggest_categorical(name, list(param.choices))
    if param.values is not None:
        # An explicit value list is a discrete choice for every strategy.
        return trial.suggest_categorical(name, list(param.values))
    if isinstance(param, IntParam):
        return trial.suggest_int(name, param.low, param.high, step=param.step or 1, log=param.log)
    if isinstance(param, FloatParam):
        return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)
    raise TypeError(f"unknown param type {type(param).__name__}")


def fits(spec: StudySpec, params: Mapping[str, Any]) -> bool:
    """Whether ``params`` is a configuration of ``spec``'s space: every active param, each in its range."""
    chosen: dict[str, Any] = {}
    for name, param in spec.params.items():
        if not _active(param, chosen):
            continue
        if name not in params or not _within(param, params[name]):
            return False
        chosen[name] = params[name]
    return set(params) == set(chosen)


def _within(param: Any, value: Any) -> bool:
    if isinstance(param, CategoricalParam) or param.values is not None:
        return value in param.values
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return param.low <= value <= param.high and (not isinstance(param, IntParam) or float(value).is_integer())


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """Every point of the Cartesian product, conditional params only where active."""
    points = [dict(p) for p in _expand(list(spec.params.items()), {})]
    unique = {point_key(p): p for p in points}
    return list(unique.values())


def point_key(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A hashable identity of a configuration (values of mixed types compared by repr)."""
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def _expand(items: list[tuple[str, Any]], chosen: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if not items:
        yield chosen
        return
    (name, param), rest = items[0], items[1:]
    if not _active(param, chosen):
        yield from _expand(rest, chosen)
        return
    for value in _grid_values(param):
        yield from _expand(rest, {**chosen, name: value})


def _grid_values(param: Any) -> list[Any]:
    if isinstance(param, CategoricalParam):
        return list(param.choices)
    if param.values is not None:
        return list(param.values)
    if isinstance(param, IntParam):
        return list(range(param.low, param.high + 1, param.step or 1))
    raise ValueError("a continuous float has no grid")  # spec validation prevents this


def planned_trials(spec: StudySpec) -> int:
    """How many trials the study runs: `trials`, or the whole grid for grid search."""
    if spec.strategy == "grid":
        size = len(grid_points(spec))
        return min(spec.trials, size) if spec.trials else size
    return spec.trials or 20


def describe(spec: StudySpec) -> str:
    """One line for the launch output."""
    names = {
        "grid": "grid search (every point once)",
        "random": "random search",
        "tpe": "Bayesian optimization, TPE (multivariate)",
        "gp": "Bayesian optimization, Gaussian process",
        "cmaes": "CMA-ES",
        "qmc": "quasi-Monte Carlo (Sobol)",
    }
    return names[spec.strategy]


__all__ = ["make_sampler", "make_pruner", "fits", "point_key", "suggest", "grid_points", "planned_trials", "describe"]
