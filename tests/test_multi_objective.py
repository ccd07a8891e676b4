"""Studies with several objectives: the spec's list, what it rules out, and the values a trial is told."""

from __future__ import annotations

import pytest

from tuner.errors import SpecError
from tuner.plan import Plan
from tuner.spec import Objective, load_spec
from tuner.trial import metrics

SPEC = {
    "name": "mo", "workload": "mlp", "data": "digits", "epochs": 3,
    "objective": [{"metric": "val_loss", "direction": "minimize"}, {"metric": "seconds", "direction": "minimize"}],
    "params": {"lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True}},
}


def test_a_list_of_objectives_has_one_direction_each_and_is_saved_as_given():
    spec = load_spec(SPEC)
    assert spec.multi_objective and spec.directions == ["minimize", "minimize"]
    assert spec.metric_names == ["val_loss", "seconds"] and spec.objective.metric == "val_loss"
    # No ranking pruner by default (Optuna's do not take several objectives); the diagnostics one stays on.
    assert spec.pruner.type == "none" and spec.pruner.diagnostics
    assert load_spec(spec.to_dict()) == spec  # what a resume reads back
    plan = Plan.of(spec)
    assert plan.strategy == "tpe" and "2 objectives" in plan.description
    assert plan.pruner_description == "diagnostics pruner (Optuna's pruners rank one objective)"
    one = load_spec({**SPEC, "objective": [{"metric": "val_acc"}]})
    assert not one.multi_objective and one.directions == ["maximize"] and one.pruner.type == "successive_halving"


@pytest.mark.parametrize("change, message", [
    ({"pruner": "median"}, "pruner.type: Optuna's pruners rank one value per epoch and do not support "
                           "multi-objective studies (optuna/optuna#3450), but got 'median'. Fix: pruner: none"),
    ({"strategy": "cmaes"}, "`strategy` cmaes (Optuna's CmaEsSampler) takes one objective, but the spec lists 2. "
                            "Fix: strategy: tpe, gp, random, qmc or grid (auto picks one)."),
    ({"objective": [{"metric": "seconds"}, {"metric": "val_loss"}]},
     "objective[0].metric: the first objective ranks a trial's epochs (the one it keeps, early stopping), so it "
     "must be a metric of the model, but got seconds. Fix: list it later"),
    ({"objective": [{"metric": "val_loss"}, {"metric": "seconds", "mode": "last"}]},
     "objective[1].mode: the epoch whose values a trial keeps is chosen by objective[0] (its mode), so later "
     "objectives take none, but got 'last'. Fix: set it on objective[0], or remove it."),
    ({"objective": [{"metric": "val_loss", "target": 0.1}, {"metric": "seconds"}]},
     "objective[0].target: stops a study once one value reaches it, but a multi-objective study has a Pareto "
     "front of trade-offs, not one best value; got 0.1. Fix: remove target"),
    ({"objective": [{"metric": "val_loss"}, {"metric": "val_loss"}]},
     "objective[1].metric: each objective must be a different metric, but val_loss is objective[0] too."),
    ({"objective": [{"metric": "val_loss"}, {"metric": "secs"}]},
     "objective[1].metric: must be one of val_loss, val_acc, train_loss, train_acc, gap_loss, gap_acc, seconds, "
     "n_params "
     "for the built-in workloads, but got 'secs'. Did you mean 'seconds'?"),
    ({"objective": [{"metric": "val_loss"}, {"metrc": "seconds"}]},
     "objective[1].metrc: unknown key 'metrc'. Did you mean 'metric'?"),
    ({"objective": []}, "objective: must name at least one metric, but got an empty list."),
    ({"objectives": [{"metric": "val_loss"}]}, "objectives: unknown key"),
])
def test_what_several_objectives_rule_out_is_refused_with_the_fix(change, message):
    with pytest.raises(SpecError) as info:
        load_spec({**SPEC, **change})
    assert message in str(info.value)


def test_one_metric_keyword_on_a_list_of_objectives_is_refused_naming_the_keyword():
    from tuner.spec import Overrides

    with pytest.raises(SpecError, match=r"metric=: the spec lists 2 objectives, and one value does not say which"):
        load_spec(SPEC, Overrides({"objective": {"metric": "val_acc"}}, {"objective.metric": "metric="}))


def test_a_trials_values_are_read_at_the_one_epoch_its_first_objective_keeps():
    rows = [{"epoch": 1, "val_loss": 0.9, "size": 3.0, "seconds": 1.0},
            {"epoch": 2, "val_loss": 0.4, "size": 2.0, "seconds": 2.0},
            {"epoch": 3, "val_loss": 0.6, "size": 1.0, "seconds": 4.0}]
    first, size, seconds = Objective(metric="val_loss"), Objective(metric="size"), Objective(metric="seconds")
    # Epoch 2 is the best val_loss: size is that epoch's, seconds the training time up to it.
    assert metrics.objective_values(rows, [first, size, seconds]) == [0.4, 2.0, 3.0]
    last = Objective(metric="val_loss", mode="last")
    assert metrics.objective_values(rows, [last, size, seconds]) == [0.6, 1.0, 7.0]
    assert metrics.objective_values([{"epoch": 1, "size": 1.0}], [first, size]) == []
    assert metrics.objective_values(rows[:1], [first, Objective(metric="other")]) == [0.9, None]


def sized(params, report):
    """Validation loss against model size: a larger model fits better; x < -0.8 diverges at epoch 2."""
    x, size = params["x"], params["size"]
    for epoch in range(1, params["epochs"] + 1):
        if x < -0.8 and epoch == 2:
            report(epoch, train_loss=float("nan"), val_loss=float("nan"), n_params=100.0 * size)
            return
        val = (x - 0.3) ** 2 + 1.0 / (epoch * size)
        report(epoch, train_loss=val - 0.01, val_loss=val, n_params=100.0 * size)


def test_a_two_objective_study_has_a_pareto_front_in_the_api_and_the_report(tmp_path):
    import re

    import tuner
    from tuner import report
    from tuner.errors import TunerError

    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    spec = {"name": "sized", "strategy": "random", "trials": 8, "epochs": 3, "seed": 3,
            "objective": [{"metric": "val_loss"}, {"metric": "n_params", "direction": "minimize"}],
            "params": {"x": {"type": "float", "low": -1.0, "high": 1.0}, "size": {"type": "int", "low": 1, "high": 8}}}
    study = tuner.launch(spec, objective=sized, executor="inline", storage=storage,
                         warm_start=[{"x": -0.9, "size": 2}])
    assert study.optuna.directions[1].name == "MINIMIZE" and study.metric_names == ["val_loss", "n_params"]
    states = {t.state.name for t in study.trials}
    assert "RUNNING" not in states
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned and pruned[0].user_attrs["prune_rule"] == "diagnostics:diverged"  # the diagnostics pruner ran
    for t in study.trials:
        if t.state.name == "COMPLETE":
            rows = study.epochs(t.number)
            kept = min(rows, key=lambda r: r["val_loss"])
            assert t.values == pytest.approx([kept["val_loss"], kept["n_params"]])
    front = study.pareto_front()
    assert {t.number for t in front} == {t.number for t in study.optuna.best_trials} and front
    with pytest.raises(TunerError, match=r"best_value: a study with 2 objectives \(val_loss, n_params\) has a "
                                         r"Pareto front of trade-offs, not one best trial\. Fix: use best_trials"):
        study.best_value
    assert {"values_val_loss", "values_n_params"} <= set(study.trials_dataframe().columns.get_level_values(0))

    plots = report.write(study, tmp_path / "report.html", retrain=False)
    assert "pareto" in [p.name for p in plots]
    page = (tmp_path / "report.html").read_text()
    table = page.split('id="pareto"', 1)[1].split("</table>", 1)[0]
    assert len(re.findall(r"<tr><td>\d+</td>", table)) == len(front)
    assert "<th>val_loss</th><th>n_params</th>" in table and f"Best on val_loss: trial {front[0].number}" in page


def test_a_two_objective_study_from_the_installed_cli_prints_and_reports_its_front(tmp_path):
    """`tuner launch` of a YAML with two objectives, then `tuner best --json`, `tuner show`, `tuner report`."""
    import json
    import os
    import shutil
    import subprocess

    import optuna

    script = shutil.which("tuner")
    assert script, "the `tuner` console script is not on PATH: pip install -e '.[dev]'"
    (tmp_path / "mo.yaml").write_text(
        "name: mo\nworkload: mlp\ndata: iris\nstrategy: random\ntrials: 4\nepochs: 3\nseed: 0\n"
        "pruner: none\n"
        "objective:\n  - {metric: val_loss, direction: minimize}\n  - {metric: n_params, direction: minimize}\n"
        "params:\n  lr: {type: float, low: 0.01, high: 0.1, log: true}\n"
        "  width: {type: categorical, choices: [8, 64]}\n")
    env = {**os.environ, "TUNER_STORAGE": f"sqlite:///{tmp_path / 'tuner.db'}"}

    def run(*args):
        done = subprocess.run([script, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr

    launched, progress = run("launch", "mo.yaml")  # on a local Ray, as a user's first launch
    front = optuna.load_study(study_name="mo", storage=env["TUNER_STORAGE"]).best_trials
    assert front and f"Pareto front, {len(front)} of 4 completed trials (minimize val_loss, minimize n_params)" in launched
    # The progress line (a line a trial off a terminal) counts the front so far, not a best value.
    lines = [line for line in progress.splitlines() if line.startswith("trials ")]
    assert lines[-1].startswith("trials 4/4") and lines[-1].split(" · ")[-2] == f"front {len(front)}", lines
    assert all(f"trial {t.number}: val_loss" in launched for t in front)

    best = json.loads(run("best", "mo", "--json")[0])
    assert [o["metric"] for o in best["objectives"]] == ["val_loss", "n_params"]
    assert sorted(r["trial"] for r in best["pareto_front"]) == sorted(t.number for t in front)
    for record in best["pareto_front"]:
        trial = next(t for t in front if t.number == record["trial"])
        assert [record["values"]["val_loss"], record["values"]["n_params"]] == pytest.approx(trial.values)

    assert "the Pareto front first" in run("show", "mo")[0]
    run("report", "mo", "-o", "report.html", "--no-test")
    assert 'id="pareto"' in (tmp_path / "report.html").read_text()
