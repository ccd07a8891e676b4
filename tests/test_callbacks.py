"""Study callbacks and the spec's `log:` loggers, driven by a real study.

A study runs with `log: {tensorboard: DIR, mlflow: URI}`, optuna-integration's
MLflowCallback and a plain function attached; what each logged is read back
with the library's own reader (TensorBoard's EventAccumulator, MlflowClient).
A callback that raises costs the study nothing but one warning.
"""

from __future__ import annotations

import logging
import os
import warnings

import pytest

import tuner
from tuner.errors import SpecError, TunerError
from tuner.recorder import Callbacks

X = [3.0, 2.5, 2.0]  # workloads.quadratic: val_loss = (x - 2)^2 + 1.5 / epoch
EPOCHS = 3


def spec(tmp_path, **extra):
    return {"name": "logged", "workload": "tests.workloads:quadratic", "strategy": "grid", "epochs": EPOCHS,
            "params": {"x": {"type": "categorical", "choices": X}}, **extra}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Nothing leaves the machine; the file-store opt-in MLflowCallback sets for file: URIs ends with the test."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    yield
    if before is None:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


class Recording:
    """A callback with on_epochs and close, noting what it was given and what the store held at the time."""

    def __init__(self) -> None:
        self.ended, self.batches, self.closed, self.stored_at_end = [], [], 0, {}

    def __call__(self, study, trial):
        self.ended.append(trial)
        self.stored_at_end[trial.number] = len(tuner.load(study.study_name, self.storage).epochs(trial.number))

    def on_epochs(self, study, number, params, rows):
        self.batches.append((number, dict(params), [r["epoch"] for r in rows]))

    def close(self):
        self.closed += 1


def test_a_study_logs_to_tensorboard_mlflow_and_optuna_callbacks_read_back_with_their_readers(tmp_path):
    from mlflow.tracking import MlflowClient
    from optuna_integration import MLflowCallback
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    storage, board, uri = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "runs", f"file:{tmp_path / 'mlruns'}"
    optuna_uri = f"file:{tmp_path / 'optuna-mlruns'}"
    recording = Recording()
    recording.storage = storage
    with warnings.catch_warnings():  # deprecated in optuna-integration 4.9, still shipped and working in 5.x
        warnings.simplefilter("ignore", FutureWarning)
        theirs = MLflowCallback(tracking_uri=optuna_uri, metric_name="val_loss")
    study = tuner.launch(spec(tmp_path, log={"tensorboard": str(board), "mlflow": uri}), executor="inline",
                         storage=storage, callbacks=[theirs, recording])
    trials = {t.number: t for t in study.trials}
    assert [t.state.name for t in trials.values()] == ["COMPLETE"] * len(X)

    # The plain callback: each trial once, ended with its attributes written and its epochs stored.
    assert [(t.number, t.state.name) for t in recording.ended] == [(n, "COMPLETE") for n in trials]
    assert all("diagnosis" in t.user_attrs and t.value is not None for t in recording.ended)
    assert recording.stored_at_end == {n: EPOCHS for n in trials}
    # on_epochs: every row once, in order, by batch (fewer calls than rows), with the trial's params.
    for number, trial in trials.items():
        batches = [(p, epochs) for n, p, epochs in recording.batches if n == number]
        assert [e for _, epochs in batches for e in epochs] == list(range(1, EPOCHS + 1))
        assert all(p == trial.params for p, _ in batches)
    assert len(recording.batches) < len(X) * EPOCHS
    assert recording.closed == 1

    # log.tensorboard: a run per trial, each epoch's val_loss at step = epoch, its end in the HParams tab.
    for number, trial in trials.items():
        events = EventAccumulator(str(board / "logged" / f"trial-{number:04d}"))
        events.Reload()
        stored = [(r["epoch"], r["val_loss"]) for r in study.epochs(number)]
        assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("val_loss")] == stored
        assert events.Scalars("trial/value")[0].value == pytest.approx(trial.value)
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")

    # log.mlflow: a FINISHED run per trial with every epoch; optuna-integration's: the final value.
    client = MlflowClient(uri)
    runs = {int(r.data.tags["tuner.trial"]): r
            for r in client.search_runs([client.get_experiment_by_name("logged").experiment_id])}
    assert sorted(runs) == sorted(trials)
    for number, run in runs.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss"))
        assert history == [(r["epoch"], pytest.approx(r["val_loss"])) for r in study.epochs(number)]
        assert run.info.status == "FINISHED" and run.data.metrics["value"] == pytest.approx(trials[number].value)
    client = MlflowClient(optuna_uri)
    values = {int(r.data.tags["number"]): r.data.metrics["val_loss"]
              for r in client.search_runs([client.get_experiment_by_name("logged").experiment_id])}
    assert values == {n: pytest.approx(t.value) for n, t in trials.items()}


class Broken:
    def __call__(self, study, trial):
        raise ConnectionError("tracking server unreachable\nsecond line")

    def on_epochs(self, study, number, params, rows):
        raise ConnectionError("tracking server unreachable")

    def close(self):
        raise ConnectionError("tracking server unreachable")


def test_a_callback_that_raises_is_warned_about_once_and_the_study_goes_on(tmp_path, caplog):
    after = []
    with caplog.at_level(logging.WARNING, logger="tuner"):
        study = tuner.launch(spec(tmp_path), executor="inline", storage=f"sqlite:///{tmp_path / 's.db'}",
                             callbacks=[Broken(), lambda study, trial: after.append(trial.number)])
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * len(X)
    assert after == [0, 1, 2]  # the callbacks after the broken one still hear of every trial
    warned = [r.getMessage() for r in caplog.records if "callback" in r.getMessage()]
    assert warned == ["study callback tests.test_callbacks.Broken raised ConnectionError: tracking server "
                      "unreachable; the study goes on (its later failures are not shown)"]


def test_on_epochs_is_called_once_per_trial_per_batch_not_per_row():
    calls = []

    class PerEpoch:
        def __call__(self, study, trial):
            pass

        def on_epochs(self, study, number, params, rows):
            calls.append((number, [r["epoch"] for r in rows]))

    class Run:
        def __init__(self, number):
            self.number, self.params = number, {"x": number}

    rows = [{"trial_id": tid, "epoch": e} for e in (1, 2, 3) for tid in (10, 11)]
    callbacks = Callbacks(None, [PerEpoch(), lambda study, trial: None])
    callbacks.epochs(rows, {10: Run(0), 11: Run(1), 12: Run(2)})
    callbacks.close()  # they run on a thread of their own; close() waits for them
    assert calls == [(0, [1, 2, 3]), (1, [1, 2, 3])]


def test_callbacks_must_be_callable_and_are_refused_before_a_study_is_made(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    with pytest.raises(TunerError) as refused:
        tuner.launch(spec(tmp_path), executor="inline", storage=storage, callbacks=[print, "mlflow"])
    assert str(refused.value) == (
        "callbacks: each must be callable as callback(study, frozen_trial), but got 'mlflow' (str). Fix: pass "
        "functions or callback objects, e.g. callbacks=[optuna_integration.MLflowCallback(...)].")
    from tuner.store import Store

    assert not Store(storage).has_study("logged")


@pytest.mark.parametrize("log, message", [
    ("runs", "log: must be a mapping of loggers, but got 'runs'. Fix: e.g. log: {tensorboard: runs, "
             "mlflow: file:./mlruns}."),
    ({"tensorbord": "runs"}, "log.tensorbord: unknown key 'tensorbord'. Did you mean 'tensorboard'? Valid keys "
                             "here: tensorboard, mlflow."),
    ({"mlflow": "ftp://host/x"}, "log.mlflow: must be an MLflow tracking URI (file, sqlite, postgresql, mysql, "
                                 "mssql, http, https, databricks, uc, or a directory), but got 'ftp://host/x'. "
                                 "Fix: e.g. log: {mlflow: file:./mlruns}."),
    ({"tensorboard": "FILE"}, "log.tensorboard: must name a directory for TensorBoard's event files (created if "
                              "missing), but got 'FILE'. Fix: e.g. log: {tensorboard: runs}."),
    ({"tensorboard": 3}, "log.tensorboard: must be a string, but got 3."),
])
def test_log_is_validated_with_the_field_the_rule_the_value_and_the_fix(tmp_path, monkeypatch, log, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("not a directory")
    with pytest.raises(SpecError) as refused:
        tuner.load_spec(spec(tmp_path, log=log))
    assert refused.value.problems == [message]


def test_log_names_a_missing_library(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(SpecError) as refused:
        tuner.load_spec(spec(tmp_path, log={"mlflow": "file:./mlruns"}))
    assert refused.value.problems == [
        "log.mlflow: needs the mlflow package, which is not installed. Fix: pip install mlflow, or remove log.mlflow."]


class PidLogger:
    """A logger run apart, as tuner's TensorBoard and MLflow loggers are: it notes the process each call ran in."""

    separate_process = True

    def __init__(self, path, broken=False, dies=False):
        self.path, self.broken, self.dies = str(path), broken, dies

    def note(self, what):
        with open(self.path, "a") as out:
            out.write(f"{os.getpid()} {what}\n")
        if self.dies:
            os._exit(3)  # a tracker library that takes its process down
        if self.broken:
            raise ConnectionError("tracking server unreachable\nsecond line")

    def __call__(self, study, trial):
        self.note(f"ended {trial.number} {trial.state.name} {study.study_name}")

    def on_epochs(self, study, number, params, rows):
        self.note(f"epochs {number} " + ",".join(str(r["epoch"]) for r in rows))

    def close(self):
        self.note("closed")


def test_loggers_marked_separate_process_run_in_a_child_that_is_gone_when_the_study_ends(tmp_path):
    notes = tmp_path / "notes"
    study = tuner.launch(spec(tmp_path), executor="inline", storage=f"sqlite:///{tmp_path / 's.db'}",
                         callbacks=[PidLogger(notes)])
    lines = [line.split(" ", 1) for line in notes.read_text().splitlines()]
    pids = {int(pid) for pid, _ in lines}
    assert len(pids) == 1 and os.getpid() not in pids  # one child, not the driver
    calls = [what for _, what in lines]
    assert calls[-1] == "closed"
    for trial in study.trials:  # in order: every epoch once, then its end, given the study by its name
        mine = [c for c in calls if c.startswith((f"epochs {trial.number} ", f"ended {trial.number} "))]
        epochs = [int(e) for c in mine[:-1] for e in c.split(" ")[2].split(",")]
        assert epochs == list(range(1, EPOCHS + 1))
        assert mine[-1] == f"ended {trial.number} COMPLETE logged"
    with pytest.raises(ProcessLookupError):  # launch() returned after the child exited: nothing left behind
        os.kill(pids.pop(), 0)


def launch_with_a_failing_logger(tmp_path, caplog, **failing):
    """A study with a PidLogger that fails as ``failing`` says: its notes' lines, and the warnings about it."""
    notes = tmp_path / "notes"
    with caplog.at_level(logging.WARNING, logger="tuner"):
        study = tuner.launch(spec(tmp_path), executor="inline", storage=f"sqlite:///{tmp_path / 's.db'}",
                             callbacks=[PidLogger(notes, **failing)])
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * len(X)
    warned = [r.getMessage() for r in caplog.records if "callback" in r.getMessage() or "process" in r.getMessage()]
    return notes.read_text().splitlines(), warned


def test_a_logger_that_raises_in_its_process_is_warned_about_once_and_the_study_goes_on(tmp_path, caplog):
    notes, warned = launch_with_a_failing_logger(tmp_path, caplog, broken=True)
    assert notes[-1].endswith("closed")  # every call was still made
    assert warned == ["study callback tests.test_callbacks.PidLogger raised ConnectionError: tracking server "
                      "unreachable; the study goes on (its later failures are not shown)"]


def test_a_loggers_process_that_dies_costs_the_study_nothing_but_its_logs(tmp_path, caplog):
    notes, warned = launch_with_a_failing_logger(tmp_path, caplog, dies=True)
    assert len(notes) == 1  # its first call, then it was gone
    assert len(warned) == 1 and "exit code 3" in warned[0] and "the study goes on" in warned[0], warned


def test_calls_queued_for_a_loggers_process_merge_each_trials_epochs_and_keep_every_other_call_in_place():
    from tuner.integrations._process import merged

    shared = [{"epoch": 1}]  # one batch handed to two loggers: merging one logger's must not change the other's
    calls = [(0, "on_epochs", (5, {"x": 1}, shared)), (1, "on_epochs", (5, {"x": 1}, shared)),
             (0, "on_epochs", (6, {"x": 2}, [{"epoch": 1}])), (0, "on_epochs", (5, {"x": 1}, [{"epoch": 2}])),
             (0, "__call__", ("trial 5 ended",)), (0, "on_epochs", (5, {"x": 1}, [{"epoch": 3}])), (0, "close", ())]
    assert merged(calls) == [
        (0, "on_epochs", (5, {"x": 1}, [{"epoch": 1}, {"epoch": 2}])), (1, "on_epochs", (5, {"x": 1}, [{"epoch": 1}])),
        (0, "on_epochs", (6, {"x": 2}, [{"epoch": 1}])), (0, "__call__", ("trial 5 ended",)),
        (0, "on_epochs", (5, {"x": 1}, [{"epoch": 3}])), (0, "close", ())]
    assert shared == [{"epoch": 1}]


class SlowLogger(PidLogger):
    """A PidLogger whose first batch takes a second, as a tracker's first round trip may."""

    def on_epochs(self, study, number, params, rows):
        if not os.path.exists(self.path):
            import time

            time.sleep(1.0)
        super().on_epochs(study, number, params, rows)


def test_a_loggers_process_that_falls_behind_gets_the_queued_batches_merged_with_every_row_once(tmp_path):
    from tuner.integrations._process import LoggerProcess
    from tuner.store import Store

    storage, notes = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "notes"
    Store(storage).create_study("behind", "minimize")
    failures = []
    process = LoggerProcess([SlowLogger(notes)], "behind", storage, lambda *failure: failures.append(failure))
    assert process.wait_ready(60)
    padding = "x" * 20_000  # rows large enough that the pipe to the child fills while its first call sleeps
    for epoch in range(1, 101):
        process.call(0, "on_epochs", epoch % 2, {}, [{"epoch": epoch, "note": padding}])
    process.call(0, "close")
    process.close(patience=60)
    calls = [line.split(" ")[1:] for line in notes.read_text().splitlines()]
    assert calls[-1] == ["closed"] and not failures
    batches = [(int(number), [int(e) for e in epochs.split(",")]) for _, number, epochs in calls[:-1]]
    for number in (0, 1):
        assert [e for n, epochs in batches if n == number for e in epochs] == list(range(2 - number, 101, 2))
    assert len(batches) < 20, batches  # 100 calls queued behind a 1 s sleep reached it as a few
