"""`objective: {target: T}` ends a study once a completed trial reaches T; `max_failed_trials` is its failure budget."""

from __future__ import annotations

import subprocess

import pytest
from optuna.trial import TrialState

import tuner
from tests import workloads
from tests.services import user_env
from tuner.errors import SpecError, StudyFailedError
from tuner.lifecycle import reaches_target
from tuner.plan import Plan
from tuner.trial.record import Ending

WORKLOAD = '''
def train(params, report):
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=(params["x"] - 2) ** 2 + 1.5 / epoch)
'''
# Run in order (a grid, one at a time): values 1.5, 0.54, 0.5, 1.5; the target 0.55 falls at trial 1.
SPEC = """\
name: targeted
workload: work:train
strategy: grid
epochs: 3
objective: {metric: val_loss, target: 0.55}
params:
  x: {type: categorical, choices: [3.0, 2.2, 2.0, 1.0]}
"""


def test_a_trial_that_reaches_the_target_ends_the_study_and_the_output_says_so(tmp_path, monkeypatch):
    (tmp_path / "work.py").write_text(WORKLOAD)
    (tmp_path / "s.yaml").write_text(SPEC)
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    run = subprocess.run(["tuner", "launch", "s.yaml", "--executor", "inline", "--quiet"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120,
                         env=user_env(TUNER_STORAGE=storage, COLUMNS="200", PYTHONPROFILEIMPORTTIME="1"))
    assert run.returncode == 0, run.stderr
    said = " ".join(line for line in run.stderr.splitlines() if not line.startswith("import time:"))
    assert "target reached: trial 1 has val_loss 0.54 <= 0.55 (objective.target); no new trial starts" in said
    assert ("target reached: trial 1 has value 0.54 <= 0.55 (objective.target), so no new trial started after it"
            in run.stdout)
    # without `log:`, no logger's library is imported
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "tuner.spec" in imported and not imported & {"mlflow", "tensorboard", "torch.utils.tensorboard"}
    study = tuner.load("targeted", storage)
    ran = [(t.params["x"], t.state) for t in study.trials if t.state != TrialState.WAITING]
    assert ran == [(3.0, TrialState.COMPLETE), (2.2, TrialState.COMPLETE)]  # the grid's other 2 points never ran

    # A resume of a study that reached its target starts nothing new.
    monkeypatch.syspath_prepend(str(tmp_path))
    resumed = tuner.resume("targeted", storage=storage, executor="inline")
    assert [t.state for t in resumed.trials].count(TrialState.COMPLETE) == 2 and resumed.target_reached.number == 1


def test_without_a_target_reached_the_study_runs_its_budget(tmp_path):
    study = tuner.launch(space={"x": {"type": "categorical", "choices": [3.0, 2.2]}}, objective=workloads.quadratic,
                         strategy="grid", epochs=3, target=0.1, executor="inline",
                         storage=f"sqlite:///{tmp_path / 's.db'}")
    assert len(study.trials) == 2 and study.target_reached is None


def test_the_target_counts_only_feasible_completed_trials_in_its_direction():
    plan = Plan.of(tuner.load_spec({"workload": "tests.workloads:quadratic", "objective": {
        "metric": "val_acc", "target": 0.9}, "params": {"x": {"type": "float", "low": 0, "high": 1}}}))
    assert reaches_target(Ending(TrialState.COMPLETE, 0.95, None), plan)  # maximized: at or above
    assert reaches_target(Ending(TrialState.COMPLETE, 0.9, None), plan)
    assert not reaches_target(Ending(TrialState.COMPLETE, 0.85, None), plan)
    assert not reaches_target(Ending(TrialState.COMPLETE, 0.95, None, constraint=0.1), plan)  # its gap too wide
    assert not reaches_target(Ending(TrialState.PRUNED, 0.95, None), plan)


@pytest.mark.parametrize("budget, failed", [(2, 2), (None, 3)])
def test_max_failed_trials_is_the_failure_budget_of_a_broken_workload(tmp_path, budget, failed):
    with pytest.raises(StudyFailedError) as stopped:
        tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=workloads.broken, trials=10,
                     epochs=1, executor="inline", storage=f"sqlite:///{tmp_path / 's.db'}", study="broken",
                     max_failed_trials=budget)
    assert str(stopped.value) == (
        f"the first {failed} trials all failed (max_failed_trials: {failed}), so the study stopped instead of "
        "spending its budget. Trial 0 failed with: RuntimeError: the data loader could not find its files. "
        "Fix the workload.")
    assert len(tuner.load("broken", f"sqlite:///{tmp_path / 's.db'}").trials) == failed


@pytest.mark.parametrize("extra, problem", [
    ({"max_failed_trials": 0}, "max_failed_trials: must be > 0, but got 0. Fix: use a value > 0."),
    ({"objective": {"metric": "val_acc", "target": 97}},
     "objective.target: val_acc is a fraction in [0, 1], so the study could never reach 97.0. "
     "Fix: give it as a fraction, e.g. target: 0.97."),
    ({"objective": {"target": "high"}}, "objective.target: must be a number, but got 'high'."),
])
def test_target_and_max_failed_trials_are_validated(extra, problem):
    with pytest.raises(SpecError) as refused:
        tuner.load_spec({"workload": "tests.workloads:quadratic", **extra,
                         "params": {"x": {"type": "float", "low": 0, "high": 1}}})
    assert refused.value.problems == [problem]
