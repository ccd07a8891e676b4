"""What `tuner launch` says of a run is true: the progress after Ctrl-C, the parallelism, the pruner flag.

Through the installed `tuner` script, from the user's own directory, with the inline executor.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.services import user_env
from tuner.trial.record import counts_toward_budget

TUNER = shutil.which("tuner")

WORKLOAD = '''
import time


def train(params, report):
    for epoch in range(1, params["epochs"] + 1):
        time.sleep(params.get("sleep", 0.0))
        report(epoch, val_loss=params["x"] + 1.0 / epoch)
'''

SPEC = """name: {name}
workload: slowy:train
strategy: random
trials: 8
parallel: 2
epochs: 3
pruner: none
fixed: {{sleep: {sleep}}}
params:
  x: {{type: float, low: 0, high: 1}}
"""


def setup(cwd: Path, name: str, sleep: float = 0.0) -> None:
    (cwd / "slowy.py").write_text(WORKLOAD)
    (cwd / f"{name}.yaml").write_text(SPEC.format(name=name, sleep=sleep))


def tuner(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    assert TUNER is not None, "the `tuner` console script is not installed: pip install -e ."
    result = subprocess.run([TUNER, *args], cwd=cwd, env=user_env(COLUMNS="200"), capture_output=True, text=True,
                            timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def trials(cwd: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'tuner.db'}").trials
    except KeyError:  # not created yet
        return []


def test_after_ctrl_c_the_progress_counts_only_the_trials_that_finished(tmp_path):
    setup(tmp_path, "slowy", sleep=0.3)  # a trial takes about a second
    proc = subprocess.Popen([TUNER, "launch", "slowy.yaml", "--executor", "inline"], cwd=tmp_path,
                            env=user_env(COLUMNS="200"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    # Ctrl-C while a trial runs, after a few have completed.
    while not (sum(t.state == TrialState.COMPLETE for t in trials(tmp_path, "slowy")) >= 2
               and any(t.state == TrialState.RUNNING for t in trials(tmp_path, "slowy"))):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    stored = trials(tmp_path, "slowy")
    finished = sum(map(counts_toward_budget, stored))
    interrupted = sum(t.user_attrs.get("fail_kind") == "interrupted" for t in stored)
    assert interrupted >= 1 and finished < 8, [(t.state, t.user_attrs) for t in stored]
    # The bar's last word: what finished of the 8, and the trials the Ctrl-C stopped, not counted as done.
    bar = [line for line in err.splitlines() if "━" in line][-1]
    assert re.search(rf"\b{finished}/8\b", bar) and f"interrupted {interrupted}" in bar, (bar, err)
    lines = [line for line in err.splitlines() if line.startswith("trials ")]
    assert all(int(re.match(r"trials (\d+)/", line)[1]) <= finished for line in lines), lines


def test_an_inline_launch_says_it_runs_one_trial_at_a_time_and_does(tmp_path):
    setup(tmp_path, "one", sleep=0.02)  # the spec asks for parallel: 2
    launched = tuner(tmp_path, "launch", "one.yaml", "--executor", "inline", "--trials", "4")
    assert launched.returncode == 0, launched.stderr
    header = " ".join(launched.stderr.split())
    assert "4 trials, 1 in parallel" in header and "2 in parallel" not in header, header
    ran = sorted((t.datetime_start, t.datetime_complete) for t in trials(tmp_path, "one"))
    assert len(ran) == 4 and all(end <= start for (_, end), (start, _) in zip(ran, ran[1:])), ran


def test_launch_takes_a_pruner_flag_checked_as_the_spec_pruner_is(tmp_path, tally):
    setup(tmp_path, "pr")
    (tmp_path / "pr.yaml").write_text((tmp_path / "pr.yaml").read_text().replace(
        "pruner: none", "pruner: {type: median, n_startup_trials: 1}"))
    for name, said in (("none", " · no pruner · "), ("hyperband", " · pruner hyperband ")):
        launched = tuner(tmp_path, "launch", "pr.yaml", "--study", f"pr-{name}", "--pruner", name, "--trials", "2",
                         "--executor", "inline")
        assert launched.returncode == 0, launched.stderr
        assert said in " ".join(launched.stderr.split()), launched.stderr
        study = optuna.load_study(study_name=f"pr-{name}", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
        assert study.user_attrs["tuner.spec"]["pruner"]["type"] == name
    for bad, told in (("medain", "Did you mean 'median'?"), ("bogus", "must be one of none, median"),
                      ("threshold", "threshold")):
        refused = tuner(tmp_path, "launch", "pr.yaml", "--study", f"bad-{bad}", "--pruner", bad, "--executor", "inline")
        assert refused.returncode == 2 and refused.stderr.strip().startswith("error: --pruner: "), refused.stderr
        assert told in refused.stderr and f"bad-{bad}" not in tuner(tmp_path, "studies").stdout
        tally("hostile input")
    typo = tuner(tmp_path, "launch", "pr.yaml", "--prunner", "none")
    assert typo.returncode == 2 and "--prunner: did you mean --pruner?" in typo.stderr, typo.stderr
    tally("hostile input")
