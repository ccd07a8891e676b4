"""Search-space files: YAML -> a frozen, validated :class:`StudySpec`.

All checks on user input live here, so that nothing reaches the store or a
worker unless it is valid. Validation is done by pydantic models; their errors
are rewritten into messages that name the field, the rule, the value and the
fix (pydantic's own wording names types, not fixes).
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tuner.diagnosis import Thresholds
from tuner.errors import SpecError

# `auto` (the default) picks among the others from the space and the budget (strategies.choose).
STRATEGIES = ("grid", "random", "tpe", "gp", "cmaes", "qmc", "auto")
BUILTIN_WORKLOADS = {"mlp": "workers.mlp:train", "cnn": "workers.cnn:train"}
DATASETS = ("mnist1d", "digits", "wine", "breast_cancer", "iris")
BUILTIN_METRICS = ("val_loss", "val_acc", "train_loss", "train_acc", "gap_loss", "gap_acc")
# Marks a spec whose workload is a callable given to the Python API.
CALLABLE_PREFIX = "callable:"
# Keys tuner passes to every workload next to the sampled params.
RESERVED_PARAMS = ("epochs", "data", "seed")
# Study names (and the schedules that launch studies): safe in URLs, file names and shells.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
# A grid over an int range is fine, but not one that enumerates millions of points.
MAX_GRID_POINTS = 100_000


def _check_scalar(value: Any) -> Any:
    # Without this, a list or mapping (or NaN) fails each member of the union
    # in turn, and the user reads four type errors instead of one rule.
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, but got {value!r}. Fix: use a finite value.")
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError(
            f"must be a single value (a number, string, true/false or null), but got {value!r}. "
            "Fix: give one plain value; to choose among lists or mappings, name each option "
            "(e.g. choices: [small, large]) and look the name up in the workload."
        )
    return value


Scalar = Annotated[Union[bool, int, float, str], BeforeValidator(_check_scalar)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FloatParam(_Model):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None
    values: tuple[float, ...] | None = None
    when: dict[str, Scalar] | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_range(self.low, self.high, self.log, self.step)
        return self


class IntParam(_Model):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int | None = None
    values: tuple[int, ...] | None = None
    when: dict[str, Scalar] | None = None

    @model_validator(mode="after")
    def _check(self) -> IntParam:
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
        dupes = sorted({repr(c) for c in choices if list(choices).count(c) > 1})
        if dupes:
            raise ValueError(
                f"`choices` must not repeat a value, but got {', '.join(dupes)} more than once. "
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
    gap_penalty: float = Field(default=0.0, ge=0)
    # A constraint: trials whose gap (at the best epoch) exceeds this are infeasible.
    max_gap: float | None = None

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
}


class Pruner(BaseModel):
    """Optuna's pruner ``type`` with its own options, plus tuner's diagnostics pruner."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    type: str = "successive_halving"
    # Stop a trial as soon as it diverges, its gradients explode, or they vanish
    # for `diagnostics.vanishing_epochs` epochs; composes with `type`.
    diagnostics: bool = True

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @field_validator("type")
    @classmethod
    def _check_type(cls, kind: str) -> str:
        return _one_of("pruner.type", kind, tuple(PRUNERS))

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check_options(self) -> Pruner:
        import inspect

        import optuna

        cls = getattr(optuna.pruners, PRUNERS[self.type])
        valid = [p for p in inspect.signature(cls).parameters if p != "self"]
        for key in self.options:
            if key not in valid:
                listed = ", ".join(valid) if valid else "none"
                raise ValueError(
                    f"`pruner.{key}` is not an option of the {self.type} pruner "
                    f"(optuna.pruners.{cls.__name__}).{_did_you_mean(key, valid)} Valid options: {listed}."
                )
        sig = inspect.signature(cls).parameters
        missing = [k for k, p in sig.items() if p.default is p.empty and k not in self.options]
        if missing:
            raise ValueError(
                f"`pruner` of type {self.type} needs {', '.join(missing)}. "
                f"Fix: e.g. pruner: {{type: {self.type}, {missing[0]}: 25.0}}."
            )
        try:
            cls(**self.options)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"`pruner` options are invalid for {self.type}: {exc}") from None
        return self


class EarlyStopping(_Model):
    """Stop a trial when its objective has not improved for ``patience`` epochs; it keeps its best epoch."""

    patience: int = Field(gt=0)
    min_delta: float = Field(default=0.0, ge=0)


class Resources(_Model):
    cpu: float = Field(default=1.0, gt=0)
    gpu: float = Field(default=0.0, ge=0)


class StudySpec(_Model):
    """A validated study: what to tune, how, and with which budget."""

    name: str
    workload: str = "mlp"
    data: str | None = None
    objective: Objective = Objective()
    strategy: str = "auto"
    trials: int | None = Field(default=None, gt=0)
    parallel: int = Field(default=1, gt=0)
    epochs: int = Field(default=10, gt=0)
    seed: int | None = None
    timeout: float | None = Field(default=None, gt=0)
    # Seconds one trial may run before it is stopped and recorded FAIL (a hung trial).
    trial_timeout: float | None = Field(default=None, gt=0)
    # Re-runs (same params) of a trial whose worker process or node died.
    retries: int = Field(default=1, ge=0)
    resources: Resources = Resources()
    fixed: dict[str, Scalar | None] = {}
    pruner: Pruner = Pruner()
    early_stopping: EarlyStopping | None = None
    diagnostics: Thresholds = Thresholds()
    params: dict[str, Param]

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not re.fullmatch(NAME_PATTERN, name):
            raise ValueError(
                f"`name` must start with a letter or digit and hold only letters, digits, "
                f"'.', '_' and '-', but got {name!r}. Fix: e.g. name: mnist1d-mlp."
            )
        return name

    @field_validator("strategy")
    @classmethod
    def _check_strategy(cls, strategy: str) -> str:
        return _one_of("strategy", strategy, STRATEGIES)

    @field_validator("params")
    @classmethod
    def _check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        if not params:
            raise ValueError(
                "`params` must name at least one hyperparameter, but got none. "
                "Fix: e.g. params: {lr: {type: float, low: 1.0e-4, high: 0.1, log: true}}."
            )
        return params

    @model_validator(mode="after")
    def _check_cross_fields(self) -> StudySpec:
        problems = _cross_field_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

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

    def context(self) -> dict[str, Any]:
        """Keys every workload receives besides the sampled params."""
        ctx: dict[str, Any] = {"epochs": self.epochs, "seed": self.seed or 0}
        if self.data is not None:
            ctx["data"] = self.data
        return {**ctx, **self.fixed}

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# --------------------------------------------------------------------------- rules


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(
            f"`low <= high` must hold, but got low={low}, high={high}. Fix: swap them."
        )
    if log and low <= 0:
        raise ValueError(
            f"`log: true` needs `low > 0`, but got low={low}. "
            "Fix: set a positive low (e.g. 1.0e-5) or drop `log`."
        )
    if step is not None and step <= 0:
        raise ValueError(f"`step > 0` must hold, but got step={step}. Fix: use a positive step.")
    if log and step is not None:
        raise ValueError(
            f"`log` and `step` cannot be combined, but got log=true, step={step}. "
            "Fix: drop one of them."
        )


def _one_of(field: str, value: str, valid: tuple[str, ...]) -> str:
    if value in valid:
        return value
    raise ValueError(
        f"`{field}` must be one of {', '.join(valid)}, but got {value!r}.{_did_you_mean(value, valid)}"
    )


def _did_you_mean(value: Any, valid: Any) -> str:
    # Compare lower-cased, so that "TPE" or "MLP" still finds its name.
    names = {str(v).lower(): v for v in valid}
    close = difflib.get_close_matches(str(value).lower(), list(names), n=1)
    return f" Did you mean {names[close[0]]!r}?" if close else ""


def _cross_field_problems(spec: StudySpec) -> list[str]:
    problems: list[str] = []
    problems += _workload_problems(spec)
    problems += _metric_problems(spec)
    for name, param in spec.params.items():
        problems += _param_problems(spec, name, param)
    if spec.strategy == "grid" and not problems:
        problems += _grid_problems(spec)
    return problems


def _workload_problems(spec: StudySpec) -> list[str]:
    if spec.is_builtin:
        if spec.data is None:
            return [
                f"`data` is required for the built-in workload {spec.workload!r}. "
                f"Fix: add `data:` with one of {', '.join(DATASETS)}."
            ]
        if spec.data not in DATASETS:
            return [
                f"`data` must be one of {', '.join(DATASETS)}, but got {spec.data!r}."
                f"{_did_you_mean(spec.data, DATASETS)}"
            ]
        return []
    if spec.workload.startswith(CALLABLE_PREFIX):
        return []  # a Python callable handed to tuner.launch(objective=...)
    if ":" not in spec.workload:
        return [
            f"`workload` must be a built-in ({', '.join(BUILTIN_WORKLOADS)}) or "
            f"'package.module:function', but got {spec.workload!r}."
            f"{_did_you_mean(spec.workload, tuple(BUILTIN_WORKLOADS))}"
        ]
    try:
        resolve_workload(spec.workload)
    except ImportError as exc:
        return [f"`workload` {spec.workload!r} does not import: {exc}. {_IMPORT_FIX}"]
    return []


_IMPORT_FIX = (
    "Fix: check the spelling, and run tuner from the directory that holds the module "
    "(or install it) so that `python -c 'import MODULE'` works there."
)


def resolve_workload(target: str) -> Any:
    """Import ``module:function`` and return the function (ImportError if it can't)."""
    module_name, _, func_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a module that raises on import is as broken as a missing one
        raise ImportError(f"{type(exc).__name__}: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ImportError(f"module {module_name!r} has no function {func_name!r}")
    return func


def _metric_problems(spec: StudySpec) -> list[str]:
    metric = spec.objective.metric
    if spec.is_builtin and metric not in BUILTIN_METRICS:
        return [
            f"`objective.metric` must be one of {', '.join(BUILTIN_METRICS)} for the built-in "
            f"workloads, but got {metric!r}.{_did_you_mean(metric, BUILTIN_METRICS)}"
        ]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", metric):
        return [
            f"`objective.metric` must be a name a workload reports (letters, digits, '_'), "
            f"but got {metric!r}."
        ]
    return []


def _param_problems(spec: StudySpec, name: str, param: Any) -> list[str]:
    where = f"params.{name}"
    if name in RESERVED_PARAMS or name in spec.fixed:
        taken = "set by tuner" if name in RESERVED_PARAMS else "also in `fixed`"
        return [f"{where}: the name {name!r} is {taken}. Fix: rename the param or remove it there."]
    problems = []
    for value in getattr(param, "values", None) or ():
        if isinstance(param, (FloatParam, IntParam)) and not param.low <= value <= param.high:
            problems.append(
                f"{where}.values: every value must lie in [low, high] = [{param.low}, {param.high}], "
                f"but got {value}. Fix: widen the range or drop the value."
            )
    for other, expected in (param.when or {}).items():
        if other not in spec.params:
            problems.append(
                f"{where}.when: names an unknown param {other!r}.{_did_you_mean(other, spec.params)} "
                f"Valid params: {', '.join(p for p in spec.params if p != name)}."
            )
        elif other == name:
            problems.append(f"{where}.when: a param cannot depend on itself.")
        elif isinstance(spec.params[other], CategoricalParam):
            choices = spec.params[other].choices
            if expected not in choices:
                problems.append(
                    f"{where}.when: {other} must be one of its choices "
                    f"{list(choices)}, but got {expected!r}.{_did_you_mean(expected, choices)}"
                )
        else:
            problems.append(
                f"{where}.when: can only depend on a categorical param, but {other!r} is "
                f"{spec.params[other].type}. Fix: make {other!r} categorical."
            )
    return problems


def _grid_problems(spec: StudySpec) -> list[str]:
    problems = []
    for name, param in spec.params.items():
        if isinstance(param, FloatParam) and param.values is None:
            problems.append(
                f"params.{name}: strategy `grid` needs a finite set of values, but {name!r} is a "
                f"continuous float in [{param.low}, {param.high}]. Fix: add "
                f"`values: [...]` to it, or use strategy auto, random, tpe or gp."
            )
        if isinstance(param, IntParam) and param.values is None:
            count = (param.high - param.low) // (param.step or 1) + 1
            if count > MAX_GRID_POINTS:
                problems.append(
                    f"params.{name}: strategy `grid` would enumerate {count} ints. Fix: add "
                    f"`values: [...]` or a larger `step`."
                )
    return problems


# --------------------------------------------------------------------------- loading


def load_spec(
    source: str | Path | Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> StudySpec:
    """Read and validate a search space from a YAML path or a dict.

    ``overrides`` (CLI flags, API keywords) replace top-level keys of the file;
    None values are ignored.
    """
    if isinstance(source, Mapping):
        label, raw = "<spec>", dict(source)
    else:
        label, raw = str(source), _read_yaml(Path(source))
    raw.setdefault("name", Path(label).stem.replace("_", "-") if label != "<spec>" else "study")
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = value
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as exc:
        problems = [line for err in exc.errors() for line in _explain(err, raw).split("\n")]
        raise SpecError(label, problems) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(str(path), ["no such file. Fix: check the path (presets live in search_spaces/)."])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise SpecError(
            str(path), [f"YAML syntax error at {where}: {exc.problem}. Fix: correct the YAML there."]
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [f"YAML error: {exc}"]) from None
    if not isinstance(data, dict):
        raise SpecError(
            str(path),
            [f"the file must hold a mapping of keys (name, workload, params, ...), but got "
             f"{type(data).__name__}. Fix: see search_spaces/ for examples."],
        )
    return data


# --------------------------------------------------------------------------- messages

_PARAM_MODELS = {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam}
_SECTION_MODELS = {
    "objective": Objective, "resources": Resources, "early_stopping": EarlyStopping,
    "diagnostics": Thresholds,
}


def _explain(err: Mapping[str, Any], raw: Mapping[str, Any]) -> str:
    """Turn one pydantic error into 'field: rule, value, fix'."""
    loc = [str(p) for p in err["loc"]]
    # Discriminated unions add the tag to the path (params.lr.float.low); drop it.
    if len(loc) >= 3 and loc[0] == "params" and loc[2] in _PARAM_MODELS:
        del loc[2]
    field = ".".join(loc) if loc else "(top level)"
    kind, value = err["type"], err.get("input")
    if kind == "value_error":
        msg = str(err["ctx"]["error"])
        # Messages that already name their field ("params.x: ...", "`strategy` must ...") keep it.
        named = msg.startswith(("params.", f"`{field}`"))
        return msg if named or not loc else f"{field}: {msg}"
    if kind == "extra_forbidden":
        valid = _valid_keys(loc[:-1], raw)
        return (
            f"{field}: unknown key {loc[-1]!r}.{_did_you_mean(loc[-1], valid)} "
            f"Valid keys here: {', '.join(valid)}."
        )
    if kind == "missing":
        return f"{field}: required key is missing. Fix: add `{loc[-1]}:`."
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        got = f"got {value.get('type')!r}" if isinstance(value, dict) and "type" in value else "got none"
        return (
            f"{field}.type: must be one of float, int, categorical, but {got}. "
            "Fix: e.g. {type: float, low: 0.0, high: 1.0}."
        )
    if kind == "finite_number":
        return f"{field}: must be a finite number, but got {value!r}. Fix: use a finite bound."
    if kind in ("int_from_float", "int_parsing", "int_type"):
        return f"{field}: must be an integer, but got {value!r}. Fix: use a whole number (or type: float)."
    if kind in ("float_parsing", "float_type"):
        return f"{field}: must be a number, but got {value!r}."
    if kind in ("greater_than", "greater_than_equal"):
        rule = ">" if kind == "greater_than" else ">="
        bound = err["ctx"].get("gt", err["ctx"].get("ge"))
        return f"{field}: must be {rule} {bound}, but got {value!r}. Fix: use a value {rule} {bound}."
    if kind == "literal_error":
        return f"{field}: must be one of {err['ctx']['expected']}, but got {value!r}."
    if kind in ("bool_parsing", "bool_type"):
        return f"{field}: must be true or false, but got {value!r}."
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{field}: must be a mapping of keys, but got {value!r}."
    if kind in ("tuple_type", "list_type"):
        return f"{field}: must be a list, but got {value!r}. Fix: wrap it in [ ]."
    if kind in ("string_type",):
        return f"{field}: must be a string, but got {value!r}."
    return f"{field}: {err['msg']}, but got {value!r}."


def _valid_keys(loc: list[str], raw: Mapping[str, Any]) -> list[str]:
    if not loc:
        return list(StudySpec.model_fields)
    if loc[0] in _SECTION_MODELS and len(loc) == 1:
        return list(_SECTION_MODELS[loc[0]].model_fields)
    if loc[0] == "params" and len(loc) == 2:
        kind = (raw.get("params") or {}).get(loc[1], {}).get("type")
        if kind in _PARAM_MODELS:
            return list(_PARAM_MODELS[kind].model_fields)
    return []

