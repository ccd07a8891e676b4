"""The `auto` strategy: which Optuna sampler it picks for a space and budget, and why it says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

import tuner
from tuner import load_spec, strategies


def spec(params: dict[str, Any], **keys: Any):
    # A user workload: auto reads only the space, and mlp would refuse names it does not know (x0, act).
    return load_spec({"name": "s", "workload": "tests.workloads:noop", "params": params, **keys})


def floats(n: int) -> dict[str, Any]:
    return {f"x{i}": {"type": "float", "low": -5.0, "high": 5.0} for i in range(n)}


FINITE = {  # 3 x 3 = 9 points
    "act": {"type": "categorical", "choices": ["relu", "tanh", "sigmoid"]},
    "depth": {"type": "int", "low": 1, "high": 3},
}
CONDITIONAL = {
    "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"optimizer": "sgd"}},
}
CATEGORICAL = {
    "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
    "act": {"type": "categorical", "choices": ["relu", "tanh"]},
    "norm": {"type": "categorical", "choices": ["none", "batch", "layer"]},
}


def test_a_spec_without_strategy_runs_auto() -> None:
    assert spec(floats(2)).strategy == "auto"


def test_small_budget_over_continuous_params_picks_gp_and_says_why() -> None:
    s = spec(floats(5), trials=32)
    assert isinstance(strategies.make_sampler(s), optuna.samplers.GPSampler)
    assert strategies.describe(s) == (
        "auto → Bayesian optimization, Gaussian process "
        "(32 trials over 5 continuous params: GP is the most sample-efficient at small budgets)"
    )


def test_large_budget_leaves_gp_for_tpe() -> None:
    s = spec(floats(5), trials=strategies.GP_MAX_TRIALS + 1)
    assert isinstance(strategies.make_sampler(s), optuna.samplers.TPESampler)
    assert strategies.describe(s).startswith(
        f"auto → Bayesian optimization, TPE (multivariate) ({strategies.GP_MAX_TRIALS + 1} trials over 5 continuous"
    )
    assert isinstance(strategies.make_sampler(spec(floats(5), trials=strategies.GP_MAX_TRIALS)),
                      optuna.samplers.GPSampler)


@pytest.mark.parametrize("params, words", [
    (CONDITIONAL, "2 continuous and 1 categorical params, 1 conditional: TPE models which params are active"),
    (CATEGORICAL, "1 continuous and 2 categorical params: mostly categorical"),
])
def test_conditional_or_categorical_spaces_pick_multivariate_tpe(params: dict[str, Any], words: str) -> None:
    s = spec(params, trials=30)
    sampler = strategies.make_sampler(s)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert strategies.resolved(s) == "tpe"
    assert f"(30 trials over {words}" in strategies.describe(s)


def test_a_finite_space_the_budget_covers_is_a_grid() -> None:
    s = spec(FINITE)  # no `trials`: the default budget (20) covers 9 points
    assert strategies.resolved(s) == "grid"
    assert strategies.planned_trials(s) == 9
    assert strategies.describe(s).startswith("auto → grid search (9 points over 1 int and 1 categorical params")


def test_a_finite_space_larger_than_the_budget_is_sampled() -> None:
    s = spec(FINITE, trials=8)
    assert strategies.resolved(s) == "gp"
    assert strategies.planned_trials(s) == 8


def test_a_named_strategy_is_kept() -> None:
    s = spec(floats(5), strategy="random", trials=32)
    assert strategies.resolved(s) == "random"
    assert strategies.describe(s) == "random search"


def _proposals(s: Any, n: int) -> list[dict[str, Any]]:
    study = optuna.create_study(sampler=strategies.make_sampler(s))
    for _ in range(n):
        trial = study.ask()
        params = strategies.suggest(trial, s)
        study.tell(trial, sum(v**2 for v in params.values()))
    return [t.params for t in study.trials]


def test_the_choice_and_its_proposals_are_deterministic_given_spec_and_seed() -> None:
    s = spec(floats(3), trials=20, seed=3)
    assert strategies.choose(s) == strategies.choose(spec(floats(3), trials=20, seed=3))
    # 12 trials: GP's 10 random start-up trials and two of its own.
    first, again = _proposals(s, 12), _proposals(s, 12)
    assert first == again
    assert first != _proposals(spec(floats(3), trials=20, seed=4), 12)


def test_auto_grid_is_enqueued_and_runs_every_point_once(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []

    def objective(params: dict[str, Any], report: Any) -> float:
        seen.append((params["act"], params["depth"]))
        return float(params["depth"])

    study = tuner.launch(space=FINITE, objective=objective, executor="inline", seed=0, pruner="none",
                         storage=f"sqlite:///{tmp_path / 't.db'}")
    assert study.spec["strategy"] == "auto"
    assert sorted(seen) == sorted((a, d) for a in ("relu", "tanh", "sigmoid") for d in (1, 2, 3))
    assert len(study.trials) == 9
    # Each trial came from the queue (Optuna marks enqueued trials with their fixed params).
    assert all("fixed_params" in t.system_attrs for t in study.trials)


@pytest.mark.parametrize("strategy", ["random", "tpe", "gp"])
def test_sessions_sharing_a_study_sample_apart_and_each_is_reproducible(tmp_path, strategy):
    """Two orchestrators resumed at once on one study: same spec, seed and history, yet their own draws."""
    from tuner.plan import Plan
    from tuner.spec import load_spec

    plan = Plan.of(load_spec({"name": "s", "workload": "tests.workloads:quadratic", "strategy": strategy,
                              "seed": 5, "trials": 20, "params": {"x": {"type": "float", "low": 0, "high": 1},
                                                                  "k": {"type": "int", "low": 0, "high": 100}}}))

    def two_sessions(path):
        storage = f"sqlite:///{path}"
        first = optuna.create_study(study_name="s", storage=storage, sampler=plan.sampler())
        for _ in range(3):  # a history both see
            trial = first.ask()
            first.tell(trial, strategies.suggest(trial, plan.spec)["x"])
        a, b = (optuna.load_study(study_name="s", storage=storage, sampler=plan.sampler()) for _ in range(2))
        drawn = []
        for study in (a, b, a, b):  # interleaved, as two processes ask
            trial = study.ask()
            drawn.append(strategies.suggest(trial, plan.spec))
        return drawn

    drawn = two_sessions(tmp_path / "one.db")
    assert len({strategies.point_key(p) for p in drawn}) == 4  # no configuration drawn twice
    assert two_sessions(tmp_path / "two.db") == drawn  # the same spec, seed and order give the same trials
