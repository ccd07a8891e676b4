"""Strategy names -> Optuna samplers, and the spec's params -> Optuna suggestions.

A strategy only proposes configurations: it never imports torch, ray or
sqlalchemy and never knows how a trial runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.spec import (
    GP_MAX_POINTS, MAX_GRID_POINTS, CategoricalParam, FloatParam, IntParam, StudySpec, enumerated_by_gp, pruner_class,
)


def make_sampler(spec: StudySpec, strategy: str | None = None, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``strategy`` (default: ``spec.strategy``, ``auto`` resolved), seeded with
    ``seed`` (default: ``spec.seed``)."""
    seed = spec.seed if seed is None else seed
    strategy = strategy or resolved(spec)
    if strategy == "grid":
        # Every grid point is enqueued up front (see grid_points), so the sampler
        # only answers for params a point leaves out; it is never the one choosing.
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "tpe":
        # multivariate + group model the joint and conditional structure of
        # deep-learning spaces (lr x batch size, optimizer -> momentum).
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if strategy == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if strategy == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if strategy == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True)
    raise ValueError(f"unknown strategy {strategy!r}")  # spec validation prevents this


def session_sampler(spec: StudySpec, strategy: str | None = None) -> optuna.samplers.BaseSampler:
    """The sampler one session of a study (a launch, a resume) asks with: ``make_sampler``'s, seeded from the
    spec's seed and the number of the first trial the session samples params for (see :class:`SessionSampler`).

    Without a seed every session draws its own anyway; QMC keeps the spec's
    seed, as it continues one scrambled sequence from the study's trials.
    """
    strategy = strategy or resolved(spec)
    if spec.seed is None or strategy == "qmc":
        return make_sampler(spec, strategy)
    return SessionSampler(lambda seed: make_sampler(spec, strategy, seed), spec.seed)


def session_seed(seed: int, first_trial: int) -> int:
    """The seed of a session whose first sampled trial is number ``first_trial``: ``seed`` itself for trial 0
    (a launch), else one derived from both."""
    if first_trial == 0:
        return seed
    return int(np.random.SeedSequence([seed, first_trial]).generate_state(1)[0])


class SessionSampler(optuna.samplers.BaseSampler):
    """A sampler seeded, once, when its session first samples: from the spec's seed and that trial's number.

    A study's trial numbers are handed out once each, so every session of a
    study gets a seed of its own: a resume never draws an earlier session's
    configurations again, and orchestrators sharing a study (PostgreSQL,
    `tuner resume` on several machines at once) never draw the same ones, as
    they would from one seed and the same history. One session alone stays
    reproducible: a launch samples trial 0 first (the spec's seed itself), a
    resume the study's next trial. Trials whose params are all fixed (a grid
    point, a run again) sample nothing, so they seed nothing.
    """

    def __init__(self, build: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._build, self._seed = build, seed
        self._sampler = build(seed)  # until the first sampling: before_trial / after_trial need one
        self._seeded = False

    def _seeded_for(self, study: optuna.Study, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        if not self._seeded:
            self._seeded = True
            self._sampler = self._build(session_seed(self._seed, trial.number))
            self._sampler.before_trial(study, trial)
        return self._sampler

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._seeded_for(study, trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._seeded_for(study, trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self._seeded_for(study, trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._sampler.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()

    def __str__(self) -> str:
        return str(self._sampler)


def make_pruner(spec: StudySpec, options: Mapping[str, Any] | None = None) -> optuna.pruners.BasePruner:
    """Optuna's pruner for ``spec.pruner`` with ``options`` (default: the spec's); tuner's diagnostics
    pruner runs beside it, in the worker."""
    return pruner_class(spec.pruner.type)(**(spec.pruner.options if options is None else options))


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
    return [dict(p) for p in _expand(list(spec.params.items()), {})]


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
    for value in grid_values(param):
        yield from _expand(rest, {**chosen, name: value})


def grid_values(param: Any) -> Sequence[Any]:
    """The distinct values a grid tries for ``param``; an int range stays a ``range`` (its len costs nothing)."""
    if isinstance(param, CategoricalParam):
        return param.choices  # distinct: the spec refuses a repeated choice
    if param.values is not None:
        return tuple(dict.fromkeys(param.values))
    if isinstance(param, IntParam):
        return range(param.low, param.high + 1, param.step or 1)
    raise ValueError("a continuous float has no grid")  # spec validation prevents this


def grid_size(spec: StudySpec) -> int | None:
    """How many points :func:`grid_points` lists, counted without listing them.

    Only a param that a later `when` reads splits the count into branches; any
    other multiplies it by its number of values. So the count tracks the values
    of those params that are still read (one state for a space without `when`),
    with the number of grid prefixes that lead to each.

    None for a space with a continuous float, and for one whose conditions
    would make counting take more than MAX_GRID_POINTS steps at one param:
    each step is a different start of a point, so that grid is larger anyway.
    """
    if any(isinstance(p, FloatParam) and p.values is None for p in spec.params.values()):
        return None
    items = list(spec.params.items())
    # read_from[i]: the params that the `when` of param i or a later one names.
    read_from: list[set[str]] = [set() for _ in range(len(items) + 1)]
    for i in reversed(range(len(items))):
        read_from[i] = read_from[i + 1] | set(items[i][1].when or {})
    states: dict[tuple[tuple[str, Any], ...], int] = {(): 1}
    for i, (name, param) in enumerate(items):
        values, kept, steps = grid_values(param), read_from[i + 1], 0
        following: dict[tuple[tuple[str, Any], ...], int] = defaultdict(int)
        for state, count in states.items():
            chosen = dict(state)
            if not _active(param, chosen):
                branches = [(chosen, count)]
            elif name in kept:
                branches = [({**chosen, name: value}, count) for value in values]
            else:
                branches = [(chosen, count * len(values))]
            steps += len(branches)
            if steps > MAX_GRID_POINTS:
                return None
            for branch, n in branches:
                following[tuple((k, v) for k, v in branch.items() if k in kept)] += n
        states = following
    return sum(states.values())


def planned_trials(spec: StudySpec, strategy: str | None = None) -> int:
    """How many trials the study runs: `trials`, or the whole grid for grid search."""
    if (strategy or resolved(spec)) == "grid":
        size = grid_size(spec)
        if size is None:
            raise ValueError("this space has no countable grid")  # spec validation prevents this
        return min(spec.trials, size) if spec.trials else size
    return spec.trials or 20


def grid_cut(spec: StudySpec, strategy: str | None = None) -> str | None:
    """What a grid with fewer trials than points runs; None for a grid that runs every point (or no grid)."""
    strategy = strategy or resolved(spec)
    size = grid_size(spec) if strategy == "grid" else None
    runs = planned_trials(spec, strategy) if size is not None else 0
    if size is None or runs >= size:
        return None
    left = size - runs
    return (f"grid: {size} points, trials: {runs} — runs the first {count(runs, 'point')} in grid order; "
            f"the other {left} {'is' if left == 1 else 'are'} not queued. Fix: --trials {size} or more "
            f"(trials={size} in Python) to run every point.")


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless n is 1: "1 trial", "5 trials"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def describe(spec: StudySpec, choice: Choice | None = None) -> str:
    """One line for the launch output; for ``auto``, what it chose (``choice``, computed if not given) and why."""
    names = {
        "grid": "grid search (every point once)",
        "random": "random search",
        "tpe": "Bayesian optimization, TPE (multivariate)",
        "gp": "Bayesian optimization, Gaussian process",
        "cmaes": "CMA-ES",
        "qmc": "quasi-Monte Carlo (Sobol)",
    }
    if spec.strategy == "grid" and grid_cut(spec, "grid"):
        return f"grid search (the first {planned_trials(spec, 'grid')} of {grid_size(spec)} points, each once)"
    if spec.strategy != "auto":
        return names[spec.strategy]
    choice = choice or choose(spec)
    name = "grid search" if choice.strategy == "grid" else names[choice.strategy]
    return f"auto → {name} ({choice.reason})"


# --------------------------------------------------------------------------- auto
#
# The rule, checked on benchmarks/quality.py (see benchmarks/RESULTS.md,
# "Search quality (issue 7)"), in this order:
#
# 1. grid: the space is finite (no continuous float) and the budget covers
#    every point (of at most MAX_GRID_POINTS, the cap on a queued grid).
#    Trying each point once is then exact; sampling would repeat some and
#    miss others.
# 2. TPE (multivariate, group): some param is conditional (`when`), or more
#    than half the params are categorical. TPE models which params are active
#    and categorical choices natively; Optuna's GP models only the params every
#    trial has and samples the rest at random.
# 3. GP: a numeric-heavy space and at most GP_MAX_TRIALS trials, unless a discrete
#    param has more than GP_MAX_POINTS values (Optuna's GPSampler lists them all
#    each trial: an int range of 2**53 is a MemoryError), where TPE runs instead.
# 4. TPE otherwise: a GP's cost per trial grows with the trials it has seen
#    (cubically in the kernel solve), TPE's stays small. Optuna's own
#    AutoSampler (optunahub samplers/auto_sampler) draws the line at 250;
#    100 keeps asks short on a CPU (a 60-trial BBOB study's 60 GP asks took
#    5.5 CPU seconds in all here).
#
# The evidence (quality.py, 2026-12-01, 3 seeds, 32 tasks: 15 BBOB 5-D at 60
# evaluations, 16 scikit-learn tunings at 32, MNIST-1D at 12), as median
# Bayesmark-normalized scores (100 = optimum, 0 = random search): Optuna's GP
# 95.2 over its 31 tasks, TPE 83.3, CMA-ES 63.9, random 19.4; GP was best or
# tied on 18 of 31 and beat TPE on 16 (TPE beat it on 11: Rastrigin f15,
# MLP-digits, ...), CMA-ES won two SVM tasks and f6. No feature of the spec told
# those tasks apart (MLP-digits and MLP-diabetes share a space; GP wins one,
# TPE the other), so rule 3 stays GP. Rules 1, 2 (categorical share) and 4
# had no task in the suite: they rest on the reasons given with them.
# A budget-sized random start-up (params + 1 trials instead of Optuna's 10)
# was tried and left out: it won 11.5 of 29 tasks against Optuna's default,
# overall median 93.3 against 94.3.
#
# The choice is a function of the spec alone (not of trial results), so a
# spec and seed always give the same sampler, also on `tuner resume` (where
# a raised `trials` may move it, e.g. from GP to a grid the budget now covers).

# The budget auto plans for when a spec names no `trials` (planned_trials' default).
DEFAULT_TRIALS = 20
# Beyond this many trials auto leaves GP for TPE (see rule 4).
GP_MAX_TRIALS = 100


@dataclass(frozen=True)
class SpaceProfile:
    """The shape of a search space, as auto sees it."""

    continuous: int  # floats without `values`
    ints: int  # int ranges without `values`
    categorical: int  # categoricals and `values` lists
    conditional: int  # params with `when`
    grid_size: int | None  # points of the grid (grid_size); None when continuous or past counting

    @property
    def total(self) -> int:
        return self.continuous + self.ints + self.categorical

    def __str__(self) -> str:
        kinds = [(self.continuous, "continuous"), (self.ints, "int"), (self.categorical, "categorical")]
        parts = [f"{n} {kind}" for n, kind in kinds if n]
        text = (", ".join(parts[:-1]) + " and " + parts[-1]) if len(parts) > 1 else parts[0]
        text += " param" if self.total == 1 else " params"
        return text + (f", {self.conditional} conditional" if self.conditional else "")


@dataclass(frozen=True)
class Choice:
    """What ``auto`` resolves to (a strategy name) and the reason the launch output gives."""

    strategy: str
    reason: str


def profile(spec: StudySpec) -> SpaceProfile:
    """Count the kinds of params in ``spec`` and, for a finite space, its grid points."""
    params = list(spec.params.values())
    continuous = sum(isinstance(p, FloatParam) and p.values is None for p in params)
    ints = sum(isinstance(p, IntParam) and p.values is None for p in params)
    return SpaceProfile(
        continuous=continuous,
        ints=ints,
        categorical=len(params) - continuous - ints,
        conditional=sum(bool(p.when) for p in params),
        grid_size=grid_size(spec),
    )


def choose(spec: StudySpec) -> Choice:
    """The strategy ``auto`` runs for ``spec``: grid, TPE or GP, by the rule above."""
    budget = spec.trials or DEFAULT_TRIALS
    if not spec.params:  # an Optuna objective(trial): its space is known only as its trials ask
        return Choice("tpe", f"{count(budget, 'trial')} of an objective(trial) that asks for its params as it "
                             "runs: TPE (multivariate, grouped) models the params each trial asks for, "
                             "conditional ones included")
    space = profile(spec)
    over = f"{count(budget, 'trial')} over {space}"
    # A grid is queued whole before it runs, so not even a budget that covers it makes one past the cap.
    if space.grid_size is not None and space.grid_size <= min(budget, MAX_GRID_POINTS):
        return Choice("grid", f"{count(space.grid_size, 'point')} over {space}, within the budget of "
                              f"{count(budget, 'trial')}: each runs once instead of sampling with repeats")
    if spec.multi_objective:
        return Choice("tpe", f"{over}, {len(spec.objectives)} objectives: TPE models several objectives "
                             "natively (MOTPE), its cost per trial stays small as the Pareto front grows")
    if space.conditional:
        return Choice("tpe", f"{over}: TPE models which params are active; GP would sample "
                             "the conditional ones at random")
    if 2 * space.categorical > space.total:
        return Choice("tpe", f"{over}: mostly categorical, which TPE models directly")
    too_many = enumerated_by_gp(spec)
    if too_many:
        name, points = too_many[0]
        many = f"{points:,}" if points is not None else "countless"
        return Choice("tpe", f"{over}: {name} has {many} values, more than GP enumerates each trial "
                             f"({GP_MAX_POINTS:,}); TPE samples a range of any size")
    if budget <= GP_MAX_TRIALS:
        return Choice("gp", f"{over}: GP is the most sample-efficient at small budgets")
    return Choice("tpe", f"{over}: above {GP_MAX_TRIALS} trials a GP's cost per trial grows "
                         "too large, TPE's stays small")


def resolved(spec: StudySpec) -> str:
    """The strategy that actually runs: ``spec.strategy``, or what ``auto`` chose."""
    return choose(spec).strategy if spec.strategy == "auto" else spec.strategy


__all__ = ["make_sampler", "session_sampler", "session_seed", "SessionSampler",
           "make_pruner", "fits", "point_key", "suggest", "grid_points", "grid_size", "grid_values",
           "planned_trials", "grid_cut", "count", "describe", "choose", "resolved", "profile", "Choice", "SpaceProfile"]
