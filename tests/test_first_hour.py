"""The first hour as a new user: the README's commands, through the installed `tuner` script, in a fresh directory.

A user's own workload sits beside its spec; every step asserts what it
produced, not only its exit code.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tests.services import user_env

TUNER = shutil.which("tuner")

WORKLOAD = '''
import time


def train(params, report):
    """A learning curve whose floor is set by lr: best near lr = 0.01."""
    import math
    floor = (math.log10(params["lr"]) + 2) ** 2
    for epoch in range(1, params["epochs"] + 1):
        time.sleep(params.get("sleep", 0.0))
        report(epoch, train_loss=floor + 0.5 / epoch, val_loss=floor + 0.8 / epoch, my_metric=float(epoch))
'''

SPEC = """name: mine
workload: mine:train
strategy: tpe
trials: {trials}
parallel: 2
epochs: 4
seed: 1
pruner: none
fixed: {{sleep: {sleep}}}
params:
  lr: {{type: float, low: 1.0e-4, high: 1.0, log: true}}
  width: {{type: int, low: 8, high: 64}}
"""


def run(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    assert TUNER is not None, "the `tuner` console script is not installed: pip install -e ."
    result = subprocess.run([TUNER, *args], cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_the_first_hour(tmp_path):
    (tmp_path / "mine.py").write_text(WORKLOAD)
    (tmp_path / "mine.yaml").write_text(SPEC.format(trials=6, sleep=0.0))
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"

    launched = run(tmp_path, "launch", "mine.yaml")  # local Ray, SQLite in the working directory
    assert launched.returncode == 0, launched.stderr
    assert "study mine: 6 trials in" in launched.stdout and (tmp_path / "tuner.db").exists()

    studies = json.loads(run(tmp_path, "studies", "--json").stdout)
    assert studies == [{"study": "mine", "direction": "minimize", "trials": 6, "complete": 6, "failed": 0,
                        "best value": studies[0]["best value"]}]
    best = json.loads(run(tmp_path, "best", "mine", "--json").stdout)
    trials = optuna.load_study(study_name="mine", storage=storage).trials
    assert best["value"] == min(t.value for t in trials)
    shown = run(tmp_path, "show", "mine")
    assert shown.returncode == 0 and "COMPLETE" in shown.stdout and "healthy" in shown.stdout

    assert run(tmp_path, "epochs", "mine", "--csv", "e.csv").returncode == 0
    rows = list(csv.DictReader((tmp_path / "e.csv").open()))
    assert len(rows) == 24 and {"val_loss", "my_metric"} <= set(rows[0])

    resumed = run(tmp_path, "resume", "mine", "--trials", "10")
    assert resumed.returncode == 0, resumed.stderr
    trials = optuna.load_study(study_name="mine", storage=storage).trials
    assert len(trials) == 10 and len({tuple(sorted(t.params.items())) for t in trials}) == 10

    # Ctrl-C mid-study, then resume: nothing left RUNNING, the budget met exactly.
    (tmp_path / "slow.yaml").write_text(SPEC.format(trials=4, sleep=0.4).replace("name: mine", "name: slow"))
    env = user_env()
    proc = subprocess.Popen([TUNER, "launch", "slow.yaml", "--quiet"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            if any(t.intermediate_values for t in optuna.load_study(study_name="slow", storage=storage).trials):
                break
        except KeyError:
            pass
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert run(tmp_path, "resume", "slow").returncode == 0
    slow = optuna.load_study(study_name="slow", storage=storage).trials
    assert sum(t.state == TrialState.COMPLETE for t in slow) == 4
    assert not [t for t in slow if t.state == TrialState.RUNNING]

    reported = run(tmp_path, "report", "mine", "-o", "report.html", "--no-test")
    assert reported.returncode == 0, reported.stderr
    assert "Optimization history" in (tmp_path / "report.html").read_text()
    compared = run(tmp_path, "compare", "mine", "slow")
    assert compared.returncode == 0 and "mine" in compared.stdout and "slow" in compared.stdout
    print(f"\nfirst hour: {len(trials)} trials of mine, {len(slow)} of slow after Ctrl-C and resume; "
          f"best {best['value']:.4g} at {best['params']}")
