"""Search-space files: YAML -> a frozen, validated :class:`StudySpec`.

All checks on user input live here, so that nothing reaches the store or a
worker unless it is valid. Validation is done by pydantic models; their errors
are rewritten into messages that name the field, the rule, the value and the
fix (pydantic's own wording names types, not fixes).
"""

from __future__ import annotations

import difflib
import heapq
import itertools
import math
import os
import re
import reprlib
import threading
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from tuner.trial.diagnosis import Thresholds
from tuner.errors import SpecError
from tuner.trial.worker import is_path, resolve

# `auto` (the default) picks among the others from the space and the budget (strategies.choose).
STRATEGIES = ("grid", "random", "tpe", "gp", "cmaes", "qmc", "auto")
# Names users give these strategies (the method's, another library's), for "did you mean":
# difflib would answer "bayes" with cmaes, which shares letters but not meaning.
STRATEGY_SYNONYMS = {
    **dict.fromkeys(("bayes", "bayesian", "bayesian_optimization", "bo", "optuna", "smbo"), ("tpe", "gp")),
    "hyperopt": ("tpe",), "tree_parzen": ("tpe",), "gaussian_process": ("gp",), "bayesian_gp": ("gp",),
    **dict.fromkeys(("sobol", "halton", "quasi_random", "quasirandom", "lhs"), ("qmc",)),
    **dict.fromkeys(("evolution", "evolutionary", "cma", "cma_es", "es"), ("cmaes",)),
    "grid_search": ("grid",), "gridsearch": ("grid",), "random_search": ("random",), "randomsearch": ("random",),
}
BUILTIN_WORKLOADS = {"mlp": "workers.mlp:train", "cnn": "workers.cnn:train"}
DATASETS = ("mnist1d", "digits", "wine", "breast_cancer", "iris")
BUILTIN_METRICS = ("val_loss", "val_acc", "train_loss", "train_acc", "gap_loss", "gap_acc")
# What a trial costs, as a further objective of a multi-objective study (trial/metrics.py reads it):
# seconds of training up to the epoch the trial keeps, and the model's size (the built-in workloads
# report n_params, its trainable parameters, every epoch).
COST_METRICS = ("seconds", "n_params")
# Strategies whose Optuna sampler takes one objective only (CmaEsSampler raises on several).
SINGLE_OBJECTIVE_STRATEGIES = ("cmaes",)
# Marks a spec whose workload is a callable given to the Python API.
CALLABLE_PREFIX = "callable:"
# ... of an Optuna objective(trial), which asks for its params as it runs: its spec has none.
TRIAL_SUFFIX = "(trial)"
# Keys tuner passes to every workload next to the sampled params.
RESERVED_PARAMS = ("epochs", "data", "seed")
# Those that `fixed` must not replace: tuner plans by them (`fixed: {seed: N}` is one training seed for all).
FIXED_RESERVED = ("epochs", "data")
# Study names (and the schedules that launch studies): safe in URLs, file names and shells.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
# ... and short enough for a file name (a schedule's name of 100 plus its firing time fits).
MAX_NAME_LENGTH = 128
# Every grid point is queued in the store before the first trial: a grid larger than this
# is a mistake (an int range left whole), not a study anyone means to run.
MAX_GRID_POINTS = 100_000
# A spec file is a few kilobytes; these bound what a wrong file (a checkpoint, an alias
# bomb: anchors of anchors that expand exponentially) may cost before it is refused.
MAX_SPEC_BYTES = 10 * 2**20
MAX_YAML_VALUES = 100_000
# Messages echo what a user wrote; a value longer than this is cut with "…".
MAX_SHOWN = 80
# A file's path is shown whole up to this length (it is absolute by then, and the end names the file).
MAX_PATH_SHOWN = 400
# Past this many problems a file is likely not a spec at all; the rest are counted, not listed.
MAX_PROBLEMS = 25
# What NumPy's and Optuna's samplers accept as a seed.
MAX_SEED = 2**32 - 1
# Bounds of an int param: samplers compute in float64, which holds every integer up to 2**53.
MAX_INT = 2**53
# Optuna's GPSampler enumerates every value of a discrete param (an int, a float with `step`) each trial.
GP_MAX_POINTS = 10**6
# Optuna stores a param's name in a VARCHAR(512) column (its MAX_INDEXED_STRING_LENGTH).
MAX_PARAM_NAME = 512


def _check_scalar(value: Any) -> Any:
    # Without this, a list or mapping (or NaN) fails each member of the union
    # in turn, and the user reads four type errors instead of one rule.
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, but got {_shown(value)}. Fix: use a finite value.")
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError(
            f"must be a single value (a number, string, true/false or null), but got {_shown(value)}. "
            "Fix: give one plain value; to choose among lists or mappings, name each option "
            "(e.g. choices: [small, large]) and look the name up in the workload."
        )
    return value


Scalar = Annotated[Union[bool, int, float, str], BeforeValidator(_check_scalar)]


def _check_param_name(name: str) -> str:
    # The name is a column value in the store (Optuna's trial_params.param_name, VARCHAR(512)):
    # PostgreSQL refuses a NUL in text, and UTF-8 cannot hold a lone surrogate.
    bad = next(((i, c) for i, c in enumerate(name) if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None or not name.strip() or len(name) > MAX_PARAM_NAME:
        rule = (f"holds the control character {ascii(bad[1])} at position {bad[0]}" if bad is not None
                else "is blank" if not name.strip() else f"has {len(name)} characters")
        raise ValueError(
            f"params: a param's name must be printable text of 1 to {MAX_PARAM_NAME} characters (the store "
            f"keeps it as text), but {_shown(name)} {rule}. Fix: rename it, e.g. lr or num_layers."
        )
    return name


ParamName = Annotated[str, AfterValidator(_check_param_name)]
def _not_bool(value: Any) -> Any:
    # pydantic's lax mode reads true as 1.0; a string stays allowed, as YAML reads 1e-4 (no dot) as one.
    if isinstance(value, bool):
        raise ValueError(f"must be a number, but got {_shown(value)} (true and false are not numbers). "
                         "Fix: give a number, e.g. 0.5.")
    return value


# A number as written, of a float field: never true or false.
Float = Annotated[float, BeforeValidator(_not_bool)]
# true or false as written: pydantic's lax mode would take 1 or 'yes' as true without a word.
Bool = Annotated[bool, Strict()]
# A whole number as written: pydantic's lax mode would take `true` as 1 and '2' as 2 without a word.
Int = Annotated[int, Strict()]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FloatParam(_Model):
    type: Literal["float"]
    low: Float
    high: Float
    log: Bool = False
    step: Float | None = None
    values: tuple[Float, ...] | None = None
    when: dict[str, Scalar] | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_range(self.low, self.high, self.log, self.step)
        if not math.isfinite(self.high - self.low):
            raise ValueError(
                f"`high - low` must be a finite number (samplers draw within it), but low={_shown(self.low)}, "
                f"high={_shown(self.high)} span more than the largest float. Fix: narrow the range, e.g. "
                "low: -1.0e300, high: 1.0e300, or search the magnitude with `log: true` over positive values."
            )
        if self.step is not None and not (self.high - self.low) / self.step <= MAX_INT:
            raise ValueError(
                f"`step` must divide `high - low` into at most 2**53 steps (samplers count them exactly), but "
                f"step={_shown(self.step)} over [{_shown(self.low)}, {_shown(self.high)}] makes "
                f"{(self.high - self.low) / self.step:.3g}. Fix: use a larger step, or drop `step` for a "
                "continuous range."
            )
        return self


class IntParam(_Model):
    type: Literal["int"]
    low: Int
    high: Int
    log: Bool = False
    step: Int | None = None
    values: tuple[Int, ...] | None = None
    when: dict[str, Scalar] | None = None

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        for key in ("low", "high"):
            if abs(getattr(self, key)) > MAX_INT:
                raise ValueError(
                    f"`{key}` must lie within ±2**53 ({MAX_INT:,}), the integers a sampler's float arithmetic "
                    f"holds exactly, but got {key}={_shown(getattr(self, key))}. Fix: narrow the range, or use "
                    "type: float (with `log: true` to search the magnitude)."
                )
        _check_range(self.low, self.high, self.log, self.step)
        return self


class CategoricalParam(_Model):
    type: Literal["categorical"]
    choices: tuple[Scalar | None, ...]
    when: dict[str, Scalar] | None = None

    @field_validator("choices")
    @classmethod
    def _check_choices(cls, choices: tuple[Any, ...]) -> tuple[Any, ...]:
        if not choices:
            raise ValueError(
                "`choices` must not be empty, but got []. Fix: list at least one value, "
                "e.g. choices: [relu, tanh]."
            )
        # Counted by equality, as Optuna matches a choice: 1, 1.0 and true are one choice to it.
        dupes = [c for c, n in Counter(choices).items() if n > 1]
        if dupes:
            raise ValueError(
                f"`choices` must not repeat a value, but got {_listed(dupes)} more than once. "
                "Fix: list each value once."
            )
        return choices

    @property
    def values(self) -> tuple[Any, ...]:
        return self.choices


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]


class Objective(_Model):
    metric: str = "val_loss"
    direction: Literal["minimize", "maximize"] | None = None
    # "best": the metric at the trial's best epoch (what early stopping keeps);
    # "last": at its final epoch.
    mode: Literal["best", "last"] = "best"
    # Penalize overfitting: score = metric + gap_penalty * gap_loss when minimizing,
    # metric - gap_penalty * gap_acc when maximizing.
    gap_penalty: Float = Field(default=0.0, ge=0)
    # A constraint: trials whose gap (at the best epoch) exceeds this are infeasible.
    max_gap: Float | None = None
    # Stop starting trials once a completed trial's value reaches this (W&B sweeps' `target`).
    target: Float | None = None

    @property
    def resolved_direction(self) -> str:
        if self.direction is not None:
            return self.direction
        return "maximize" if self.metric.endswith("acc") else "minimize"


PRUNERS = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
    # tuner/pruners.py: successive halving whose stops a fit of the trial's learning curve may veto.
    "extrapolating": "ExtrapolatingPruner",
}
# Options tuner sets from the study's epoch budget; a spec does not name them.
BUDGET_OPTIONS = {"extrapolating": ("max_resource",)}


def pruner_class(kind: str) -> type:
    """The class a ``pruner.type`` names: one of Optuna's pruners, or tuner's extrapolating one."""
    if kind == "extrapolating":
        from tuner.pruners import ExtrapolatingPruner

        return ExtrapolatingPruner
    import optuna

    return getattr(optuna.pruners, PRUNERS[kind])


# How a pruner's fix names one in a spec; given as a flag or keyword, it reads as one (see _blamed).
PRUNER_EXAMPLE = "pruner: {type: median}"


class Pruner(BaseModel):
    """Optuna's pruner ``type`` with its own options, plus tuner's diagnostics pruner."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    type: str = "successive_halving"
    # Stop a trial as soon as it diverges, its gradients explode, or they vanish
    # for `diagnostics.vanishing_epochs` epochs; composes with `type`.
    diagnostics: Bool = True

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @field_validator("type")
    @classmethod
    def _check_type(cls, kind: str) -> str:
        try:
            return _one_of("pruner.type", kind, tuple(PRUNERS))
        except ValueError as exc:
            raise ValueError(f"{exc} Fix: use one of them, e.g. {PRUNER_EXAMPLE}.") from None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check_options(self) -> Pruner:
        import inspect

        cls = pruner_class(self.type)
        budget = BUDGET_OPTIONS.get(self.type, ())
        valid = [p for p in inspect.signature(cls).parameters if p != "self" and p not in budget]
        for key in set(budget) & set(self.options):
            raise ValueError(f"`pruner.{key}`: the {self.type} pruner takes it from `epochs`, got "
                             f"{_cut(repr(self.options[key]))}. Fix: remove `pruner.{key}`; set `epochs:` instead.")
        for key in self.options:
            if key not in valid:
                listed = ", ".join(valid) if valid else "none"
                raise ValueError(
                    f"`pruner.{_cut(key)}` is not an option of the {self.type} pruner "
                    f"({cls.__module__.split('._')[0]}.{cls.__name__}).{_did_you_mean(key, valid)} "
                    f"Valid options: {listed}."
                )
        sig = inspect.signature(cls).parameters
        missing = [k for k, p in sig.items() if p.default is p.empty and k not in self.options and k not in budget]
        if missing:
            raise ValueError(
                f"`pruner` of type {self.type} needs {', '.join(missing)}. "
                f"Fix: e.g. pruner: {{type: {self.type}, {missing[0]}: 25.0}}."
            )
        try:
            cls(**self.options, **dict.fromkeys(budget, 1))  # the budget's own value is checked by its field
        except (TypeError, ValueError) as exc:
            raise ValueError(f"`pruner` options are invalid for {self.type}: {_cut(str(exc))}") from None
        return self


class EarlyStopping(_Model):
    """Stop a trial when its objective has not improved for ``patience`` epochs; it keeps its best epoch."""

    patience: Int = Field(gt=0)
    min_delta: Float = Field(default=0.0, ge=0)


class Probe(_Model):
    """A learning-rate range test before the study (tuner/probe.py); ``probe: true`` takes these defaults."""

    # Cut params.lr to the range the probe supports before the study is created.
    narrow: Bool = False
    # Built-in workloads: optimizer steps of the one run, lr raised each step (~22 a decade over 9).
    steps: Int = Field(default=200, ge=10)
    # Other workloads: learning rates tried, one short run each, for `epochs` epochs.
    points: Int = Field(default=8, ge=3)
    epochs: Int = Field(default=1, gt=0)
    # Values for the other params while probing (default: the middle of each range, a categorical's first).
    params: dict[str, Scalar] = {}


class Checkpoints(_Model):
    """What is kept of the checkpoints trials report (tuner/checkpoints.py)."""

    # The best trials whose checkpoints stay in the artifact store; the others' are removed as trials end.
    keep: Int = Field(default=3, gt=0)


class Resources(_Model):
    cpu: Float = Field(default=1.0, gt=0)
    gpu: Float = Field(default=0.0, ge=0)


class Log(_Model):
    """Where every epoch is logged besides the store (tuner/integrations): a TensorBoard directory, an MLflow URI."""

    tensorboard: str | None = None
    mlflow: str | None = None


class StudySpec(_Model):
    """A validated study: what to tune, how, and with which budget."""

    name: str
    workload: str = "mlp"
    data: str | None = None
    # The one objective, or the first of several: it ranks a trial's epochs (its best epoch, early stopping).
    objective: Objective = Objective()
    # Every objective of a multi-objective study (`objective:` given as a list), the first one
    # being `objective`; empty for a study with one objective.
    objectives: tuple[Objective, ...] = ()
    strategy: str = "auto"
    trials: Int | None = Field(default=None, gt=0)
    parallel: Int = Field(default=1, gt=0)
    # None only for an Optuna objective(trial) launched without epochs=: how many steps it reports is unknown.
    epochs: Int | None = Field(default=10, gt=0)
    seed: Int | None = None
    timeout: Float | None = Field(default=None, gt=0)
    # Seconds one trial may run before it is stopped and recorded FAIL (a hung trial).
    # At most what a thread may wait for (threading.TIMEOUT_MAX, ~292 years): the deadline is a timer.
    trial_timeout: Float | None = Field(default=None, gt=0)
    # Re-runs (same params) of a trial whose worker process or node died.
    retries: Int = Field(default=1, ge=0)
    # When this many trials have ended and every one failed, the workload is broken: the study stops.
    max_failed_trials: Int = Field(default=3, gt=0)
    log: Log | None = None
    resources: Resources = Resources()
    fixed: dict[str, Scalar | None] = {}
    pruner: Pruner = Pruner()
    early_stopping: EarlyStopping | None = None
    checkpoints: Checkpoints = Checkpoints()
    diagnostics: Thresholds = Thresholds()
    probe: Probe | None = None
    params: dict[ParamName, Param]

    @model_validator(mode="before")
    @classmethod
    def _objective_list(cls, raw: Any) -> Any:
        """`objective:` as a list of mappings makes a multi-objective study (Optuna's ``directions``)."""
        if not isinstance(raw, Mapping):
            return raw
        if "objectives" in raw:
            raise ValueError(
                f"objectives: unknown key, got {_shown(raw['objectives'])}. Fix: list several objectives "
                "under objective:, e.g. objective: [{metric: val_loss}, {metric: seconds}]."
            )
        listed = raw.get("objective")
        if not isinstance(listed, (list, tuple)):
            return raw
        if not listed:
            raise ValueError("objective: must name at least one metric, but got an empty list. "
                             "Fix: e.g. objective: [{metric: val_loss}, {metric: seconds}].")
        rest = {k: v for k, v in raw.items() if k != "objective"}
        return {**rest, "objective": listed[0]} if len(listed) == 1 else {**rest, "objectives": list(listed)}

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not name_fits(name):
            raise ValueError(f"`name` {NAME_RULE}, but got {_shown(name)}. Fix: e.g. name: mnist1d-mlp.")
        return name

    @field_validator("strategy")
    @classmethod
    def _check_strategy(cls, strategy: str) -> str:
        meant = STRATEGY_SYNONYMS.get(re.sub(r"[\s\-]+", "_", strategy.strip().lower()))
        return _one_of("strategy", strategy, STRATEGIES, meant)

    @field_validator("seed", mode="wrap")
    @classmethod
    def _check_seed(cls, seed: Any, parse: ValidatorFunctionWrapHandler) -> int | None:
        # Around parsing: 1e23 is a float past the ints pydantic parses, "-1" a string it parses.
        number = seed if isinstance(seed, (int, float)) and not isinstance(seed, bool) else parse(seed)
        if number is not None and not 0 <= number <= MAX_SEED:
            raise ValueError(
                f"`seed` must be in 0..{MAX_SEED} (2**32 - 1, what NumPy and Optuna's samplers accept), "
                f"but got {_shown(number)}. Fix: use a seed in that range, e.g. seed: 0."
            )
        return parse(number)

    @field_validator("workload")
    @classmethod
    def _locate_workload(cls, workload: str, info: ValidationInfo) -> str:
        """A workload's file, or a module found only beside the spec file, as the absolute path workers import.

        ``module:function`` imports from the working directory, else from the spec file's folder, else
        from installed packages. ``path/to/train.py:function`` is a file, relative to the spec file's
        folder (the working directory for a spec given as a dict).
        """
        if workload in BUILTIN_WORKLOADS or workload.startswith(CALLABLE_PREFIX) or ":" not in workload:
            return workload
        module, _, func = workload.rpartition(":")
        folder = (info.context or {}).get("folder")
        if is_path(module):
            return f"{os.path.abspath(os.path.join(folder or os.getcwd(), os.path.expanduser(module)))}:{func}"
        if folder is None or module.startswith(".") or not module or _found_in(module.split(".")[0], os.getcwd()):
            return workload
        parts = module.split(".")
        beside = [folder.joinpath(*parts).with_suffix(".py"), folder.joinpath(*parts, "__init__.py")]
        found = next((str(f) for f in beside if f.is_file()), None)
        return f"{found}:{func}" if found is not None else workload

    @field_validator("epochs")
    @classmethod
    def _check_epochs(cls, epochs: int | None, info: ValidationInfo) -> int | None:
        workload = info.data.get("workload", "")
        if epochs is None and not (workload.startswith(CALLABLE_PREFIX) and workload.endswith(TRIAL_SUFFIX)):
            raise ValueError("`epochs`: must be a whole number > 0, but got null. Fix: set `epochs: N`, the epochs "
                             "each trial trains for (10 when left out).")
        return epochs

    @field_validator("trial_timeout")
    @classmethod
    def _check_trial_timeout(cls, seconds: float | None) -> float | None:
        # The deadline is a timer thread, which waits at most threading.TIMEOUT_MAX (~292 years).
        if seconds is not None and seconds > threading.TIMEOUT_MAX:
            raise ValueError(
                f"must be at most {threading.TIMEOUT_MAX:.0f} seconds (about 292 years, the longest a timer "
                f"waits), but got {_shown(seconds)}. Fix: use a shorter limit, or remove trial_timeout for none."
            )
        return seconds

    @field_validator("fixed")
    @classmethod
    def _check_fixed(cls, fixed: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # tuner passes epochs and data itself, and plans by them (the budget, pruner rungs, the launch
        # line); a `fixed` copy would replace them in the workload only, without a word. A fixed seed
        # is a choice: one training seed for every trial while the sampler keeps `seed`.
        problems = []
        for key in (k for k in FIXED_RESERVED if k in fixed):
            top = info.data.get(key)
            shown = f" ({key}: {_shown(top)} here)" if top is not None else ""
            problems.append(
                f"fixed.{key}: is set by tuner from the top-level `{key}:`{shown}, so a value here would "
                f"silently replace it; got {_shown(fixed[key])}. Fix: set `{key}: {_shown(fixed[key])}` at "
                f"the top level and remove fixed.{key}."
            )
        if problems:
            raise ValueError("\n".join(problems))
        return fixed

    @field_validator("log", mode="before")
    @classmethod
    def _check_log(cls, log: Any) -> Any:
        if log is not None and not isinstance(log, Mapping):
            raise ValueError(f"must be a mapping of loggers, but got {_shown(log)}. "
                             "Fix: e.g. log: {tensorboard: runs, mlflow: file:./mlruns}.")
        return log

    @field_validator("probe", mode="before")
    @classmethod
    def _check_probe(cls, probe: Any) -> Any:
        if isinstance(probe, bool):
            return {} if probe else None
        if probe is not None and not isinstance(probe, Mapping):
            raise ValueError(
                f"must be true, false or a mapping of its options, but got {_shown(probe)}. "
                "Fix: e.g. probe: true, or probe: {narrow: true}."
            )
        return probe

    @field_validator("params")
    @classmethod
    def _check_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # An Optuna objective(trial) passed to tuner.launch asks for its params as it runs (define-by-run).
        workload = str(info.data.get("workload", ""))
        if not params and not (workload.startswith(CALLABLE_PREFIX) and workload.endswith(TRIAL_SUFFIX)):
            raise ValueError(
                "`params` must name at least one hyperparameter, but got none. "
                "Fix: e.g. params: {lr: {type: float, low: 1.0e-4, high: 0.1, log: true}}."
            )
        # A param is decided after the params its `when` names, wherever the file lists it;
        # a cycle has no such order and is reported with the other cross-field problems.
        order, cycles = _dependency_order(params)
        return params if cycles else {name: params[name] for name in order}

    @model_validator(mode="after")
    def _check_cross_fields(self, info: ValidationInfo) -> StudySpec:
        lines = (info.context or {}).get("lines", {})
        if self.objectives:  # set while validating, before anyone holds the spec
            object.__setattr__(self, "objective", self.objectives[0])
        problems = _cross_field_problems(self, lines)
        if problems:
            raise ValueError("\n".join(problems))
        self._default_pruner()
        return self

    def _default_pruner(self) -> None:
        """A grid runs every point to its full budget, so its pruner is none unless the spec names one.

        So does a multi-objective study: Optuna's pruners judge one value per epoch
        (optuna/optuna#3450), so none is asked for there (see _pruner_problems).
        """
        from tuner.strategies import resolved  # strategies imports this module

        if _pruner_named(self) or (resolved(self) != "grid" and not self.objectives):
            return
        # Set while validating, before anyone holds the spec, so that it is saved (and resumed) as it runs.
        object.__setattr__(self, "pruner", self.pruner.model_copy(update={"type": "none"}))

    @property
    def is_builtin(self) -> bool:
        return self.workload in BUILTIN_WORKLOADS

    @property
    def workload_target(self) -> str:
        """The ``module:function`` the workers import."""
        return BUILTIN_WORKLOADS.get(self.workload, self.workload)

    @property
    def direction(self) -> str:
        return self.objective.resolved_direction

    @property
    def multi_objective(self) -> bool:
        return bool(self.objectives)

    @property
    def value_at_best(self) -> bool:
        """Whether a trial's value may be read at its best epoch: the objective's ``mode: best``, or early
        stopping, which reads it there whatever the mode."""
        return self.objective.mode == "best" or self.early_stopping is not None

    @property
    def directions(self) -> list[str]:
        """Optuna's ``directions``: one per objective, in order (one for a single objective)."""
        return [o.resolved_direction for o in self.objectives or (self.objective,)]

    @property
    def metric_names(self) -> list[str]:
        """The objectives' metrics, in order: Optuna's metric names for the study's values."""
        return [o.metric for o in self.objectives or (self.objective,)]

    def context(self) -> dict[str, Any]:
        """Keys every workload receives besides the sampled params."""
        ctx: dict[str, Any] = {"epochs": self.epochs, "seed": self.seed or 0} if self.epochs is not None else {
            "seed": self.seed or 0}  # an objective's step count unknown: no step is known to be its last
        if self.data is not None:
            ctx["data"] = self.data
        return {**ctx, **self.fixed}

    def to_dict(self) -> dict[str, Any]:
        """The spec as a file would give it; several objectives as the list they were given as."""
        out = self.model_dump(mode="json", exclude_none=True)
        if self.epochs is None:  # an objective(trial)'s unknown step count, kept so that a resume keeps it
            out["epochs"] = None
        if out.pop("objectives"):  # later objectives with only their own keys: objective[0] holds mode and max_gap
            out["objective"] = [out["objective"], *(o.model_dump(mode="json", exclude_unset=True, exclude_none=True)
                                                    for o in self.objectives[1:])]
        return out


# --------------------------------------------------------------------------- rules


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(
            f"`low <= high` must hold, but got low={_shown(low)}, high={_shown(high)}. Fix: swap them."
        )
    if log and low <= 0:
        raise ValueError(
            f"`log: true` needs `low > 0`, but got low={_shown(low)}. "
            "Fix: set a positive low (e.g. 1.0e-5) or drop `log`."
        )
    if step is not None and step <= 0:
        raise ValueError(f"`step > 0` must hold, but got step={_shown(step)}. Fix: use a positive step.")
    if step is not None and low < high and step > high - low:
        raise ValueError(
            f"`step` must be at most `high - low` = {_shown(high - low)}, but got step={_shown(step)}, which "
            f"would leave the single value low={_shown(low)} to try. Fix: use a smaller step, or fix the "
            "value in `fixed:` if one value is meant."
        )
    if log and step is not None:
        raise ValueError(
            f"`log` and `step` cannot be combined, but got log=true, step={_shown(step)}. "
            "Fix: drop one of them."
        )


def _one_of(field: str, value: str, valid: tuple[str, ...], meant: tuple[str, ...] | None = None) -> str:
    """``value`` if it is valid; else an error with what it likely ``meant`` (by meaning), or its nearest spelling."""
    if value in valid:
        return value
    hint = f" Did you mean {' or '.join(map(_shown, meant))}?" if meant else _did_you_mean(value, valid)
    raise ValueError(f"`{field}` must be one of {', '.join(valid)}, but got {_shown(value)}.{hint}")


def _did_you_mean(value: Any, valid: Any) -> str:
    close = _closest(value, valid)
    return f" Did you mean {_shown(close)}?" if close is not None else ""


def _closest(value: Any, valid: Any) -> Any:
    """The valid name ``value`` most likely misspells, or None."""
    # Compare lower-cased, so that "TPE" or "MLP" still finds its name.
    names = {str(v).lower(): v for v in valid}
    typed = str(value)[:MAX_SHOWN].lower()
    # Two letters swapped (lgo, tpye) keep every letter: that name before one that merely looks alike (low).
    swapped = [n for n in names if sorted(n) == sorted(typed) and n != typed]
    close = swapped or difflib.get_close_matches(typed, list(names), n=1)
    return names[close[0]] if close else None


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr (it never expands a whole nested value), keeping a mapping's own order."""

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                 for k, v in itertools.islice(x.items(), self.maxdict)]
        return "{" + ", ".join(items) + (", ..." if len(x) > self.maxdict else "") + "}"


_REPR = _ShortRepr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = MAX_SHOWN
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8


def _shown(value: Any) -> str:
    """``repr(value)`` cut to MAX_SHOWN characters: every message that echoes a user's value uses this."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int past Python's 4300-digit limit on str()
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def _listed(values: list[Any], most: int = 5, quote: bool = True) -> str:
    shown = ", ".join(_shown(v) if quote else _cut(str(v)) for v in values[:most])
    return shown + (f" (and {len(values) - most} more)" if len(values) > most else "")


def _cut(text: str, most: int = MAX_SHOWN) -> str:
    """A name the user chose (a key), cut like :func:`_shown` cuts a value; control characters escaped."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() or c == " " else ascii(c)[1:-1] for c in text)
    return text if len(text) <= most else text[: most - 1] + "…"


def _amount(n: int) -> str:
    # f"{n:,}" of a number with thousands of digits would itself be the problem.
    return f"{n:,}" if n < 10**30 else f"about 10^{int(n.bit_length() * math.log10(2))}"


def _at(lines: Mapping[tuple[str, ...], int], *path: str) -> str:
    """' (line N)' where the YAML file put ``path``; nothing for a dict spec."""
    line = lines.get(path)
    return f" (line {line})" if line else ""


def _cross_field_problems(spec: StudySpec, lines: Mapping[tuple[str, ...], int]) -> list[str]:
    problems: list[str] = []
    problems += _workload_problems(spec)
    problems += _builtin_param_problems(spec, lines)
    problems += _objectives_problems(spec) if spec.objectives else _metric_problems(spec)
    problems += _target_problems(spec) + _log_problems(spec)
    for name, param in spec.params.items():
        problems += _param_problems(spec, name, param)
    problems += _cycle_problems(spec, lines)
    problems += _probe_problems(spec) + _gp_problems(spec)
    if spec.strategy == "grid" and not problems:
        problems += _grid_problems(spec)
    return problems


def _workload_problems(spec: StudySpec) -> list[str]:
    if spec.is_builtin:
        if spec.data is None:
            return [
                f"`data` is required for the built-in workload {_shown(spec.workload)}. "
                f"Fix: add `data:` with one of {', '.join(DATASETS)}."
            ]
        if spec.data not in DATASETS:
            return [
                f"`data` must be one of {', '.join(DATASETS)}, but got {_shown(spec.data)}."
                f"{_did_you_mean(spec.data, DATASETS)}"
            ]
        return []
    if spec.workload.startswith(CALLABLE_PREFIX):
        return []  # a Python callable handed to tuner.launch(objective=...)
    if ":" not in spec.workload:
        return [
            f"`workload` must be a built-in ({', '.join(BUILTIN_WORKLOADS)}) or "
            f"'package.module:function', but got {_shown(spec.workload)}."
            f"{_did_you_mean(spec.workload, tuple(BUILTIN_WORKLOADS))}"
        ]
    module = spec.workload.rpartition(":")[0]
    if module.startswith(".") and not is_path(module):
        return [f"`workload` must name a module or a .py file, but {_shown(spec.workload)} is a relative module "
                f"name, which has no package to be relative to. Fix: name the file (workload: "
                f"./{module.lstrip('.').replace('.', '/')}.py:{spec.workload.rpartition(':')[2]}) or the module "
                f"(workload: {module.lstrip('.')}:{spec.workload.rpartition(':')[2]})."]
    if is_path(module) and not (module.endswith(".py") and os.path.isfile(module)):
        what = "does not exist" if not os.path.exists(module) else "is not a Python (.py) file"
        return [f"`workload` names the file {_cut(module, MAX_PATH_SHOWN)}, which {what}. Fix: check the path; "
                "a relative one is read from the spec file's folder."]
    # A path is shown whole: cut, the part that tells which file would be lost.
    shown = repr(_cut(spec.workload, MAX_PATH_SHOWN)) if is_path(module) else _shown(spec.workload)
    try:
        func = resolve(spec.workload)
    except ImportError as exc:
        fix = _FILE_FIX if is_path(module) else _IMPORT_FIX
        return [f"`workload` {shown} does not import: {_cut(str(exc), MAX_PATH_SHOWN)}. {fix}"]
    wrong = call_problem(func)
    if wrong:
        return [f"`workload` {shown}: {wrong} Fix: name a function defined as "
                "def train(params, report) (see the README's Workloads)."]
    return []


def call_problem(func: Any) -> str | None:
    """Why ``func`` cannot be called as a workload, ``func(params, report)``; None when it can (or cannot tell)."""
    shape = unfit_shape(func)
    return None if shape is None else f"tuner calls it as train(params, report), but {shape} cannot take those two arguments."


def unfit_shape(func: Any) -> str | None:
    """``func``'s name and signature when it cannot be called as ``func(params, report)``; None when it can
    (or cannot tell: a builtin without a signature)."""
    import inspect

    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # a builtin without a signature: let it run
        return None
    try:
        signature.bind({}, lambda epoch, **metrics: None)
    except TypeError:
        name = getattr(func, "__qualname__", type(func).__name__)
        return _cut(f"{name}{signature}")
    return None


def _found_in(top: str, folder: str) -> bool:
    """Whether the top-level module ``top`` is a file or package in ``folder``."""
    import importlib.machinery

    try:
        return importlib.machinery.PathFinder.find_spec(top, [folder]) is not None
    except (ImportError, ValueError):
        return False


def _builtin_param_problems(spec: StudySpec, lines: Mapping[tuple[str, ...], int]) -> list[str]:
    """A name the built-in workload does not read would fail every trial; refuse it before the first."""
    if not spec.is_builtin:
        return []
    from workers.config import PARAMS, closest  # what mlp and cnn read; imports no torch

    valid = tuple(p for p in PARAMS if p not in RESERVED_PARAMS)
    problems = []
    for section, names in (("params", spec.params), ("fixed", spec.fixed)):
        for name in names:
            if name in PARAMS:
                continue
            close = closest(name, valid)
            hint = f" Did you mean {_shown(close)}?" if close else ""
            problems.append(
                f"{section}.{_cut(name)}: must be a hyperparameter of the built-in workload "
                f"{_shown(spec.workload)}, but got {_shown(name)}{_at(lines, section, name)}.{hint} "
                f"Valid names: {', '.join(valid)}. Fix: rename it to one of those, or remove it."
            )
    return problems


_IMPORT_FIX = (
    "Fix: check the spelling; tuner imports the module from the directory it runs in, else from the "
    "spec file's folder, else from installed packages (`python -c 'import MODULE'` works there), or "
    "name its file: workload: path/to/module.py:function."
)
_FILE_FIX = "Fix: correct the file, or name the function it defines."


def _metric_problems(spec: StudySpec) -> list[str]:
    metric = spec.objective.metric
    if spec.is_builtin and metric not in BUILTIN_METRICS:
        return [
            f"`objective.metric` must be one of {', '.join(BUILTIN_METRICS)} for the built-in "
            f"workloads, but got {_shown(metric)}.{_did_you_mean(metric, BUILTIN_METRICS)}"
        ]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", metric):
        return [
            f"`objective.metric` must be a name a workload reports (letters, digits, '_'), "
            f"but got {_shown(metric)}."
        ]
    return []


def _objectives_problems(spec: StudySpec) -> list[str]:
    """Each objective of a list, and what a list of them rules out (a target, a ranking pruner, CMA-ES)."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, objective in enumerate(spec.objectives):
        problems += _listed_objective_problems(spec, i, objective, seen)
        seen.setdefault(objective.metric, i)
    if spec.strategy in SINGLE_OBJECTIVE_STRATEGIES:
        problems.append(
            f"`strategy` {spec.strategy} (Optuna's CmaEsSampler) takes one objective, but the spec lists "
            f"{len(spec.objectives)}. Fix: strategy: tpe, gp, random, qmc or grid (auto picks one)."
        )
    return problems + _pruner_problems(spec)


def _listed_objective_problems(spec: StudySpec, i: int, objective: Objective, seen: Mapping[str, int]) -> list[str]:
    at, metric, given = f"objective[{i}]", objective.metric, objective.model_fields_set
    valid = (*BUILTIN_METRICS, *COST_METRICS)
    if spec.is_builtin and metric not in valid:
        return [f"{at}.metric: must be one of {', '.join(valid)} for the built-in workloads, "
                f"but got {_shown(metric)}.{_did_you_mean(metric, valid)}"]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", metric):
        return [f"{at}.metric: must be a name a workload reports (letters, digits, '_'), but got {_shown(metric)}."]
    if metric in seen:
        return [f"{at}.metric: each objective must be a different metric, but {metric} is objective[{seen[metric]}] "
                "too. Fix: remove one of them."]
    problems = []
    if i == 0 and metric in COST_METRICS:
        problems.append(
            f"{at}.metric: the first objective ranks a trial's epochs (the one it keeps, early stopping), so it "
            f"must be a metric of the model, but got {metric}. Fix: list it later, e.g. objective: "
            f"[{{metric: val_loss}}, {{metric: {metric}}}]."
        )
    if i > 0:
        for key, why in (("mode", "the epoch whose values a trial keeps is chosen by objective[0] (its mode)"),
                         ("max_gap", "the gap constraint is the study's, one for all objectives")):
            if key in given:
                problems.append(f"{at}.{key}: {why}, so later objectives take none, but got "
                                f"{_shown(getattr(objective, key))}. Fix: set it on objective[0], or remove it.")
    if objective.target is not None:
        problems.append(
            f"{at}.target: stops a study once one value reaches it, but a multi-objective study has a Pareto "
            f"front of trade-offs, not one best value; got {_shown(objective.target)}. Fix: remove target "
            "(trials or timeout bound the study)."
        )
    if objective.gap_penalty and metric in COST_METRICS:
        problems.append(f"{at}.gap_penalty: penalizes a model's overfitting gap, which {metric} does not have; "
                        f"got {_shown(objective.gap_penalty)}. Fix: remove it.")
    return problems


def _pruner_named(spec: StudySpec) -> bool:
    return "type" in spec.pruner.model_fields_set or bool(spec.pruner.options)


def _pruner_problems(spec: StudySpec) -> list[str]:
    """Optuna's pruners rank one intermediate value; a study with several objectives has none to rank."""
    if not _pruner_named(spec) or spec.pruner.type == "none":
        return []
    return [
        f"pruner.type: Optuna's pruners rank one value per epoch and do not support multi-objective studies "
        f"(optuna/optuna#3450), but got {_shown(spec.pruner.type)}. Fix: pruner: none; the diagnostics pruner "
        "(pruner.diagnostics, on by default) still stops runs that diverge or whose gradients explode or vanish, "
        "and early_stopping judges the first objective."
    ]


def _target_problems(spec: StudySpec) -> list[str]:
    """An accuracy never exceeds 1: a target of 97 (meant as 97%) would never stop the study."""
    target, objective = spec.objective.target, spec.objective
    if target is None or not objective.metric.endswith("acc") or objective.gap_penalty or 0 <= target <= 1:
        return []
    return [
        f"objective.target: {objective.metric} is a fraction in [0, 1], so the study could never reach "
        f"{_shown(target)}. Fix: give it as a fraction, e.g. target: {min(abs(target) / 100, 1.0):g}."
    ]


# MLflow's tracking URI schemes (mlflow.tracking._tracking_service.utils); a bare path is a file store.
MLFLOW_SCHEMES = ("file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "uc")


def _log_problems(spec: StudySpec) -> list[str]:
    """Each logger of `log:` needs its library, and a place it can write."""
    import importlib.util

    log, problems = spec.log, []
    if log is None:
        return []
    for key, package in (("tensorboard", "tensorboard"), ("mlflow", "mlflow")):
        if getattr(log, key) is not None and importlib.util.find_spec(package) is None:
            problems.append(f"log.{key}: needs the {package} package, which is not installed. "
                            f"Fix: pip install {package}, or remove log.{key}.")
    if log.tensorboard is not None and (not log.tensorboard.strip() or Path(log.tensorboard).is_file()):
        problems.append(f"log.tensorboard: must name a directory for TensorBoard's event files (created if "
                        f"missing), but got {_shown(log.tensorboard)}. Fix: e.g. log: {{tensorboard: runs}}.")
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):", log.mlflow or "")
    if log.mlflow is not None and (not log.mlflow.strip() or (
            scheme and scheme.group(1).split("+")[0].lower() not in MLFLOW_SCHEMES)):
        problems.append(f"log.mlflow: must be an MLflow tracking URI ({', '.join(MLFLOW_SCHEMES)}, or a "
                        f"directory), but got {_shown(log.mlflow)}. Fix: e.g. log: {{mlflow: file:./mlruns}}.")
    return problems


def _param_problems(spec: StudySpec, name: str, param: Any) -> list[str]:
    where = f"params.{_cut(name)}"
    if name in RESERVED_PARAMS or name in spec.fixed:
        taken = "set by tuner" if name in RESERVED_PARAMS else "also in `fixed`"
        return [f"{where}: the name {_shown(name)} is {taken}. Fix: rename the param or remove it there."]
    problems = []
    for value in getattr(param, "values", None) or ():
        if isinstance(param, (FloatParam, IntParam)) and not param.low <= value <= param.high:
            problems.append(
                f"{where}.values: every value must lie in [low, high] = [{_shown(param.low)}, "
                f"{_shown(param.high)}], but got {_shown(value)}. Fix: widen the range or drop the value."
            )
    for other, expected in (param.when or {}).items():
        if other not in spec.params:
            others = [p for p in spec.params if p != name]
            problems.append(
                f"{where}.when: names an unknown param {_shown(other)}.{_did_you_mean(other, spec.params)} "
                f"Valid params: {_listed(others, quote=False)}."
            )
        elif other == name:
            problems.append(f"{where}.when: a param cannot depend on itself.")
        elif isinstance(spec.params[other], CategoricalParam):
            choices = spec.params[other].choices
            if expected not in choices:
                problems.append(
                    f"{where}.when: {_cut(other)} must be one of its choices "
                    f"{_shown(list(choices))}, but got {_shown(expected)}.{_did_you_mean(expected, choices)}"
                )
        else:
            problems.append(
                f"{where}.when: can only depend on a categorical param, but {_shown(other)} is "
                f"{spec.params[other].type}. Fix: make {_shown(other)} categorical."
            )
    return problems


def _probe_problems(spec: StudySpec) -> list[str]:
    """The range test sweeps params.lr geometrically between its bounds: it needs such a param."""
    if spec.probe is None:
        return []
    lr = spec.params.get("lr")
    if not isinstance(lr, FloatParam) or lr.values is not None or not 0 < lr.low < lr.high:
        got = "no param lr" if lr is None else f"params.lr = {_shown(lr.model_dump(exclude_none=True))}"
        return [
            f"probe: needs a continuous float param lr with 0 < low < high (it raises lr geometrically "
            f"between them), but got {got}. Fix: e.g. lr: {{type: float, low: 1.0e-5, high: 1.0, log: true}}, "
            "or drop `probe`."
        ]
    unknown = [name for name in spec.probe.params if name not in spec.params or name == "lr"]
    if unknown:
        return [
            f"probe.params: pins values of the other params while probing, but got "
            f"{_listed(unknown)}, which {'is' if len(unknown) == 1 else 'are'} not among them."
            f"{_did_you_mean(unknown[0], [p for p in spec.params if p != 'lr'])} Fix: name params of "
            f"`params` other than lr."
        ]
    return []


def _dependency_order(params: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Param names, each after the params its `when` names (file order wherever that holds), and the cycles.

    Kahn's algorithm, taking the earliest param in the file among those ready.
    """
    index = {name: i for i, name in enumerate(params)}
    needs = {n: {o for o in (p.when or {}) if o in params and o != n} for n, p in params.items()}
    needed_by = defaultdict(list)
    for name, others in needs.items():
        for other in others:
            needed_by[other].append(name)
    waiting = {name: len(others) for name, others in needs.items()}
    ready = [index[name] for name, count in waiting.items() if count == 0]
    names, order = list(params), []
    while ready:
        order.append(names[heapq.heappop(ready)])
        for name in needed_by[order[-1]]:
            waiting[name] -= 1
            if waiting[name] == 0:
                heapq.heappush(ready, index[name])
    return order, _cycles([n for n in names if waiting[n]], needs, index)


def _cycles(left: list[str], needs: Mapping[str, set[str]], index: Mapping[str, int]) -> list[list[str]]:
    # Every param Kahn left over still needs one that is left over, so a walk along
    # `when` from any of them comes back to a param it passed: a cycle.
    unseen, cycles = set(left), []
    for start in left:
        path: dict[str, int] = {}
        name: str | None = start
        while name in unseen and name not in path:
            path[name] = len(path)
            name = min((o for o in needs[name] if o in unseen), key=index.__getitem__, default=None)
        if name in path:
            cycle = list(path)[path[name]:]
            first = min(range(len(cycle)), key=lambda i: index[cycle[i]])
            cycles.append(cycle[first:] + cycle[:first])
        unseen -= set(path)
    return cycles


def _cycle_problems(spec: StudySpec, lines: Mapping[tuple[str, ...], int]) -> list[str]:
    problems = []
    for cycle in _dependency_order(spec.params)[1]:
        first = cycle[0]
        chain = " -> ".join(_cut(n) for n in [*cycle[1:], first])
        problems.append(
            f"params.{_cut(first)}.when: conditions must not form a cycle (a param is decided after the "
            f"params its `when` names), but got params.{_cut(first)}.when -> {chain}"
            f"{_at(lines, 'params', first, 'when')}. Fix: remove the `when` of one of "
            f"{_listed(cycle, quote=False)}."
        )
    return problems


def enumerated_by_gp(spec: StudySpec) -> list[tuple[str, int | None]]:
    """The discrete params (an int range, a float with `step`) with more values than Optuna's GPSampler
    can enumerate each trial (GP_MAX_POINTS), with their number of values (None: past a float's range)."""
    found = []
    for name, param in spec.params.items():
        if isinstance(param, CategoricalParam) or param.values is not None:
            continue
        step = param.step if param.step is not None else (1 if isinstance(param, IntParam) else None)
        if step is not None:
            width = (param.high - param.low) / step  # inf for a float step far below its range
            if width >= GP_MAX_POINTS:
                points = (param.high - param.low) // step + 1 if isinstance(param, IntParam) else width + 1
                found.append((name, int(points) if math.isfinite(points) else None))
    return found


def _gp_problems(spec: StudySpec) -> list[str]:
    if spec.strategy != "gp":
        return []  # auto leaves GP for TPE on such a space (strategies.choose)
    return [
        f"params.{_cut(name)}: strategy gp (Optuna's GPSampler) lists every value of a discrete param each "
        f"trial, so it takes at most {_amount(GP_MAX_POINTS)}, but this one has "
        f"{_amount(points) if points is not None else 'more than any array holds'}. Fix: use a "
        "larger `step`, type: float for a continuous range, or strategy tpe or random."
        for name, points in enumerated_by_gp(spec)
    ]


def _grid_problems(spec: StudySpec) -> list[str]:
    from tuner.strategies import grid_size, grid_values  # strategies imports this module

    problems = []
    for name, param in spec.params.items():
        if isinstance(param, FloatParam) and param.values is None:
            problems.append(
                f"params.{_cut(name)}: strategy `grid` needs a finite set of values, but {_shown(name)} is a "
                f"continuous float in [{_shown(param.low)}, {_shown(param.high)}]. Fix: add "
                f"`values: [...]` to it, or use strategy auto, random, tpe or gp."
            )
    if problems:
        return problems
    size = grid_size(spec)
    if size is None or size > MAX_GRID_POINTS:
        counts = sorted(((n, len(grid_values(p))) for n, p in spec.params.items()), key=lambda nc: -nc[1])
        largest = ", ".join(f"{_cut(n)}: {_amount(c)} values" for n, c in counts[:3] if c > 1)
        got = _amount(size) if size is not None else f"more than {_amount(MAX_GRID_POINTS)}"
        return [
            f"params: strategy `grid` queues every point of the grid, so it must have at most "
            f"{_amount(MAX_GRID_POINTS)} points, but got {got} ({largest}). Fix: list fewer points with "
            f"`values: [...]` (or a larger `step` on an int), or use strategy random or tpe."
        ]
    return []


def point_problems(spec: StudySpec, params: Mapping[str, Any], partial: bool = False) -> list[str]:
    """Why ``params`` is no configuration of the space, one line a param (none: it is one, as strategies.fits says).

    For points given by hand (``tuner enqueue``): every param that is active
    must be there and in its range; one inactive (its `when` unmet) or unknown
    must not. ``partial`` lets params be left out (Optuna's ``enqueue_trial``
    samples them); a `when` on a param left out may then hold.
    """
    problems, chosen = [], {}
    for name, param in spec.params.items():
        unmet = {k: v for k, v in (param.when or {}).items()
                 if (k in params or not partial) and chosen.get(k, _UNSET) != v}
        if unmet:
            if name in params:
                problems.append(f"{_cut(name)}: is only used when {_when(unmet)}, but got {_cut(name)}="
                                f"{_shown(params[name])} without it. Fix: remove {_cut(name)}.")
            continue
        if name not in params:
            if not partial:
                problems.append(f"{_cut(name)}: is missing. Fix: give it a value ({_range(param)}).")
            continue
        chosen[name] = params[name]
        if not _in_range(param, params[name]):
            problems.append(f"{_cut(name)}: must be {_range(param)}, but got {_shown(params[name])}. "
                            "Fix: use a value in the study's space.")
    for name in params:
        if name not in spec.params:
            problems.append(f"{_cut(name)}: is not a param of the study's space.{_did_you_mean(name, spec.params)} "
                            f"Valid params: {_listed(list(spec.params), most=10, quote=False)}. Fix: remove it.")
    return problems


_UNSET = object()


def _when(condition: Mapping[str, Any]) -> str:
    return " and ".join(f"{_cut(k)}={_shown(v)}" for k, v in condition.items())


def _range(param: Any) -> str:
    if isinstance(param, CategoricalParam) or param.values is not None:
        return f"one of {_shown(list(param.values))}"
    kind = "an integer" if isinstance(param, IntParam) else "a number"
    return f"{kind} in [{_shown(param.low)}, {_shown(param.high)}]"


def _in_range(param: Any, value: Any) -> bool:
    if isinstance(param, CategoricalParam) or param.values is not None:
        return value in param.values
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return param.low <= value <= param.high and (not isinstance(param, IntParam) or float(value).is_integer())


# --------------------------------------------------------------------------- loading


NAME_RULE = (f"must start with a letter or digit and hold only letters, digits, '.', '_' and '-' "
             f"(at most {MAX_NAME_LENGTH})")


def name_fits(name: object) -> bool:
    """Whether ``name`` keeps the rule of a study's name (the spec's `name:`)."""
    return isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and re.fullmatch(NAME_PATTERN, name) is not None


def check_study_name(name: object, given_as: str) -> None:
    """Refuse a study name given outside a spec (``--study``, ``study=``, ``--name``) by the spec's rule."""
    if not name_fits(name):
        raise SpecError(given_as, [f"a study name {NAME_RULE}, but got {_shown(name)}. Fix: e.g. mnist1d-mlp-2."])


class Overrides(dict[str, Any]):
    """Spec keys given outside the file (CLI flags, API keywords), with how the user wrote each.

    A problem with one of them is blamed on that flag or keyword (``--trials``,
    ``trials=``), not on the file, which does not hold the value.
    """

    def __init__(self, values: Mapping[str, Any], spelled: Mapping[str, str]) -> None:
        super().__init__(values)
        self.spelled = dict(spelled)  # a field's dotted path (objective.metric) -> what the user typed

    def copy(self) -> Overrides:
        return Overrides(self, self.spelled)

    @classmethod
    def flags(cls, values: Mapping[str, Any]) -> Overrides:
        """Top-level keys given as command-line flags: trial_timeout is ``--trial-timeout``."""
        return cls(values, {key: "--" + key.replace("_", "-") for key in values})


def load_spec(
    source: str | Path | Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> StudySpec:
    """Read and validate a search space from a YAML path or a dict.

    ``overrides`` (CLI flags, API keywords) replace top-level keys of the file;
    None values are ignored. Given as :class:`Overrides`, a problem with one of
    them names the flag or keyword, not the file.
    """
    lines: dict[tuple[str, ...], int] = {}
    problems: list[str] = []
    folder = None  # where the file is: a workload's file or module is looked for there too
    if isinstance(source, Mapping):
        label, raw = "<spec>", dict(source)
    else:
        label = str(source)
        raw, lines, problems = _read_yaml(Path(source))
        folder = Path(source).resolve().parent
    raw.setdefault("name", Path(label).stem.replace("_", "-") if label != "<spec>" else "study")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "objective" and isinstance(value, Mapping) and isinstance(raw.get(key), list):
            problems.append(
                f"objective.{next(iter(value))}: the spec lists {len(raw[key])} objectives, and one value does "
                f"not say which of them it changes; got {_shown(dict(value))}. Fix: edit the objective list in the spec."
            )
            continue
        if key == "objective" and isinstance(value, Mapping) and isinstance(raw.get(key), Mapping):
            # metric=, direction=, max_gap=, ... change those keys of the file's objective, not all of it.
            raw[key] = {**raw[key], **value}
            lines = {path: line for path, line in lines.items() if path[:2] not in {(key, k) for k in value}}
            continue
        raw[key] = value
        lines = {path: line for path, line in lines.items() if path[0] != key}  # no longer the file's
        if key == "workload":
            folder = None  # a keyword's or flag's workload is the caller's, found from the working directory
    context = {"lines": lines, "folder": folder}
    try:
        spec = StudySpec.model_validate(raw, context=context)
    except ValidationError as exc:
        problems += _every_problem(raw, exc.errors(), context)
    if problems:
        spelled = _given(overrides)
        raise _refusal(label, [_blamed(p, spelled) for p in problems], set(spelled.values())) from None
    return spec


# Rounds of repairing a spec and validating it again, to find the problems its first errors hid.
REPAIR_ROUNDS = 3


def _every_problem(raw: Mapping[str, Any], errors: list[Any], context: Mapping[str, Any]) -> list[str]:
    """Every problem of a spec, not only those its first validation reached.

    pydantic checks a model's own rules (``log`` needs ``low > 0``) and the
    spec's cross-field rules (``when``, the workload, a grid's size) only once
    its keys validate, so one misspelt key would hide them. So the spec is
    repaired as its errors suggest (an unknown key renamed to the key it was
    likely meant as, or dropped; a bad top-level value dropped for its default;
    a broken param replaced by a valid stand-in of its name) and validated
    again, and the problems that brings up are added, except those of a
    stand-in itself (they would describe the stand-in, not the file).
    """
    problems = [line for err in errors for line in _explain(err, raw).split("\n")]
    dropped: set[str] = set()
    for _ in range(REPAIR_ROUNDS):
        repaired = _repaired(raw, errors, dropped)
        if repaired is None:
            break
        try:
            StudySpec.model_validate(repaired, context=context)
            break
        except ValidationError as exc:
            raw, errors = repaired, exc.errors()
        for line in (line for err in errors for line in _explain(err, raw).split("\n")):
            hidden = any(line.startswith((f"params.{_cut(name)}:", f"params.{_cut(name)}.")) for name in dropped)
            if line not in problems and not hidden:
                problems.append(line)
    return problems


def _repaired(raw: Mapping[str, Any], errors: list[Any], dropped: set[str]) -> dict[str, Any] | None:
    """``raw`` with what ``errors`` point at repaired (see :func:`_every_problem`); None when nothing can be."""
    out = _copied(raw)
    changed = False
    for err in errors:
        loc = [str(p) for p in err["loc"]]
        if len(loc) >= 3 and loc[0] == "params" and loc[2] in _PARAM_MODELS:
            del loc[2]
        if err["type"] == "union_tag_not_found" and len(loc) == 2 and loc[0] == "params":
            meant = _misspelt_type(err.get("input"))
            if meant is not None:  # {tpye: float, ...}: validate it as the float it means
                out["params"][loc[1]]["type"] = out["params"][loc[1]].pop(meant)
                changed = True
                continue
        parent = _at_path(out, loc[:-1])
        if err["type"] == "extra_forbidden" and isinstance(parent, dict) and loc[-1] in parent:
            meant = _closest(loc[-1], _valid_keys(loc[:-1], out))
            value = parent.pop(loc[-1])
            if meant is not None and meant not in parent:
                parent[meant] = value  # `stratgy: tpe` checked as the strategy it means
            changed = True
        elif len(loc) >= 2 and loc[0] == "params" and isinstance(out.get("params"), dict) and loc[1] in out["params"]:
            if loc[1] not in dropped:
                out["params"][loc[1]] = _stand_in(out["params"][loc[1]])
                dropped.add(loc[1])
                changed = True
        elif len(loc) == 1 and loc[0] in out and loc[0] not in ("name", "params", "objective", "objectives"):
            if StudySpec.model_fields.get(loc[0]) is not None and not StudySpec.model_fields[loc[0]].is_required():
                del out[loc[0]]  # its default stands in, so the rules that read it can run
                changed = True
    return out if changed else None


def _stand_in(param: Any) -> dict[str, Any]:
    """A valid param in place of a broken one, so that the rules reading the others can run: a
    categorical keeps its choices (a `when` may name them), any other is a float in [0, 1]."""
    param = param if isinstance(param, Mapping) else {}
    choices = param.get("choices")
    if param.get("type") == "categorical" and isinstance(choices, list) and choices:
        try:
            kept = list(dict.fromkeys(c for c in choices if c is None or isinstance(c, (bool, int, float, str))))
        except TypeError:
            kept = []
        return {"type": "categorical", "choices": kept or [0]}
    return {"type": "float", "low": 0.0, "high": 1.0}


def _copied(value: Any) -> Any:
    """A copy of a spec's mappings and lists, deep enough to repair (scalars are shared)."""
    if isinstance(value, Mapping):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    return value


def _at_path(raw: Any, loc: list[str]) -> Any:
    for key in loc:
        if isinstance(raw, dict) and key in raw:
            raw = raw[key]
        elif isinstance(raw, list) and key.isdigit() and int(key) < len(raw):
            raw = raw[int(key)]
        else:
            return None
    return raw


def _misspelt_type(param: Any) -> str | None:
    """The key of a param's mapping that misspells ``type`` ({tpye: float}), if it has no ``type``."""
    if not isinstance(param, Mapping) or "type" in param:
        return None
    keys = [k for k in param if isinstance(k, str)]
    return next((k for k in keys if _closest(k, ("type",)) == "type"), None)


def _given(overrides: Mapping[str, Any] | None) -> dict[str, str]:
    """The spellings of the overrides that replaced a value (None replaces nothing)."""
    if not isinstance(overrides, Overrides):
        return {}
    return {path: spelling for path, spelling in overrides.spelled.items()
            if overrides.get(path.split(".")[0]) is not None}


def _blamed(problem: str, spelled: Mapping[str, str]) -> str:
    """``problem`` named by the flag or keyword that gave its field: "--trials: must be > 0, ..."."""
    for path, spelling in spelled.items():
        if path == "pruner":  # the fix as the user would give it: --pruner median, pruner="median"
            problem = problem.replace(PRUNER_EXAMPLE, f"{spelling} median" if spelling.startswith("--")
                                      else f'{spelling}"median"')
        for head in (f"{path}: ", f"`{path}` "):
            if problem.startswith(head):
                return f"{spelling}: {problem[len(head):]}"
        if problem.startswith((f"{path}.", f"`{path}.")):  # a key inside it: keep the key's name
            return f"{spelling}: {problem}"
    return problem


def _refusal(label: str, problems: list[str], spellings: set[str]) -> SpecError:
    # Problems only with flags or keywords are theirs, not the file's: no file name in front.
    heads = list(dict.fromkeys(p.partition(": ")[0] for p in problems))
    if all(h in spellings for h in heads):
        if len(problems) == 1:
            return SpecError(heads[0], [problems[0].partition(": ")[2]])
        label = ", ".join(heads)
    return SpecError(label, _capped(problems))


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    rest = len(problems) - MAX_PROBLEMS
    return [*problems[:MAX_PROBLEMS], f"... and {rest} more. Fix: correct the ones above, then run again."]


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int], list[str]]:
    """The file's mapping, the line of each key (by path), and what the YAML itself got wrong."""
    text = _read_text(path)
    try:
        loader = _SpecLoader(text)  # PyYAML checks the characters here
        data = loader.load()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise SpecError(
            str(path), [f"YAML syntax error at {where}: {exc.problem}. Fix: correct the YAML there."]
        ) from None
    except yaml.reader.ReaderError as exc:
        raise SpecError(str(path), [
            f"YAML text must not hold control characters, but got #x{exc.character:04x} at character "
            f"{exc.position}: this is not a text file. Fix: name the YAML spec (see search_spaces/)."
        ]) from None
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [f"YAML error: {_cut(str(exc))}"]) from None
    except RecursionError:
        raise SpecError(str(path), [
            "the YAML nests lists or mappings deeper than Python can read. Fix: flatten it; a spec "
            "needs three levels (params, a param, its keys)."
        ]) from None
    if loader.fatal:
        raise SpecError(str(path), loader.problems)
    if not isinstance(data, dict):
        raise SpecError(
            str(path),
            [f"the file must hold a mapping of keys (name, workload, params, ...), but got "
             f"{type(data).__name__}. Fix: see search_spaces/ for examples."],
        )
    return data, loader.lines, loader.problems


def _read_text(path: Path) -> str:
    where = str(path)
    if path.is_dir():
        raise SpecError(where, [
            "is a directory, not a spec file. Fix: name a YAML file in it (e.g. search_spaces/wine_mlp.yaml)."
        ])
    if not path.exists():
        raise SpecError(where, ["no such file. Fix: check the path (presets live in search_spaces/)."])
    if not path.is_file():
        raise SpecError(where, ["is not a regular file (a pipe or device?). Fix: name a YAML file."])
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(where, [
            f"cannot be read: {exc.strerror or exc}. Fix: check the file's permissions (`ls -l {where}`)."
        ]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(where, [
            f"a spec file must be at most {MAX_SPEC_BYTES // 2**20} MiB, but this one is larger. "
            "Fix: name the YAML spec, not a data or checkpoint file."
        ])
    try:
        return data.decode("utf-8-sig")  # -sig: a byte-order mark some editors write is not an error
    except UnicodeDecodeError as exc:
        raise SpecError(where, [
            f"a spec file must be UTF-8 text, but byte {exc.start} is 0x{data[exc.start]:02x}: this looks "
            "like a binary file or another encoding. Fix: name the YAML spec, or save it as UTF-8."
        ]) from None


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what it would otherwise accept in silence.

    Before anything is constructed, one pass over the composed nodes (each node
    once, however many aliases share it) counts the values the document expands
    to, finds keys given twice in a mapping (YAML keeps the last, so the first
    is lost without a word), and notes the line of each key for messages.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.lines: dict[tuple[str, ...], int] = {}
        self.problems: list[str] = []
        self.fatal = False  # the document cannot be constructed (an alias bomb, a recursive anchor)
        self._sizes: dict[int, int] = {}

    def load(self) -> Any:
        try:
            node = self.get_single_node()
            if node is None:
                return None
            try:
                self._survey(node, ())
            except _Refused as exc:
                self.problems.insert(0, str(exc))
                self.fatal = True
                return None
            return self.construct_document(node)
        finally:
            self.dispose()

    def _survey(self, node: yaml.Node, path: tuple[str, ...]) -> int:
        """How many values ``node`` expands to; refuses a document that expands past MAX_YAML_VALUES."""
        key = id(node)
        if key in self._sizes:
            if self._sizes[key] < 0:
                raise _Refused(f"line {node.start_mark.line + 1}: an anchor must not contain an alias to "
                               "itself, but this one does. Fix: remove the alias from inside its anchor.")
            return self._sizes[key]
        self._sizes[key] = -1  # being counted: meeting it again means it contains itself
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._survey(child, (*path, str(i))) for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            size += self._survey_mapping(node, path)
        if size > MAX_YAML_VALUES:
            raise _Refused(
                f"line {node.start_mark.line + 1}: a spec must hold at most {MAX_YAML_VALUES:,} values once "
                f"its aliases (*name) are expanded, but the value that starts here holds more. Fix: list "
                "fewer values, or repeat fewer anchors inside anchors."
            )
        self._sizes[key] = size
        return size

    def _survey_mapping(self, node: yaml.MappingNode, path: tuple[str, ...]) -> int:
        size, seen = 0, {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                here, line, key = (*path, key_node.value), key_node.start_mark.line + 1, (key_node.tag, key_node.value)
                if key in seen:
                    self.problems.append(
                        f"line {line}: a key must appear once in a mapping, but {_cut('.'.join(here))} was "
                        f"already given at line {seen[key]} (YAML would keep only this one). "
                        "Fix: remove or merge one of them."
                    )
                seen[key] = line
                self.lines.setdefault(here, line)
                size += self._survey(value_node, here) + 1
            else:  # a merge (<<: *base) or a key that is itself a list or mapping
                size += self._survey(key_node, path) + self._survey(value_node, (*path, "<<"))
        return size


class _Refused(Exception):
    """A YAML document too costly to construct."""


# --------------------------------------------------------------------------- messages

_PARAM_MODELS = {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam}
_SECTION_MODELS = {
    "objective": Objective, "resources": Resources, "early_stopping": EarlyStopping,
    "diagnostics": Thresholds, "probe": Probe, "checkpoints": Checkpoints,
    "log": Log,
}


def _explain(err: Mapping[str, Any], raw: Mapping[str, Any]) -> str:
    """Turn one pydantic error into 'field: rule, value, fix'."""
    loc = [str(p) for p in err["loc"]]
    # Discriminated unions add the tag to the path (params.lr.float.low); drop it.
    if len(loc) >= 3 and loc[0] == "params" and loc[2] in _PARAM_MODELS:
        del loc[2]
    shown = [f"objective[{loc[1]}]", *loc[2:]] if len(loc) >= 2 and loc[0] == "objectives" else loc
    field = _cut(".".join(shown)) if loc else "(top level)"
    kind, value = err["type"], err.get("input")
    if kind == "value_error":
        msg = str(err["ctx"]["error"])
        # Messages that already name their field ("params.x: ...", "`strategy` must ...") keep it.
        named = msg.startswith(("params.", "params:", f"`{field}`", f"{field}."))
        return msg if named or not loc else f"{field}: {msg}"
    if kind == "extra_forbidden":
        valid = _valid_keys(loc[:-1], raw)
        return (
            f"{field}: unknown key {_shown(loc[-1])}.{_did_you_mean(loc[-1], valid)} "
            f"Valid keys here: {', '.join(valid)}."
        )
    if kind == "missing":
        return f"{field}: required key is missing. Fix: add `{loc[-1]}:`."
    meant = _misspelt_type(value) if kind == "union_tag_not_found" else None
    if meant is not None:
        valid = list(dict.fromkeys(k for m in _PARAM_MODELS.values() for k in m.model_fields))
        return (f"{field}.{_cut(meant)}: unknown key {_shown(meant)}. Did you mean 'type'? "
                f"Valid keys here: {', '.join(valid)}.")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        got = f"got {_shown(value.get('type'))}" if isinstance(value, dict) and "type" in value else "got none"
        return (
            f"{field}.type: must be one of float, int, categorical, but {got}. "
            "Fix: e.g. {type: float, low: 0.0, high: 1.0}."
        )
    if kind == "finite_number":
        return f"{field}: must be a finite number, but got {_shown(value)}. Fix: use a finite bound."
    if kind in ("int_from_float", "int_parsing", "int_parsing_size", "int_type"):
        return f"{field}: must be an integer, but got {_shown(value)}. Fix: {_int_fix(loc, value)}."
    if kind in ("float_parsing", "float_type"):
        return f"{field}: must be a number, but got {_shown(value)}."
    if kind in _BOUNDS:
        rule, key = _BOUNDS[kind]
        bound = err["ctx"][key]
        return f"{field}: must be {rule} {bound}, but got {_shown(value)}. Fix: use a value {rule} {bound}."
    if kind == "literal_error":
        return f"{field}: must be one of {err['ctx']['expected']}, but got {_shown(value)}."
    if kind in ("bool_parsing", "bool_type"):
        return f"{field}: must be true or false, but got {_shown(value)}."
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{field}: must be a mapping of keys, but got {_shown(value)}."
    if kind in ("tuple_type", "list_type"):
        return f"{field}: must be a list, but got {_shown(value)}. Fix: wrap it in [ ]."
    if kind in ("string_type",):
        return f"{field}: must be a string, but got {_shown(value)}."
    return f"{field}: {err['msg']}, but got {_shown(value)}."


def _int_fix(loc: list[str], value: Any) -> str:
    """How to write a whole number where ``value`` was given (a quoted number, true/false, a fraction)."""
    leaf = loc[-1] if loc and not loc[-1].isdigit() else (loc[-2] if len(loc) > 1 else "it")
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return f"write it without quotes, as {leaf}: {value.strip()}"
    if isinstance(value, bool):
        return f"give a whole number, e.g. {leaf}: {'1' if value else '0'} (true and false are not numbers)"
    return "use a whole number" + (" (or type: float)" if loc and loc[0] == "params" else "")


_BOUNDS = {
    "greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"), "less_than_equal": ("<=", "le"),
}


def _valid_keys(loc: list[str], raw: Mapping[str, Any]) -> list[str]:
    if not loc:
        return list(StudySpec.model_fields)
    if loc[0] in _SECTION_MODELS and len(loc) == 1:
        return list(_SECTION_MODELS[loc[0]].model_fields)
    if loc[0] == "objectives" and len(loc) == 2:
        return list(Objective.model_fields)
    if loc[0] == "params" and len(loc) == 2:
        kind = (raw.get("params") or {}).get(loc[1], {}).get("type")
        if kind in _PARAM_MODELS:
            return list(_PARAM_MODELS[kind].model_fields)
    return []

