"""tuner.frames: a real study as DataFrames (Optuna's trial frame plus tuner's columns; every epoch), and as Parquet."""

from __future__ import annotations

import shutil
import subprocess

import pandas as pd
import pytest

import tuner
from tests.services import user_env
from tuner import frames
from tuner.errors import TunerError


def train(params, report):
    """Falls with lr up to 1; NaN above (pruned by the diagnostics at epoch 1); reports one metric of its own."""
    for epoch in range(1, params["epochs"] + 1):
        if params["lr"] > 1:
            report(epoch, train_loss=float("nan"), val_loss=float("nan"))
            return
        loss = 1.0 / (epoch * params["lr"])
        report(epoch, train_loss=loss, val_loss=loss + 0.25, val_acc=0.5, my_metric=float(epoch * 10))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    storage = f"sqlite:///{tmp_path_factory.mktemp('store') / 'tuner.db'}"
    done = tuner.launch(space={"lr": {"type": "categorical", "choices": [0.5, 3.0]}}, objective=train,
                        strategy="grid", epochs=3, executor="inline", storage=storage, study="framed")
    assert sorted(t.state.name for t in done.trials) == ["COMPLETE", "PRUNED"]
    return done


def test_the_trial_frame_is_optunas_with_tuners_columns(study):
    frame = study.trials_dataframe()
    optunas = study.optuna.trials_dataframe()
    pd.testing.assert_frame_equal(frame[list(optunas.columns)], optunas)
    assert list(frame.columns) == [*optunas.columns, *frames.TRIAL_COLUMNS]
    by_lr = {row.params_lr: row for row in frame.itertuples()}
    complete, pruned = by_lr[0.5], by_lr[3.0]
    assert (complete.state, complete.diagnosis, complete.best_epoch, complete.epochs) == ("COMPLETE", "healthy", 3, 3)
    assert complete.final_gap == pytest.approx(0.25) and complete.stopped_because == ""
    assert (pruned.state, pruned.diagnosis, pruned.epochs) == ("PRUNED", "diverged", 1)
    assert pruned.stopped_because == pruned.user_attrs_prune_reason and pruned.stopped_because.startswith("diverged at epoch 1")
    assert pd.isna(pruned.final_gap)  # its losses were NaN: no gap
    assert str(frame["best_epoch"].dtype) == "Int64"


def test_the_trial_frame_takes_optunas_options(study):
    frame = frames.trials_dataframe(study, attrs=("number", "state", "params"), multi_index=True)
    assert ("params", "lr") in frame.columns and ("diagnosis", "") in frame.columns
    assert sorted(frame[("diagnosis", "")]) == ["diverged", "healthy"]


def test_the_epoch_frame_has_every_epoch_and_every_key(study):
    frame = study.epochs_dataframe()
    rows = study.epochs()
    assert list(frame.columns[:3]) == ["study", "trial", "epoch"] and len(frame) == len(rows) == 4
    assert set(frame["study"]) == {"framed"}
    assert "my_metric" in frame.columns and "val_acc" in frame.columns
    complete = next(t.number for t in study.trials if t.state.name == "COMPLETE")
    mine = frame[frame["trial"] == complete]
    assert list(mine["epoch"]) == [1, 2, 3] and list(mine["my_metric"]) == [10.0, 20.0, 30.0]
    assert list(mine["gap_loss"]) == pytest.approx([0.25] * 3)
    assert len(study.epochs_dataframe(trial=complete)) == 3
    assert list(study.epochs_dataframe(trial=99).columns) == ["study", "trial", "epoch"]


def test_tuner_epochs_writes_parquet_that_reads_back_as_the_frame(study, tmp_path):
    tuner_script = shutil.which("tuner")
    assert tuner_script is not None, "the `tuner` console script is not installed: pip install -e ."
    out = subprocess.run([tuner_script, "epochs", "framed", "--storage", study.store.url, "--parquet", "e.parquet"],
                         cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "wrote 4 epoch rows to e.parquet" in out.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "e.parquet"), study.epochs_dataframe(),
                                  check_dtype=False)


def test_an_unwritable_parquet_path_says_so(study, tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(TunerError, match=r"^--parquet: cannot write '.*taken/e\.parquet': .*Fix: choose a writable path\.$"):
        frames.to_parquet(study.epochs_dataframe(), tmp_path / "taken" / "e.parquet")
