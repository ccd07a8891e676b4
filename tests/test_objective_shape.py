"""Objectives tuner cannot run are refused before any study is created, with the shape it needs."""

from __future__ import annotations

import threading

import optuna
import pytest

import tuner
from tuner.errors import TunerError

SPACE = {"x": {"type": "float", "low": 0, "high": 1}}


def no_arguments():
    return 1.0


def test_an_objective_of_neither_shape_is_refused_with_both_shapes_shown(storage, tally):
    with pytest.raises(TunerError) as caught:
        tuner.launch(space=SPACE, objective=no_arguments, trials=2, executor="inline", storage=storage)
    message = str(caught.value)
    assert message.startswith("objective: tuner calls it as Optuna's objective(trial) or as train(params, report), "
                              "but no_arguments() can take neither.")
    assert "def train(params, report):" in message and "report(epoch, val_loss=vl)" in message
    assert optuna.get_all_study_names(storage) == []
    tally("hostile input")


def test_an_objective_that_cannot_be_pickled_for_ray_is_refused_before_anything_starts(storage):
    lock = threading.Lock()

    def train(params, report):  # a closure: pickled by value, with the lock it holds
        with lock:
            report(1, val_loss=params["x"])

    with pytest.raises(TunerError) as caught:
        tuner.launch(space=SPACE, objective=train, trials=2, storage=storage)
    message = str(caught.value)
    print(f"\n{message}")
    assert "cannot be sent to Ray workers, because it cannot be pickled: cannot pickle '_thread.lock' object" in message
    assert "--executor inline" in message
    assert optuna.get_all_study_names(storage) == []


def test_the_same_closure_runs_inline_where_nothing_is_pickled(storage):
    lock = threading.Lock()

    def train(params, report):
        with lock:
            report(1, val_loss=params["x"])

    study = tuner.launch(space=SPACE, objective=train, trials=2, executor="inline", storage=storage, pruner="none")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
