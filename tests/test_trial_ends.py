"""The driver always learns how a trial ended: whatever its workload raises, exits or leaves behind.

Run as a user runs it: the installed `tuner` script, `--executor inline`, from the user's own directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

import tuner
from tests.services import user_env, wait_for_epochs

TUNER = shutil.which("tuner")

WORKLOAD = '''
import os
import threading
import time


class Interrupted(BaseException):
    pass


def train(params, report):
    case = params["case"]
    report(1, val_loss=0.5)
    if case == "keyboard_interrupt":
        raise KeyboardInterrupt("the workload's own")
    if case == "base_exception":
        raise Interrupted("a BaseException of the workload's")
    if case == "generator_exit":
        raise GeneratorExit("closed")
    if case == "os_exit":
        os._exit(0)
    if case == "late_report":
        def later():
            time.sleep(0.3)
            report(2, val_loss=0.1)
        threading.Thread(target=later, daemon=False).start()
    return None
'''

SPEC = """name: ends
workload: ends:train
strategy: grid
epochs: 2
pruner: none
trial_timeout: 30
max_failed_trials: 10
params:
  case: {type: categorical, choices: [keyboard_interrupt, base_exception, generator_exit, os_exit, late_report, ok]}
"""

FAILS = {
    "keyboard_interrupt": "KeyboardInterrupt: the workload's own",
    "base_exception": "Interrupted: a BaseException of the workload's",
    "generator_exit": "GeneratorExit: closed",
    "os_exit": "WorkloadExit: the workload called os._exit(0), which would end the study's own process",
}


def test_whatever_a_workload_raises_or_leaves_behind_inline_the_driver_records_and_exits(tmp_path, tally):
    assert TUNER is not None, "the `tuner` console script is not installed: pip install -e ."
    (tmp_path / "ends.py").write_text(WORKLOAD)
    (tmp_path / "ends.yaml").write_text(SPEC)
    launched = subprocess.run([TUNER, "launch", "ends.yaml", "--executor", "inline", "--quiet"], cwd=tmp_path,
                              env=user_env(), capture_output=True, text=True, timeout=120)
    assert launched.returncode == 0, launched.stderr
    trials = {t.params["case"]: t for t in optuna.load_study(
        study_name="ends", storage=f"sqlite:///{tmp_path / 'tuner.db'}").trials}
    assert len(trials) == 6
    for case, reason in FAILS.items():
        trial = trials[case]
        assert trial.state == TrialState.FAIL, case
        assert trial.user_attrs["fail_reason"].startswith(reason), trial.user_attrs["fail_reason"]
        assert "fail_kind" not in trial.user_attrs  # the workload's own failure, not a timeout
        tally("fault")
    # A report from a thread the workload left running is refused, and the process still exits.
    late = trials["late_report"]
    assert (late.state, late.value, late.intermediate_values) == (TrialState.COMPLETE, 0.5, {1: 0.5})
    assert "report(2, ...) was called after trial" in launched.stderr
    assert (trials["ok"].state, trials["ok"].value) == (TrialState.COMPLETE, 0.5)
    tally("fault")


SLOW = """name: slow
workload: slow:train
trials: 3
epochs: 200
pruner: none
params:
  x: {type: float, low: 0, high: 1}
"""


SLOW_PY = ("import time\n\ndef train(params, report):\n"
           "    for epoch in range(1, params['epochs'] + 1):\n"
           "        time.sleep(0.05)\n        report(epoch, val_loss=1.0 / epoch)\n")


WATCHDOG = """
import os, threading, time, tuner

def train(params, report):
    for epoch in range(1, 200):
        time.sleep(0.05)
        report(epoch, val_loss=1.0 / epoch)

def watchdog():  # the user's own: it ends the process, as os._exit does
    time.sleep(1.5)
    os._exit(7)

threading.Thread(target=watchdog, daemon=True).start()
tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=train, trials=1, epochs=199,
             executor="inline", storage="sqlite:///w.db", progress=False)
print("the study ended first")
"""


def test_an_os_exit_from_a_users_own_thread_during_an_inline_study_ends_the_process(tmp_path, tally):
    """Only a trial's thread has its os._exit turned into that trial's failure; the user's own thread exits."""
    (tmp_path / "user.py").write_text(WATCHDOG)
    done = subprocess.run([shutil.which("python") or "python", "user.py"], cwd=tmp_path, env=user_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 7, (done.returncode, done.stdout, done.stderr)
    assert "WorkloadExit" not in done.stderr and "the study ended first" not in done.stdout
    tally("fault")


def test_the_users_ctrl_c_still_stops_an_inline_study(tmp_path):
    """A KeyboardInterrupt of the workload's fails its trial; the user's Ctrl-C (SIGINT) stops the study."""
    (tmp_path / "slow.py").write_text(SLOW_PY)
    (tmp_path / "slow.yaml").write_text(SLOW)
    proc = subprocess.Popen([TUNER, "launch", "slow.yaml", "--executor", "inline", "--quiet"], cwd=tmp_path,
                            env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "tuner.db"
    wait_for_epochs(db, proc, timeout=60)  # until the first trial records epochs
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    (trial,) = optuna.load_study(study_name="slow", storage=f"sqlite:///{db}").trials
    assert trial.state == TrialState.FAIL and "Ctrl-C" in trial.user_attrs["fail_reason"]
    # diagnosed as any failed trial: `failed`, with its reason, in the attributes and in `tuner show`
    assert trial.user_attrs["diagnosis"] == "failed"
    assert "Ctrl-C" in trial.user_attrs["diagnosis_detail"]
    shown = subprocess.run([TUNER, "show", "slow", "--json"], cwd=tmp_path, env=user_env(), capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    assert row["diagnosis"] == "failed"


def test_a_trial_its_killed_orchestrator_left_running_is_diagnosed_at_resume(tmp_path, tally):
    """kill -9 leaves the trial RUNNING; the resume that ends it FAIL (interrupted) diagnoses it as failed."""
    (tmp_path / "slow.py").write_text(SLOW_PY)
    (tmp_path / "slow.yaml").write_text(SLOW.replace("trials: 3", "trials: 1").replace("epochs: 200", "epochs: 40"))
    proc = subprocess.Popen([TUNER, "launch", "slow.yaml", "--executor", "inline", "--quiet"], cwd=tmp_path,
                            env=user_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "tuner.db"
    wait_for_epochs(db, proc, timeout=60)  # until the first trial records epochs
    proc.kill()
    proc.wait(timeout=30)
    resumed = subprocess.run([TUNER, "resume", "slow", "--executor", "inline", "--quiet"],
                             cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    trials = optuna.load_study(study_name="slow", storage=f"sqlite:///{db}").trials
    (stale,) = [t for t in trials if t.user_attrs.get("fail_kind") == "interrupted"]
    assert stale.state == TrialState.FAIL
    assert stale.user_attrs["diagnosis"] == "failed"
    assert stale.user_attrs["diagnosis_detail"] == stale.user_attrs["fail_reason"]
    tally("fault")


MLP = """name: mlp-stopped
workload: mlp
data: mnist1d
objective: {metric: val_loss, direction: minimize}
trials: 4
epochs: 50
pruner: none
params:
  lr:    {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
  width: {type: int, low: 64, high: 128}
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl_c", "sigterm"])
def test_stopping_an_inline_study_mid_training_exits_with_its_code_not_an_abort(tmp_path, sig, code, tally):
    """Ctrl-C or SIGTERM while the built-in MLP trains inline: the trial's thread is inside torch, and the
    process exits 130 / 143 instead of aborting at its exit ("terminate called without an active exception")."""
    (tmp_path / "mlp.yaml").write_text(MLP)
    proc = subprocess.Popen([TUNER, "launch", "mlp.yaml", "--executor", "inline", "--quiet"], cwd=tmp_path,
                            env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "tuner.db"
    wait_for_epochs(db, proc, timeout=120)  # until the first trial records epochs
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "terminate called" not in stderr
    trials = optuna.load_study(study_name="mlp-stopped", storage=f"sqlite:///{db}").trials
    assert [t.state for t in trials] == [TrialState.FAIL]
    tally("fault")


class Interrupted(BaseException):
    pass


def raises_base_exception(params, report):
    report(1, val_loss=0.5)
    raise Interrupted("a BaseException of the workload's")


def test_a_base_exception_on_ray_is_the_workloads_failure_not_a_start_failure(ray_local, storage, tally):
    study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=raises_base_exception,
                         trials=1, epochs=1, storage=storage, pruner="none")
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "Interrupted: a BaseException of the workload's"
    assert "raise Interrupted" in trial.user_attrs["fail_traceback"]
    tally("fault")


# ---------------------------------------------------------------------- every epoch reported before the end is kept

RELEASE = threading.Event()


def reports_then_hangs(params, report):
    for epoch in range(1, 4):
        report(epoch, val_loss=1.0 / epoch)
    RELEASE.wait()  # blocked in C, where trial_timeout's exception cannot reach it: the driver must kill it


def test_epochs_reported_just_before_a_hang_are_kept(storage, tally):
    try:
        study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=reports_then_hangs,
                             trials=1, epochs=10, executor="inline", storage=storage, trial_timeout=0.5,
                             pruner="none")
    finally:
        RELEASE.set()  # let the abandoned thread go
    (trial,) = study.trials
    assert (trial.state, trial.user_attrs["fail_kind"]) == (TrialState.FAIL, "timeout")
    assert trial.intermediate_values == {1: 1.0, 2: 0.5, 3: 1 / 3}
    assert [r["epoch"] for r in study.epochs()] == [1, 2, 3]
    tally("fault")


def reports_then_dies(params, report):
    for epoch in range(1, 4):
        report(epoch, val_loss=1.0 / epoch)
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGKILL)  # out of memory, say


def test_epochs_reported_just_before_a_worker_dies_are_kept_on_ray(ray_local, storage, tally):
    study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=reports_then_dies,
                         trials=1, epochs=10, storage=storage, retries=0, pruner="none")
    (trial,) = study.trials
    assert (trial.state, trial.user_attrs["fail_kind"]) == (TrialState.FAIL, "worker_died")
    assert trial.intermediate_values == {1: 1.0, 2: 0.5, 3: 1 / 3}
    assert [r["epoch"] for r in study.epochs()] == [1, 2, 3]
    tally("fault")


def checkpoint_between_deliveries(params, report):
    for epoch in range(1, 6):  # all within one checkpoint interval: the rows go, the checkpoint waits
        report(epoch, val_loss=[3.0, 1.0, 2.0, 2.5, 2.7][epoch - 1], checkpoint=b"epoch 2" if epoch == 2 else None)


def test_a_checkpoint_kept_while_its_row_went_ahead_still_reaches_the_study(storage, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_ARTIFACTS", str(tmp_path / "artifacts"))
    study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=checkpoint_between_deliveries,
                         trials=1, epochs=5, executor="inline", storage=storage, pruner="none")
    (trial,) = study.trials
    assert (trial.value, trial.user_attrs["checkpoint"]["epoch"], trial.user_attrs["best_checkpoint"]["epoch"]) == (
        1.0, 2, 2)
    assert study.checkpoint(0, tmp_path / "model.bin").read_bytes() == b"epoch 2"
    assert [r["epoch"] for r in study.epochs()] == [1, 2, 3, 4, 5]  # each stored once
