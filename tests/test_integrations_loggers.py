"""Study callbacks: tuner's per-epoch TensorBoard and MLflow loggers, and optuna-integration's MLflow and W&B callbacks.

Each is driven as the driver will drive it, with the real rows and frozen
trials of a real tuner study (one trial that completes, one that diverges
and is pruned by the diagnostics), and what it logged is read back with the
library's own reader: TensorBoard's EventAccumulator, MLflow's MlflowClient,
and W&B's own Record messages from its offline run file.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import pytest

import tuner
from tests import workloads

STATES = {0.03: "COMPLETE", 3.0: "PRUNED"}  # workloads.diverges_above_one: NaN from the first epoch when lr > 1


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished tuner study whose trials are one COMPLETE (3 epochs) and one PRUNED (diverged at epoch 1)."""
    storage = f"sqlite:///{tmp_path_factory.mktemp('store') / 's.db'}"
    done = tuner.launch(space={"lr": {"type": "categorical", "choices": list(STATES)}},
                        objective=workloads.diverges_above_one, strategy="grid", epochs=3, executor="inline",
                        storage=storage, study="logged")
    assert {t.params["lr"]: t.state.name for t in done.trials} == STATES
    return done


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Nothing leaves the machine; and the file-store opt-in MLflowCallback sets for a file: URI does not outlive a test."""
    for name, value in {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "WANDB_MODE": "offline",
                        "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}.items():
        monkeypatch.setenv(name, value)
    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    yield
    if before is None:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def drive(callback, study) -> None:
    """As the driver does: each trial's rows as they arrive (here in two deliveries), then the finished trial."""
    for trial in study.trials:
        rows = study.epochs(trial.number)
        callback.on_epochs(study.optuna, trial.number, trial.params, rows[:1])
        if rows[1:]:
            callback.on_epochs(study.optuna, trial.number, trial.params, rows[1:])
        callback(study.optuna, trial)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6)


def test_tensorboard_has_a_run_per_trial_with_every_epoch_and_how_it_ended(study, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from tuner.integrations.tensorboard import TensorBoardCallback

    drive(TensorBoardCallback(tmp_path / "runs"), study)
    assert sorted(p.name for p in (tmp_path / "runs" / "logged").iterdir()) == ["trial-0000", "trial-0001"]
    for trial in study.trials:
        events = EventAccumulator(str(tmp_path / "runs" / "logged" / f"trial-{trial.number:04d}"),
                                  size_guidance={"scalars": 0, "tensors": 0})
        events.Reload()
        rows = study.epochs(trial.number)
        for key in ("train_loss", "val_loss", "gap_loss", "seconds"):
            expected = [(r["epoch"], r[key]) for r in rows if r[key] is not None]  # the store keeps NaN as NULL
            logged = [(e.step, e.value) for e in events.Scalars(key)] if expected else []
            assert [s for s, _ in logged] == [s for s, _ in expected], key
            assert all(same(v, w) for (_, v), (_, w) in zip(logged, expected)), key
        state = events.Tensors("trial/state/text_summary")[0].tensor_proto.string_val[0].decode()
        start = plugin_data_pb2.HParamsPluginData.FromString(
            events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["lr"].number_value == trial.params["lr"]
        assert start.hparams["state"].string_value == trial.state.name
        if trial.state.name == "COMPLETE":
            assert state == "COMPLETE" and events.Scalars("trial/value")[0].value == pytest.approx(trial.value)
        else:
            assert state == f"PRUNED: {trial.user_attrs['prune_reason']}" and state.startswith("PRUNED: diverged")
            assert "trial/value" not in events.Tags()["scalars"]


def test_a_diverged_epoch_as_it_arrives_live_is_logged_as_nan(study, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tuner.integrations.mlflow import MLflowCallback
    from tuner.integrations.tensorboard import TensorBoardCallback

    rows = [{"epoch": 1, "trial_id": 9, "val_loss": 2.0, "device": "cpu"}, {"epoch": 2, "val_loss": math.nan}]
    board, uri = TensorBoardCallback(tmp_path / "runs"), f"file:{tmp_path / 'mlruns'}"
    board.on_epochs(study.optuna, 7, {"lr": 5.0}, rows)
    board.close()
    events = EventAccumulator(str(board.run_dir(study.optuna, 7)))
    events.Reload()
    assert [e.step for e in events.Scalars("val_loss")] == [1, 2] and math.isnan(events.Scalars("val_loss")[1].value)
    assert events.Tags()["scalars"] == ["val_loss"]  # neither the device nor the trial id is a metric
    MLflowCallback(uri).on_epochs(study.optuna, 7, {"lr": 5.0}, rows)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("logged").experiment_id])
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss"))
    assert history[0] == (1, 2.0) and history[1][0] == 2 and math.isnan(history[1][1])
    assert run.info.status == "RUNNING"  # its trial has not ended


@pytest.mark.parametrize("scheme", ["file", "sqlite"])
def test_mlflow_has_a_run_per_trial_with_its_epochs_params_and_final_state(study, tmp_path, scheme):
    from mlflow.tracking import MlflowClient

    from tuner.integrations.mlflow import MLflowCallback

    uri = f"file:{tmp_path / 'mlruns'}" if scheme == "file" else f"sqlite:///{tmp_path / 'mlflow.db'}"
    drive(MLflowCallback(uri), study)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("logged")
    runs = {int(r.data.tags["tuner.trial"]): r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == [0, 1]
    for trial in study.trials:
        run, rows = runs[trial.number], study.epochs(trial.number)
        assert run.info.run_name == f"trial-{trial.number:04d}"
        assert run.data.params == {"lr": str(trial.params["lr"])}
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss"))
        assert history == [(r["epoch"], pytest.approx(r["val_loss"])) for r in rows if r["val_loss"] is not None]
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "seconds")) == [r["epoch"] for r in rows]
        assert run.data.tags["tuner.state"] == trial.state.name
        assert run.data.tags["tuner.diagnosis"] == trial.user_attrs["diagnosis"]
        if trial.state.name == "COMPLETE":
            assert run.info.status == "FINISHED" and run.data.metrics["value"] == pytest.approx(trial.value)
        else:
            assert run.info.status == "KILLED" and "value" not in run.data.metrics
            assert run.data.tags["tuner.why"] == trial.user_attrs["prune_reason"]


def test_mlflow_finds_the_run_a_trial_started_under_an_earlier_driver(study, tmp_path):
    from mlflow.tracking import MlflowClient

    from tuner.integrations.mlflow import MLflowCallback

    uri = f"file:{tmp_path / 'mlruns'}"
    trial = study.trials[0]
    MLflowCallback(uri).on_epochs(study.optuna, trial.number, trial.params, study.epochs(trial.number))
    MLflowCallback(uri)(study.optuna, trial)  # a new driver (a resumed study) sees the trial end
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("logged").experiment_id])
    assert run.info.status == "FINISHED" and len(client.get_metric_history(run.info.run_id, "val_loss")) == 3


def test_optuna_integrations_mlflow_callback_takes_tuner_trials_unchanged(study, tmp_path):
    from mlflow.tracking import MlflowClient
    from optuna_integration import MLflowCallback

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    callback = MLflowCallback(tracking_uri=uri, metric_name="val_loss")
    for trial in study.trials:
        callback(study.optuna, trial)
    client = MlflowClient(uri)
    runs = {int(r.data.tags["number"]): r for r in client.search_runs([client.get_experiment_by_name("logged").experiment_id])}
    complete, pruned = (next(t for t in study.trials if t.state.name == s) for s in ("COMPLETE", "PRUNED"))
    assert runs[complete.number].data.metrics["val_loss"] == pytest.approx(complete.value)
    assert runs[pruned.number].data.tags["state"] == "PRUNED" and "val_loss" not in runs[pruned.number].data.metrics
    # tuner's own user attributes travel as tags, the pruning reason with them
    assert runs[pruned.number].data.tags["prune_reason"] == pruned.user_attrs["prune_reason"]
    assert runs[complete.number].data.params == {"lr": str(complete.params["lr"])}


def wandb_history(path: Path) -> list[dict[str, object]]:
    """The history rows of an offline W&B run, decoded with W&B's own Record message.

    A ``.wandb`` file is a 7-byte header (``:W&B``, magic, version) and then
    LevelDB's log framing: 32 KiB blocks of chunks, each a 7-byte header
    (checksum, length, type: 1 full, 2 first, 3 middle, 4 last) and its bytes.
    """
    import json

    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B"
    pos, pending, rows = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record.FromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def test_optuna_integrations_wandb_callback_takes_tuner_trials_unchanged_offline(study, tmp_path):
    import wandb
    from optuna_integration import WeightsAndBiasesCallback

    with warnings.catch_warnings():  # deprecated in optuna-integration 4.9, still shipped and working in 5.x
        warnings.simplefilter("ignore", FutureWarning)
        callback = WeightsAndBiasesCallback(metric_name="val_loss",
                                            wandb_kwargs={"project": "tuner", "dir": str(tmp_path), "mode": "offline"})
    for trial in study.trials:
        callback(study.optuna, trial)
    wandb.finish()
    wandb.teardown()  # stops the W&B service process, which writes the offline run file: all of it is on disk
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    rows = wandb_history(run_file)
    history = {row.get("_step"): row for row in rows}
    assert sorted(history) == [t.number for t in study.trials], rows  # one step per trial, at its number
    for trial in study.trials:
        assert history[trial.number]["lr"] == trial.params["lr"]
        if trial.value is not None:
            assert history[trial.number]["val_loss"] == pytest.approx(trial.value)
        else:
            assert "val_loss" not in history[trial.number]
