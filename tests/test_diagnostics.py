"""Diagnoses and pruning: rules on hand-made curves, then real training runs on CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
from optuna.trial import TrialState

import tuner
from tests import workloads
from tuner.trial.diagnosis import Thresholds, diagnose
from tuner.errors import SpecError, StudyFailedError
from tuner.spec import PRUNERS

T = Thresholds()


def rows(**series):
    n = len(next(iter(series.values())))
    out = [{"epoch": i + 1, **{k: float(v[i]) for k, v in series.items()}} for i in range(n)]
    for r in out:
        if "train_loss" in r and "val_loss" in r:
            r["gap_loss"] = r["val_loss"] - r["train_loss"]
    return out


# ---------------------------------------------------------------- rules on hand-made curves


def test_nan_loss_is_diverged_at_that_epoch():
    f = diagnose(rows(train_loss=[2.0, 1.5, math.nan], val_loss=[2.1, 1.6, math.nan]), T)
    assert (f.kind, f.epoch) == ("diverged", 3)


def test_a_loss_rising_far_above_its_start_is_diverged():
    f = diagnose(rows(train_loss=[1.0, 2.0, 3.5], val_loss=[1.0, 2.0, 3.5]), T)
    assert (f.kind, f.epoch) == ("diverged", 3)
    assert diagnose(rows(train_loss=[1.0, 2.0, 3.5], val_loss=[1.0, 2.0, 3.5]),
                    Thresholds(divergence_factor=5)).kind != "diverged"


def test_growing_gradient_norms_are_exploding():
    f = diagnose(rows(train_loss=[1, 1, 1], val_loss=[1, 1, 1], grad_norm=[1.0, 50.0, 2000.0]), T)
    assert (f.kind, f.epoch) == ("exploding_gradients", 3)
    assert "grew" in f.detail


def test_tiny_first_to_last_ratio_for_several_epochs_is_vanishing():
    series = dict(train_loss=[2.3] * 4, val_loss=[2.3] * 4, grad_ratio=[1e-2, 1e-5, 1e-5, 1e-5])
    f = diagnose(rows(**series), T)
    assert (f.kind, f.epoch) == ("vanishing_gradients", 4)  # made after 3 epochs in a row
    assert diagnose(rows(**series), Thresholds(vanishing_ratio=1e-6)).kind != "vanishing_gradients"


def test_val_rising_while_train_falls_is_overfitting_with_its_best_epoch():
    f = diagnose(rows(train_loss=[1.0, 0.8, 0.6, 0.4, 0.2, 0.1], val_loss=[1.0, 0.9, 0.85, 0.9, 1.0, 1.2]), T)
    assert (f.kind, f.epoch) == ("overfitting", 6)
    assert f.values["best_epoch"] == 3
    assert f.values["gap_loss"] == pytest.approx(1.1)


def test_flat_losses_are_stalled_and_moving_ones_healthy():
    assert diagnose(rows(train_loss=[2.3026] * 6, val_loss=[2.3026] * 6), T).kind == "stalled"
    assert diagnose(rows(train_loss=[2.0, 1.5, 1.2, 1.0, 0.9], val_loss=[2.0, 1.6, 1.3, 1.1, 1.0]), T).kind == "healthy"


def test_thresholds_are_set_in_the_spec_and_checked():
    spec = tuner.load_spec({"name": "t", "workload": "tests.workloads:quadratic",
                            "params": {"x": {"type": "float", "low": 0, "high": 1}},
                            "diagnostics": {"vanishing_ratio": 1e-4, "overfit_patience": 5}})
    assert spec.diagnostics.vanishing_ratio == 1e-4 and spec.diagnostics.overfit_patience == 5
    with pytest.raises(SpecError, match=r"diagnostics.overfit_patience: must be >= 1, but got -2"):
        tuner.load_spec({**spec.to_dict(), "diagnostics": {"overfit_patience": -2}})
    with pytest.raises(SpecError, match=r"diagnostics.vanishing_ratio: must be a number, but got 'tiny'"):
        tuner.load_spec({**spec.to_dict(), "diagnostics": {"vanishing_ratio": "tiny"}})
    with pytest.raises(SpecError, match=r"unknown key 'vanish_ratio'. Did you mean 'vanishing_ratio'"):
        tuner.load_spec({**spec.to_dict(), "diagnostics": {"vanish_ratio": 1e-3}})


def test_pruner_names_and_options_are_checked():
    base = {"name": "t", "workload": "tests.workloads:quadratic",
            "params": {"x": {"type": "float", "low": 0, "high": 1}}}
    with pytest.raises(SpecError, match=r"pruner.type` must be one of none, median, percentile, "
                                        r"successive_halving, hyperband, threshold, extrapolating, but got 'medain'. "
                                        r"Did you mean 'median'"):
        tuner.load_spec({**base, "pruner": "medain"})
    with pytest.raises(SpecError, match=r"not an option of the median pruner.*Did you mean 'n_warmup_steps'"):
        tuner.load_spec({**base, "pruner": {"type": "median", "warmup_steps": 3}})
    with pytest.raises(SpecError, match=r"percentile needs percentile"):
        tuner.load_spec({**base, "pruner": {"type": "percentile"}})
    with pytest.raises(SpecError, match=r"Percentile must be between 0 and 100"):
        tuner.load_spec({**base, "pruner": {"type": "percentile", "percentile": 150}})


# ---------------------------------------------------------------- real training, built-in workers


def one_config(storage, **params):
    """Run exactly one configuration of the built-in MLP on digits, inline."""
    epochs = params.pop("epochs", 8)
    space = {k: {"type": "categorical", "choices": [v]} for k, v in params.items()}
    return tuner.launch({"name": "one", "workload": "mlp", "data": "digits", "strategy": "grid",
                         "params": space}, epochs=epochs, storage=storage, executor="inline", pruner="none")


def test_an_eight_layer_sigmoid_mlp_is_diagnosed_vanishing(storage):
    study = one_config(storage, depth=8, width=64, activation="sigmoid", optimizer="sgd", lr=0.1)
    (trial,) = study.trials
    assert trial.user_attrs["diagnosis"] == "vanishing_gradients"
    ratios = [e["grad_ratio"] for e in study.epochs(0)]
    print(f"\n8-layer sigmoid MLP: first/last-layer gradient ratio per epoch {[f'{r:.1e}' for r in ratios]}")
    assert max(ratios) < 1e-3


def test_sgd_with_a_huge_learning_rate_is_diverged_and_stopped_within_one_epoch(storage):
    study = tuner.launch({"name": "hot", "workload": "mlp", "data": "digits", "strategy": "grid",
                          "params": {"lr": {"type": "categorical", "choices": [1000.0]},
                                     "optimizer": {"type": "categorical", "choices": ["sgd"]}}},
                         epochs=20, storage=storage, executor="inline")
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["diagnosis"] == "diverged"
    assert trial.user_attrs["prune_rule"] == "diagnostics:diverged"
    nan_epoch = next(e["epoch"] for e in study.epochs(0) if e["train_loss"] is None)  # NaN is stored as NULL
    assert trial.user_attrs["prune_epoch"] == nan_epoch
    assert trial.user_attrs["epochs"] == nan_epoch  # no epoch after the NaN was run


def test_an_overparameterized_net_on_a_tiny_split_is_diagnosed_overfitting(storage):
    study = one_config(storage, depth=3, width=512, optimizer="adam", lr=3e-3, train_size=60,
                       batch_size="full", epochs=30)
    (trial,) = study.trials
    epochs = study.epochs(0)
    best = min(epochs, key=lambda e: e["val_loss"])["epoch"]
    assert trial.user_attrs["diagnosis"] == "overfitting"
    assert trial.user_attrs["best_epoch"] == best
    assert best < 20 and epochs[-1]["val_loss"] > 2 * min(e["val_loss"] for e in epochs)
    assert trial.user_attrs["final_gap"] == pytest.approx(epochs[-1]["gap_loss"], rel=1e-5)


def test_the_diagnostics_pruner_stops_vanishing_gradients_on_ray(ray_local, storage):
    study = tuner.launch({"name": "deep", "workload": "mlp", "data": "digits", "strategy": "grid",
                          "params": {"depth": {"type": "categorical", "choices": [8]},
                                     "activation": {"type": "categorical", "choices": ["sigmoid", "relu"]},
                                     "optimizer": {"type": "categorical", "choices": ["sgd"]}}},
                         epochs=10, storage=storage, parallel=2, pruner={"type": "none", "diagnostics": True})
    by_act = {t.params["activation"]: t for t in study.trials}
    sigmoid = by_act["sigmoid"]
    assert sigmoid.state == TrialState.PRUNED
    assert sigmoid.user_attrs["prune_rule"] == "diagnostics:vanishing_gradients"
    assert sigmoid.user_attrs["prune_epoch"] == 3 and sigmoid.user_attrs["epochs"] == 3
    assert sigmoid.user_attrs["prune_values"]["grad_ratio"] < 1e-3
    assert by_act["relu"].user_attrs.get("prune_rule") is None


# ---------------------------------------------------------------- pruners, objectives, accounting

PRUNER_OPTIONS = {
    "none": {},
    "median": {"n_startup_trials": 2},
    "percentile": {"percentile": 50.0, "n_startup_trials": 2},
    "successive_halving": {"min_resource": 1, "reduction_factor": 2},
    "hyperband": {"min_resource": 1, "max_resource": 8, "reduction_factor": 2},
    "threshold": {"upper": 4.0},
    "extrapolating": {"min_resource": 4, "reduction_factor": 2},
}


@pytest.mark.parametrize("kind", list(PRUNERS))
def test_each_pruner_is_reachable_from_a_spec(storage, kind):
    spec = {"name": kind.replace("_", "-"), "workload": "tests.workloads:quadratic", "strategy": "random",
            "trials": 16, "epochs": 8, "seed": 0, "pruner": {"type": kind, **PRUNER_OPTIONS[kind]},
            "params": {"x": {"type": "float", "low": -5, "high": 5}}}
    study = tuner.launch(spec, storage=storage, executor="inline")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    if kind == "none":
        assert not pruned
        return
    assert pruned, f"{kind} pruned nothing"
    for t in pruned:
        assert t.user_attrs["prune_rule"] == kind
        assert t.user_attrs["prune_epoch"] == t.user_attrs["epochs"] <= 8
        assert kind in t.user_attrs["prune_reason"]
    # The pruned ones are the bad ones: none of them is better than the best complete trial.
    best = min(t.value for t in study.trials if t.state == TrialState.COMPLETE)
    assert all((t.params["x"] - 2) ** 2 > best - 1.5 / 8 for t in pruned)


def test_the_sampler_learns_to_avoid_learning_rates_that_diverge(storage):
    """lr > 1 diverges: after 20 trials, TPE proposes it far less often than random search."""
    space = {"lr": {"type": "float", "low": 1e-4, "high": 10.0, "log": True}}
    share = {}
    for strategy in ("tpe", "random"):
        later = []
        for seed in range(3):
            study = tuner.launch(space=space, objective=workloads.diverges_above_one, trials=60, epochs=3,
                                 executor="inline", storage=storage, study=f"{strategy}-{seed}",
                                 strategy=strategy, seed=seed)
            later += [t.params["lr"] > 1.0 for t in study.trials if t.number >= 20]
            diverged = [t for t in study.trials if t.user_attrs.get("diagnosis") == "diverged"]
            assert all(t.state == TrialState.PRUNED for t in diverged)
        share[strategy] = float(np.mean(later))
    print(f"\nshare of proposals 21-60 with lr > 1 (diverging; 20% of the log range): "
          f"tpe {share['tpe']:.1%}, random {share['random']:.1%}")
    assert share["random"] > 0.1
    assert share["tpe"] < share["random"] / 3


def test_early_stopping_keeps_the_best_epoch_value(storage):
    study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 0.01}}, objective=workloads.overfits_after_three,
                         trials=2, epochs=20, executor="inline", storage=storage, pruner="none",
                         early_stopping={"patience": 2})
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        assert t.user_attrs["early_stopped"] is True
        assert t.user_attrs["epochs"] == 5  # best at 3, two more without improvement
        assert t.value == pytest.approx(0.5 + t.params["x"])
        assert t.user_attrs["best_epoch"] == 3


def test_a_gap_penalized_objective_and_a_gap_constraint(storage):
    study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 0.01}}, objective=workloads.overfits_after_three,
                         trials=2, epochs=6, executor="inline", storage=storage, pruner="none",
                         metric="val_loss", gap_penalty=2.0, max_gap=0.1)
    for t in study.trials:
        rows = study.epochs(t.number)
        scores = [r["val_loss"] + 2.0 * r["gap_loss"] for r in rows]
        assert t.value == pytest.approx(min(scores))
        assert t.intermediate_values == {r["epoch"]: pytest.approx(s) for r, s in zip(rows, scores)}
        best = rows[int(np.argmin(scores))]
        assert t.system_attrs["constraints:gap"] == pytest.approx(best["gap_loss"] - 0.1)


def test_a_pruner_with_a_workload_that_reports_no_values_is_refused(storage):
    with pytest.raises(StudyFailedError, match="pruner 'median' needs a value of 'val_loss' every epoch"):
        tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=workloads.returns_only,
                     trials=5, executor="inline", storage=storage, pruner="median")


def test_compute_accounting_adds_up(storage):
    spec = {"name": "acct", "workload": "tests.workloads:quadratic", "strategy": "random", "trials": 12,
            "epochs": 8, "seed": 1, "pruner": {"type": "median", "n_startup_trials": 2},
            "params": {"x": {"type": "float", "low": -5, "high": 5}}}
    study = tuner.launch(spec, storage=storage, executor="inline")
    acct = study.accounting()
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert acct["trials"] == 12
    assert acct["epochs_run"] == len(study.epochs()) == sum(t.user_attrs["epochs"] for t in study.trials)
    assert acct["pruned"] == len(pruned) > 0
    assert acct["epochs_saved"] == sum(8 - t.user_attrs["epochs"] for t in pruned)
    assert acct["epochs_run"] + acct["epochs_saved"] == sum(
        8 if t.state == TrialState.PRUNED else t.user_attrs["epochs"] for t in study.trials
    )
    assert acct["wall_seconds"] == pytest.approx(sum(t.user_attrs["wall_seconds"] for t in study.trials), abs=0.01)
    assert acct["gpu_seconds"] == 0.0


def test_a_failed_trial_is_diagnosed_failed_with_its_reason_never_healthy(storage):
    study = tuner.launch(space={"x": {"type": "float", "low": -1, "high": 1}}, objective=workloads.fails_when_negative,
                         study="fails", trials=8, epochs=1, strategy="random", seed=2, pruner="none",
                         executor="inline", storage=storage)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert failed and complete, [t.state for t in study.trials]
    for t in failed:  # no epoch shows anything wrong; what it has is the reason it failed
        assert t.user_attrs["diagnosis"] == "failed", t.user_attrs
        assert t.user_attrs["diagnosis_detail"] == t.user_attrs["fail_reason"]
        assert "is negative" in t.user_attrs["diagnosis_detail"]
    assert {t.user_attrs["diagnosis"] for t in complete} == {"healthy"}
