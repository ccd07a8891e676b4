"""End to end on real Ray (local) and real SQLite files: strategies, grid, seeds, failures."""

from __future__ import annotations

import collections
import sqlite3

import optuna
import pytest
from optuna.trial import TrialState

import tuner
from tuner.errors import StudyFailedError
from tests import workloads

SPACE = {"x": {"type": "float", "low": -5.0, "high": 5.0}}


def launch(*args, **kwargs):
    """These tests count COMPLETE trials, so no pruner stops any (pruning has its own tests)."""
    return tuner.launch(*args, **{"pruner": "none", **kwargs})


@pytest.mark.parametrize("strategy", ["random", "tpe", "gp", "cmaes", "qmc"])
def test_each_strategy_runs_a_study_on_ray(ray_local, storage, strategy):
    study = launch(
        space=SPACE, objective=workloads.quadratic, strategy=strategy, trials=8, epochs=3,
        parallel=2, seed=3, storage=storage,
    )
    trials = study.trials
    assert len(trials) == 8
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # The value is val_loss at the best epoch, i.e. the last one for this curve.
    for t in trials:
        assert t.value == pytest.approx((t.params["x"] - 2) ** 2 + 1.5 / 3)
        assert t.user_attrs["best_epoch"] == 3
        assert t.user_attrs["epochs"] == 3
    assert len(study.epochs()) == 8 * 3
    assert study.best_value == min(t.value for t in trials)


def test_grid_with_parallel_3_covers_every_point_exactly_once(ray_local, storage):
    space = {
        "x": {"type": "float", "low": -5.0, "high": 5.0, "values": [-1.0, 0.0, 1.0, 2.0]},
        "mode": {"type": "categorical", "choices": ["a", "b", "c"]},
        "k": {"type": "int", "low": 1, "high": 3, "when": {"mode": "c"}},
    }
    study = launch(space=space, objective=workloads.quadratic, strategy="grid", parallel=3,
                         epochs=1, storage=storage)
    seen = collections.Counter(tuple(sorted(t.params.items())) for t in study.trials)
    # 4 x (a, b, c x 3 values of k) = 4 x 5 points
    assert len(seen) == 20
    assert set(seen.values()) == {1}
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all("k" not in t.params for t in study.trials if t.params["mode"] != "c")


def test_the_same_seed_gives_the_same_configurations(storage):
    def params(name, seed):
        s = launch(space=SPACE, objective=workloads.quadratic, strategy="tpe", trials=14, epochs=1,
                         seed=seed, storage=storage, study=name, executor="inline")
        return [t.params["x"] for t in s.trials]

    first, again, other = params("a", 11), params("b", 11), params("c", 12)
    assert first == again
    assert first != other


def test_user_module_function_workload_from_a_spec_file(ray_local, storage, tmp_path):
    spec = tmp_path / "space.yaml"
    spec.write_text(
        "name: custom\nworkload: tests.workloads:quadratic\nstrategy: random\ntrials: 4\n"
        "epochs: 2\nparallel: 2\nseed: 1\npruner: none\nparams:\n  x: {type: float, low: 0, high: 4}\n"
    )
    study = launch(spec, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert study.spec["workload"] == "tests.workloads:quadratic"


def test_a_returned_value_is_the_objective(storage):
    study = launch(space={"x": {"type": "float", "low": 1, "high": 2}}, objective=workloads.returns_value,
                         trials=3, epochs=1, executor="inline", storage=storage)
    assert all(t.value == pytest.approx(t.params["x"] * 10) for t in study.trials)


def test_optuna_reads_the_same_trials_params_and_values(ray_local, storage):
    study = launch(space=SPACE, objective=workloads.quadratic, strategy="random", trials=5, epochs=4,
                         parallel=2, seed=0, storage=storage, study="interop")
    loaded = optuna.load_study(study_name="interop", storage=storage)
    assert [(t.number, t.params, t.value, t.state) for t in loaded.trials] == [
        (t.number, t.params, t.value, t.state) for t in study.trials
    ]
    # Every epoch's objective metric is Optuna's intermediate value, so the dashboard draws the curve.
    for trial in loaded.trials:
        assert trial.intermediate_values == {
            e["epoch"]: pytest.approx(e["val_loss"]) for e in study.epochs(trial.number)
        }
    assert loaded.best_params == study.best_params


def test_a_failing_trial_is_recorded_and_the_study_goes_on(storage):
    study = launch(space={"x": {"type": "float", "low": -1, "high": 1}},
                         objective=workloads.fails_when_negative, strategy="random", trials=12, seed=5,
                         epochs=1, executor="inline", storage=storage)
    states = collections.Counter(t.state for t in study.trials)
    assert states[TrialState.FAIL] >= 1 and states[TrialState.COMPLETE] >= 1
    assert sum(states.values()) == 12
    for t in study.trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs["fail_reason"].startswith("ValueError: x=")
            assert t.params["x"] < 0


def test_a_broken_workload_stops_the_study_early_with_one_clear_error(ray_local, storage):
    with pytest.raises(StudyFailedError, match=r"first [34] trials all failed.*the data loader could not find"):
        launch(space=SPACE, objective=workloads.broken, trials=50, parallel=2, epochs=1, storage=storage,
                     study="broken")
    trials = optuna.load_study(study_name="broken", storage=storage).trials
    assert len(trials) < 10
    assert all(t.state == TrialState.FAIL for t in trials)


def test_a_nan_loss_is_diagnosed_diverged_and_pruned_not_crashed(storage):
    study = launch(space=SPACE, objective=workloads.nan_loss, trials=1, epochs=1, executor="inline",
                   storage=storage)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["diagnosis"] == "diverged"
    assert trial.user_attrs["prune_rule"] == "diagnostics:diverged"
    assert trial.user_attrs["prune_epoch"] == 1


def test_without_the_diagnostics_pruner_a_nan_objective_fails_as_diverged(storage):
    study = launch(space=SPACE, objective=workloads.nan_loss, trials=1, epochs=1, executor="inline",
                   storage=storage, pruner={"type": "none", "diagnostics": False})
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert "diverged" in trial.user_attrs["fail_reason"]
    assert trial.user_attrs["diagnosis"] == "diverged"


def test_epoch_rows_hold_gap_device_and_seconds(ray_local, storage):
    study = launch(space=SPACE, objective=workloads.quadratic, trials=2, epochs=3, parallel=2,
                         storage=storage, seed=1, strategy="random")
    rows = study.epochs()
    assert len(rows) == 6
    for row in rows:
        assert row["gap_loss"] == pytest.approx(row["val_loss"] - row["train_loss"])
        assert row["device"] == "cpu"
        assert row["seconds"] >= 0
    trial = study.trials[0]
    assert trial.user_attrs["final_gap"] == pytest.approx(0.5 / 3, abs=1e-6)
    assert trial.user_attrs["device"] == "cpu"
    assert trial.user_attrs["wall_seconds"] >= 0


def test_epochs_are_written_live_while_the_trial_runs(ray_local, storage, tmp_path):
    """Rows reach the store during a trial, not only when it ends."""
    seen_during_run = []

    def watch(progress):
        if progress.running and progress.finished == 0:
            with sqlite3.connect(storage.removeprefix("sqlite:///")) as conn:
                seen_during_run.append(conn.execute("select count(*) from tuner_epochs").fetchone()[0])

    launch(space=SPACE, objective=workloads.slow, trials=1, epochs=4, storage=storage, on_progress=watch,
                 fixed={"sleep": 0.4})
    assert max(seen_during_run) >= 1


def test_a_study_can_be_resumed_to_more_trials(storage):
    launch(space=SPACE, objective=workloads.quadratic, trials=3, epochs=1, executor="inline",
                 storage=storage, study="grow", seed=2)
    study = tuner.resume("grow", objective=workloads.quadratic, storage=storage, executor="inline", trials=5)
    assert len(study.trials) == 5
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
