"""Checkpoints per trial: kept in Optuna's artifact store, cut to the best K, handed back, resumed from."""

from __future__ import annotations

import functools

import optuna
import pytest
import torch
from optuna.artifacts import get_all_artifact_meta

import tuner
from tuner import checkpoints
from tuner.trial.messages import TrialJob
from tuner.trial.worker import run_trial


def keeps_state(params, report):
    """Resumes after report.restored; saves its state every epoch."""
    start = report.restored.load()["epoch"] + 1 if report.restored is not None else 1
    for epoch in range(start, params["epochs"] + 1):
        report(epoch, val_loss=(params["x"] - 2) ** 2 + 1 / epoch, checkpoint={"epoch": epoch, "x": params["x"]})


def test_checkpoints_go_to_the_artifact_store_and_only_the_best_k_stay(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 4}}, objective=keeps_state, trials=5,
                         epochs=3, executor="inline", storage=storage, pruner="none", seed=0, strategy="random",
                         checkpoints={"keep": 2})
    trials = optuna.load_study(study_name=study.name, storage=storage).trials
    best = sorted(trials, key=lambda t: t.value)[:2]
    kept = [t for t in trials if "removed" not in t.user_attrs["checkpoint"]]
    assert {t.number for t in kept} == {t.number for t in best}
    files = {p.name for p in (tmp_path / "study-artifacts").iterdir()}
    assert files == {t.user_attrs["checkpoint"]["artifact_id"] for t in kept}
    for t in trials:
        meta = t.user_attrs["checkpoint"]
        assert meta["epoch"] == 3 and meta["bytes"] > 0
        assert [m.artifact_id for m in get_all_artifact_meta(t, storage=study.optuna._storage)] == [meta["artifact_id"]]
    path = study.best_checkpoint(tmp_path / "best.pt")
    assert path.read_bytes() == (tmp_path / "study-artifacts" / best[0].user_attrs["checkpoint"]["artifact_id"]).read_bytes()


def test_a_builtin_run_resumed_from_its_checkpoint_goes_on_as_if_never_stopped():
    context = {"epochs": 4, "data": "iris", "seed": 0}
    job = TrialJob(0, 1, {}, context, "workers.mlp:train", flush_seconds=0.0)
    delivered: list[dict] = []
    whole = run_trial(job, lambda rows, wait: delivered.extend(rows) or False)
    rows = delivered + whole.rows
    at_two = next(r["checkpoint"] for r in rows if r["epoch"] == 2)
    resumed = run_trial(TrialJob(1, 2, {}, context, "workers.mlp:train", restore=at_two), None)
    assert [r["epoch"] for r in resumed.rows] == [3, 4]
    assert [r["val_loss"] for r in resumed.rows] == [r["val_loss"] for r in rows if r["epoch"] > 2]


def test_the_report_scores_the_best_trials_saved_model_on_test_without_retraining(tmp_path, monkeypatch):
    import numpy as np
    import pytest
    import torch

    from tuner import report
    from workers import data, mlp, training
    from workers.config import Config

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    space = {"lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True}}
    study = tuner.launch({"workload": "mlp", "data": "iris", "params": space}, trials=2, epochs=3,
                         executor="inline", storage=storage, pruner="none", seed=0, strategy="random")
    best = study.optuna.best_trial
    at_best = min(study.epochs(best.number), key=lambda e: e["val_loss"])["epoch"]  # where its value was read
    assert best.user_attrs["best_checkpoint"]["epoch"] == at_best and best.user_attrs["checkpoint"]["epoch"] == 3

    trained, scored = [], []  # the training passes run, and the labels of each split evaluated
    train_epoch, evaluate = training.train_epoch, training.evaluate
    monkeypatch.setattr(training, "train_epoch", lambda *a: trained.append(1) or train_epoch(*a))
    monkeypatch.setattr(training, "evaluate", lambda model, split: scored.append(split.y.cpu()) or evaluate(model, split))
    score, how = report.test_score(report.collect(study))

    assert trained == []  # not retrained
    iris = data.load("iris", 0)
    assert len(scored) == 1 and np.array_equal(scored[0].numpy(), iris.y_test)
    assert score["checkpoint"] is True and score["epochs"] == at_best
    assert f"Trial {best.number}'s saved model (its checkpoint of epoch {at_best})" in how and "not retrained" in how

    # The model scored is the one the trial's value describes: on the validation split it gives that value.
    state = torch.load(study.best_checkpoint(tmp_path / "best.pt"), weights_only=False)
    cfg = Config.from_params({"seed": 0, "data": "iris", **best.params, "epochs": 3})
    run = training.Run.start(cfg, training.dataset(cfg), mlp.build)
    run.model.load_state_dict(state["model"])
    on_val, _ = evaluate(run.model, run.val)
    assert best.value == pytest.approx(on_val, rel=1e-6)


SAVED_AT: list[int] = []  # the epochs whose checkpoint function was called, across the trials of a test


def dips_then_overfits(params, report):
    """val_loss is lowest at epoch 2, then rises: the trial's model is epoch 2's, its last checkpoint epoch 4's."""
    def state(epoch):
        SAVED_AT.append(epoch)
        return {"epoch": epoch, "x": params["x"]}

    for epoch in range(1, params["epochs"] + 1):
        saved = functools.partial(state, epoch) if params.get("lazy") else state(epoch)
        report(epoch, val_loss=(params["x"] - 2) ** 2 + 1 + 0.1 * (epoch - 2) ** 2, checkpoint=saved)


@pytest.mark.parametrize("lazy", [False, True], ids=["state", "function"])
def test_a_trial_keeps_its_best_epochs_checkpoint_as_its_model_and_its_last_to_resume_from(tmp_path, lazy):
    SAVED_AT.clear()
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 4}}, objective=dips_then_overfits,
                         trials=4, epochs=4, executor="inline", storage=storage, pruner="none", seed=0,
                         strategy="random", checkpoints={"keep": 2}, fixed={"lazy": lazy})
    trials = optuna.load_study(study_name=study.name, storage=storage).trials
    for t in trials:
        assert t.value == pytest.approx((t.params["x"] - 2) ** 2 + 1)  # read at epoch 2
        best, last = t.user_attrs["best_checkpoint"], t.user_attrs["checkpoint"]
        assert (best["epoch"], last["epoch"]) == (2, 4) and best["artifact_id"] != last["artifact_id"]
        # Two artifacts a trial, whatever the number of epochs.
        ids = {m.artifact_id for m in get_all_artifact_meta(t, storage=study.optuna._storage)}
        assert ids == {best["artifact_id"], last["artifact_id"]}

    kept = sorted(trials, key=lambda t: t.value)[:2]
    removed = [t for t in trials if t not in kept]
    assert all("removed" in t.user_attrs[a] for t in removed for a in ("checkpoint", "best_checkpoint"))
    files = {p.name for p in (tmp_path / "study-artifacts").iterdir()}
    assert files == {t.user_attrs[a]["artifact_id"] for t in kept for a in ("checkpoint", "best_checkpoint")}

    model = torch.load(study.best_checkpoint(tmp_path / "best.pt"), weights_only=False)
    assert model == {"epoch": 2, "x": kept[0].params["x"]}
    last = checkpoints.read(study.artifacts, kept[0].user_attrs["checkpoint"], "")
    assert last.load() == {"epoch": 4, "x": kept[0].params["x"]}
    if lazy:  # a function is called at an epoch that beats the best, and at the last
        assert SAVED_AT.count(2) == SAVED_AT.count(4) == len(trials)


def test_each_batch_of_checkpoints_lands_in_the_artifact_its_attribute_names_and_a_cut_short_save_spares_the_model(
        tmp_path, monkeypatch):
    from tuner.spec import Objective
    from tuner.store import Store, internals
    from tuner.trial.checkpoint import BYTES, Checkpoint

    store = Store(f"sqlite:///{tmp_path / 'study.db'}")
    study = store.create_study("batches", "minimize")
    trial_id = internals.trial_id(study.ask())
    kept = checkpoints.Checkpoints(store, study, keep=3, objective=Objective(metric="val_loss"))

    def batch(*epochs):
        return [({"epoch": e, "val_loss": loss}, Checkpoint(e, f"epoch {e}".encode(), BYTES, "model.bin"))
                for e, loss in epochs]

    def held():
        attrs = store.storage.get_trial(trial_id).user_attrs
        return {name: (attrs[name]["epoch"], checkpoints.read(kept.directory, attrs[name], "").data)
                for name in ("checkpoint", "best_checkpoint")}

    # (epoch, val_loss) batches as a trial's rows arrive: best 2, then 4 (mid-batch), then 6 (its last).
    for epochs, model, last in [([(1, 3.0), (2, 1.0)], 2, 2), ([(3, 2.0)], 2, 3), ([(4, 0.5), (5, 0.7)], 4, 5),
                                ([(6, 0.4)], 6, 6), ([(7, 0.9)], 6, 7), ([(8, 0.8)], 6, 8)]:
        kept.save(trial_id, batch(*epochs))
        assert held() == {"checkpoint": (last, f"epoch {last}".encode()),
                          "best_checkpoint": (model, f"epoch {model}".encode())}
        assert len(set(kept.ids[trial_id])) <= 2

    # A new best whose save is cut short for good (the database stays out): the model it had is intact.
    monkeypatch.setattr(store, "set_trial_attrs", lambda *a: (_ for _ in ()).throw(RuntimeError("database is out")))
    with pytest.raises(RuntimeError):
        kept.save(trial_id, batch((9, 0.1)))
    monkeypatch.undo()
    attrs = store.storage.get_trial(trial_id).user_attrs
    assert checkpoints.read(kept.directory, attrs["best_checkpoint"], "").data == b"epoch 6"
    assert checkpoints.read(kept.directory, attrs["checkpoint"], "") is None  # overwritten: its digest says so
    store.set_trial_attrs(trial_id, {"best_checkpoint": None})  # as if the last were its model: it is refused
    with pytest.raises(tuner.TunerError, match="does not match its digest"):
        checkpoints.download(store, study, store.storage.get_trial(trial_id), tmp_path / "model.bin")
    assert not (tmp_path / "model.bin").exists()


def overfits_late(params, report):
    """val_loss 3, 1, 2, 2.5, 3, 3.5: best at epoch 2."""
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=[3.0, 1.0, 2.0, 2.5, 3.0, 3.5][epoch - 1], checkpoint={"epoch": epoch})


@pytest.mark.parametrize("early_stopping, value, model", [(None, 3.5, 6), ({"patience": 2}, 1.0, 2)],
                         ids=["last epoch", "early stopped"])
def test_with_mode_last_the_model_is_the_epoch_the_value_was_read_at(tmp_path, early_stopping, value, model):
    spec = {"objective": {"metric": "val_loss", "mode": "last"}, "early_stopping": early_stopping}
    study = tuner.launch(spec, space={"x": {"type": "float", "low": 0, "high": 1}}, objective=overfits_late,
                         trials=1, epochs=6, executor="inline", storage=f"sqlite:///{tmp_path / 'study.db'}",
                         pruner="none")
    (trial,) = study.trials
    assert trial.value == value
    assert torch.load(study.best_checkpoint(tmp_path / "model.pt"), weights_only=False) == {"epoch": model}


def test_a_retried_trials_worker_saves_only_where_it_beats_the_best_it_resumed_with():
    from tuner.trial.checkpoint import BYTES, Checkpoint
    from tuner.trial.messages import Scoring

    called = []

    def resumed(params, report):
        for epoch in range(report.restored.epoch + 1, params["epochs"] + 1):
            report(epoch, val_loss=[3.0, 1.0, 2.0, 1.5, 0.5][epoch - 1],
                   checkpoint=functools.partial(called.append, epoch))

    restore = Checkpoint(2, b"epoch 2", BYTES, "model.bin", reported=2)  # its dead worker's best was epoch 2 (1.0)
    job = TrialJob(1, 2, {}, {"epochs": 5}, resumed, flush_seconds=60.0, objective=Scoring("val_loss", "minimize"),
                   restore=restore, best_score=1.0)
    run_trial(job, None)
    assert called == [5]  # epochs 3 and 4 beat nothing it had; epoch 5 is a new best (and its last)


def test_an_upload_the_database_does_not_record_leaves_no_file_behind(tmp_path, monkeypatch):
    from tuner.spec import Objective
    from tuner.store import Store, internals
    from tuner.trial.checkpoint import BYTES, Checkpoint

    store = Store(f"sqlite:///{tmp_path / 'study.db'}")
    study = store.create_study("uploads", "minimize")
    trial_id = internals.trial_id(study.ask())
    kept = checkpoints.Checkpoints(store, study, keep=3, objective=Objective(metric="val_loss"))
    taken = [({"epoch": 1, "val_loss": 1.0}, Checkpoint(1, b"epoch 1", BYTES, "model.bin"))]
    record = store.storage.set_trial_system_attr

    def out(*args, **kwargs):
        raise RuntimeError("database is out")

    monkeypatch.setattr(store.storage, "set_trial_system_attr", out)
    with pytest.raises(RuntimeError):
        kept.save(trial_id, taken)
    assert list(kept.directory.iterdir()) == []  # the file the database has no record of is gone again
    monkeypatch.setattr(store.storage, "set_trial_system_attr", record)
    kept.save(trial_id, taken)  # the retry, as Recorder.db makes it
    (artifact,) = kept.directory.iterdir()
    assert artifact.name == store.storage.get_trial(trial_id).user_attrs["checkpoint"]["artifact_id"]


@pytest.mark.parametrize("workload", ["mlp", "cnn"])
def test_best_model_is_the_best_trials_best_epoch_as_a_module_that_scores_its_value(tmp_path, workload):
    import numpy as np

    import workers

    # 12 wine examples overfit: val_loss bottoms out at epochs 3-5 of 8, so the model is not the last epoch's.
    spec = {"workload": workload, "data": "wine", "fixed": {"train_size": 12, "width": 64},
            "params": {"lr": {"type": "float", "low": 0.01, "high": 0.03, "log": True}}}
    study = tuner.launch(spec, trials=2, epochs=8, executor="inline", storage=f"sqlite:///{tmp_path / 'study.db'}",
                         pruner="none", seed=0, strategy="random")
    best = study.optuna.best_trial
    assert best.user_attrs["best_checkpoint"]["epoch"] < best.user_attrs["checkpoint"]["epoch"] == 8

    model = study.best_model()
    assert isinstance(model, torch.nn.Module) and not model.training
    wine = workers.load("wine", 0)  # the data set as a user loads it: raw features
    with torch.no_grad():
        logits = model(torch.from_numpy(np.array(wine.x_val)))
    y = torch.from_numpy(np.array(wine.y_val))
    at_best = next(e for e in study.epochs(best.number) if e["epoch"] == best.user_attrs["best_checkpoint"]["epoch"])
    assert torch.nn.functional.cross_entropy(logits, y).item() == pytest.approx(best.value, rel=1e-5)
    assert (logits.argmax(1) == y).float().mean().item() == pytest.approx(at_best["val_acc"])
    again = tuner.load(study.name, storage=study.store.url).model(best.number).state_dict()  # a trial by number
    assert again.keys() == model.state_dict().keys()
    assert all(torch.equal(again[k], v) for k, v in model.state_dict().items())


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)


def own_net(params, report):
    torch.manual_seed(0)
    net = Net()
    for epoch in range(1, params["epochs"] + 1):
        with torch.no_grad():
            net.layer.bias.fill_(epoch)
        report(epoch, val_loss=abs(epoch - 2) + params["x"], checkpoint=net.state_dict)


def test_best_model_of_a_users_own_workload_says_how_to_load_it_and_that_way_works(tmp_path):
    study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=own_net, trials=1, epochs=3,
                         executor="inline", storage=f"sqlite:///{tmp_path / 'study.db'}", pruner="none")
    with pytest.raises(tuner.TunerError) as refused:
        study.best_model()
    message = str(refused.value)
    assert "own_net" in message and "model.load_state_dict(torch.load(study.best_checkpoint()))" in message
    model = Net()  # what the message says to do
    model.load_state_dict(torch.load(study.best_checkpoint(tmp_path / "best.pt")))
    assert model.layer.bias.item() == 2.0  # its best epoch's


CHECKPOINT_BYTES = 48 * 1024  # two fit the small disk below (128 KiB), a third does not


def fills_the_disk(params, report):
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=params["x"] + 1.0 / epoch, checkpoint=bytes([epoch]) * CHECKPOINT_BYTES)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A directory on a real 128 KiB file system (a tmpfs; root may mount one), for the artifact store.

    Where mounting is not allowed, a write there past 128 KiB in all fails as a full disk's does: part of the
    file written, then OSError(ENOSPC).
    """
    import errno
    import shutil
    import subprocess

    path = tmp_path / "artifacts"
    path.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(path)],
                                 capture_output=True).returncode == 0
    except OSError:  # no mount command
        mounted = False
    if not mounted:
        def fills(source, target, *args):
            data = source.read()
            room = 128 * 1024 - sum(p.stat().st_size for p in path.iterdir())
            target.write(data[: max(room, 0)])
            if len(data) > room:
                target.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(shutil, "copyfileobj", fills)
        print("\n(no tmpfs mount allowed: a full disk is injected at the write)")
    monkeypatch.setenv(checkpoints.ENV, str(path))
    yield path
    monkeypatch.undo()
    if mounted:
        subprocess.run(["umount", str(path)], check=True)


def test_a_full_artifact_store_drops_checkpoints_with_one_warning_and_leaves_no_partial_file(
        tmp_path, small_disk, caplog, tally):
    import logging

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    with caplog.at_level(logging.WARNING, logger="tuner"):
        study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=fills_the_disk,
                             trials=4, epochs=2, executor="inline", storage=storage, pruner="none", seed=0,
                             strategy="random", checkpoints={"keep": 3})
    full = [r.getMessage() for r in caplog.records if "is full" in r.getMessage()]
    trials = optuna.load_study(study_name=study.name, storage=storage).trials
    files = sorted(small_disk.iterdir())
    kept = [t for t in trials if "checkpoint" in t.user_attrs]
    print(f"\na full artifact store: {len(trials)} trials COMPLETE, {len(kept)} with a checkpoint, "
          f"{len(files)} files, {len(full)} warning(s): {full[:1]}")
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert len(full) == 1 and str(small_disk) in full[0]
    assert 0 < len(kept) < 4  # some checkpoints fitted, the others were dropped
    assert all(p.stat().st_size == CHECKPOINT_BYTES and not p.name.startswith(".") for p in files)  # none partial
    for t in kept:  # what an attribute names is there, whole
        for name in ("checkpoint", "best_checkpoint"):
            meta = t.user_attrs[name]
            assert checkpoints.read(small_disk, meta, "").epoch == meta["epoch"] == 2
    tally("fault")


def test_on_a_full_disk_a_trial_keeps_what_fitted_and_never_names_an_earlier_epoch_as_its_model(small_disk, caplog,
                                                                                                   tally):
    import logging

    from tuner.spec import Objective
    from tuner.store import Store, internals
    from tuner.trial.checkpoint import BYTES, Checkpoint

    store = Store(f"sqlite:///{small_disk.parent / 'study.db'}")
    study = store.create_study("full", "minimize")
    trial_id = internals.trial_id(study.ask())
    kept = checkpoints.Checkpoints(store, study, keep=3, objective=Objective(metric="val_loss"))

    def batch(*epochs, size=CHECKPOINT_BYTES):
        return [({"epoch": e, "val_loss": loss}, Checkpoint(e, bytes([e]) * size, BYTES, "model.bin"))
                for e, loss in epochs]

    def held():
        attrs = store.storage.get_trial(trial_id).user_attrs
        return {name: attrs[name].get("removed") or checkpoints.read(small_disk, attrs[name], "").epoch
                for name in ("checkpoint", "best_checkpoint")}

    with caplog.at_level(logging.WARNING, logger="tuner"):
        kept.save(trial_id, batch((1, 2.0)))  # one artifact: 48 of 128 KiB
        # The best (epoch 2) fits into a second artifact; the last (3) would need a third's room beside them.
        kept.save(trial_id, batch((2, 1.0), (3, 1.5)))
        assert held() == {"checkpoint": 2, "best_checkpoint": 2}  # the model is the last kept one too
        # A new best that does not fit: the trial keeps epoch 2 to resume from, and has no model.
        kept.save(trial_id, batch((4, 0.5)))
        state = held()
        assert state["checkpoint"] == 2 and "full" in state["best_checkpoint"]
        with pytest.raises(tuner.TunerError, match="full when its best epoch, 4, was saved"):
            checkpoints.download(store, study, store.storage.get_trial(trial_id), small_disk.parent / "model.bin")
        kept.save(trial_id, batch((5, 0.4), size=1024))  # room for a small one: kept again
        assert held() == {"checkpoint": 5, "best_checkpoint": 5}
    said = [r.getMessage() for r in caplog.records if "artifact store" in r.getMessage()]
    assert len(said) == 2 and "is full" in said[0] and "room again" in said[1]
    sizes = sorted(p.stat().st_size for p in small_disk.iterdir())
    assert sizes == [1024, CHECKPOINT_BYTES]  # whole files, no partial one
    store.close()
    tally("fault")
