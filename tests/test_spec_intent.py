"""Specs that load but would not do what their author meant (issue 15, items 3, 5 and 16).

A misspelt param of a built-in workload, a grid that prunes or leaves points
queued, a flag blamed on the file, a strategy named by what it means: each is
caught or said when the spec loads or the study starts, in a pinned message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

import tuner
from tuner import SpecError, load_spec, strategies
from tuner.plan import Plan

REPO = Path(__file__).resolve().parents[1]
FLOAT = {"type": "float", "low": 0.1, "high": 1.0}
GRID = {  # 3 x 4 = 12 points
    "activation": {"type": "categorical", "choices": ["relu", "tanh", "gelu"]},
    "depth": {"type": "int", "low": 1, "high": 4},
}
VALID = ("lr, optimizer, momentum, nesterov, batch_size, lr_schedule, grad_clip, weight_decay, l1, depth, width, "
         "kernel_size, activation, dropout, norm, standardize, augment_noise, augment_shift, train_size")


def spec(**keys: Any) -> dict[str, Any]:
    return {"name": "s", "workload": "mlp", "data": "wine", "params": {"lr": FLOAT}, **keys}


def tuner_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TUNER_STORAGE", "RAY_ADDRESS")}
    return subprocess.run([shutil.which("tuner") or "tuner", *args], cwd=cwd, env={**env, "COLUMNS": "400"},
                          capture_output=True, text=True, timeout=120)


def refused(proc: subprocess.CompletedProcess[str], cwd: Path) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert not list(cwd.glob("tuner.db*")), "the store was opened before the mistake was caught"
    return proc.stderr


# ---------------------------------------------------------------------- 3. names a built-in workload reads


def test_a_misspelt_param_of_a_builtin_workload_is_refused_with_the_closest_name() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec(params={"activaton": {"type": "categorical", "choices": ["relu", "tanh"]}}))
    assert str(info.value) == (
        "<spec>: params.activaton: must be a hyperparameter of the built-in workload 'mlp', but got 'activaton'. "
        f"Did you mean 'activation'? Valid names: {VALID}. Fix: rename it to one of those, or remove it."
    )


@pytest.mark.parametrize(("workload", "fixed", "meant"), [
    ("mlp", {"learning_rate": 0.1}, "lr"),  # another library's name
    ("cnn", {"opt": "sgd"}, "optimizer"),  # an abbreviation
    ("mlp", {"standardise": True}, "standardize"),
])
def test_a_fixed_value_the_workload_does_not_read_is_refused(workload: str, fixed: dict[str, Any], meant: str) -> None:
    (name,) = fixed
    with pytest.raises(SpecError, match=(
        rf"^<spec>: fixed\.{name}: must be a hyperparameter of the built-in workload '{workload}', but got "
        rf"'{name}'\. Did you mean '{meant}'\? Valid names: lr, "
    )):
        load_spec(spec(workload=workload, fixed=fixed))


def test_a_user_workload_may_read_any_name() -> None:
    assert "activaton" in load_spec(spec(workload="tests.workloads:noop", params={"activaton": FLOAT})).params


def test_the_cli_refuses_a_misspelt_param_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text("workload: mlp\ndata: wine\nparams:\n"
                                         "  lr: {type: float, low: 0.001, high: 0.1, log: true}\n"
                                         "  activaton: {type: categorical, choices: [relu, tanh]}\n")
    stderr = refused(tuner_cli(tmp_path, "launch", "space.yaml"), tmp_path)
    assert ("space.yaml: params.activaton: must be a hyperparameter of the built-in workload 'mlp', but got "
            "'activaton' (line 5). Did you mean 'activation'?") in stderr


def test_reading_the_declared_names_imports_no_torch() -> None:
    code = ("import sys; from tuner import load_spec; "
            "load_spec({'workload': 'mlp', 'data': 'wine', 'params': {'lr': {'type': 'float', 'low': 0.1, 'high': 1}}}); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------- 5. a grid runs its points whole


@pytest.mark.parametrize("keys", [{"strategy": "grid"}, {}], ids=["grid", "auto resolving to grid"])
def test_a_grid_that_names_no_pruner_runs_none(keys: dict[str, Any]) -> None:
    loaded = load_spec(spec(params=GRID, **keys))
    assert strategies.resolved(loaded) == "grid"
    assert (loaded.pruner.type, loaded.pruner.diagnostics) == ("none", True)
    assert isinstance(strategies.make_pruner(loaded), optuna.pruners.NopPruner)
    assert load_spec(loaded.to_dict()) == loaded  # saved and resumed as it ran


def test_a_grid_keeps_a_pruner_it_names_and_other_strategies_keep_the_default() -> None:
    assert load_spec(spec(params=GRID, strategy="grid", pruner="median")).pruner.type == "median"
    assert load_spec(spec(params=GRID, strategy="grid", pruner={"diagnostics": False})).pruner.type == "none"
    assert load_spec(spec(params=GRID, strategy="random", trials=3)).pruner.type == "successive_halving"


def test_a_grid_cut_short_says_what_runs_and_queues_only_that(tmp_path: Path) -> None:
    from tuner.api import _create
    from tuner.store import Store

    loaded = load_spec(spec(params=GRID, strategy="grid", trials=5))
    assert strategies.grid_cut(loaded) == (
        "grid: 12 points, trials: 5 — runs the first 5 points in grid order; the other 7 are not queued. "
        "Fix: --trials 12 or more (trials=12 in Python) to run every point."
    )
    assert strategies.describe(loaded) == "grid search (the first 5 of 12 points, each once)"
    study = _create(Store(f"sqlite:///{tmp_path / 'cut.db'}"), "cut", Plan.of(loaded))
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in queued] == strategies.grid_points(loaded)[:5]
    assert strategies.grid_cut(load_spec(spec(params=GRID, strategy="grid"))) is None


def test_the_launch_header_names_the_pruner_and_counts_in_the_singular(capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from tuner.cli import _progress_display

    def study(of: Any) -> SimpleNamespace:
        return SimpleNamespace(name="s", store=SimpleNamespace(safe_url="sqlite:///t.db"), plan=Plan.of(of))

    loaded = load_spec(spec(params={"activation": {"type": "categorical", "choices": ["relu"]}}, epochs=1))
    _progress_display(quiet=False).on_start(loaded, study(loaded))
    assert " ".join(capsys.readouterr().err.split()) == (  # as one line, however rich wrapped it
        "study s · auto → grid search (1 point over 1 categorical param, within the budget of 20 trials: each "
        "runs once instead of sampling with repeats) · no pruner · minimize val_loss · 1 trial, 1 in parallel, "
        "1 epoch · store sqlite:///t.db"
    )
    median = load_spec(spec(strategy="tpe", pruner="median"))
    _progress_display(quiet=False).on_start(median, study(median))
    assert " · pruner median · " in capsys.readouterr().err


# ---------------------------------------------------------------------- 16. who gave the value, what it meant


@pytest.mark.parametrize(("given_as", "overrides", "message"), [
    ("keyword", {"trials": 0}, "trials=: must be > 0, but got 0. Fix: use a value > 0."),
    ("keyword", {"n_trials": 0}, "n_trials=: must be > 0, but got 0. Fix: use a value > 0."),
    ("keyword", {"metric": "val_los"}, "metric=: must be one of val_loss, val_acc, train_loss, train_acc, gap_loss, "
                                       "gap_acc for the built-in workloads, but got 'val_los'. Did you mean 'val_loss'?"),
    ("flag", {"trials": 0, "epochs": None}, "--trials: must be > 0, but got 0. Fix: use a value > 0."),
    ("flag", {"strategy": "bayes"}, "--strategy: must be one of grid, random, tpe, gp, cmaes, qmc, auto, but got "
                                    "'bayes'. Did you mean 'tpe' or 'gp'?"),
])
def test_a_keyword_or_flag_is_blamed_not_the_file(given_as: str, overrides: dict[str, Any], message: str) -> None:
    from tuner.api import _make_spec, _renamed

    with pytest.raises(SpecError) as info:
        _make_spec(REPO / "search_spaces" / "wine_mlp.yaml", None, None, _renamed(overrides, given_as))
    assert str(info.value) == message


def test_the_files_own_problem_keeps_the_files_name() -> None:
    from tuner.api import _make_spec, _renamed

    with pytest.raises(SpecError) as info:
        _make_spec({**spec(), "epochs": 0}, None, None, _renamed({"trials": 0}, "flag"))
    assert info.value.source == "<spec>"
    assert info.value.problems == ["--trials: must be > 0, but got 0. Fix: use a value > 0.",
                                   "epochs: must be > 0, but got 0. Fix: use a value > 0."]


def test_launch_blames_its_keyword(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        tuner.launch(REPO / "search_spaces" / "wine_mlp.yaml", trials=0, storage=f"sqlite:///{tmp_path / 't.db'}")
    assert str(info.value) == "trials=: must be > 0, but got 0. Fix: use a value > 0."


def test_the_cli_blames_its_flag(tmp_path: Path) -> None:
    stderr = refused(tuner_cli(tmp_path, "launch", str(REPO / "search_spaces" / "wine_mlp.yaml"), "--trials", "0"),
                     tmp_path)
    assert "error: --trials: must be > 0, but got 0. Fix: use a value > 0." in stderr


def test_a_strategy_named_by_its_meaning_gets_the_strategy_that_means_it() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec(strategy="bayes"))
    assert str(info.value) == ("<spec>: `strategy` must be one of grid, random, tpe, gp, cmaes, qmc, auto, but got "
                               "'bayes'. Did you mean 'tpe' or 'gp'?")


@pytest.mark.parametrize(("name", "meant"), [
    ("bayesian", "'tpe' or 'gp'"), ("BO", "'tpe' or 'gp'"), ("optuna", "'tpe' or 'gp'"), ("hyperopt", "'tpe'"),
    ("sobol", "'qmc'"), ("evolution", "'cmaes'"), ("cma", "'cmaes'"), ("CMA-ES", "'cmaes'"), ("tpee", "'tpe'"),
])
def test_strategy_synonyms(name: str, meant: str) -> None:
    with pytest.raises(SpecError, match=rf"but got '{name}'\. Did you mean {meant}\?$"):
        load_spec(spec(strategy=name))


def test_one_trial_is_singular() -> None:
    loaded = load_spec(spec(trials=1))
    assert strategies.describe(loaded) == (
        "auto → Bayesian optimization, Gaussian process "
        "(1 trial over 1 continuous param: GP is the most sample-efficient at small budgets)"
    )


def test_an_objective_keyword_changes_that_key_of_the_files_objective_not_all_of_it() -> None:
    from tuner.api import _make_spec, _renamed

    source = spec(objective={"metric": "val_acc", "direction": "maximize", "mode": "last"})
    loaded = _make_spec(source, None, None, _renamed({"max_gap": 0.2}, "keyword"))
    objective = loaded.objective
    assert (objective.metric, objective.resolved_direction, objective.mode, objective.max_gap) == \
           ("val_acc", "maximize", "last", 0.2)
    with pytest.raises(SpecError) as info:
        _make_spec(source, None, None, _renamed({"mode": "first"}, "keyword"))
    assert str(info.value).startswith("mode=: ")  # the keyword is blamed, the file's other keys are not
