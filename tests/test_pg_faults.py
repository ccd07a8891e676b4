"""Fault injection on PostgreSQL: orchestrators sharing a study, and the server restarted mid-study."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tuner.store import Store

from tests.services import user_env

REPO = Path(__file__).resolve().parent.parent

GRID = (
    "name: shared\nworkload: tests.workloads:slow\nstrategy: grid\nparallel: 1\nepochs: 3\npruner: none\n"
    "fixed: {sleep: 0.15}\nparams:\n  x: {type: float, low: 0, high: 1, values: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]}\n"
    "  k: {type: categorical, choices: [a, b]}\n"
)


def tuner(cwd: Path, storage: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUNER_STORAGE": storage}
    return subprocess.Popen([sys.executable, "-m", "tuner", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(storage: str, study: str, complete: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            trials = optuna.load_study(study_name=study, storage=storage).trials
            if sum(t.state == TrialState.COMPLETE for t in trials) >= complete:
                return
        except KeyError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"fewer than {complete} COMPLETE trials after {timeout} s")


def test_two_orchestrators_share_a_grid_study_without_duplicates(postgres_url, tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text(GRID)
    # The schema first: the polling below opens Optuna's storage, whose creation of a new
    # schema would race the orchestrator's (optuna's RDBStorage does not retry that).
    Store(postgres_url).close()
    first = tuner(tmp_path, postgres_url, "launch", str(spec), "--executor", "inline", "--quiet")
    wait_for(postgres_url, "shared", 1)
    second = tuner(tmp_path, postgres_url, "resume", "shared", "--executor", "inline", "--quiet")
    for proc in (first, second):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    points = collections.Counter((t.params["x"], t.params["k"]) for t in complete)
    by = collections.Counter(t.user_attrs["orchestrator"] for t in complete)
    print(f"\ntwo orchestrators on one PostgreSQL study: {len(complete)} COMPLETE of 12 grid points, "
          f"split {sorted(by.values())}, duplicates {sum(c - 1 for c in points.values())}, total trials {len(trials)}")
    assert len(trials) == 12 and len(complete) == 12
    assert set(points.values()) == {1}
    assert len(by) == 2


def test_a_postgres_restart_mid_study_loses_nothing_and_leaves_nothing_running(postgres_server, postgres_url, tmp_path):
    spec = tmp_path / "long.yaml"
    spec.write_text(
        "name: long\nworkload: tests.workloads:slow\nstrategy: random\ntrials: 6\nparallel: 1\nepochs: 5\n"
        "pruner: none\nseed: 0\nfixed: {sleep: 0.2}\nparams:\n  x: {type: float, low: 0, high: 1}\n"
    )
    proc = tuner(tmp_path, postgres_url, "launch", str(spec), "--executor", "inline", "--quiet")
    wait_for(postgres_url, "long", 2)
    postgres_server.restart(down_seconds=3)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    trials = optuna.load_study(study_name="long", storage=postgres_url).trials
    states = collections.Counter(t.state.name for t in trials)
    import tuner as api

    epochs = api.load("long", storage=postgres_url).epochs()
    print(f"\nPostgreSQL restarted mid-study: {states['COMPLETE']} COMPLETE of 6, RUNNING left {states['RUNNING']}, "
          f"epochs recorded {len(epochs)} of 30")
    assert states == {"COMPLETE": 6}
    assert len(epochs) == 30
    assert "is unreachable" in err and "retrying" in err
    assert "Traceback" not in err
    assert postgres_server.password not in err


def test_resume_within_the_heartbeat_grace_after_a_kill_finishes_the_budget_exactly(postgres_url, tmp_path):
    """kill -9 of the orchestrator, resumed at once: its trial still has a fresh heartbeat."""
    import shutil
    import signal

    (tmp_path / "work.py").write_text(
        "import time\n\ndef curve(params, report):\n    for epoch in range(1, params['epochs'] + 1):\n"
        "        time.sleep(0.3)\n        report(epoch, val_loss=(params['x'] - 0.3) ** 2 + 1.0 / epoch)\n"
    )
    (tmp_path / "k.yaml").write_text(
        "name: killed\nworkload: work:curve\nstrategy: random\ntrials: 5\nparallel: 1\nepochs: 4\npruner: none\n"
        "seed: 0\nparams:\n  x: {type: float, low: 0, high: 1}\n"
    )
    Store(postgres_url).close()
    env = user_env(TUNER_STORAGE=postgres_url)
    script = shutil.which("tuner")
    first = subprocess.Popen([script, "launch", "k.yaml", "--executor", "inline", "--quiet"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(postgres_url, "killed", 2)
    time.sleep(0.5)  # into the next trial
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    left = [t.number for t in optuna.load_study(study_name="killed", storage=postgres_url).trials
            if t.state == TrialState.RUNNING]
    resumed = subprocess.run([script, "resume", "killed", "--executor", "inline"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    trials = optuna.load_study(study_name="killed", storage=postgres_url).trials
    states = collections.Counter(t.state.name for t in trials)
    print(f"\nkill -9 then resume within the heartbeat grace: RUNNING at kill {left}; after resume "
          f"{dict(states)}, exit {resumed.returncode}")
    assert left, "the kill came between trials"
    assert resumed.returncode == 0, resumed.stderr
    assert states["COMPLETE"] == 5 and states["RUNNING"] == 0
    assert "RUNNING elsewhere" in resumed.stderr
    rerun = {t.user_attrs.get("retry_of"): t.params for t in trials if "retry_of" in t.user_attrs}
    assert all(rerun[n] == trials[n].params for n in left)
