"""Search-space validation: every rule a user can break is reported by a pinned message.

Each message must name the field, the rule, the value and the fix, so the
patterns below match those parts, not the whole sentence.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tuner import SpecError, StudySpec, load_spec

PRESETS = sorted((Path(__file__).resolve().parents[1] / "search_spaces").glob("*.yaml"))


def spec(**overrides: Any) -> dict[str, Any]:
    """A valid spec dict (built-in workload, one float param); keyword args replace keys."""
    base = {
        "name": "s",
        "workload": "mlp",
        "data": "wine",
        "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}},
    }
    return {**base, **overrides}


def params(**params: Any) -> dict[str, Any]:
    return spec(params=params)


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------- valid specs


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_presets_load(path: Path) -> None:
    loaded = load_spec(path)
    assert isinstance(loaded, StudySpec)
    assert loaded.params
    # What the store saves (to_dict) must load back to the same spec for `tuner resume`.
    assert load_spec(loaded.to_dict()) == loaded


def test_presets_exist() -> None:
    assert len(PRESETS) >= 4


def test_spec_is_frozen() -> None:
    loaded = load_spec(params(
        lr={"type": "float", "low": 0.1, "high": 1.0},
        activation={"type": "categorical", "choices": ["relu", "tanh"]},
    ))
    with pytest.raises(ValidationError, match="frozen"):
        loaded.epochs = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        loaded.objective.metric = "val_acc"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        loaded.params["lr"].low = 0.0  # type: ignore[misc]
    assert isinstance(loaded.params["activation"].choices, tuple)


def test_overrides_replace_file_keys_and_none_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "workload: mlp\ndata: wine\nstrategy: tpe\n"
                           "params: {lr: {type: float, low: 0.1, high: 1}}\n", "my_space.yaml")
    loaded = load_spec(path, {"strategy": "random", "trials": 5, "epochs": None})
    assert (loaded.name, loaded.strategy, loaded.trials, loaded.epochs) == ("my-space", "random", 5, 10)


def test_choices_keep_their_types() -> None:
    loaded = load_spec(params(batch_size={"type": "categorical", "choices": [32, "full", True, None, 0.5]}))
    assert loaded.params["batch_size"].choices == (32, "full", True, None, 0.5)
    assert [type(c) for c in loaded.params["batch_size"].choices] == [int, str, bool, type(None), float]


# ---------------------------------------------------------------------- one bad input each

FLOAT = {"type": "float", "low": 0.1, "high": 1.0}
CHOICE = {"type": "categorical", "choices": ["adam", "sgd"]}

BAD = {
    # unknown keys: the closest valid key, and the valid keys there
    "unknown top-level key": (
        spec(stratgy="tpe"),
        r"stratgy: unknown key 'stratgy'\. Did you mean 'strategy'\? Valid keys here: name, .*strategy",
    ),
    "unknown param key": (
        params(lr={**FLOAT, "lg": True}),
        r"params\.lr\.lg: unknown key 'lg'\. Did you mean 'log'\? Valid keys here: type, low, high, log",
    ),
    "unknown objective key": (
        spec(objective={"metrc": "val_acc"}),
        r"objective\.metrc: unknown key 'metrc'\. Did you mean 'metric'\?",
    ),
    "unknown resources key": (
        spec(resources={"gpus": 1}),
        r"resources\.gpus: unknown key 'gpus'\. Did you mean 'gpu'\? Valid keys here: cpu, gpu",
    ),
    "unknown param type": (
        params(lr={**FLOAT, "type": "flot"}),
        r"params\.lr\.type: must be one of float, int, categorical, but got 'flot'\. Fix: e\.g\.",
    ),
    "missing bound": (
        params(lr={"type": "float", "low": 0.1}),
        r"params\.lr\.high: required key is missing\. Fix: add `high:`",
    ),
    # ranges
    "float low > high": (
        params(lr={**FLOAT, "low": 1.0, "high": 0.1}),
        r"params\.lr: `low <= high` must hold, but got low=1\.0, high=0\.1\. Fix: swap them",
    ),
    "int low > high": (
        params(depth={"type": "int", "low": 5, "high": 1}),
        r"params\.depth: `low <= high` must hold, but got low=5, high=1\. Fix: swap them",
    ),
    "log with low = 0": (
        params(lr={**FLOAT, "low": 0, "log": True}),
        r"params\.lr: `log: true` needs `low > 0`, but got low=0\.0\. Fix: set a positive low",
    ),
    "log with low < 0 (int)": (
        params(width={"type": "int", "low": -8, "high": 64, "log": True}),
        r"params\.width: `log: true` needs `low > 0`, but got low=-8\. Fix: set a positive low",
    ),
    "NaN bound": (
        params(lr={**FLOAT, "low": float("nan")}),
        r"params\.lr\.low: must be a finite number, but got nan\. Fix: use a finite bound",
    ),
    "infinite bound": (
        params(lr={**FLOAT, "high": float("inf")}),
        r"params\.lr\.high: must be a finite number, but got inf\. Fix: use a finite bound",
    ),
    "float step = 0": (
        params(lr={**FLOAT, "step": 0}),
        r"params\.lr: `step > 0` must hold, but got step=0\.0\. Fix: use a positive step",
    ),
    "int step < 0": (
        params(depth={"type": "int", "low": 1, "high": 4, "step": -1}),
        r"params\.depth: `step > 0` must hold, but got step=-1\. Fix: use a positive step",
    ),
    "log with step": (
        params(lr={**FLOAT, "log": True, "step": 0.1}),
        r"params\.lr: `log` and `step` cannot be combined, but got log=true, step=0\.1\. Fix: drop one",
    ),
    "int with a fractional bound": (
        params(depth={"type": "int", "low": 1.5, "high": 4}),
        r"params\.depth\.low: must be an integer, but got 1\.5\. Fix: use a whole number \(or type: float\)",
    ),
    "int with a text bound": (
        params(depth={"type": "int", "low": 1, "high": "four"}),
        r"params\.depth\.high: must be an integer, but got 'four'\. Fix: use a whole number",
    ),
    "int with a fractional value": (
        params(depth={"type": "int", "low": 1, "high": 4, "values": [1, 2.5]}),
        r"params\.depth\.values\.1: must be an integer, but got 2\.5\. Fix: use a whole number",
    ),
    "value outside [low, high]": (
        params(lr={**FLOAT, "values": [0.5, 2.0]}),
        r"params\.lr\.values: every value must lie in \[low, high\] = \[0\.1, 1\.0\], but got 2\.0\. "
        r"Fix: widen the range or drop the value",
    ),
    # choices
    "empty choices": (
        params(act={"type": "categorical", "choices": []}),
        r"params\.act\.choices: `choices` must not be empty, but got \[\]\. Fix: list at least one value",
    ),
    "choices not a list": (
        params(act={"type": "categorical", "choices": "relu"}),
        r"params\.act\.choices: must be a list, but got 'relu'\. Fix: wrap it in \[ \]",
    ),
    "a list inside choices": (
        params(hidden={"type": "categorical", "choices": [[64], "wide"]}),
        r"params\.hidden\.choices\.0: must be a single value \(a number, string, true/false or null\), "
        r"but got \[64\]\. Fix: .*name each option",
    ),
    "a mapping inside choices": (
        params(opt={"type": "categorical", "choices": ["sgd", {"name": "adam", "lr": 0.1}]}),
        r"params\.opt\.choices\.1: must be a single value .*but got \{'name': 'adam', 'lr': 0\.1\}\. Fix:",
    ),
    "NaN inside choices": (
        params(p={"type": "categorical", "choices": [0.5, float("nan")]}),
        r"params\.p\.choices\.1: must be a finite number, but got nan\. Fix: use a finite value",
    ),
    "repeated choice": (
        params(act={"type": "categorical", "choices": ["relu", "tanh", "relu"]}),
        r"params\.act\.choices: `choices` must not repeat a value, but got 'relu' more than once\. "
        r"Fix: list each value once",
    ),
    # conditions
    "when names an unknown param": (
        params(activation=CHOICE, momentum={**FLOAT, "when": {"optimiser": "sgd"}}),
        r"params\.momentum\.when: names an unknown param 'optimiser'\.( Did you mean '\w+'\?)? "
        r"Valid params: activation\.",
    ),
    "when suggests the closest param": (
        params(optimizer=CHOICE, momentum={**FLOAT, "when": {"optimiser": "sgd"}}),
        r"params\.momentum\.when: names an unknown param 'optimiser'\. Did you mean 'optimizer'\?",
    ),
    "when value outside the choices": (
        params(optimizer=CHOICE, momentum={**FLOAT, "when": {"optimizer": "sgdd"}}),
        r"params\.momentum\.when: optimizer must be one of its choices \['adam', 'sgd'\], but got 'sgdd'\. "
        r"Did you mean 'sgd'\?",
    ),
    "when on a non-categorical param": (
        params(lr=FLOAT, momentum={**FLOAT, "when": {"lr": 0.5}}),
        r"params\.momentum\.when: can only depend on a categorical param, but 'lr' is float\. "
        r"Fix: make 'lr' categorical",
    ),
    "when with a list value": (
        params(optimizer=CHOICE, momentum={**FLOAT, "when": {"optimizer": ["sgd", "adam"]}}),
        r"params\.momentum\.when\.optimizer: must be a single value .*but got \['sgd', 'adam'\]",
    ),
    # grid
    "grid over a continuous float": (
        spec(strategy="grid", params={"lr": FLOAT}),
        r"params\.lr: strategy `grid` needs a finite set of values, but 'lr' is a continuous float "
        r"in \[0\.1, 1\.0\]\. Fix: add `values: \[\.\.\.\]`",
    ),
    "grid over millions of ints": (
        spec(strategy="grid", params={"train_size": {"type": "int", "low": 0, "high": 10**7}}),
        r"params: strategy `grid` queues every point of the grid, so it must have at most 100,000 points, "
        r"but got 10,000,001 \(train_size: 10,000,001 values\)\. Fix: list fewer points with `values: "
        r"\[\.\.\.\]` \(or a larger `step` on an int\), or use strategy random or tpe\.",
    ),
    # names that must come from a list
    "unknown strategy": (
        spec(strategy="nope"),
        r"`strategy` must be one of grid, random, tpe, gp, cmaes, qmc, auto, but got 'nope'\.",
    ),
    "misspelt strategy": (
        spec(strategy="TPE"),
        r"`strategy` must be one of grid, .*but got 'TPE'\. Did you mean 'tpe'\?",
    ),
    "unknown workload": (
        spec(workload="mpl"),
        r"`workload` must be a built-in \(mlp, cnn\) or 'package\.module:function', but got 'mpl'\. "
        r"Did you mean 'mlp'\?",
    ),
    "unknown data set": (
        spec(data="wines"),
        r"`data` must be one of mnist1d, digits, wine, breast_cancer, iris, but got 'wines'\. "
        r"Did you mean 'wine'\?",
    ),
    "missing data set": (
        {k: v for k, v in spec().items() if k != "data"},
        r"`data` is required for the built-in workload 'mlp'\. Fix: add `data:` with one of mnist1d, ",
    ),
    "unknown metric": (
        spec(objective={"metric": "val_los"}),
        r"`objective\.metric` must be one of val_loss, val_acc, train_loss, train_acc, gap_loss, gap_acc "
        r"for the built-in workloads, but got 'val_los'\. Did you mean 'val_loss'\?",
    ),
    "unknown direction": (
        spec(objective={"direction": "up"}),
        r"objective\.direction: must be one of 'minimize' or 'maximize', but got 'up'",
    ),
    "workload module does not import": (
        spec(workload="no_such_module_xyz:train"),
        r"`workload` 'no_such_module_xyz:train' does not import: ModuleNotFoundError: "
        r"No module named 'no_such_module_xyz'\. Fix: check the spelling",
    ),
    "workload function missing": (
        spec(workload="json:no_such_function"),
        r"`workload` 'json:no_such_function' does not import: module 'json' has no function "
        r"'no_such_function'\. Fix:",
    ),
    # budget
    "trials = 0": (spec(trials=0), r"trials: must be > 0, but got 0\. Fix: use a value > 0"),
    "trials < 0": (spec(trials=-3), r"trials: must be > 0, but got -3\. Fix: use a value > 0"),
    "parallel = 0": (spec(parallel=0), r"parallel: must be > 0, but got 0\. Fix: use a value > 0"),
    "epochs = 0": (spec(epochs=0), r"epochs: must be > 0, but got 0\. Fix: use a value > 0"),
    "epochs < 0": (spec(epochs=-1), r"epochs: must be > 0, but got -1\. Fix: use a value > 0"),
    "timeout = 0": (spec(timeout=0), r"timeout: must be > 0(\.0)?, but got 0\. Fix:"),
    "zero cpus": (spec(resources={"cpu": 0}), r"resources\.cpu: must be > 0(\.0)?, but got 0\. Fix:"),
    "threshold above its bound": (
        spec(diagnostics={"stall_tolerance": 1.5}),
        r"diagnostics\.stall_tolerance: must be < 1(\.0)?, but got 1\.5\. Fix: use a value < 1",
    ),
    # seeds: what NumPy and Optuna's samplers accept
    "negative seed": (
        spec(seed=-1),
        r"`seed` must be in 0\.\.4294967295 \(2\*\*32 - 1, what NumPy and Optuna's samplers accept\), "
        r"but got -1\. Fix: use a seed in that range, e\.g\. seed: 0\.",
    ),
    "seed past 2**32 - 1": (spec(seed=2**32), r"`seed` must be in 0\.\.4294967295 .*but got 4294967296\. Fix:"),
    # names
    "bad study name": (
        spec(name="my study"),
        r"`name` must start with a letter or digit .*but got 'my study'\. Fix: e\.g\. name: mnist1d-mlp",
    ),
    "param named like a reserved key": (
        params(epochs={"type": "int", "low": 1, "high": 5}),
        r"params\.epochs: the name 'epochs' is set by tuner\. Fix: rename the param",
    ),
    "param also fixed": (
        spec(fixed={"lr": 0.1}),
        r"params\.lr: the name 'lr' is also in `fixed`\. Fix: rename the param",
    ),
    "a list in fixed": (
        spec(fixed={"hidden": [64, 64]}),
        r"fixed\.hidden: must be a single value .*but got \[64, 64\]",
    ),
    "no params": (spec(params={}), r"`params` must name at least one hyperparameter, but got none\. Fix:"),
    "params not a mapping": (spec(params=["lr"]), r"params: must be a mapping of keys, but got \['lr'\]"),
}


@pytest.mark.parametrize(("raw", "pattern"), list(BAD.values()), ids=list(BAD))
def test_bad_input_is_rejected_with_a_pinned_message(raw: dict[str, Any], pattern: str) -> None:
    with pytest.raises(SpecError, match=pattern) as info:
        load_spec(raw)
    message = str(info.value)
    assert message.startswith("<spec>: ")  # a dict has no file name; the label says so
    assert len(info.value.problems) == 1, message  # one mistake, one problem
    # pydantic's own wording ("Input should be", "validation error") must not leak through.
    assert "Input should" not in message and "validation error" not in message
    assert "For further information" not in message


def test_no_message_repeats_its_field() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec(strategy="nope"))
    assert "strategy: `strategy`" not in str(info.value)


def test_workload_that_raises_on_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_workload_mod.py").write_text("raise RuntimeError('needs a GPU driver')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        SpecError,
        match=r"`workload` 'broken_workload_mod:train' does not import: RuntimeError: needs a GPU driver\. Fix:",
    ):
        load_spec(spec(workload="broken_workload_mod:train"))


def test_workload_that_imports_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "good_workload_mod.py").write_text("def train(params, report):\n    report(1, loss=1.0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_spec(spec(workload="good_workload_mod:train", objective={"metric": "loss"}))
    assert loaded.workload_target == "good_workload_mod:train"


def test_overrides_are_validated_too() -> None:
    with pytest.raises(SpecError, match=r"`strategy` must be one of grid, .*but got 'nope'"):
        load_spec(spec(), {"strategy": "nope"})
    with pytest.raises(SpecError, match=r"params\.lr: strategy `grid` needs a finite set of values"):
        load_spec(spec(), {"strategy": "grid"})


# ---------------------------------------------------------------------- several at once


def test_every_problem_is_reported_at_once() -> None:
    raw = spec(
        strategy="nope",
        trials=0,
        epochs=-1,
        data="wines",
        params={
            "lr": {"type": "float", "low": 1.0, "high": 0.1},
            "act": {"type": "categorical", "choices": []},
        },
    )
    with pytest.raises(SpecError, match=r"^<spec>: \d+ problems\n") as info:
        load_spec(raw)
    problems = info.value.problems
    expected = [
        r"`strategy` must be one of .*'nope'",
        r"^trials: must be > 0, but got 0",
        r"^epochs: must be > 0, but got -1",
        r"^params\.lr: `low <= high` must hold",
        r"^params\.act\.choices: `choices` must not be empty",
        # A cross-field rule, which runs once the mistakes above stand in for their defaults.
        r"^`data` must be one of .*'wines'. Did you mean 'wine'\?",
    ]
    for pattern in expected:
        assert any(re.search(pattern, p) for p in problems), (pattern, problems)
    assert len(problems) == len(expected), problems
    # Each problem is one bullet line of the message.
    assert str(info.value).count("\n  - ") == len(problems)


def test_cross_field_problems_are_reported_together() -> None:
    raw = spec(
        data="wines",
        objective={"metric": "val_los"},
        params={
            "optimizer": CHOICE,
            "momentum": {**FLOAT, "when": {"optimizer": "sgdd"}},
            "dropout": {**FLOAT, "when": {"optimiser": "adam"}},
        },
    )
    with pytest.raises(SpecError, match=r"^<spec>: 4 problems\n") as info:
        load_spec(raw)
    message = str(info.value)
    assert "but got 'wines'" in message
    assert "but got 'val_los'" in message
    assert "params.momentum.when: optimizer must be one of its choices" in message
    assert "params.dropout.when: names an unknown param 'optimiser'" in message


# ---------------------------------------------------------------------- YAML files


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nparams:\n  lr: {type: float, low: 0.1 high: 1}\n")
    pattern = (
        rf"^{re.escape(str(path))}: YAML syntax error at line 3, column 34: expected ',' or '}}', "
        r"but got ':'\. Fix: correct the YAML there\.$"
    )
    with pytest.raises(SpecError, match=pattern):
        load_spec(path)


def test_yaml_tab_indentation(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nparams:\n\tlr: 1\n")
    with pytest.raises(SpecError, match=r"space\.yaml: YAML syntax error at line 3, column 1: .*'\\t'"):
        load_spec(path)


def test_yaml_unknown_key_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "workload: mlp\ndata: wine\nepoch: 3\nparams: {lr: {type: float, low: 0.1, high: 1}}\n")
    pattern = rf"^{re.escape(str(path))}: epoch: unknown key 'epoch'\. Did you mean 'epochs'\?"
    with pytest.raises(SpecError, match=pattern):
        load_spec(path)


def test_yaml_nan_and_inf_bounds(tmp_path: Path) -> None:
    path = write(tmp_path, "workload: mlp\ndata: wine\nparams:\n  lr: {type: float, low: .nan, high: .inf}\n")
    with pytest.raises(SpecError, match=rf"^{re.escape(str(path))}: 2 problems") as info:
        load_spec(path)
    assert info.value.problems == [
        "params.lr.low: must be a finite number, but got nan. Fix: use a finite bound.",
        "params.lr.high: must be a finite number, but got inf. Fix: use a finite bound.",
    ]


def test_yaml_unhashable_choices(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "workload: mlp\ndata: wine\nparams:\n  layers: {type: categorical, choices: [[64], {a: 1}]}\n",
    )
    with pytest.raises(SpecError, match=r"2 problems") as info:
        load_spec(path)
    assert [p.split(":")[0] for p in info.value.problems] == [
        "params.layers.choices.0", "params.layers.choices.1",
    ]
    assert all("must be a single value" in p for p in info.value.problems)


def test_yaml_int_param_with_fractional_bound(tmp_path: Path) -> None:
    path = write(tmp_path, "workload: mlp\ndata: wine\nparams:\n  depth: {type: int, low: 1, high: 4.5}\n")
    with pytest.raises(SpecError, match=r"params\.depth\.high: must be an integer, but got 4\.5\. Fix:"):
        load_spec(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match=rf"^{re.escape(str(path))}: no such file\. Fix: check the path"):
        load_spec(path)


@pytest.mark.parametrize(("text", "kind"), [("", "NoneType"), ("- a\n- b\n", "list"), ("just text\n", "str")])
def test_file_that_is_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError, match=rf"must hold a mapping of keys .*but got {kind}\. Fix: see search_spaces/"):
        load_spec(path)
