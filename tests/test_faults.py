"""Fault injection on real processes: killed workers, a killed orchestrator, hung trials, a second orchestrator.

Each test prints its figures (trials lost, stuck, duplicated) in the test output.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import tuner
from tests import workloads
from tuner import checkpoints

REPO = Path(__file__).resolve().parent.parent


def states(study_name: str, storage: str) -> collections.Counter:
    return collections.Counter(t.state.name for t in optuna.load_study(study_name=study_name, storage=storage).trials)


def test_a_hung_trial_is_stopped_at_trial_timeout_inline(storage):
    study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=workloads.hangs, trials=1,
                         executor="inline", storage=storage, trial_timeout=1.0, pruner="none")
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"].startswith("trial_timeout: still running after 1 s")
    assert trial.user_attrs["fail_kind"] == "timeout"


def test_a_hung_trial_is_stopped_at_trial_timeout_on_ray(ray_local, storage):
    start = time.monotonic()
    study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=workloads.hangs, trials=2,
                         parallel=2, storage=storage, trial_timeout=1.5, pruner="none")
    took = time.monotonic() - start
    print(f"\nhung trials: 2 stopped by trial_timeout=1.5 s; study took {took:.1f} s; RUNNING left: "
          f"{states(study.name, storage)['RUNNING']}")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("trial_timeout" in t.user_attrs["fail_reason"] for t in study.trials)


def test_killed_workers_are_retried_and_no_complete_trial_is_lost(ray_local, storage, tmp_path):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    killed: list[int] = []

    def kill_some(progress):
        # Kill the worker of each of the first three trials that start (kill -9).
        for f in sorted(pid_dir.glob("[!.]*")):  # dot-files are still being written
            pid = int(f.read_text())
            if len(killed) < 3 and pid not in killed:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            f.unlink()

    study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=workloads.slow_with_pid,
                         trials=6, epochs=4, parallel=2, storage=storage, pruner="none", retries=3,
                         fixed={"pid_dir": str(pid_dir), "sleep": 0.3}, on_progress=kill_some, strategy="random",
                         seed=0)
    counts = states(study.name, storage)
    retried = [t for t in study.trials if t.user_attrs.get("fail_kind") == "retried"]
    print(f"\nworker kills: {len(killed)} kill -9; COMPLETE {counts['COMPLETE']} (requested 6), "
          f"retried {len(retried)}, RUNNING left {counts['RUNNING']}")
    assert len(killed) == 3
    assert counts["COMPLETE"] == 6
    assert counts["RUNNING"] == 0
    assert len(retried) == 3
    # Each retry re-ran the same params.
    by_number = {t.number: t for t in study.trials}
    for t in study.trials:
        if "retry_of" in t.user_attrs:
            assert t.params == by_number[t.user_attrs["retry_of"]].params


def test_a_trial_whose_worker_is_killed_resumes_from_its_checkpoint_on_ray(ray_local, storage, tmp_path):
    pid_dir, tally = tmp_path / "pids", tmp_path / "tally"
    pid_dir.mkdir()
    killed: list[int] = []

    def kill_after_three_checkpoints(progress):
        # kill -9 the first worker once the store holds its trial's checkpoint of epoch 3 (of 6).
        pids = sorted(pid_dir.glob("[!.]*"))
        if killed or not pids:
            return
        trials = optuna.load_study(study_name="resumes", storage=storage).trials
        if any(t.state == TrialState.RUNNING and t.user_attrs.get("checkpoint", {}).get("epoch", 0) >= 3
               for t in trials):
            pid = int(pids[0].read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=workloads.checkpointed_with_pid,
                         study="resumes", trials=1, epochs=6, storage=storage, pruner="none", retries=1,
                         fixed={"pid_dir": str(pid_dir), "tally": str(tally), "sleep": 0.4},
                         on_progress=kill_after_three_checkpoints)
    (died,) = [t for t in study.trials if t.user_attrs.get("fail_kind") == "retried"]
    (rerun,) = [t for t in study.trials if t.user_attrs.get("retry_of") == died.number]
    ran = [int(line) for line in tally.read_text().split()]
    saved = died.user_attrs["checkpoint"]["epoch"]
    print(f"\nworker killed (kill -9) after its checkpoint of epoch {saved} of 6: epochs trained in all "
          f"{len(ran)} ({ran}), {saved} fewer than a re-run from epoch 1")
    assert len(killed) == 1 and rerun.state == TrialState.COMPLETE and rerun.params == died.params
    # The re-run went on from the epoch after the checkpoint, not from epoch 1; its curve is whole.
    assert saved >= 3 and ran.count(1) == 1
    assert ran[-(6 - saved):] == list(range(saved + 1, 7))
    assert [r["epoch"] for r in study.epochs(rerun.number)] == list(range(1, 7))
    assert rerun.user_attrs["checkpoint"]["epoch"] == 6
    # Its model is still its best epoch's, saved by the worker that died, and its value is read there.
    assert died.user_attrs["best_checkpoint"]["epoch"] == rerun.user_attrs["best_checkpoint"]["epoch"] == 2
    model = rerun.user_attrs["best_checkpoint"]
    assert checkpoints.read(study.artifacts, model, "").load() == {"epoch": 2}
    downloaded = study.checkpoint(rerun.number, tmp_path / "model")
    assert downloaded.read_bytes() == (study.artifacts / model["artifact_id"]).read_bytes()
    assert rerun.value == pytest.approx((rerun.params["x"] - 0.5) ** 2 + 1)


def _launch_cli(spec: Path, cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUNER_STORAGE": f"sqlite:///{cwd / 'tuner.db'}"}
    return subprocess.Popen([sys.executable, "-m", "tuner", *args, str(spec)] if args[:1] == ("launch",) else
                            [sys.executable, "-m", "tuner", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_complete(db: Path, study: str, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if db.exists():
            try:
                if states(study, f"sqlite:///{db}")["COMPLETE"] >= n:
                    return
            except Exception:  # the study may not exist yet
                pass
    raise AssertionError(f"{study}: fewer than {n} COMPLETE trials after {timeout} s")


def test_orchestrator_killed_then_resumed_completes_every_grid_point_once(tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text(
        "name: grid\nworkload: tests.workloads:slow\nstrategy: grid\nparallel: 2\nepochs: 3\npruner: none\n"
        "fixed: {sleep: 0.2}\nparams:\n  x: {type: float, low: 0, high: 1, values: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]}\n"
        "  k: {type: categorical, choices: [a, b]}\n"
    )
    db = tmp_path / "tuner.db"
    proc = _launch_cli(spec, tmp_path, "launch")
    _wait_for_complete(db, "grid", 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = states("grid", f"sqlite:///{db}")

    resumed = _launch_cli(spec, tmp_path, "resume", "grid")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    trials = optuna.load_study(study_name="grid", storage=f"sqlite:///{db}").trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    points = collections.Counter((t.params["x"], t.params["k"]) for t in complete)
    stale = [t for t in trials if t.user_attrs.get("fail_kind") == "interrupted"]
    print(f"\norchestrator kill -9 after {before['COMPLETE']} COMPLETE ({before['RUNNING']} left RUNNING); "
          f"resume: {len(complete)} COMPLETE of 12 grid points, {len(stale)} stale marked FAIL, "
          f"duplicates {sum(c - 1 for c in points.values())}, RUNNING {sum(t.state == TrialState.RUNNING for t in trials)}")
    assert len(complete) == 12 and len(points) == 12 and set(points.values()) == {1}
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len(stale) == before["RUNNING"]


def test_a_second_orchestrator_on_a_sqlite_study_is_refused(tmp_path):
    spec = tmp_path / "one.yaml"
    spec.write_text(
        "name: one\nworkload: tests.workloads:slow\nstrategy: random\ntrials: 4\nparallel: 1\nepochs: 10\n"
        "pruner: none\nfixed: {sleep: 0.3}\nparams:\n  x: {type: float, low: 0, high: 1}\n"
    )
    first = _launch_cli(spec, tmp_path, "launch", "--executor", "inline")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "tuner.db").exists():
            time.sleep(0.2)
        time.sleep(2)
        second = _launch_cli(spec, tmp_path, "resume", "one", "--executor", "inline")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert "being run by another tuner process" in err and "PostgreSQL" in err
        assert "Traceback" not in err
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
