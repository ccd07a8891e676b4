"""Spec values that used to pass the loader and fail only at run time, and files with several mistakes.

A reserved key in `fixed`, a control character in a param name, bounds no
sampler can draw from, a timer past what a thread can wait, a workload that is
no `train(params, report)`, an unreachable MLflow store, `true` or '2' where a
whole number belongs, a `step` wider than its range: each is refused before
anything is written, naming the field, the rule, the value and the fix. A
sample runs through the installed `tuner` script from a user's directory (exit
2, one message, no traceback, no store file); the rest through the loader.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.services import user_env
from tuner import SpecError, load_spec
from tuner.plan import Plan

TRAIN = '''\
def train(params, report):
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=float(params["x"]))
'''
X = "  x: {type: float, low: 0.0, high: 1.0}\n"


def objective(trial):  # Optuna's shape, named as a spec's workload
    return trial.suggest_float("x", 0, 1)


def tuner(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shutil.which("tuner") or "tuner", *args], cwd=cwd, env=user_env(COLUMNS="200"),
                          capture_output=True, text=True, timeout=120)


def refused_once(proc: subprocess.CompletedProcess[str], cwd: Path) -> str:
    """Exit 2, one error line and nothing else, no traceback, no store file: that line."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output[-3000:]
    assert not list(cwd.rglob("*.db*")) and not (cwd / "mlruns").exists(), "something was written"
    return lines[0]


def user_dir(tmp_path: Path, spec: str) -> Path:
    """A user's folder: train.py and space.yaml, whose keys ``spec`` gives or replaces."""
    (tmp_path / "train.py").write_text(TRAIN)
    head = {"workload": "train:train", "epochs": "2", "trials": "1"}
    given = {line.split(":")[0] for line in spec.splitlines()}
    (tmp_path / "space.yaml").write_text("".join(f"{k}: {v}\n" for k, v in head.items() if k not in given) + spec)
    return tmp_path


CLI_CASES = {
    "fixed epochs": (
        "fixed: {epochs: 100}\nparams:\n" + X,
        "fixed.epochs: is set by tuner from the top-level `epochs:` (epochs: 2 here), so a value here would "
        "silently replace it; got 100. Fix: set `epochs: 100` at the top level and remove fixed.epochs.",
    ),
    "NUL in a param name": (
        'params:\n  "a\\0b": {type: float, low: 0.0, high: 1.0}\n',
        "params: a param's name must be printable text of 1 to 512 characters (the store keeps it as text), "
        "but 'a\\x00b' holds the control character '\\x00' at position 1. Fix: rename it, e.g. lr or num_layers.",
    ),
    "float range past the largest float": (
        "params:\n  x: {type: float, low: -1.0e308, high: 1.0e308}\n",
        "params.x: `high - low` must be a finite number (samplers draw within it), but low=-1e+308, "
        "high=1e+308 span more than the largest float. Fix: narrow the range",
    ),
    "trial_timeout past a timer": (
        "trial_timeout: 1.0e300\nparams:\n" + X,
        "trial_timeout: must be at most 9223372036 seconds (about 292 years, the longest a timer waits), "
        "but got 1e+300. Fix: use a shorter limit, or remove trial_timeout for none.",
    ),
    "workload that is no train(params, report)": (
        "workload: os:system\nparams:\n" + X,
        "`workload` 'os:system': tuner calls it as train(params, report), but system(command) cannot take "
        "those two arguments. Fix: name a function defined as def train(params, report)",
    ),
    "trials as a string": (
        "trials: '2'\nparams:\n" + X,
        "trials: must be an integer, but got '2'. Fix: write it without quotes, as trials: 2.",
    ),
    "unreachable MLflow database": (
        "log: {mlflow: 'postgresql://tuner:s3cr3t-pw@127.0.0.1:1/ml'}\nparams:\n" + X,
        "log.mlflow: the MLflow tracking store postgresql://tuner:***@127.0.0.1:1/ml cannot be reached: ",
    ),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_the_tuner_command_refuses_a_run_time_mistake_before_writing_anything(tmp_path: Path, case: str,
                                                                               tally) -> None:
    spec, expected = CLI_CASES[case]
    cwd = user_dir(tmp_path, spec)
    line = refused_once(tuner(cwd, "launch", "space.yaml", "--executor", "inline"), cwd)
    assert expected in line, line
    assert "s3cr3t-pw" not in line
    tally("hostile input")


def spec(**keys: Any) -> dict[str, Any]:
    return {"name": "s", "workload": "tests.workloads:noop", "params": {"x": {"type": "float", "low": 0, "high": 1}},
            **keys}


def refused(**keys: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(spec(**keys))
    return caught.value.problems


LOADER_CASES = {
    "trials: true": ({"trials": True}, "trials: must be an integer, but got True. Fix: give a whole number, "
                                       "e.g. trials: 1 (true and false are not numbers)."),
    "seed: true": ({"seed": True}, "seed: must be an integer, but got True. Fix: give a whole number, e.g. seed: 1 "
                                   "(true and false are not numbers)."),
    "epochs: '3'": ({"epochs": "3"}, "epochs: must be an integer, but got '3'. Fix: write it without quotes, "
                                     "as epochs: 3."),
    "int low: false": ({"params": {"x": {"type": "int", "low": False, "high": 3}}},
                       "params.x.low: must be an integer, but got False. Fix: give a whole number, e.g. low: 0 "
                       "(true and false are not numbers)."),
    "timeout: true": ({"timeout": True}, "timeout: must be a number, but got True (true and false are not "
                                         "numbers). Fix: give a number, e.g. 0.5."),
    "float low: false": ({"params": {"x": {"type": "float", "low": False, "high": 1}}},
                         "params.x.low: must be a number, but got False (true and false are not numbers)."),
    "resources.cpu: true": ({"resources": {"cpu": True}}, "resources.cpu: must be a number, but got True"),
    "log: 1": ({"params": {"x": {"type": "float", "low": 0.5, "high": 1, "log": 1}}},
               "params.x.log: must be true or false, but got 1."),
    "probe.narrow: 'yes'": ({"probe": {"narrow": "yes"}}, "probe.narrow: must be true or false, but got 'yes'."),
    "int step past its range": (
        {"params": {"x": {"type": "int", "low": 1, "high": 5, "step": 10}}},
        "params.x: `step` must be at most `high - low` = 4, but got step=10, which would leave the single value "
        "low=1 to try. Fix: use a smaller step, or fix the value in `fixed:` if one value is meant."),
    "float step past its range": (
        {"params": {"x": {"type": "float", "low": 0.0, "high": 0.5, "step": 1.0}}},
        "params.x: `step` must be at most `high - low` = 0.5, but got step=1.0"),
    "float step too fine to count": (
        {"params": {"x": {"type": "float", "low": 0.0, "high": 1e307, "step": 1e-300}}},
        "params.x: `step` must divide `high - low` into at most 2**53 steps (samplers count them exactly), but "
        "step=1e-300 over [0.0, 1e+307] makes inf. Fix: use a larger step, or drop `step` for a continuous range."),
    "int bound past 2**53": (
        {"params": {"x": {"type": "int", "low": 0, "high": 10**23}}},
        "params.x: `high` must lie within ±2**53 (9,007,199,254,740,992), the integers a sampler's float "
        "arithmetic holds exactly, but got high=100000000000000000000000. Fix: narrow the range, or use "
        "type: float (with `log: true` to search the magnitude)."),
    "gp over an int range it would list": (
        {"strategy": "gp", "params": {"x": {"type": "int", "low": 0, "high": 2**40}}},
        "params.x: strategy gp (Optuna's GPSampler) lists every value of a discrete param each trial, so it "
        "takes at most 1,000,000, but this one has 1,099,511,627,777. Fix: use a larger `step`, type: float "
        "for a continuous range, or strategy tpe or random."),
    "epochs in fixed": ({"epochs": 3, "fixed": {"epochs": 4}},
                        "fixed.epochs: is set by tuner from the top-level `epochs:` (epochs: 3 here), so a value "
                        "here would silently replace it; got 4. Fix: set `epochs: 4` at the top level and remove "
                        "fixed.epochs."),
    "data in fixed": ({"fixed": {"data": "wine"}},
                      "fixed.data: is set by tuner from the top-level `data:`, so a value here would silently "
                      "replace it; got 'wine'. Fix: set `data: 'wine'` at the top level and remove fixed.data."),
    "control character in a name": (
        {"params": {"lr\x1b[31m": {"type": "float", "low": 0, "high": 1}}},
        "params: a param's name must be printable text of 1 to 512 characters (the store keeps it as text), but "
        "'lr\\x1b[31m' holds the control character '\\x1b' at position 2."),
    "lone surrogate in a name": (
        {"params": {"x\ud800": {"type": "float", "low": 0, "high": 1}}},
        "holds the control character '\\ud800' at position 1"),
    "blank name": ({"params": {" ": {"type": "float", "low": 0, "high": 1}}}, "but ' ' is blank."),
    "name longer than the store's column": (
        {"params": {"p" * 513: {"type": "float", "low": 0, "high": 1}}}, "has 513 characters. Fix: rename it"),
    "builtin of the wrong shape": (
        {"workload": "math:sqrt"},
        "`workload` 'math:sqrt': tuner calls it as train(params, report), but sqrt(x, /) cannot take those two "
        "arguments. Fix: name a function defined as def train(params, report) (see the README's Workloads)."),
    "function of one argument": (
        {"workload": "tests.test_spec_hostile:objective"}, "but objective(trial) cannot take those two arguments."),
}


@pytest.mark.parametrize("case", list(LOADER_CASES))
def test_the_loader_refuses_what_would_fail_at_run_time(case: str, tally) -> None:
    keys, expected = LOADER_CASES[case]
    problems = refused(**keys)
    assert len(problems) == 1 and expected in problems[0], problems
    tally("hostile input")


def test_auto_leaves_gp_for_tpe_over_a_range_gp_would_list() -> None:
    plan = Plan.of(load_spec(spec(params={"x": {"type": "int", "low": 0, "high": 2**53}})))
    assert plan.strategy == "tpe"
    assert "x has 9,007,199,254,740,993 values, more than GP enumerates each trial (1,000,000)" in plan.description
    assert Plan.of(load_spec(spec(params={"x": {"type": "int", "low": 0, "high": 10**6 - 1}}))).strategy == "gp"


def test_values_that_are_right_still_load() -> None:
    loaded = load_spec(spec(trials=2, seed=0, epochs=3, trial_timeout=3600.0, fixed={"width": 8},
                            params={"x": {"type": "int", "low": -2**53, "high": 2**53, "step": 2**53},
                                    "y": {"type": "float", "low": -1e307, "high": 1e307, "step": 1e307},
                                    "lr": {"type": "float", "low": 1, "high": 2}}))
    assert (loaded.trials, loaded.seed, loaded.params["x"].step, loaded.context()["epochs"]) == (2, 0, 2**53, 3)
    # One training seed for every trial, while the sampler keeps `seed`: a choice, not a mistake.
    assert load_spec(spec(seed=5, fixed={"seed": 1})).context()["seed"] == 1
    # YAML reads 1e-4 (no dot) as a string: a number still, as pydantic reads it.
    lr = load_spec(spec(params={"lr": {"type": "float", "low": "1e-4", "high": 1, "log": True}})).params["lr"]
    assert lr.low == 1e-4


# ---------------------------------------------------------------------- every mistake of a file at once

def test_every_mistake_of_a_file_is_reported_together(tmp_path: Path, tally) -> None:
    cwd = user_dir(tmp_path, "stratgy: tpe\nparams:\n"
                             "  x: {tpye: float, low: 0.0, high: 1.0, log: true}\n"
                             "  y: {type: float, low: 0.0, high: 1.0, lgo: true}\n"
                             "  z: {type: int, low: 1, high: 4, when: {w: a}}\n")
    proc = tuner(cwd, "launch", "space.yaml", "--executor", "inline")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert not list(cwd.glob("tuner.db*"))
    problems = [line.removeprefix("  - ") for line in proc.stderr.strip().splitlines()[1:]]
    assert proc.stderr.strip().splitlines()[0] == "error: space.yaml: 6 problems", proc.stderr
    assert sorted(problems) == sorted([
        "params.x.tpye: unknown key 'tpye'. Did you mean 'type'? Valid keys here: type, low, high, log, step, "
        "values, when, choices.",
        "params.x: `log: true` needs `low > 0`, but got low=0.0. Fix: set a positive low (e.g. 1.0e-5) or drop `log`.",
        "params.y.lgo: unknown key 'lgo'. Did you mean 'log'? Valid keys here: type, low, high, log, step, values, "
        "when.",
        "params.y: `log: true` needs `low > 0`, but got low=0.0. Fix: set a positive low (e.g. 1.0e-5) or drop `log`.",
        "stratgy: unknown key 'stratgy'. Did you mean 'strategy'? Valid keys here: name, workload, data, objective, "
        "objectives, strategy, trials, parallel, epochs, seed, timeout, trial_timeout, retries, max_failed_trials, "
        "log, resources, fixed, pruner, early_stopping, checkpoints, diagnostics, probe, params.",
        "params.z.when: names an unknown param 'w'. Valid params: x, y.",
    ]), proc.stderr
    tally("hostile input")


@pytest.mark.parametrize(("keys", "expected"), [
    # A bad value of a key with a default hides no rule that reads the others: here the workload's import.
    ({"trials": 0, "workload": "nowhere_at_all:train"},
     ["trials: must be > 0, but got 0. Fix: use a value > 0.",
      "`workload` 'nowhere_at_all:train' does not import: ModuleNotFoundError: No module named 'nowhere_at_all'."]),
    # A broken param stands in for itself in the second look: a `when` that names its choices is fine...
    ({"params": {"a": {"type": "categorical", "choices": ["p", "q", "p"]},
                 "b": {"type": "int", "low": 0, "high": 3, "when": {"a": "q"}}},
      "strategy": "gridd"},
     ["params.a.choices: `choices` must not repeat a value, but got 'p' more than once.",
      "`strategy` must be one of grid, random, tpe, gp, cmaes, qmc, auto, but got 'gridd'. Did you mean 'grid'?"]),
    # ... and one that depends on a float is still wrong, whatever the float's own mistake.
    ({"params": {"a": {"type": "float", "low": 2, "high": 1},
                 "b": {"type": "int", "low": 0, "high": 3, "when": {"a": 1}}}},
     ["params.a: `low <= high` must hold, but got low=2.0, high=1.0. Fix: swap them.",
      "params.b.when: can only depend on a categorical param, but 'a' is float. Fix: make 'a' categorical."]),
], ids=["a bad value and a workload", "a broken categorical and a when on it", "a when on a broken float"])
def test_the_rules_behind_a_first_mistake_still_run(keys: dict[str, Any], expected: list[str], tally) -> None:
    problems = refused(**keys)
    assert len(problems) == len(expected), problems
    for problem, start in zip(sorted(problems), sorted(expected)):
        assert problem.startswith(start), problems
    tally("hostile input")


def test_an_unreachable_mlflow_server_is_said_in_one_line_before_the_study_exists(tmp_path: Path, tally) -> None:
    import optuna

    import tuner
    from tests.services import free_port
    from tuner import TunerError

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(TunerError) as caught:
        tuner.launch(spec(log={"mlflow": uri}), executor="inline", storage=storage)
    message = str(caught.value)
    assert message.startswith(f"log.mlflow: the MLflow tracking store {uri} cannot be reached: ")
    assert "\n" not in message and "Fix: start the tracking server or database" in message
    assert optuna.get_all_study_names(storage) == []
    tally("hostile input")
