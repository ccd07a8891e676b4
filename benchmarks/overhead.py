"""Orchestration overhead: trials per second on a no-op workload, tuner next to its peers.

Every side runs the same study: ``--trials`` trials of two random params, each
reporting ``--epochs`` values and doing no work, ``--parallel`` at a time, on
SQLite (or Tune's files). What is left is the cost of the machinery.

    python benchmarks/overhead.py                   # 200 trials x 20 epochs, parallel 2
    python benchmarks/overhead.py --quick           # 20 trials x 5 epochs, for CI
    python benchmarks/overhead.py --sides optuna,tuner --out results/
    python benchmarks/overhead.py --sides optuna,tuner --pruner successive_halving  # a pruner on, both sides

With ``--pruner`` plain Optuna runs with the same Optuna pruner (the options
tuner derives from the epoch budget) and calls ``should_prune()`` every
epoch; tuner runs with ``pruner: NAME``. ``trials_per_s`` counts pruned
trials too; tuner's row adds the verdict waits (``verdict_waits_ms``, per
verdict a worker waited for: median and p99).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from _common import (
    PeakRss,
    add_common_args,
    chosen_sides,
    keep_ray_on_loopback,
    print_table,
    run_side,
    temp_workdir,
    timed,
    write_json,
)

keep_ray_on_loopback()  # before peers or tuner import ray

import peers  # noqa: E402

FULL = {"trials": 200, "epochs": 20, "parallel": 2}
# Ray Tune alone needs ~8 s of start-up and ~1 s a trial, so CI gets a handful.
QUICK = {"trials": 10, "epochs": 5, "parallel": 2}
SIDES = ("optuna", "ray_tune", "ray_tune_reuse", "tuner")
COLUMNS = (
    "trials_per_s",
    "trials_per_s_with_startup",
    "wall_s",
    "startup_s",
    "trials_complete",
    "epochs_recorded",
    "epochs_expected",
    "peak_rss_mib",
)
PRUNER_COLUMNS = ("trials_per_s", "wall_s", "trials_complete", "trials_pruned", "epochs_recorded",
                  "verdict_ms_median", "verdict_ms_p99", "peak_rss_mib")


# === TUNER SIDE ================================================================
def _noop_workload():
    """The same no-op workload as a tuner user function.

    Built in a closure so that Ray ships it by value: this module is on no
    installed path, so Ray's workers could not import it by name.
    """

    def train(params: dict[str, Any], report: Any) -> float:
        value = 0.0
        for epoch in range(params["epochs"]):
            value = (params["x"] - 2.0) ** 2 + params["y"] + 1.0 / (epoch + 1)
            report(epoch + 1, val_loss=value)
        return value

    return train


def run_tuner(n_trials: int, epochs: int, parallel: int, workdir: Path, pruner: str = "none") -> dict[str, Any]:
    """The same study through tuner's default path: a local Ray, trials as Ray tasks, SQLite.

    No pruner unless `--pruner` names one (the peers then use the same), the diagnostics pruner on as by
    default; ``startup_s`` is Ray's start-up, ``wall_s`` the study alone.
    """
    import logging

    import optuna
    import ray
    import sqlalchemy as sa

    import tuner

    url = f"sqlite:///{Path(workdir).resolve() / 'tuner.db'}"
    space = {"x": {"type": "float", "low": -10.0, "high": 10.0}, "y": {"type": "int", "low": 0, "high": 10}}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with PeakRss() as rss:
        with timed() as setup:
            ray.init(num_cpus=parallel, _node_ip_address="127.0.0.1", include_dashboard=False,
                     log_to_driver=False, logging_level=logging.ERROR,
                     _temp_dir=str(Path(workdir).resolve() / "ray"))
        try:
            with timed() as run:
                study = tuner.launch(space=space, objective=_noop_workload(), trials=n_trials, epochs=epochs,
                                     parallel=parallel, strategy="random", seed=0, storage=url,
                                     study="overhead", pruner=pruner)
        finally:
            ray.shutdown()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select count(*) from tuner_epochs")).scalar()
        values = conn.execute(sa.text("select count(*) from trial_intermediate_values")).scalar()
    engine.dispose()
    complete = sum(t.state.name == "COMPLETE" for t in study.trials)
    waits = [w for t in study.trials for w in (t.user_attrs.get("verdict_waits_ms") or [])]
    return {
        **_waits(waits),
        "trials_pruned": sum(t.state.name == "PRUNED" for t in study.trials),
        "n_trials": n_trials,
        "epochs": epochs,
        "parallel": parallel,
        "startup_s": round(setup["s"], 3),
        "wall_s": round(run["s"], 3),
        "trials_per_s": round(n_trials / run["s"], 3),
        "trials_per_s_with_startup": round(n_trials / (run["s"] + setup["s"]), 3),
        "trials_complete": complete,
        "epochs_recorded": min(rows, values),
        "epochs_expected": n_trials * epochs if pruner == "none" else None,
        "peak_rss_mib": rss.peak_mib,
    }
# ==============================================================================


def _waits(waits: list[float]) -> dict[str, Any]:
    import numpy as np

    if not waits:
        return {}
    return {"verdicts": len(waits), "verdict_ms_median": round(float(np.median(waits)), 2),
            "verdict_ms_p99": round(float(np.percentile(waits, 99)), 2)}


def optuna_pruner(name: str, epochs: int) -> Any:
    """The Optuna pruner tuner builds for ``pruner: NAME``, with the options it derives from the budget."""
    import optuna

    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, epochs // 16), reduction_factor=4)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(max_resource=epochs)
    if name == "median":
        return optuna.pruners.MedianPruner()
    raise SystemExit(f"--pruner takes successive_halving, hyperband, median or none, but got {name!r}.")


def optuna_with_pruner(n_trials: int, epochs: int, parallel: int, workdir: Path, pruner: str) -> dict[str, Any]:
    """Plain Optuna as ``peers.optuna_plain`` runs it, plus a pruner asked every epoch (never at the last)."""
    import optuna

    url = f"sqlite:///{Path(workdir).resolve() / 'optuna_pruned.db'}"

    def objective(trial: optuna.Trial) -> float:
        x, y = trial.suggest_float("x", -10.0, 10.0), trial.suggest_int("y", 0, 10)
        value = 0.0
        for epoch in range(epochs):
            value = (x - 2.0) ** 2 + y + 1.0 / (epoch + 1)
            trial.report(value, epoch + 1)
            if epoch + 1 < epochs and trial.should_prune():
                raise optuna.TrialPruned()
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with PeakRss() as rss:
        with timed() as setup:
            study = optuna.create_study(storage=url, study_name="bench", sampler=optuna.samplers.RandomSampler(seed=0),
                                        pruner=optuna_pruner(pruner, epochs))
        with timed() as run:
            study.optimize(objective, n_trials=n_trials, n_jobs=parallel)
    trials = study.get_trials(deepcopy=False)
    return {
        "n_trials": n_trials, "epochs": epochs, "parallel": parallel,
        "startup_s": round(setup["s"], 3), "wall_s": round(run["s"], 3),
        "trials_per_s": round(n_trials / run["s"], 3),
        "trials_complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials),
        "trials_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "epochs_recorded": sum(len(t.intermediate_values) for t in trials),
        "peak_rss_mib": rss.peak_mib,
    }


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    preset = QUICK if args.quick else FULL
    return {key: getattr(args, key) or preset[key] for key in preset}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, help=f"trials per study (default {FULL['trials']})")
    parser.add_argument("--epochs", type=int, help=f"reports per trial (default {FULL['epochs']})")
    parser.add_argument("--parallel", type=int, help=f"trials at a time (default {FULL['parallel']})")
    parser.add_argument("--pruner", default="none",
                        help="successive_halving, hyperband or median: both sides prune (default none)")
    add_common_args(parser, SIDES)
    args = parser.parse_args(argv)
    sizes = _sizes(args)
    pruned = args.pruner != "none"
    if pruned and set(chosen_sides(args, SIDES)) - {"optuna", "tuner"}:
        raise SystemExit("--pruner compares optuna and tuner only. Fix: add --sides optuna,tuner.")
    run = {
        "optuna": functools.partial(optuna_with_pruner, pruner=args.pruner) if pruned else peers.optuna_plain,
        "ray_tune": peers.ray_tune,  # Tune's defaults: a fresh worker process per trial
        "ray_tune_reuse": functools.partial(peers.ray_tune, reuse_actors=True),
        "tuner": functools.partial(run_tuner, pruner=args.pruner),
    }

    rows = []
    for side in chosen_sides(args, SIDES):
        with temp_workdir(f"bench-overhead-{side}-") as workdir:
            row = run_side(side, lambda: run[side](sizes["trials"], sizes["epochs"], sizes["parallel"], workdir))
        if row is not None:
            rows.append(row)

    title = f"Orchestration overhead: {sizes['trials']} trials x {sizes['epochs']} epochs, parallel {sizes['parallel']}"
    title += f", pruner {args.pruner}" if pruned else ""
    print_table(title, rows, PRUNER_COLUMNS if pruned else COLUMNS, ratio_of="trials_per_s", baseline="optuna")
    if args.out is not None:
        path = write_json(args.out, "overhead", {"sizes": sizes, "pruner": args.pruner, "results": rows})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
