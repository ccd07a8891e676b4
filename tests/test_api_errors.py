"""Messages for mistakes made through the Python API and the read-only commands, pinned."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import tuner
from tests import workloads
from tuner.errors import StorageError, TunerError

REPO = Path(__file__).resolve().parent.parent
SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def cli(*args: str, cwd: Path, storage: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUNER_STORAGE": storage}
    return subprocess.run([sys.executable, "-m", "tuner", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def failed_study(storage):
    """A study whose only trial failed: nothing completed."""
    tuner.launch(space=SPACE, objective=workloads.broken, trials=1, executor="inline", storage=storage,
                 study="empty", pruner="none")
    return storage


def test_launch_without_a_spec_or_a_space_says_what_it_needs():
    with pytest.raises(TunerError, match=r"launch\(\) needs a spec \(a YAML path or a dict\), or both `space=` "
                                         r"and `objective=`"):
        tuner.launch(objective=workloads.quadratic)


def test_resuming_a_study_not_launched_by_tuner_is_refused(storage):
    optuna.create_study(storage=storage, study_name="plain")
    with pytest.raises(StorageError, match=r"study 'plain' was not launched by tuner \(it has no 'tuner.spec'\); "
                                           r"nothing to resume"):
        tuner.resume("plain", storage=storage, executor="inline")


def test_resuming_a_python_function_study_needs_the_function(storage):
    tuner.launch(space=SPACE, objective=workloads.quadratic, trials=1, epochs=1, executor="inline",
                 storage=storage, study="fn", pruner="none")
    with pytest.raises(TunerError, match=r"study 'fn' runs a Python function \(tests.workloads:quadratic\); "
                                         r"resume it from Python: tuner.resume\(name, objective=that_function\)"):
        tuner.resume("fn", storage=storage, executor="inline")


def test_best_of_a_study_with_no_completed_trial(failed_study, tmp_path):
    result = cli("best", "empty", cwd=tmp_path, storage=failed_study)
    assert result.returncode == 2
    assert "study 'empty' has no completed trial yet." in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("trials", [2, 3])
def test_the_best_of_a_study_whose_every_trial_failed_says_why_there_is_none(storage, trials, tally):
    study = tuner.launch(space=SPACE, objective=workloads.broken, trials=trials, executor="inline", storage=storage,
                         study="all-failed", pruner="none", progress=False)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * trials
    said = (f"study all-failed has none, as no trial completed: all {trials} failed. Trial 0 failed with: "
            "RuntimeError: the data loader could not find its files.")
    for what in ("best_value", "best_params", "best_trial"):
        for loaded in (study, tuner.load("all-failed", storage)):
            with pytest.raises(tuner.NoResultError) as raised:
                getattr(loaded, what)
            assert str(raised.value) == f"{what}: {said}"
            assert isinstance(raised.value, ValueError)  # caught as Optuna's best_value error is
    tally("fault")


def test_show_of_a_trial_that_does_not_exist(failed_study, tmp_path):
    result = cli("show", "empty", "--trial", "7", cwd=tmp_path, storage=failed_study)
    assert result.returncode == 2
    assert "--trial: study 'empty' has no trial 7 (it has 0..0)." in result.stderr


def test_epochs_csv_to_a_path_that_cannot_be_written(failed_study, tmp_path):
    result = cli("epochs", "empty", "--csv", str(tmp_path / "missing-dir" / "e.csv"), cwd=tmp_path,
                 storage=failed_study)
    assert result.returncode == 2
    assert "--csv: cannot write" in result.stderr and "No such file or directory" in result.stderr
    assert "Fix: choose a writable path." in result.stderr


def test_a_workload_the_ray_workers_cannot_import_fails_its_trial_with_the_fix(ray_local, storage, tmp_path):
    # A module imported from a directory only this process has on its path.
    (tmp_path / "elsewhere_mod.py").write_text("def train(params, report):\n    report(1, val_loss=1.0)\n")
    spec = importlib.util.spec_from_file_location("elsewhere_mod", tmp_path / "elsewhere_mod.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["elsewhere_mod"] = module
    spec.loader.exec_module(module)
    try:
        study = tuner.launch(space=SPACE, objective=module.train, trials=1, storage=storage, pruner="none")
    finally:
        del sys.modules["elsewhere_mod"]
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"].startswith("the trial could not start on its Ray worker: ")
    assert "Fix: make the workload importable on every node" in trial.user_attrs["fail_reason"]
