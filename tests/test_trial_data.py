"""A trial's data never takes the study down: values the store cannot hold, repeated epochs, huge errors.

Each hostile workload runs as one trial of a real study (``executor="inline"``) on each database tuner
supports; the study goes on to the next trial, and nothing is left RUNNING.
"""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

import tuner
from tuner.store import Store
from tuner.trial import limits

# Each value the store cannot hold, as a workload reports it, and what the trial's fail_reason names.
UNSTORABLE = {
    "nan_iterations": ("report(1, val_loss=0.5, iterations=math.nan)", "iterations must be a whole number"),
    "inf_iterations": ("report(1, val_loss=0.5, iterations=math.inf)", "iterations must be a whole number"),
    "huge_iterations": ("report(1, val_loss=0.5, iterations=1e30)", "iterations must be a whole number"),
    "epoch_2_63": ("report(2**63, val_loss=0.5)", "epoch must be from 0 to 2147483647"),
    "epoch_2_31": ("report(2**31, val_loss=0.5)", "epoch must be from 0 to 2147483647"),
    "negative_epoch": ("report(-1, val_loss=0.5)", "epoch must be from 0 to 2147483647"),
    "huge_int_metric": ("report(1, val_loss=10**400)", "metrics must be numbers"),
    "nul_device": ("report(1, val_loss=0.5, device='cuda\\x000')", "must not hold a NUL character"),
}


def unstorable(params, report):
    """Reports one good epoch, then the case's value; the "ok" case reports a second good epoch."""
    report(1, val_loss=0.75, iterations=2**40)
    case = params["case"]
    if case == "ok":
        report(2, val_loss=0.25)
        return
    code, _ = UNSTORABLE[case]
    eval(code.replace("report(1,", "report(2,"), {"report": report, "math": math})


def test_a_value_the_store_cannot_hold_fails_its_trial_and_the_study_goes_on(store_url, tally):
    cases = [*UNSTORABLE, "ok"]
    study = tuner.launch(space={"case": {"type": "categorical", "choices": cases}}, objective=unstorable,
                         strategy="grid", trials=len(cases), epochs=2, executor="inline", storage=store_url,
                         pruner="none", max_failed_trials=len(cases) + 1)
    trials = {t.params["case"]: t for t in study.trials}
    assert set(trials) == set(cases)
    ok = trials.pop("ok")
    assert (ok.state, ok.value) == (TrialState.COMPLETE, 0.25)
    for case, trial in trials.items():
        assert trial.state == TrialState.FAIL, case
        assert UNSTORABLE[case][1] in trial.user_attrs["fail_reason"], (case, trial.user_attrs["fail_reason"])
        assert "Traceback" in trial.user_attrs["fail_traceback"]
        tally("hostile input")
    # The good epoch each trial reported before its bad one is stored, as is every epoch of the good trial.
    epochs = study.epochs()
    assert sorted((r["trial"], r["epoch"]) for r in epochs) == sorted(
        [(t.number, 1) for t in study.trials] + [(ok.number, 2)])
    assert {r["iterations"] for r in epochs if r["epoch"] == 1} == {2**40}


def test_the_store_refuses_a_row_it_cannot_hold_before_it_writes_anything(store_url, tally):
    store = Store(store_url)
    try:
        study = store.create_study("s", "minimize")
        trial_id = study.ask()._trial_id
        good = {"trial_id": trial_id, "epoch": 1, "val_loss": 0.5}
        for bad in ({"epoch": 2**31}, {"epoch": -1}, {"epoch": 2.0}, {"iterations": math.nan},
                    {"iterations": 2**63}, {"iterations": 1e30}, {"device": "a\x00b"}, {"grad\x00norm": 1.0}):
            with pytest.raises((ValueError, TypeError)) as caught:
                store.record_epochs([good, {**good, "epoch": 2, **bad}], "val_loss")
            assert "report(epoch" in str(caught.value)
            assert store.epochs(study) == []
            assert store.load_study("s").trials[0].intermediate_values == {}
            tally("hostile input")
        edge = {**good, "epoch": limits.EPOCH_MAX, "iterations": limits.ITERATIONS_MAX, "device": "cpu"}
        store.record_epochs([good, edge], "val_loss")
        assert [(r["epoch"], r["iterations"]) for r in store.epochs(study)] == [(1, None), (2**31 - 1, 2**63 - 1)]
        assert optuna.load_study(study_name="s", storage=store.storage).trials[0].intermediate_values == {
            1: 0.5, 2**31 - 1: 0.5}
    finally:
        store.close()


def repeats_epochs(params, report):
    report(1, val_loss=0.9)
    report(1, val_loss=0.1)  # the same epoch again: ignored, as the store keeps the first
    report(2, val_loss=0.5)
    report(2, val_loss=0.2)
    report(3, val_loss=0.7)


@pytest.mark.parametrize("pruner", ["none", "median"])  # rows in one batch; each epoch delivered on its own
def test_a_repeated_epoch_counts_once_the_same_in_the_value_and_the_store(storage, pruner, caplog, tally):
    study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=repeats_epochs, trials=1,
                         epochs=3, executor="inline", storage=storage, pruner=pruner)
    (trial,) = study.trials
    assert (trial.state, trial.value) == (TrialState.COMPLETE, 0.5)
    assert trial.intermediate_values == {1: 0.9, 2: 0.5, 3: 0.7}
    assert [(r["epoch"], r["val_loss"]) for r in study.epochs()] == [(1, 0.9), (2, 0.5), (3, 0.7)]
    assert trial.user_attrs["epochs"] == 3
    said = [r.getMessage() for r in caplog.records if "again" in r.getMessage()]
    assert said == ["trial 0 reported epoch 1 again; the first report of an epoch is the one that counts (as in "
                    "Optuna's trial.report), later ones are ignored. Fix: report each epoch once, with all its "
                    "metrics"]
    tally("hostile input")


def huge_failure(params, report):
    report(1, val_loss=0.5)
    if params["case"] == "message":
        raise RuntimeError("x" * 5_000_000 + " the end")
    return {f"key{i}": i for i in range(100_000)}  # not a number: the trial fails, naming what it returned


def test_a_huge_failure_is_kept_whole_as_a_file_and_shown_cut(storage, tmp_path, monkeypatch, tally):
    from tuner.trial import record

    monkeypatch.setenv("TUNER_ARTIFACTS", str(tmp_path / "artifacts"))
    study = tuner.launch(space={"case": {"type": "categorical", "choices": ["message", "returned"]}},
                         objective=huge_failure, strategy="grid", trials=2, epochs=1, executor="inline",
                         storage=storage, pruner="none", max_failed_trials=3)
    for trial in study.trials:
        attrs = trial.user_attrs
        assert trial.state == TrialState.FAIL
        reason, whole = attrs["fail_reason"], attrs["fail_text"]
        assert len(reason) < record.MAX_REASON_CHARS + 300 and len(attrs["fail_traceback"]) < 8300
        assert reason.endswith(f"characters; the whole text: {whole['path']}]")
        text = open(whole["path"], encoding="utf-8").read()
        assert len(text) == whole["chars"] > 2_000_000
        assert text.startswith(reason[:record.MAX_REASON_CHARS])
        if trial.params["case"] == "message":
            assert reason.startswith("RuntimeError: xxx")
            assert text.count("x" * 5_000_000 + " the end") == 2  # in the reason and in the traceback, whole
            assert attrs["fail_traceback"].startswith("Traceback (most recent call last):")
            assert attrs["fail_traceback"].endswith("x the end\n")
        else:
            assert reason.startswith("TypeError: the workload must return a number or None, but returned {'key0'")
            assert "'key99999': 99999}" in text
        # optuna-dashboard lists it on the trial's page.
        (meta,) = optuna.artifacts.get_all_artifact_meta(trial, storage=optuna.storages.get_storage(storage))
        assert (meta.artifact_id, meta.filename, meta.mimetype) == (whole["artifact_id"], "failure.txt", "text/plain")
        tally("hostile input")


def test_a_study_stopped_by_a_huge_failure_says_it_cut(storage, tmp_path, monkeypatch, tally):
    from tuner.errors import StudyFailedError

    monkeypatch.setenv("TUNER_ARTIFACTS", str(tmp_path / "artifacts"))
    with pytest.raises(StudyFailedError) as caught:
        tuner.launch(space={"case": {"type": "categorical", "choices": ["message", "returned"]}},
                     objective=huge_failure, strategy="grid", trials=2, epochs=1, executor="inline",
                     storage=storage, pruner="none", max_failed_trials=1)
    message = str(caught.value)
    assert len(message) < 2000 and len(caught.value.workload_traceback) < 8300
    assert "characters; the whole text: " + str(tmp_path / "artifacts") in message
    tally("hostile input")


# ---------------------------------------------------------------------- an objective's metric never reported

MISNAMED_WORKLOAD = '''
import time


def train(params, report):
    for epoch in range(1, params["epochs"] + 1):
        time.sleep(0.3)
        report(epoch, val_loss=1.0 / epoch, val_acc=1.0 - 1.0 / (epoch + 1))
'''

MISNAMED_SPEC = """name: misnamed
workload: mine:train
trials: 4
epochs: 20
objective: {{metric: {metric}, direction: maximize}}
pruner: {pruner}
params:
  lr: {{type: float, low: 1.0e-4, high: 1.0, log: true}}
"""


@pytest.mark.parametrize("pruner", ["median", "none"])
def test_a_misspelt_metric_stops_the_study_at_the_first_epoch_naming_what_was_reported(tmp_path, pruner, tally):
    import shutil
    import subprocess
    import time

    from tests.services import user_env

    tuner_script = shutil.which("tuner")
    assert tuner_script is not None, "the `tuner` console script is not installed: pip install -e ."
    (tmp_path / "mine.py").write_text(MISNAMED_WORKLOAD)
    (tmp_path / "mine.yaml").write_text(MISNAMED_SPEC.format(metric="val_accuracy", pruner=pruner))
    start = time.monotonic()
    launched = subprocess.run([tuner_script, "launch", "mine.yaml", "--executor", "inline", "--quiet"],
                              cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    assert launched.returncode != 0 and "Traceback" not in launched.stderr, launched.stderr
    said = " ".join(launched.stderr.split())
    assert ("objective metric 'val_accuracy' is not among what trial 0 reported at epoch 1: val_loss, val_acc. "
            "Did you mean 'val_acc'? Fix: set `metric: val_acc` under objective: in the spec") in said, said
    study = optuna.load_study(study_name="misnamed", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    (trial,) = study.trials  # stopped at trial 0's first epoch, not after its 20 epochs (6 s) or three trials
    assert (trial.state, trial.user_attrs["fail_kind"], trial.user_attrs["epochs"]) == (TrialState.FAIL,
                                                                                       "interrupted", 1)
    print(f"\na misspelt metric stopped the study after {took:.1f} s, the CLI's start included (a trial runs 6 s)")
    tally("hostile input")


def test_a_metric_never_reported_is_named_with_what_was(storage):
    def reports_others(params, report):
        report(1, train_loss=0.5, val_acc=0.5)

    study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=reports_others, trials=1,
                         epochs=1, executor="inline", storage=storage, pruner="none", metric="f1")
    (trial,) = study.trials
    assert trial.user_attrs["fail_reason"] == ("the workload returned no value and never reported 'f1': it reported "
                                               "train_loss, val_acc. Fix: call report(epoch, f1=...) each epoch, or "
                                               "return the value.")


def test_a_huge_failure_whose_text_cannot_be_kept_still_ends_its_trial(storage, tmp_path, monkeypatch, tally):
    """No room for the whole text (here: no temporary folder to write it in): the trial ends FAIL, shown cut,
    with why its whole text is missing; the study goes on and nothing is left RUNNING."""
    import tempfile

    monkeypatch.setenv("TUNER_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    study = tuner.launch(space={"case": {"type": "categorical", "choices": ["message", "returned"]}},
                         objective=huge_failure, strategy="grid", trials=2, epochs=1, executor="inline",
                         storage=storage, pruner="none", max_failed_trials=3)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    for trial in study.trials:
        whole = trial.user_attrs["fail_text"]
        assert "FileNotFoundError" in whole["error"] and whole["chars"] > 2_000_000
    tally("fault")
