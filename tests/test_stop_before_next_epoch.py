"""A stop decision takes effect before the trial's next epoch: no epoch runs to be thrown away.

The workload writes down each epoch it starts; every PRUNED or early-stopped
trial must have run exactly the epochs the driver judged, on the inline
executor and on real Ray, for a per-epoch pruner, a rung-based one and early
stopping. A trial that reaches its final epoch always completes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

import tuner
from tuner.trial import record

EPOCHS = 6
CASES = {
    # Deterministic: every trial with x > 0.5 is over the threshold from epoch 2 on.
    "threshold": {"pruner": {"type": "threshold", "upper": 1.0, "n_warmup_steps": 2}},
    # Rungs at epochs 1, 2, 4: halves the field at each.
    "successive_halving": {"pruner": {"type": "successive_halving", "min_resource": 1, "reduction_factor": 2}},
    "early_stopping": {"pruner": "none", "early_stopping": {"patience": 2}, "fixed": {"rises": True}},
}


def launch(tmp_path: Path, executor: str, case: str) -> tuple[Any, dict[str, int]]:
    tally = tmp_path / "tally"
    tally.mkdir()
    options = dict(CASES[case])
    fixed = {"tally": str(tally), **options.pop("fixed", {})}
    study = tuner.launch(
        {"name": f"stops-{case}", "workload": "tests.workloads:tallied", "strategy": "random", "seed": 3,
         "trials": 6, "parallel": 2, "epochs": EPOCHS, "fixed": fixed,
         "params": {"x": {"type": "float", "low": 0.0, "high": 1.0}}, **options},
        storage=f"sqlite:///{tmp_path / 't.db'}", executor=executor,
    )
    ran = {f.name: len(f.read_text().split()) for f in tally.iterdir()}
    return study, {t.number: ran[f"{t.params['x']:.12f}"] for t in study.trials}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("executor", ["inline", "ray"])
def test_no_epoch_runs_after_a_stop(tmp_path: Path, request: pytest.FixtureRequest, executor: str, case: str) -> None:
    if executor == "ray":
        request.getfixturevalue("ray_local")
    study, ran = launch(tmp_path, executor, case)
    stopped = [t for t in study.trials if t.state == TrialState.PRUNED or t.user_attrs.get(record.EARLY_STOPPED)]
    waits = [w for t in study.trials for w in t.user_attrs.get(record.VERDICT_WAITS, [])]
    print(f"\n{executor} {case}: {len(stopped)} of {len(study.trials)} stopped; epochs run "
          f"{sorted(ran.items())}; verdict waits {len(waits)}, median "
          f"{sorted(waits)[len(waits) // 2] if waits else 0:.1f} ms, max {max(waits, default=0):.1f} ms")
    assert stopped, "nothing was stopped: the case does not test what it says"
    for t in study.trials:
        judged = len(t.intermediate_values)
        assert ran[t.number] == judged, (t.number, t.state, ran[t.number], judged)
        if t.state == TrialState.PRUNED:
            assert t.user_attrs[record.PRUNE_EPOCH] == judged < EPOCHS  # never at the final epoch
        elif ran[t.number] == EPOCHS:
            assert t.state == TrialState.COMPLETE
    assert all(t.state != TrialState.RUNNING for t in study.trials)
