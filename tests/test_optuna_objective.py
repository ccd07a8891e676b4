"""An Optuna user's define-by-run ``objective(trial)`` runs as it is: ``tuner.launch(objective=objective, ...)``.

The objective has the shape of Optuna's own PyTorch example (written here, on
scikit-learn's digits, nothing downloaded): a model built from
``trial.suggest_*`` calls, conditional ones included (a layer loop, a momentum
only for SGD), ``trial.report`` every epoch and ``trial.should_prune``.
"""

from __future__ import annotations

import functools

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

import tuner
import tuner.api
from tuner.errors import SpecError, TunerError
from tuner.trial import record

EPOCHS = 4
# Trials whose should_prune() said True, with the epoch (inline runs them in this process, so it is seen here).
PRUNE_HEARD: list[tuple[int, int]] = []


@functools.lru_cache(maxsize=1)
def digits():
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_valid, y_train, y_valid = train_test_split(x / 16.0, y, test_size=0.25, random_state=0)
    as_x = functools.partial(torch.tensor, dtype=torch.float32)
    return as_x(x_train), torch.tensor(y_train), as_x(x_valid), torch.tensor(y_valid)


def define_model(trial):
    from torch import nn

    n_layers = trial.suggest_int("n_layers", 1, 2)
    layers, in_features = [], 64
    for i in range(n_layers):
        out_features = trial.suggest_int(f"n_units_l{i}", 8, 32, log=True)
        layers += [nn.Linear(in_features, out_features), nn.ReLU()]
        layers.append(nn.Dropout(trial.suggest_float(f"dropout_l{i}", 0.0, 0.3)))
        in_features = out_features
    layers += [nn.Linear(in_features, 10), nn.LogSoftmax(dim=1)]
    return nn.Sequential(*layers)


def objective(trial):
    """Optuna's PyTorch example, on digits: val accuracy per epoch, train/val loss as tuner's extra metrics."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(trial.number)
    model = define_model(trial)
    optimizer_name = trial.suggest_categorical("optimizer", ["Adam", "SGD"])
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    if optimizer_name == "SGD":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=trial.suggest_float("momentum", 0.0, 0.9))
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x_train, y_train, x_valid, y_valid = digits()
    for epoch in range(EPOCHS):
        model.train()
        total = 0.0
        for batch in torch.randperm(len(x_train)).split(128):
            optimizer.zero_grad()
            loss = F.nll_loss(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            out = model(x_valid)
            val_loss = F.nll_loss(out, y_valid).item()
            accuracy = (out.argmax(dim=1) == y_valid).float().mean().item()
        trial.report(accuracy, epoch, train_loss=total / len(x_train), val_loss=val_loss)
        if trial.should_prune():
            PRUNE_HEARD.append((trial.number, epoch))
            raise optuna.TrialPruned()
    return accuracy


# The same two configurations first in every run (Optuna's enqueue_trial): SGD at a tiny learning rate stays
# near chance (10%) at its first epoch, Adam at 3e-2 is far above it.
HOPELESS = {"n_layers": 1, "n_units_l0": 8, "dropout_l0": 0.0, "optimizer": "SGD", "lr": 1e-5, "momentum": 0.0}
GOOD = {"n_layers": 2, "n_units_l0": 32, "dropout_l0": 0.0, "n_units_l1": 16, "dropout_l1": 0.0,
        "optimizer": "Adam", "lr": 3e-2}


def check_define_by_run(study: tuner.Study) -> None:
    """Trial 0 (hopeless) pruned by the threshold at its first epoch, trial 1 (good) complete with its returned
    accuracy, every trial's params those its own branch asked for, as Optuna's params and distributions."""
    trials = study.trials
    first, second = trials[0], trials[1]
    assert first.state == TrialState.PRUNED, first.user_attrs
    assert first.user_attrs["prune_rule"] == "threshold" and first.user_attrs["prune_epoch"] == 0
    assert list(first.intermediate_values) == [0] and first.intermediate_values[0] < 0.3
    assert first.params == HOPELESS
    assert second.state == TrialState.COMPLETE and second.params == GOOD
    assert second.value == second.intermediate_values[EPOCHS - 1] > 0.8  # the returned value is the trial's
    assert sorted(second.intermediate_values) == list(range(EPOCHS))
    for trial in trials:
        n_layers = trial.params["n_layers"]
        layers = {f"{kind}_l{i}" for i in range(n_layers) for kind in ("n_units", "dropout")}
        sgd = {"momentum"} if trial.params["optimizer"] == "SGD" else set()
        assert set(trial.params) == {"n_layers", "optimizer", "lr"} | layers | sgd, trial.params
        assert trial.distributions["lr"] == FloatDistribution(1e-5, 1e-1, log=True)
        assert trial.distributions["n_units_l0"] == IntDistribution(8, 32, log=True)
        assert trial.distributions["optimizer"] == CategoricalDistribution(["Adam", "SGD"])
        assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert trial.user_attrs["diagnosis"]  # diagnosed from the train/val losses it reported
    rows = study.epochs(second.number)
    assert [r["epoch"] for r in rows] == list(range(EPOCHS))  # Optuna's steps, as tuner's epochs
    assert all(r["value"] == second.intermediate_values[r["epoch"]] for r in rows)
    assert all(r["train_loss"] > 0 and r["val_loss"] > 0 for r in rows)


def launch_example(storage: str, executor: str, **more):
    return tuner.launch(objective=objective, n_trials=4, direction="maximize", epochs=EPOCHS, storage=storage,
                        executor=executor, pruner={"type": "threshold", "lower": 0.3}, seed=3,
                        warm_start=[HOPELESS, GOOD], **more)


def test_optunas_pytorch_example_runs_inline_as_it_is(storage):
    PRUNE_HEARD.clear()
    study = launch_example(storage, "inline")
    check_define_by_run(study)
    assert (0, 0) in PRUNE_HEARD  # the objective's should_prune() said so, and it raised TrialPruned
    assert study.optuna.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.spec["workload"].endswith("test_optuna_objective:objective(trial)")


def test_optunas_pytorch_example_runs_on_ray_workers_as_it_is(ray_local, storage):
    study = launch_example(storage, "ray", parallel=2)
    check_define_by_run(study)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert all("/" in t.user_attrs["node"] for t in done)  # host/Ray node id: it ran on a Ray worker


def picky(trial):
    """Raises TrialPruned by itself (no pruner asked) when x is large; a param only for kind b."""
    x = trial.suggest_float("x", -1.0, 1.0)
    if trial.suggest_categorical("kind", ["a", "b"]) == "b":
        x += trial.suggest_int("k", 1, 3) / 10
    trial.set_user_attr("seen", trial.params)
    for step in range(3):
        trial.report(x * x + 1.0 / (step + 1), step)
        if x > 0.5 and step == 1:
            raise optuna.TrialPruned(f"x={x} is too large")
    return x * x


@pytest.mark.parametrize("executor", ["inline", "ray"])
def test_an_objective_that_raises_trial_pruned_ends_its_trial_pruned(request, storage, executor):
    if executor == "ray":
        request.getfixturevalue("ray_local")
    study = tuner.launch(objective=picky, n_trials=3, executor=executor, storage=storage, pruner="none",
                         warm_start=[{"x": 0.9, "kind": "a"}, {"x": 0.1, "kind": "b", "k": 2}])
    pruned, done = study.trials[0], study.trials[1]
    assert pruned.state == TrialState.PRUNED and pruned.user_attrs["prune_rule"] == "workload"
    assert sorted(pruned.intermediate_values) == [0, 1]
    assert done.state == TrialState.COMPLETE and done.value == pytest.approx(0.09)  # returned: (0.1 + 2/10)^2
    assert done.params == {"x": 0.1, "kind": "b", "k": 2}
    assert done.user_attrs["seen"] == done.params  # set_user_attr reaches the study; trial.params as Optuna's
    assert study.optuna.direction == optuna.study.StudyDirection.MINIMIZE  # Optuna's default
    assert study.trials[2].state in (TrialState.COMPLETE, TrialState.PRUNED)


def out_of_order(trial):
    trial.suggest_float("y", 0.0, 1.0)
    return trial.suggest_float("x", 1.0, 0.0)  # low > high: Optuna refuses it


def test_optunas_own_error_in_a_suggest_fails_that_trial_with_its_message(storage, tally):
    study = tuner.launch(objective=out_of_order, n_trials=2, executor="inline", storage=storage,
                         max_failed_trials=5)
    for trial in study.trials:
        assert trial.state == TrialState.FAIL
        assert trial.user_attrs["fail_reason"] == "ValueError: `low <= high` must hold, but got (low=1.0, high=0.0)."
        assert set(trial.params) == {"y"}
    tally("hostile input")


def test_a_space_or_a_grid_given_with_an_objective_of_trial_is_refused_before_anything_is_made(storage, tally):
    with pytest.raises(TunerError, match=r"objective\(trial\) asks for its params itself .* so space= cannot"):
        tuner.launch(objective=picky, space={"x": {"type": "float", "low": 0, "high": 1}}, storage=storage,
                     executor="inline")
    tally("hostile input")
    with pytest.raises(TunerError, match=r"strategy=: grid search lists every point"):
        tuner.launch(objective=picky, strategy="grid", storage=storage, executor="inline")
    tally("hostile input")
    with pytest.raises(TunerError, match=r"got a TPESampler object\. Fix: strategy='tpe' and seed=N"):
        tuner.launch(objective=picky, sampler=optuna.samplers.TPESampler(), storage=storage, executor="inline")
    tally("hostile input")
    with pytest.raises(TunerError, match=r"got a MedianPruner object\. Fix: pruner='median', or with options"):
        tuner.launch(objective=picky, pruner=optuna.pruners.MedianPruner(), storage=storage, executor="inline")
    tally("hostile input")
    assert optuna.get_all_study_names(storage) == []


def test_a_study_of_an_objective_of_trial_resumes_with_it(storage):
    first = tuner.launch(objective=picky, n_trials=2, executor="inline", storage=storage, pruner="none", seed=1,
                         study_name="picky")  # optuna.create_study's keyword
    assert first.name == "picky"
    with pytest.raises(TunerError, match=r"runs a Python function \(.*:picky\(trial\)\)"):
        tuner.resume("picky", storage=storage, executor="inline")
    tuner.api.enqueue("picky", [{"x": -0.5, "kind": "a"}], storage=storage)  # as Optuna's enqueue_trial takes it
    study = tuner.resume("picky", objective=picky, trials=4, storage=storage, executor="inline")
    assert len(study.trials) == 4 and all(t.params for t in study.trials)
    assert study.trials[2].params == {"x": -0.5, "kind": "a"} and study.trials[2].value == 0.25
    assert len({t.params["x"] for t in study.trials}) == 4  # the resumed sampler draws anew


def no_reports(trial):
    return (trial.suggest_float("x", -2.0, 2.0) - 1.0) ** 2


def test_an_objective_that_never_reports_runs_every_trial_under_the_default_pruner(storage):
    study = tuner.launch(objective=no_reports, n_trials=3, executor="inline", storage=storage)
    assert study.spec["pruner"]["type"] == "successive_halving"  # tuner's default, which reads per-epoch values
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert all(t.value == pytest.approx((t.params["x"] - 1.0) ** 2) for t in study.trials)


def dies_once(trial, marker: str):
    """Its worker process dies (as kill -9 or an OOM would end it) the first time, after its suggestions."""
    import os
    from pathlib import Path

    x = trial.suggest_float("x", -1.0, 1.0)
    if trial.suggest_categorical("kind", ["a", "b"]) == "b":
        trial.suggest_int("k", 1, 3)
    if not Path(marker).exists():
        Path(marker).touch()
        os._exit(1)
    trial.report(x * x, 0)
    return x * x


def test_a_trial_whose_ray_worker_dies_runs_again_with_the_params_it_was_given(ray_local, storage, tmp_path, tally):
    study = tuner.launch(objective=functools.partial(dies_once, marker=str(tmp_path / "died")), n_trials=1,
                         storage=storage, pruner="none", retries=1, seed=5)
    died, rerun = study.trials
    assert died.state == TrialState.FAIL and died.user_attrs["fail_kind"] == "retried"
    assert rerun.state == TrialState.COMPLETE and rerun.user_attrs["retry_of"] == died.number
    assert rerun.params == died.params and set(died.params) >= {"x", "kind"}  # what the sampler gave, again
    assert rerun.value == pytest.approx(died.params["x"] ** 2)
    tally("fault")


def reports_steps(trial):
    """Optuna's shape: only trial.report(value, step), three finite values, no val_loss."""
    x = trial.suggest_float("x", -2.0, 2.0)
    for step in range(3):
        trial.report((x - 1.0) ** 2 + (3.0, 2.0, 0.0)[step], step)
    return (x - 1.0) ** 2


def test_show_draws_the_curve_of_the_objectives_own_metric_not_missing_val_loss_as_nan(storage, tmp_path):
    import json
    import shutil
    import subprocess

    from tests.services import user_env

    tuner.launch(objective=reports_steps, n_trials=2, executor="inline", storage=storage, study="steps",
                 pruner="none")
    script = shutil.which("tuner")
    assert script, "the `tuner` console script is not on PATH"
    run = functools.partial(subprocess.run, cwd=tmp_path, env=user_env(COLUMNS="200"), capture_output=True,
                            text=True, timeout=120)
    shown = run([script, "show", "steps", "--storage", storage, "--json"])
    assert shown.returncode == 0, shown.stderr
    curves = [next(v for k, v in r.items() if k.endswith("curve")) for r in json.loads(shown.stdout)]
    assert len(curves) == 2 and all(c == "█▆▁" for c in curves), curves  # 3, 2, 0 above the value: drawn, no ×
    table = run([script, "show", "steps", "--storage", storage])
    assert table.returncode == 0, table.stderr
    assert "█▆▁" in table.stdout and "×" not in table.stdout
    csv_file = tmp_path / "steps.csv"
    assert run([script, "show", "steps", "--storage", storage, "--csv", str(csv_file)]).returncode == 0
    assert "×" not in csv_file.read_text() and "█▆▁" in csv_file.read_text()


def returns_none(trial):
    trial.suggest_float("x", -1.0, 1.0)


def test_an_objective_that_returns_none_is_told_to_return_its_value_not_to_call_tuners_report(storage):
    study = tuner.launch(objective=returns_none, n_trials=1, executor="inline", storage=storage)
    [trial] = study.trials
    why = record.why_stopped(trial.user_attrs)
    assert trial.state == TrialState.FAIL
    assert "objective(trial) returned None" in why and "return the value" in why and "trial.report(value, step)" in why
    assert "report(epoch" not in why


def two_steps(trial):
    """Reports steps 0 and 1 only; later trials rank worse (trial.number dominates), so pruning is deterministic."""
    x = trial.suggest_float("x", 0.0, 1.0)
    for step in range(2):
        trial.report(x + trial.number, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return x + trial.number


def plain_optuna(pruner, name: str, n_trials: int) -> list[tuple[TrialState, int | None]]:
    study = optuna.create_study(study_name=name, pruner=pruner)
    study.optimize(two_steps, n_trials=n_trials)
    return [(t.state, max(t.intermediate_values, default=None)) for t in study.trials]


@pytest.mark.parametrize("pruner, optunas", [("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
                                             ("hyperband", optuna.pruners.HyperbandPruner)])
def test_without_epochs_the_step_count_is_unknown_and_pruning_is_optunas_own(storage, capsys, pruner, optunas):
    study = tuner.launch(objective=two_steps, n_trials=6, executor="inline", storage=storage, study="steps",
                         pruner=pruner, progress=True)
    header = capsys.readouterr().err
    assert "steps per trial unknown (no epochs=)" in " ".join(header.split())
    assert "10 epochs" not in header and "rungs at epochs" not in header
    assert study.spec["epochs"] is None  # saved so: a resume does not take 10 for it either
    assert tuner.api.Plan.of(tuner.api.load_spec(study.spec)).spec.epochs is None
    # No step is known to be the last before the objective returns: pruning is Optuna's, as in plain Optuna
    # (a trial may be pruned at step 1, the last it would have reported).
    ran = [(t.state, max(t.intermediate_values, default=None)) for t in study.trials]
    assert ran == plain_optuna(optunas(), "steps", 6)
    assert (TrialState.PRUNED, 1) in ran


def test_a_pruner_that_needs_the_last_step_is_refused_without_epochs(storage, tally):
    with pytest.raises(TunerError, match=r"without epochs= how many steps .* Fix: pass epochs=N"):
        tuner.launch(objective=two_steps, n_trials=1, executor="inline", storage=storage, pruner="extrapolating")
    assert optuna.get_all_study_names(storage) == []
    tally("hostile input")
    with pytest.raises(TunerError, match=r"`epochs`: must be a whole number > 0, but got null"):
        tuner.launch({"name": "s", "epochs": None, "params": {"x": {"type": "float", "low": 0, "high": 1}}},
                     executor="inline", storage=storage)
    tally("hostile input")


def test_what_optunas_api_allows_but_tuner_cannot_run_is_refused_with_a_fix(storage, tally):
    """directions= (several objectives), a negative step, and a queued point that is no plain mapping."""
    import numpy as np

    with pytest.raises(TunerError, match=r"directions=: .* Fix: direction='minimize'"):
        tuner.launch(objective=picky, directions=["minimize", "minimize"], storage=storage, executor="inline")
    tally("hostile input")
    assert optuna.get_all_study_names(storage) == []
    study = tuner.launch(objective=negative_step, n_trials=1, storage=storage, executor="inline", pruner="none",
                         max_failed_trials=2)
    (trial,) = study.trials
    assert trial.state.name == "FAIL"
    assert "the step must be 0 or more, but got -1. Fix: count steps 0, 1, 2" in trial.user_attrs["fail_reason"]
    tally("hostile input")
    for point, problem in [([1, 2], r"a point maps param names to values, but got \[1, 2\]"),
                           ({"x": np.int64(3)}, r"'x': a queued value is a plain number.*Fix: pass it as a Python")]:
        with pytest.raises(SpecError, match=problem):
            tuner.api.enqueue(study.name, [point], storage=storage)
        tally("hostile input")
    assert len(optuna.load_study(study_name=study.name, storage=storage).trials) == 1  # nothing queued


def negative_step(trial):
    x = trial.suggest_float("x", 0, 1)
    trial.report(x, -1)
    return x
