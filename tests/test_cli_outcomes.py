"""What the installed `tuner` script does with studies, names and stores, run from a user's directory.

Each test runs the console script in tmp_path with the user's environment
(tests/services.py `user_env`), a workload module of that directory and the
inline executor (Ray is not the point here), on a real SQLite file.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import optuna
import pytest

from tests.services import user_env

WORKLOADS = '''
def train(params, report):
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=(params["x"] - 0.5) ** 2 + 1.0 / epoch, train_loss=0.1)


def explode(params, report):
    """Gradients that explode at once: the diagnostics pruner stops every trial at epoch 1."""
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=1.0, train_loss=1.0, grad_norm=1e9)
'''


def spec(name: str, workload: str = "train", trials: int = 2) -> str:
    return (f"name: {name}\nworkload: work:{workload}\nstrategy: random\nseed: 1\ntrials: {trials}\nepochs: 3\n"
            "pruner: none\nparams:\n  x: {type: float, low: 0, high: 1}\n")


def tuner(cwd: Path, *args: str, stdin: str | None = "", db: str = "tuner.db") -> subprocess.CompletedProcess[str]:
    script = shutil.which("tuner")
    assert script, "the `tuner` console script is not on PATH: pip install -e '.[dev]'"
    env = user_env(TUNER_STORAGE=f"sqlite:///{cwd / db}", COLUMNS="200", PYTHONPATH=str(cwd))
    return subprocess.run([script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          input=stdin)


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def user(tmp_path: Path) -> Path:
    (tmp_path / "work.py").write_text(WORKLOADS)
    (tmp_path / "s.yaml").write_text(spec("s"))
    return tmp_path


def launched(user: Path, name: str = "s", *extra: str) -> subprocess.CompletedProcess[str]:
    done = tuner(user, "launch", "s.yaml", "--executor", "inline", "--quiet", *extra)
    assert done.returncode == 0, done.stderr
    return done


# ---------------------------------------------------------------------- a study with no result


def test_a_study_with_no_completed_trial_exits_1_with_the_reason_pruned_or_timed_out(user: Path) -> None:
    (user / "p.yaml").write_text(spec("p", "explode").replace("pruner: none\n", ""))
    pruned = tuner(user, "launch", "p.yaml", "--executor", "inline", "--quiet")
    assert pruned.returncode == 1, pruned.stderr
    assert "Traceback" not in pruned.stderr
    assert ("error: study p: no trial completed: all 2 were pruned (diagnostics:exploding_gradients), so none ran "
            "to its end. Fix: see why in `tuner show p`") in one_line(pruned.stderr)

    nothing = tuner(user, "launch", "s.yaml", "--study", "t", "--timeout", "1e-9", "--executor", "inline", "--quiet")
    assert nothing.returncode == 1, nothing.stderr
    assert ("error: study t: no trial completed: no trial ran before its timeout (1e-09 s) passed. Fix: a longer "
            "timeout (--timeout, timeout=), then `tuner resume t`.") in one_line(nothing.stderr)
    assert optuna.load_study(study_name="t", storage=f"sqlite:///{user / 'tuner.db'}").trials == []
