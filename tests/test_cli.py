"""The `tuner` command as a user runs it: real processes, real Ray, real SQLite."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.services import wait_for_epochs

REPO = Path(__file__).resolve().parent.parent


def tuner(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUNER_STORAGE": f"sqlite:///{cwd / 'tuner.db'}"}
    return subprocess.run([sys.executable, "-m", "tuner", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One real study of the built-in MLP on wine, launched from the CLI on a local Ray."""
    cwd = tmp_path_factory.mktemp("cli")
    result = tuner("launch", str(REPO / "search_spaces" / "wine_mlp.yaml"), "--trials", "4", "--epochs", "3",
                   "--study", "wine", cwd=cwd)
    return cwd, result


def test_launch_runs_the_preset_to_completion(launched):
    cwd, result = launched
    assert result.returncode == 0, result.stderr
    assert "best trial" in result.stdout
    study = optuna.load_study(study_name="wine", storage=f"sqlite:///{cwd / 'tuner.db'}")
    assert len(study.trials) == 4
    # The default pruner (successive halving) may stop some; none fails.
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert any(t.state == TrialState.COMPLETE for t in study.trials)
    # The launch output stays free of Ray's and Optuna's log noise.
    assert "INFO" not in result.stderr and "A new study created" not in result.stderr


def test_studies_show_best_and_epochs(launched):
    cwd, _ = launched
    studies = tuner("studies", cwd=cwd)
    assert studies.returncode == 0 and "wine" in studies.stdout

    show = tuner("show", "wine", cwd=cwd)
    assert show.returncode == 0
    assert show.stdout.count("COMPLETE") + show.stdout.count("PRUNED") == 4
    assert "compute:" in show.stdout and "epochs saved" in " ".join(show.stdout.split())  # a line that may wrap

    best = tuner("best", "wine", "--json", cwd=cwd)
    record = json.loads(best.stdout)
    study = optuna.load_study(study_name="wine", storage=f"sqlite:///{cwd / 'tuner.db'}")
    assert record["value"] == pytest.approx(study.best_value)
    assert record["params"] == study.best_params

    study = optuna.load_study(study_name="wine", storage=f"sqlite:///{cwd / 'tuner.db'}")
    out = cwd / "epochs.csv"
    epochs = tuner("epochs", "wine", "--csv", str(out), cwd=cwd)
    assert epochs.returncode == 0, epochs.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == sum(t.user_attrs["epochs"] for t in study.trials)
    assert {"trial", "epoch", "train_loss", "val_loss", "train_acc", "val_acc", "gap_loss", "lr",
            "seconds", "device", "iterations", "grad_norm", "grad_ratio"} <= set(rows[0])

    one = tuner("show", "wine", "--trial", "0", cwd=cwd)
    assert one.returncode == 0 and "val_loss" in one.stdout and "grad_ratio" in one.stdout
    assert "diagnosis" in one.stdout


def test_show_of_a_missing_study_lists_the_existing_ones(launched):
    cwd, _ = launched
    result = tuner("show", "nope", cwd=cwd)
    assert result.returncode == 2
    assert "no study named 'nope'" in result.stderr and "wine" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_command_has_help(tmp_path):
    for command in ("launch", "resume", "studies", "show", "best", "epochs", "report", "compare", "dashboard"):
        result = tuner(command, "--help", cwd=tmp_path)
        assert result.returncode == 0 and "usage: tuner " + command in result.stdout


def test_ctrl_c_stops_cleanly_with_nothing_left_running(tmp_path):
    spec = tmp_path / "slow.yaml"
    spec.write_text(
        "name: slow\nworkload: tests.workloads:slow\nstrategy: random\ntrials: 6\nparallel: 2\nepochs: 40\n"
        "fixed: {sleep: 0.25}\nparams:\n  x: {type: float, low: 0, high: 1}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUNER_STORAGE": f"sqlite:///{tmp_path / 'tuner.db'}"}
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "launch", str(spec)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "tuner.db"
    wait_for_epochs(db, proc, timeout=120)  # until trials are running and recording epochs
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    trials = optuna.load_study(study_name="slow", storage=f"sqlite:///{db}").trials
    assert trials, "no trial had started"
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert all("Ctrl-C" in t.user_attrs["fail_reason"] for t in trials if t.state == TrialState.FAIL)
