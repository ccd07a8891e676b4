"""Compute to target: epochs and seconds until some trial reaches a target validation accuracy.

One problem for every side: the built-in MLP on mnist1d, one search space,
``--epochs`` per trial, at most ``--trials`` trials, ``--parallel`` at a time:

- ``tuner``: ``tuner.launch`` with its defaults: TPE, the successive-halving
  pruner and the diagnostics pruner, trials as Ray tasks.
- ``optuna``: plain Optuna, ``TPESampler(seed)`` with ``NopPruner()``,
  ``study.optimize(n_jobs=parallel)``: every trial runs every epoch.
- ``ray_tune_asha``: Ray Tune, random search with the ``ASHAScheduler``.

The target is the 90th percentile of the final val accuracies of a random
search that runs every trial to the full budget. It is measured once
(``--measure-target``) and kept, with the command that measured it, in
``compute_to_target_target.json``.

Every side trains through the same wrapper of ``workers.mlp.train``, which
logs each epoch's end time and val_acc from the process that ran it. The
epochs are counted from that log in the order they ended, up to the first
whose val_acc reaches the target; the wall seconds run from the side's
start to that epoch's end. Each side stops its study there, its own way
(tuner: ``on_progress`` raises; Optuna: ``study.stop()``; Ray Tune: a
``Stopper``), or at the trial cap. ``epochs_run`` therefore counts every
epoch until the study stopped (the target's, plus those in flight), and
``epochs_recorded`` what the side itself stored of them.

A seed fixes each searcher's random stream but not the run: with trials in
parallel, the order in which they finish (and which of Optuna's threads
draws which sample) changes what comes next. So a seed's numbers differ
from run to run; compare the medians, and read the per-seed ratios as the
spread.

    python benchmarks/compute_to_target.py                   # 8 seeds x 3 sides, ~8 min on 2 cores (more if shared)
    python benchmarks/compute_to_target.py --quick           # CI: 1 seed, tiny budget, checks results exist
    python benchmarks/compute_to_target.py --measure-target  # measure the target again (~3 min)
    python benchmarks/compute_to_target.py --sides tuner --tuner-pruner '{type: hyperband}'  # tuner, another pruner
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import math
import shlex
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import (
    add_common_args,
    chosen_sides,
    environment,
    keep_ray_on_loopback,
    print_table,
    run_side,
    temp_workdir,
    write_json,
)

keep_ray_on_loopback()  # before anything imports ray

import optuna  # noqa: E402
import yaml  # noqa: E402

TARGET_FILE = Path(__file__).resolve().with_name("compute_to_target_target.json")
DATA = "mnist1d"
# Every trial of every side trains with this seed (weights, batch order, the
# train/val split), so a configuration has one learning curve whichever side
# runs it, and the target is a property of the problem. The repetitions'
# seeds vary the searchers only. (tuner passes its study seed to the workload
# unless `fixed` overrides it; see run_tuner.)
TRAIN_SEED = 0
PERCENTILE = 90
# Epochs to target vary several-fold from seed to seed (it depends on when a
# good configuration is drawn), hence 8 seeds and medians.
FULL = {"epochs": 20, "trials": 40, "parallel": 2, "seeds": 8, "target_trials": 100}
QUICK = {"epochs": 3, "trials": 4, "parallel": 2, "seeds": 1, "target_trials": 6}
# --quick's target: low enough that 3-epoch trials often reach it, so CI runs
# every side's stopping code; the measured one needs ~20 epochs.
QUICK_TARGET = 0.25
SIDES = ("tuner", "optuna", "ray_tune_asha")
# ASHA's rungs at epochs 1, 4, 16, as Optuna's SuccessiveHalvingPruner (tuner's
# default) places them with min_resource "auto" (1 here) and reduction_factor 4.
ASHA = {"grace_period": 1, "reduction_factor": 4}
COLUMNS = (
    "reached", "epochs_to_target", "wall_s_to_target", "winner_epochs", "best_val_acc",
    "epochs_run", "epochs_recorded", "trials_run", "wall_s",
)

# The search space, written once per tool (keep the three in step). Pruning
# pays here: part of the lr range diverges or barely moves, deep sigmoid nets
# learn slowly, and the best configurations need most of the 20 epochs.
SPACE = {
    "lr": {"type": "float", "low": 1.0e-4, "high": 0.3, "log": True},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"optimizer": "sgd"}},
    "depth": {"type": "int", "low": 1, "high": 4},
    "width": {"type": "int", "low": 32, "high": 256, "log": True},
    "activation": {"type": "categorical", "choices": ["relu", "tanh", "sigmoid"]},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
}


def optuna_params(trial: optuna.Trial) -> dict[str, Any]:
    """SPACE as Optuna's define-by-run suggestions, in the same order."""
    params: dict[str, Any] = {
        "lr": trial.suggest_float("lr", 1e-4, 0.3, log=True),
        "optimizer": trial.suggest_categorical("optimizer", ["sgd", "adam", "rmsprop"]),
    }
    if params["optimizer"] == "sgd":
        params["momentum"] = trial.suggest_float("momentum", 0.0, 0.99)
    params["depth"] = trial.suggest_int("depth", 1, 4)
    params["width"] = trial.suggest_int("width", 32, 256, log=True)
    params["activation"] = trial.suggest_categorical("activation", ["relu", "tanh", "sigmoid"])
    params["dropout"] = trial.suggest_float("dropout", 0.0, 0.3)
    params["batch_size"] = trial.suggest_categorical("batch_size", [32, 64, 128])
    return params


def ray_space() -> dict[str, Any]:
    """SPACE as Ray Tune's param_space; momentum is drawn always and used only with sgd."""
    from ray import tune

    return {
        "lr": tune.loguniform(1e-4, 0.3),
        "optimizer": tune.choice(["sgd", "adam", "rmsprop"]),
        "momentum": tune.uniform(0.0, 0.99),
        "depth": tune.randint(1, 5),  # randint excludes its upper bound
        "width": tune.lograndint(32, 257),
        "activation": tune.choice(["relu", "tanh", "sigmoid"]),
        "dropout": tune.uniform(0.0, 0.3),
        "batch_size": tune.choice([32, 64, 128]),
    }


# --- the workload and its epoch log ----------------------------------------------------


def logged_train(log: Path) -> Callable[[dict[str, Any], Callable[..., None]], None]:
    """``workers.mlp.train`` that also appends a line per epoch to ``log``: when it ended, its val_acc.

    Every side trains through this, so all are counted alike, by the process
    that ran the epoch: also the epochs a side ran but did not record (tuner
    drops the rows a pruned trial sends after its prune decision). A closure,
    so that cloudpickle ships it to Ray's workers by value.
    """
    path = str(log)

    def train(params: dict[str, Any], report: Callable[..., None]) -> None:
        from workers import mlp

        def on_epoch(epoch: int, **metrics: Any) -> None:
            line = {"t": time.time(), "epoch": epoch, "val_acc": metrics.get("val_acc")}
            with open(path, "a") as f:  # one short write per line: no interleaving
                f.write(json.dumps(line) + "\n")
            report(epoch, **metrics)  # may raise to stop the trial

        return mlp.train(params, on_epoch)

    return train


class TargetWatch:
    """Reads the epoch log as it grows; tells whether an epoch has reached the target."""

    def __init__(self, log: Path, target: float) -> None:
        self.log, self.target, self.offset, self.hit = log, target, 0, False

    def reached(self) -> bool:
        if self.hit or not self.log.exists():
            return self.hit
        with open(self.log, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        whole = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next call
        self.offset += len(whole)
        self.hit = any((json.loads(line)["val_acc"] or 0.0) >= self.target for line in whole.splitlines())
        return self.hit


class TargetReached(Exception):
    """Raised from tuner's ``on_progress`` to end the study: tuner marks running trials interrupted."""


def to_target(log: Path, start: float, target: float) -> dict[str, Any]:
    """Where the target was first reached, counting epochs in the order they ended, from ``start``."""
    lines = log.read_text().splitlines() if log.exists() else []
    epochs = sorted((json.loads(line) for line in lines), key=lambda e: e["t"])
    accs = [e["val_acc"] for e in epochs if isinstance(e["val_acc"], float) and math.isfinite(e["val_acc"])]
    hit = next((i for i, e in enumerate(epochs) if (e["val_acc"] or 0.0) >= target), None)
    return {
        "reached": hit is not None,
        "epochs_to_target": hit + 1 if hit is not None else None,
        "wall_s_to_target": round(epochs[hit]["t"] - start, 2) if hit is not None else None,
        # The winning trial's own epochs: a floor no pruning can go below.
        "winner_epochs": epochs[hit]["epoch"] if hit is not None else None,
        "best_val_acc": round(max(accs), 4) if accs else None,
        "epochs_run": len(epochs),
    }


def workload_params(params: dict[str, Any], epochs: int) -> dict[str, Any]:
    return {**params, "epochs": epochs, "data": DATA, "seed": TRAIN_SEED}


# --- the sides ---------------------------------------------------------------------------


def run_tuner(sizes: dict[str, int], seed: int, target: float, workdir: Path, pruner: Any = None) -> dict[str, Any]:
    """tuner's defaults (TPE, successive halving, diagnostics) through ``tuner.launch`` on the running Ray.

    The workload is ``logged_train``, handed to the API as ``objective=``:
    the built-in ``mlp`` plus the epoch log. ``fixed: {seed: TRAIN_SEED}``
    keeps the training seed apart from the sampler's ``seed``. The study
    ends once an epoch reaches the target: ``on_progress`` (called every
    ~50 ms) raises, and ``on_start`` kept the Study that ``launch`` then
    cannot return.
    """
    import tuner

    log = workdir / "epochs.jsonl"
    spec = {
        "name": f"compute-to-target-{seed}",
        "data": DATA,
        "objective": {"metric": "val_acc", "direction": "maximize"},
        "strategy": "tpe",
        "trials": sizes["trials"],
        "parallel": sizes["parallel"],
        "epochs": sizes["epochs"],
        "seed": seed,
        "fixed": {"seed": TRAIN_SEED},
        "params": SPACE,
    }
    if pruner is not None:
        spec["pruner"] = pruner
    watch, kept = TargetWatch(log, target), {}

    def on_progress(_: Any) -> None:
        if watch.reached():
            raise TargetReached

    start = time.time()
    try:
        tuner.launch(
            spec, objective=logged_train(log), storage=f"sqlite:///{workdir / 'tuner.db'}", executor="ray",
            on_start=lambda _, study: kept.update(study=study), on_progress=on_progress,
        )
    except TargetReached:
        pass
    wall = time.time() - start
    study = kept["study"]
    states = Counter(t.state.name for t in study.trials)
    return {
        **to_target(log, start, target),
        "epochs_recorded": len(study.epochs()),  # what tuner's store holds
        "trials_run": len(study.trials),
        "trial_states": dict(states),  # FAIL: the trials in flight when the target was reached
        "wall_s": round(wall, 2),
    }


def run_optuna(sizes: dict[str, int], seed: int, target: float, workdir: Path) -> dict[str, Any]:
    """Plain Optuna: TPE, no pruning, ``n_jobs`` threads; a trial's value is its best val_acc.

    The epoch that reaches the target calls ``study.stop()`` (no new trials)
    and ends the trials in flight by raising TrialPruned from their reports.
    """
    log = workdir / "epochs.jsonl"
    train = logged_train(log)
    reached = threading.Event()
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=optuna.pruners.NopPruner()
    )

    def objective(trial: optuna.Trial) -> float:
        accs: list[float] = []

        def report(epoch: int, **metrics: Any) -> None:
            accs.append(metrics["val_acc"])
            if metrics["val_acc"] >= target:
                reached.set()
                study.stop()
            if reached.is_set():
                raise optuna.TrialPruned("an epoch reached the target")

        train(workload_params(optuna_params(trial), sizes["epochs"]), report)
        return max(accs)

    start = time.time()
    study.optimize(objective, n_trials=sizes["trials"], n_jobs=sizes["parallel"])
    wall = time.time() - start
    result = to_target(log, start, target)
    return {**result, "epochs_recorded": result["epochs_run"], "trials_run": len(study.trials),
            "wall_s": round(wall, 2)}


def _ray_trainable(train: Callable[..., None], epochs: int) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable: one ``tune.report`` per epoch."""

    def trainable(config: dict[str, Any]) -> None:
        from ray import tune

        params = {k: v for k, v in config.items() if k != "momentum" or config["optimizer"] == "sgd"}
        train(workload_params(params, epochs), lambda epoch, **m: tune.report(
            {"val_acc": m["val_acc"], "val_loss": m["val_loss"], "epoch": epoch}
        ))

    return trainable


def _target_stopper(target: float) -> Any:
    """A Tune Stopper that ends the whole experiment once a result reaches the target."""
    from ray import tune

    class TargetStopper(tune.Stopper):
        def __init__(self) -> None:
            self.hit = False

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            self.hit = self.hit or result["val_acc"] >= target
            return False

        def stop_all(self) -> bool:
            return self.hit

    return TargetStopper()


def run_ray_tune_asha(sizes: dict[str, int], seed: int, target: float, workdir: Path) -> dict[str, Any]:
    """Ray Tune: random search (seeded) with ASHA on val_acc, ``max_concurrent_trials`` at a time.

    ``reuse_actors=True``, Tune's advice for short trials: without it every
    trial starts a fresh actor process (imports torch, loads the data), ~3x
    the wall time here. A Stopper ends the experiment at the target.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    log = workdir / "epochs.jsonl"
    epochs = sizes["epochs"]
    runner = tune.Tuner(
        _ray_trainable(logged_train(log), epochs),
        param_space=ray_space(),
        tune_config=tune.TuneConfig(
            num_samples=sizes["trials"],
            max_concurrent_trials=sizes["parallel"],
            scheduler=ASHAScheduler(metric="val_acc", mode="max", max_t=epochs, **ASHA),
            search_alg=BasicVariantGenerator(random_state=seed),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"compute-to-target-{seed}", storage_path=str(workdir.resolve() / "ray_results"), verbose=0,
            stop=_target_stopper(target),
        ),
    )
    start = time.time()
    grid = runner.fit()
    wall = time.time() - start
    reported = [len(r.metrics_dataframe) if r.metrics_dataframe is not None else 0 for r in grid]
    return {
        **to_target(log, start, target),
        "epochs_recorded": sum(reported),  # read back from Tune's result files
        "trials_run": sum(n > 0 for n in reported),  # Tune ends the pending ones at the stop, unstarted
        "trials_errored": grid.num_errors,
        "wall_s": round(wall, 2),
    }


# --- Ray and the process ---------------------------------------------------------------


def start_ray(parallel: int) -> None:
    """One local Ray for tuner and Ray Tune, its workers warmed like this process (torch, data loaded).

    Without the warm-up, whichever side runs first pays the workers' imports
    and mnist1d's load (~5-15 s on 2 slow cores) and the others do not.
    Ray Tune starts its own actor processes in every fit: that cost is its own.
    """
    import ray
    from ray import cloudpickle

    # Ship this module's functions to Ray's workers by value, also when it is
    # imported rather than run: the workers cannot import it by name.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(
        address="local",  # never join a cluster named by RAY_ADDRESS
        num_cpus=parallel,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    warm_ray(parallel)


def warm_ray(parallel: int) -> None:
    """Have ``parallel`` idle Ray workers with torch and the data loaded (again, after tuner killed some)."""
    import ray

    ray.get([ray.remote(num_cpus=1)(_warm).remote() for _ in range(parallel)])


def _warm() -> None:
    from workers import data, mlp  # noqa: F401  (imports torch)

    data.load(DATA, TRAIN_SEED)


def setup_process() -> None:
    """One torch thread per trial, as Ray gives its workers (OMP_NUM_THREADS=1); quiet Optuna."""
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _warm()


# --- the target --------------------------------------------------------------------------


def measure_target(sizes: dict[str, int], path: Path, seed: int = 0) -> dict[str, Any]:
    """Random search, every trial to the full budget; the target is the 90th percentile of final val_acc."""
    import numpy as np

    from workers import mlp

    def objective(trial: optuna.Trial) -> float:
        accs: list[float] = []
        mlp.train(workload_params(optuna_params(trial), sizes["epochs"]), lambda epoch, **m: accs.append(m["val_acc"]))
        return accs[-1]  # the final epoch's, also for a run that diverged and ended early

    started = time.time()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    study.optimize(objective, n_trials=sizes["target_trials"], n_jobs=sizes["parallel"])
    finals = sorted(t.value for t in study.trials)
    record = {
        "target_val_acc": round(float(np.percentile(finals, PERCENTILE)), 4),
        "how": f"{PERCENTILE}th percentile (numpy.percentile, linear) of the final-epoch val_acc of "
               f"{len(finals)} random-search trials (optuna RandomSampler(seed={seed}), no pruning), "
               f"{sizes['epochs']} epochs each",
        "command": shlex.join(["python", *sys.argv]),  # as it was run
        "epochs": sizes["epochs"],
        "trials": len(finals),
        "sampler_seed": seed,
        "train_seed": TRAIN_SEED,
        "data": DATA,
        "space": SPACE,
        "wall_s": round(time.time() - started, 1),
        "environment": environment(),
        "final_val_accs": [round(v, 4) for v in finals],
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def load_target(path: Path, epochs: int) -> float:
    if not path.is_file():
        raise SystemExit(f"no target file at {path}. Fix: run with --measure-target first (or pass --target).")
    record = json.loads(path.read_text())
    if record.get("space") != SPACE or record.get("epochs") != epochs:
        print(f"note: the target in {path} was measured for another space or epoch budget "
              f"({record.get('epochs')} epochs); it is used as is.", file=sys.stderr)
    return float(record["target_val_acc"])


# --- aggregation and output --------------------------------------------------------------


def _median(values: Sequence[float]) -> float | None:
    """The median, with a miss counted as infinitely late; None when that median is a miss."""
    if not values:
        return None
    m = statistics.median(values)
    return None if math.isinf(m) else round(m, 2)


def _or_inf(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] if r["reached"] else math.inf for r in runs]


def summarize(runs: list[dict[str, Any]], sides: Sequence[str]) -> list[dict[str, Any]]:
    """One row per side: medians over the seeds; ``reached`` is how many seeds reached the target."""
    rows = []
    for side in sides:
        mine = [r for r in runs if r["side"] == side]
        if not mine:
            continue
        rows.append({
            "side": side,
            "reached": f"{sum(r['reached'] for r in mine)}/{len(mine)}",
            "epochs_to_target": _median(_or_inf(mine, "epochs_to_target")),
            "wall_s_to_target": _median(_or_inf(mine, "wall_s_to_target")),
            "winner_epochs": _median([r["winner_epochs"] for r in mine if r["reached"]]),
            **{k: _median([r[k] for r in mine if r.get(k) is not None])
               for k in ("best_val_acc", "epochs_run", "epochs_recorded", "trials_run", "wall_s")},
        })
    return rows


def ratios(summary: list[dict[str, Any]], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """tuner's epochs to target over each peer's: of the medians, and the median of the per-seed ratios."""
    med = {r["side"]: r["epochs_to_target"] for r in summary}
    out: dict[str, Any] = {}
    for peer, goal in (("optuna", "<= 1/3"), ("ray_tune_asha", "< 1")):
        if "tuner" not in med or peer not in med:
            continue
        of_medians = med["tuner"] / med[peer] if med["tuner"] and med[peer] else None
        per_seed = []
        for t in (r for r in runs if r["side"] == "tuner"):
            p = next((r for r in runs if r["side"] == peer and r["seed"] == t["seed"]), None)
            if p is not None:
                te = t["epochs_to_target"] if t["reached"] else math.inf
                pe = p["epochs_to_target"] if p["reached"] else math.inf
                per_seed.append(te / pe if not (math.isinf(te) and math.isinf(pe)) else math.nan)
        met = None if of_medians is None else (of_medians <= 1 / 3 if peer == "optuna" else of_medians < 1)
        out[f"tuner/{peer}"] = {
            "epochs_of_medians": None if of_medians is None else round(of_medians, 3),
            "epochs_per_seed": [None if not math.isfinite(x) else round(x, 3) for x in per_seed],
            "goal": goal,
            "met": met,
        }
    return out


def print_results(title: str, runs: list[dict[str, Any]], summary: list[dict[str, Any]], rat: dict[str, Any]) -> None:
    for seed in sorted({r["seed"] for r in runs}):
        rows = [{**r, "reached": "yes" if r["reached"] else "no"} for r in runs if r["seed"] == seed]
        print_table(f"{title}, seed {seed}", rows, COLUMNS, ratio_of="epochs_to_target", baseline="optuna")
    print_table(f"{title}: medians over seeds", summary, COLUMNS, ratio_of="epochs_to_target", baseline="optuna")
    for name, r in rat.items():
        verdict = {True: "met", False: "MISSED", None: "-"}[r["met"]]
        print(f"{name} epochs to target: {r['epochs_of_medians']} of medians, per seed {r['epochs_per_seed']} "
              f"(goal {r['goal']}: {verdict})")


def check_quick(runs: list[dict[str, Any]], sides: Sequence[str]) -> None:
    """CI's check: every side ran and its epochs were counted (not whether it reached the target)."""
    problems = [f"{s}: no result" for s in sides if not any(r["side"] == s for r in runs)]
    problems += [f"{r['side']}: no epochs counted" for r in runs if not r["epochs_run"] or r["best_val_acc"] is None]
    if problems:
        raise SystemExit("compute_to_target --quick produced no results: " + "; ".join(problems))


# --- command line -----------------------------------------------------------------------


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    preset = QUICK if args.quick else FULL
    return {key: getattr(args, key) or preset[key] for key in preset}


def run_all(args: argparse.Namespace, sizes: dict[str, int], sides: list[str], target: float) -> list[dict[str, Any]]:
    """Every seed, every side, in an order rotated per seed so no side always goes first."""
    pruner = yaml.safe_load(args.tuner_pruner) if args.tuner_pruner else None
    run = {
        "tuner": lambda s, w: run_tuner(sizes, s, target, w, pruner),
        "optuna": lambda s, w: run_optuna(sizes, s, target, w),
        "ray_tune_asha": lambda s, w: run_ray_tune_asha(sizes, s, target, w),
    }
    runs = []
    for seed in range(args.first_seed, args.first_seed + sizes["seeds"]):
        k = seed % len(sides)
        for side in sides[k:] + sides[:k]:
            if side != "optuna":
                warm_ray(sizes["parallel"])  # tuner's stop kills its running workers
            with temp_workdir(f"bench-ctt-{side}-") as workdir:
                row = run_side(side, functools.partial(run[side], seed, workdir))
            if row is not None:
                runs.append({"seed": seed, **row})
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help=f"epochs per trial (default {FULL['epochs']})")
    parser.add_argument("--trials", type=int, help=f"trial cap per study (default {FULL['trials']})")
    parser.add_argument("--parallel", type=int, help=f"trials at a time (default {FULL['parallel']})")
    parser.add_argument("--seeds", type=int, help=f"repetitions, sampler seeds (default {FULL['seeds']})")
    parser.add_argument("--first-seed", type=int, default=0, help="the first sampler seed (default 0)")
    parser.add_argument("--target", type=float,
                        help=f"target val_acc (default: the one in --target-file; --quick: {QUICK_TARGET})")
    parser.add_argument("--target-file", type=Path, default=TARGET_FILE, help="where the measured target is kept")
    parser.add_argument("--measure-target", action="store_true",
                        help="measure the target again and write it to --target-file")
    parser.add_argument("--target-trials", type=int,
                        help=f"random-search trials for --measure-target (default {FULL['target_trials']})")
    parser.add_argument("--tuner-pruner",
                        help="tuner's pruner instead of its default, as YAML, e.g. '{type: hyperband}'")
    add_common_args(parser, SIDES)
    args = parser.parse_args(argv)
    sizes = _sizes(args)
    setup_process()

    if args.measure_target:
        record = measure_target(sizes, args.target_file)
        print(f"target val_acc {record['target_val_acc']}: {record['how']}; {record['wall_s']} s")
        print(f"wrote {args.target_file}")
        return 0

    if args.target is not None:
        target = args.target
    else:
        target = QUICK_TARGET if args.quick else load_target(args.target_file, sizes["epochs"])
    sides = chosen_sides(args, SIDES)
    started = time.time()
    if {"tuner", "ray_tune_asha"} & set(sides):
        start_ray(sizes["parallel"])
    runs = run_all(args, sizes, sides, target)
    summary = summarize(runs, sides)
    rat = ratios(summary, runs)
    elapsed = round(time.time() - started, 1)

    title = (f"Compute to target val_acc >= {target}: {DATA}, {sizes['trials']} trials x {sizes['epochs']} epochs, "
             f"parallel {sizes['parallel']}, {sizes['seeds']} seed(s)")
    print_results(title, runs, summary, rat)
    print(f"run time {elapsed} s")
    out = args.out if args.out is not None else Path(temp_dir())
    path = write_json(out, "compute_to_target", {
        "sizes": sizes, "target_val_acc": target, "target_file": str(args.target_file), "space": SPACE,
        "asha": ASHA, "tuner_pruner": args.tuner_pruner, "train_seed": TRAIN_SEED,
        "run_s": elapsed, "summary": summary, "ratios": rat, "runs": runs,
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    print(f"wrote {path}")
    if args.quick:
        check_quick(runs, sides)
    return 0


def temp_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="bench-compute-to-target-")


if __name__ == "__main__":
    raise SystemExit(main())
