"""The extrapolating pruner: successive halving whose stops are vetoed by a fit of the trial's curve."""

from __future__ import annotations

import math

import optuna
import pytest

from tuner.pruners import ExtrapolatingPruner, optimistic_final

EPOCHS = 20


def saturating(plateau: float, rate: float, epochs: int = EPOCHS) -> list[float]:
    """val_acc per epoch rising from 0.1 towards ``plateau``: a fast starter has a large ``rate``."""
    return [0.1 + (plateau - 0.1) * (1.0 - math.exp(-rate * t)) for t in range(1, epochs + 1)]


FAST = saturating(0.63, 0.8)  # at epoch 4: 0.61, ends 0.63
SLOW = saturating(0.95, 0.1)  # at epoch 4: 0.37, ends 0.83: the curves cross after the rung


def study_with_fast_starters(tmp_path, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Three fast starters ran their whole budget; they set the rung's bar and the best value seen."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}", direction="maximize", pruner=pruner)
    for _ in range(3):
        trial = study.ask()
        for epoch, value in enumerate(FAST, start=1):
            trial.report(value, epoch)
            trial.should_prune()
        study.tell(trial, FAST[-1])
    return study


def verdict_at(study: optuna.Study, curve: list[float], epochs: int) -> bool:
    """Report ``curve`` up to ``epochs`` and ask for the verdict only there, as tuner's workers wait at rungs."""
    trial = study.ask()
    for epoch, value in enumerate(curve[:epochs], start=1):
        trial.report(value, epoch)
    return trial.should_prune()


def extrapolating(**options) -> ExtrapolatingPruner:
    return ExtrapolatingPruner(EPOCHS, **{"min_resource": 4, "reduction_factor": 4, **options})


def test_plain_successive_halving_prunes_the_slow_starter(tmp_path):
    # The premise of the veto: at the rung the slow starter ranks below every fast one.
    study = study_with_fast_starters(tmp_path, optuna.pruners.SuccessiveHalvingPruner(4, 4))
    assert verdict_at(study, SLOW, 4)


def test_keeps_a_slow_starter_whose_curve_will_end_best(tmp_path):
    study = study_with_fast_starters(tmp_path, extrapolating())
    assert not verdict_at(study, SLOW, 4)


def test_prunes_a_flat_loser(tmp_path):
    flat = [0.1 + 0.002 * (t % 2) for t in range(EPOCHS)]
    study = study_with_fast_starters(tmp_path, extrapolating())
    assert verdict_at(study, flat, 4)


def test_prunes_a_curve_that_saturates_below_the_best(tmp_path):
    low = saturating(0.45, 0.6)  # already flattening at 0.4 by epoch 4: no fit reaches 0.63
    study = study_with_fast_starters(tmp_path, extrapolating())
    assert verdict_at(study, low, 4)


def test_never_prunes_at_the_final_epoch(tmp_path):
    worst = [0.1] * EPOCHS
    study = study_with_fast_starters(tmp_path, ExtrapolatingPruner(EPOCHS, min_resource=1, reduction_factor=2))
    assert not verdict_at(study, worst, EPOCHS)


def test_too_few_points_leave_the_rung_verdict(tmp_path):
    # At epoch 1 there is nothing to fit: successive halving's verdict stands.
    study = study_with_fast_starters(tmp_path, ExtrapolatingPruner(EPOCHS, min_resource=1, reduction_factor=4))
    assert verdict_at(study, SLOW, 1)


def test_minimize_reads_a_falling_loss_as_a_rising_curve(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'm.db'}", direction="minimize", pruner=extrapolating())
    for _ in range(3):
        trial = study.ask()
        for epoch, value in enumerate(FAST, start=1):
            trial.report(1.0 - value, epoch)
        study.tell(trial, 1.0 - FAST[-1])
    trial = study.ask()
    for epoch, value in enumerate(SLOW[:4], start=1):
        trial.report(1.0 - value, epoch)
    assert not trial.should_prune()


def test_the_optimistic_final_is_capped_by_the_latest_slope():
    # Three points on a straight line: no saturating fit may promise more than the line itself.
    assert optimistic_final([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], 20, 1.0) <= 0.3 + 0.1 * 17 + 1e-9


@pytest.mark.parametrize("bad", [{"max_resource": 0}, {"max_resource": 20, "quantile": 1.5}])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError, match="max_resource|quantile"):
        ExtrapolatingPruner(**bad)


# --- in a spec, and through tuner's loop ----------------------------------------------------------

BASE = {"name": "p", "data": "digits", "params": {"lr": {"type": "float", "low": 1e-3, "high": 1.0}}}


def test_the_spec_takes_the_extrapolating_type_with_rungs_from_the_budget():
    from tuner.plan import Plan
    from tuner.spec import StudySpec

    plan = Plan.of(StudySpec.model_validate({**BASE, "epochs": 20, "pruner": {"type": "extrapolating"}}))
    assert isinstance(plan.pruner, ExtrapolatingPruner)
    assert plan.pruner_options == {"min_resource": 4, "max_resource": 20}
    assert plan.wait_at == (4, 16)  # the worker waits for a verdict there only
    assert plan.pruner_description == "pruner extrapolating (rungs at epochs 4, 16)"


@pytest.mark.parametrize("pruner, message", [
    ({"type": "extrapolating", "max_resource": 5},
     r"`pruner.max_resource`: the extrapolating pruner takes it from `epochs`, got 5. Fix: remove"),
    ({"type": "extrapolating", "quantile": 2},
     r"options are invalid for extrapolating: quantile: must be within \[0, 1\], got 2. Fix: e.g. quantile: 0.9"),
    ({"type": "extrapolating", "reduction_factr": 2},
     r"`pruner.reduction_factr` is not an option of the extrapolating pruner \(tuner.pruners.ExtrapolatingPruner\)"
     r". Did you mean 'reduction_factor'\? Valid options: min_resource, reduction_factor, min_early_stopping_rate, "
     r"bootstrap_count, quantile."),
])
def test_bad_extrapolating_options_get_the_field_the_rule_and_the_fix(pruner, message):
    from tuner.spec import StudySpec

    with pytest.raises(ValueError, match=message):
        StudySpec.model_validate({**BASE, "pruner": pruner})


def replayed(params, report):
    """A workload whose val_acc follows ``saturating(plateau, rate)``."""
    for epoch, value in enumerate(saturating(params["plateau"], params["rate"], params["epochs"]), start=1):
        report(epoch, val_acc=value)


CURVES = {"plateau": {"type": "float", "low": 0.2, "high": 0.95}, "rate": {"type": "float", "low": 0.05, "high": 1.0}}
# Each fast starter leads the rung when it gets there (so successive halving keeps it), then the two to judge.
ORDER = [{"plateau": 0.63, "rate": r} for r in (0.7, 0.75, 0.8)] + [{"plateau": 0.95, "rate": 0.1}, {"plateau": 0.45, "rate": 0.6}]


@pytest.mark.parametrize("pruner, slow_starter", [
    ({"type": "successive_halving", "min_resource": 4}, "PRUNED"),  # the rung alone stops it at epoch 4
    ({"type": "extrapolating"}, "COMPLETE"),
])
def test_a_study_keeps_the_slow_starter_and_prunes_the_early_plateau(storage, pruner, slow_starter):
    import tuner

    study = tuner.launch(space=CURVES, objective=replayed, trials=len(ORDER), epochs=EPOCHS, parallel=1,
                         storage=storage, executor="inline", warm_start=ORDER, metric="val_acc",
                         direction="maximize", pruner={**pruner, "diagnostics": False})
    states = [t.state.name for t in sorted(study.trials, key=lambda t: t.number)]
    assert states == ["COMPLETE"] * 3 + [slow_starter, "PRUNED"]
    assert {max(t.intermediate_values) for t in study.trials if t.state.name == "PRUNED"} == {4}  # at the rung
