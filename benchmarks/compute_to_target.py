"""Compute to target: epochs until some trial reaches a hard target val_acc, every scheduler side by side.

Three tasks (``_ctt_tasks``): the built-in MLP on mnist1d and on digits, as
tables of real learning curves (a pool of random configurations trained
once to the full budget; a trial replays the nearest pool configuration,
``--epoch-s`` seconds per epoch), and a constructed task whose curves cross
(fast starters plateau low). ``--trials`` trials of ``--epochs`` epochs at
most, ``--parallel`` at a time. The sides:

- ``tuner``: ``tuner.launch`` with its defaults (TPE, the default pruner,
  the diagnostics pruner), trials as Ray tasks; ``tuner_hyperband``,
  ``tuner_median`` and ``tuner_extrapolating`` the same with that pruner
  (``extrapolating``: the default's rungs, a stop vetoed while a curve fit
  says the trial could still beat the best).
- ``optuna``: plain Optuna TPE, ``NopPruner``, ``study.optimize(n_jobs)``.
- ``optuna_sh``: plain Optuna TPE with ``SuccessiveHalvingPruner`` (the rungs
  tuner's default uses), ``study.optimize(n_jobs)``: a verdict in the
  trial's own thread, so it measures what tuner's asynchrony costs.
- ``ray_tune_asha``: Ray Tune, random search with ``ASHAScheduler``.
- ``topk``: Egele et al. 2023 (arXiv 2307.15422): every configuration (Optuna
  ``RandomSampler``) runs one epoch, the best ``trials // 10`` continue to
  the full budget.

The target per task is the 98th percentile of the final val_acc of the
pool (``--measure-target`` trains the pools and writes them, with every
final, to ``compute_to_target_target.json``). Epochs are counted from a log
the replayed training writes, in the order they ended, up to the first
that reaches the target. The false-prune rate: of the trials a side tried
whose full-budget final is in the top 10% of those trials' finals, the
share it stopped early (not counting those in flight when the target fell).

    python benchmarks/compute_to_target.py                   # 10 seeds x 7 sides x 3 tasks, ~40 min on 2 cores
    python benchmarks/compute_to_target.py --quick           # CI: 1 seed, tiny budget, checks results exist
    python benchmarks/compute_to_target.py --measure-target  # train the pools again, re-measure the targets (~10 min)
    python benchmarks/compute_to_target.py --tasks crossing --sides tuner --tuner-pruner '{type: hyperband}'
"""

from __future__ import annotations

import argparse
import concurrent.futures
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

import _ctt_tasks  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import yaml  # noqa: E402
from _ctt_tasks import Task, load_tasks, replay  # noqa: E402

TARGET_FILE = Path(__file__).resolve().with_name("compute_to_target_target.json")
PERCENTILE = 98
GOOD_PERCENTILE = 90  # a "good" trial finishes in the top 10% of the side's tried configurations
FULL = {"epochs": 20, "trials": 40, "parallel": 2, "seeds": 10, "pool": 120}
QUICK = {"epochs": 3, "trials": 4, "parallel": 2, "seeds": 1, "pool": 6}
EPOCH_S = 0.03  # replayed seconds per epoch: long enough to be a unit of work, short enough to fit the budget
TASKS = ("mnist1d_mlp", "digits_mlp", "crossing")
QUICK_TASKS = "mnist1d_mlp"  # one task keeps CI's run short: Ray Tune alone takes ~10 s a fit
POOL_DATA = {"mnist1d_mlp": "mnist1d", "digits_mlp": "digits"}
SIDES = ("tuner", "tuner_hyperband", "tuner_median", "tuner_extrapolating", "optuna", "optuna_sh", "ray_tune_asha",
         "topk")
TUNER_PRUNERS = {"tuner": None, "tuner_hyperband": {"type": "hyperband"}, "tuner_median": {"type": "median"},
                 "tuner_extrapolating": {"type": "extrapolating"}}
# ASHA's rungs at epochs 1, 4, 16: where tuner's default successive halving puts them
# for 20 epochs (min_resource = 20 // 4**2 = 1, reduction_factor 4).
ASHA = {"grace_period": 1, "reduction_factor": 4}
COLUMNS = ("reached", "epochs_to_target", "epochs_q1", "epochs_q3", "false_prune_rate", "good_pruned",
           "best_val_acc", "epochs_run", "trials_run", "wall_s")


# --- counting from the epoch log ----------------------------------------------------------


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
        self.hit = any(json.loads(line)["val_acc"] >= self.target for line in whole.splitlines())
        return self.hit


class TargetReached(Exception):
    """Raised from tuner's ``on_progress`` (and top-K's reports) to end the study."""


def _epochs(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return sorted((json.loads(line) for line in lines), key=lambda e: e["t"])


def false_prunes(epochs: list[dict[str, Any]], t_hit: float, epoch_s: float) -> dict[str, Any]:
    """Good trials (top 10% of the tried configurations' full-budget finals) that were stopped early."""
    runs: dict[str, dict[str, Any]] = {}
    for e in epochs:
        r = runs.setdefault(e["run"], {"final": e["final"], "length": e["length"], "ran": 0, "last_t": 0.0})
        r["ran"], r["last_t"] = max(r["ran"], e["epoch"]), max(r["last_t"], e["t"])
    # A trial cut short because the target fell elsewhere was stopped by the benchmark, not pruned.
    judged = [r for r in runs.values() if r["ran"] >= r["length"] or r["last_t"] < t_hit - 3 * epoch_s]
    if not judged:
        return {"good": 0, "good_pruned": 0, "false_prune_rate": None, "pruned": 0}
    bar = float(np.percentile([r["final"] for r in judged], GOOD_PERCENTILE))
    good = [r for r in judged if r["final"] >= bar]
    stopped = [r for r in judged if r["ran"] < r["length"]]
    good_pruned = sum(r["ran"] < r["length"] for r in good)
    return {"good": len(good), "good_pruned": good_pruned, "pruned": len(stopped),
            "false_prune_rate": round(good_pruned / len(good), 3) if good else None}


def to_target(log: Path, start: float, target: float, epoch_s: float) -> dict[str, Any]:
    """Where the target was first reached, counting epochs in the order they ended, from ``start``."""
    epochs = _epochs(log)
    hit = next((i for i, e in enumerate(epochs) if e["val_acc"] >= target), None)
    t_hit = epochs[hit]["t"] if hit is not None else math.inf
    return {
        "reached": hit is not None,
        "epochs_to_target": hit + 1 if hit is not None else None,
        "wall_s_to_target": round(t_hit - start, 2) if hit is not None else None,
        "winner_epochs": epochs[hit]["epoch"] if hit is not None else None,  # a floor no pruning goes below
        "best_val_acc": round(max(e["val_acc"] for e in epochs), 4) if epochs else None,
        "epochs_run": len(epochs),
        "trials_run": len({e["run"] for e in epochs}),
        **false_prunes(epochs, t_hit, epoch_s),
    }


# --- the sides ---------------------------------------------------------------------------


def _two_args(train: Callable[..., None]) -> Callable[[dict[str, Any], Callable[..., None]], None]:
    def objective(params: dict[str, Any], report: Callable[..., None]) -> None:
        train(params, report)

    return objective


def run_tuner(task: Task, sizes: dict[str, int], seed: int, target: float, workdir: Path, epoch_s: float,
              pruner: Any = None) -> dict[str, Any]:
    """tuner through ``tuner.launch`` on the running Ray; the study ends once an epoch reaches the target.

    ``on_progress`` (called every ~50 ms) raises, and ``on_start`` kept the
    Study that ``launch`` then cannot return.
    """
    import tuner

    log = workdir / "epochs.jsonl"
    spec = {
        "name": f"ctt-{task.name}-{seed}", "data": "mnist1d",
        "objective": {"metric": "val_acc", "direction": "maximize"}, "strategy": "tpe",
        "trials": sizes["trials"], "parallel": sizes["parallel"], "epochs": sizes["epochs"], "seed": seed,
        "params": task.space,
    }
    if pruner is not None:
        spec["pruner"] = pruner
    watch, kept = TargetWatch(log, target), {}

    def on_progress(_: Any) -> None:
        if watch.reached():
            raise TargetReached

    start = time.time()
    try:
        tuner.launch(spec, objective=_two_args(replay(task, log, epoch_s)),
                     storage=f"sqlite:///{workdir / 'tuner.db'}", executor="ray",
                     on_start=lambda _, study: kept.update(study=study), on_progress=on_progress)
    except TargetReached:
        pass
    wall = time.time() - start
    trials = kept["study"].trials
    waits = [w for t in trials for w in (t.user_attrs.get("verdict_waits_ms") or [])]
    return {**to_target(log, start, target, epoch_s), "wall_s": round(wall, 2),
            "trial_states": dict(Counter(t.state.name for t in trials)), "verdict_waits_ms": waits}


def run_optuna(task: Task, sizes: dict[str, int], seed: int, target: float, workdir: Path, epoch_s: float,
               prune: bool = False) -> dict[str, Any]:
    """Plain Optuna TPE, ``n_jobs`` threads; with ``prune``, ``SuccessiveHalvingPruner`` at tuner's rungs.

    The epoch that reaches the target calls ``study.stop()`` and ends the
    trials in flight by raising TrialPruned from their reports.
    """
    log = workdir / "epochs.jsonl"
    train = replay(task, log, epoch_s)
    reached = threading.Event()
    pruner = (optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, sizes["epochs"] // 16), reduction_factor=4)
              if prune else optuna.pruners.NopPruner())
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)

    def objective(trial: optuna.Trial) -> float:
        accs: list[float] = []

        def report(epoch: int, **metrics: Any) -> None:
            accs.append(metrics["val_acc"])
            if metrics["val_acc"] >= target:
                reached.set()
                study.stop()
            if reached.is_set():
                raise optuna.TrialPruned("an epoch reached the target")
            trial.report(metrics["val_acc"], epoch)
            if epoch < sizes["epochs"] and trial.should_prune():
                raise optuna.TrialPruned()

        train({**task.optuna_params(trial), "epochs": sizes["epochs"]}, report)
        return max(accs)

    start = time.time()
    study.optimize(objective, n_trials=sizes["trials"], n_jobs=sizes["parallel"])
    return {**to_target(log, start, target, epoch_s), "wall_s": round(time.time() - start, 2)}


def _ray_trainable(train: Callable[..., None], epochs: int) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable: one ``tune.report`` per epoch."""

    def trainable(config: dict[str, Any]) -> None:
        from ray import tune

        params = {k: v for k, v in config.items() if k != "momentum" or config.get("optimizer") == "sgd"}
        train({**params, "epochs": epochs}, lambda epoch, **m: tune.report({"val_acc": m["val_acc"], "epoch": epoch}))

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


def run_ray_tune_asha(task: Task, sizes: dict[str, int], seed: int, target: float, workdir: Path,
                      epoch_s: float) -> dict[str, Any]:
    """Ray Tune: random search (seeded) with ASHA on val_acc, ``max_concurrent_trials`` at a time, reused actors."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    log = workdir / "epochs.jsonl"
    epochs = sizes["epochs"]
    runner = tune.Tuner(
        _ray_trainable(replay(task, log, epoch_s), epochs),
        param_space=task.ray_space(),
        tune_config=tune.TuneConfig(
            num_samples=sizes["trials"], max_concurrent_trials=sizes["parallel"],
            scheduler=ASHAScheduler(metric="val_acc", mode="max", max_t=epochs, **ASHA),
            search_alg=BasicVariantGenerator(random_state=seed), reuse_actors=True,
        ),
        run_config=tune.RunConfig(name=f"ctt-{task.name}-{seed}", storage_path=str(workdir.resolve() / "ray_results"),
                                  verbose=0, stop=_target_stopper(target)),
    )
    start = time.time()
    grid = runner.fit()
    return {**to_target(log, start, target, epoch_s), "wall_s": round(time.time() - start, 2),
            "trials_errored": grid.num_errors}


def run_topk(task: Task, sizes: dict[str, int], seed: int, target: float, workdir: Path,
             epoch_s: float) -> dict[str, Any]:
    """Every configuration one epoch, then the best ``trials // 10`` to the full budget (Egele et al. 2023).

    Optuna's ``RandomSampler`` draws the configurations (ask/tell); a thread
    pool of ``parallel`` runs them. A paused trial resumes at epoch 2, as it
    would from a checkpoint.
    """
    log = workdir / "epochs.jsonl"
    train = replay(task, log, epoch_s)
    epochs, k = sizes["epochs"], max(1, sizes["trials"] // 10)
    reached = threading.Event()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    trials = [study.ask() for _ in range(sizes["trials"])]
    params = {t.number: {**task.optuna_params(t), "epochs": epochs} for t in trials}
    first: dict[int, float] = {}

    def run(number: int, lo: int, hi: int) -> None:
        def report(epoch: int, **m: Any) -> None:
            first.setdefault(number, m["val_acc"])
            if m["val_acc"] >= target:
                reached.set()
            if reached.is_set():
                raise TargetReached

        if not reached.is_set():
            try:
                train(params[number], report, first=lo, last=hi, run=f"{seed}-{number}")
            except TargetReached:
                pass

    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(sizes["parallel"]) as pool:
        list(pool.map(lambda n: run(n, 1, 1), params))
        best = sorted(first, key=first.get, reverse=True)[:k]
        list(pool.map(lambda n: run(n, 2, epochs), best))
    for t in trials:
        study.tell(t, first.get(t.number, 0.0))
    return {**to_target(log, start, target, epoch_s), "wall_s": round(time.time() - start, 2), "k": k}


# --- Ray and the process ---------------------------------------------------------------


def start_ray(parallel: int) -> None:
    """One local Ray for tuner and Ray Tune; this module and the tasks ship to its workers by value."""
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(_ctt_tasks)
    ray.init(address="local", num_cpus=parallel, _node_ip_address="127.0.0.1", include_dashboard=False,
             log_to_driver=False, logging_level=logging.ERROR)
    warm_ray(parallel)


def warm_ray(parallel: int) -> None:
    """Have ``parallel`` idle Ray workers (again, after tuner's stop killed some)."""
    import ray

    ray.get([ray.remote(num_cpus=1)(_warm).remote() for _ in range(parallel)])


def _warm() -> None:
    time.sleep(0.01)


# --- the target --------------------------------------------------------------------------


def _finals_record(finals: list[float], how: str) -> dict[str, Any]:
    finals = sorted(finals)
    return {
        "target_val_acc": round(float(np.percentile(finals, PERCENTILE)), 4),
        "best_final": round(finals[-1], 4),
        "p90_final": round(float(np.percentile(finals, 90)), 4),
        "how": how,
        "final_val_accs": [round(v, 4) for v in finals],
    }


def crossing_finals(n: int, epochs: int, seed: int = 0) -> list[float]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [_ctt_tasks.crossing_curve(_ctt_tasks.cross_params(study.ask()), epochs)[-1] for _ in range(n)]


def measure_target(sizes: dict[str, int], path: Path, seed: int = 0) -> dict[str, Any]:
    """Train the pools (random configurations, full budget) and set each task's target from their finals."""
    rule = (f"{PERCENTILE}th percentile (numpy.percentile, linear) of the final-epoch val_acc of {sizes['pool']} "
            f"random configurations (optuna RandomSampler(seed={seed})), {sizes['epochs']} epochs each, no pruning")
    record: dict[str, Any] = {"command": shlex.join(["python", *sys.argv]), "epochs": sizes["epochs"],
                              "percentile": PERCENTILE, "sampler_seed": seed, "train_seed": 0,
                              "space": _ctt_tasks.SPACE, "cross_space": _ctt_tasks.CROSS_SPACE,
                              "tasks": {}, "pools": {}, "wall_s": {}}
    for name, data in POOL_DATA.items():
        started = time.time()
        pool = _ctt_tasks.train_pool(data, sizes["pool"], sizes["epochs"], seed, sizes["parallel"])
        record["wall_s"][name] = round(time.time() - started, 1)
        record["pools"][name] = pool
        record["tasks"][name] = _finals_record([p["val_acc"][-1] for p in pool], f"{rule}, the MLP on {data}")
        print(f"{name}: target {record['tasks'][name]['target_val_acc']} ({record['wall_s'][name]} s)", flush=True)
    record["tasks"]["crossing"] = _finals_record(crossing_finals(sizes["pool"], sizes["epochs"], seed),
                                                 f"{rule}, the constructed crossing-curves formula")
    record["environment"] = environment()
    path.write_text(json.dumps(record) + "\n")  # one line: the pools are ~100k numbers
    return record


def load_record(path: Path, epochs: int) -> dict[str, Any]:
    if not path.is_file():
        raise SystemExit(f"no target file at {path}. Fix: run with --measure-target first.")
    record = json.loads(path.read_text())
    if "pools" not in record:
        raise SystemExit(f"{path} holds no learning-curve pools (an old target file). Fix: run --measure-target.")
    if record.get("epochs") < epochs:
        raise SystemExit(f"the pools in {path} have {record['epochs']} epochs, fewer than --epochs {epochs}. "
                         "Fix: a smaller --epochs, or --measure-target --epochs N.")
    return record


def quick_target(task: Task, epochs: int) -> float:
    """--quick's target: the median val_acc at the last epoch, so CI runs every side's stopping code."""
    if task.pool:
        return float(np.median([p["val_acc"][min(epochs, len(p["val_acc"])) - 1] for p in task.pool]))
    return float(np.median(crossing_finals(50, epochs)))


# --- aggregation and output --------------------------------------------------------------


def _quartiles(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """q1, median, q3 with a miss counted as infinitely late; None where that quantile is a miss."""
    if not values:
        return None, None, None
    finite = [v if math.isfinite(v) else 1e12 for v in values]
    qs = [float(np.percentile(finite, q)) for q in (25, 50, 75)]
    return tuple(None if q >= 1e11 else round(q, 1) for q in qs)  # type: ignore[return-value]


def _etts(runs: list[dict[str, Any]]) -> list[float]:
    return [r["epochs_to_target"] if r["reached"] else math.inf for r in runs]


def summarize(runs: list[dict[str, Any]], task: str, sides: Sequence[str]) -> list[dict[str, Any]]:
    """One row per side: quartiles over the seeds; the false-prune rate pooled over them."""
    rows = []
    for side in sides:
        mine = [r for r in runs if r["side"] == side and r["task"] == task]
        if not mine:
            continue
        q1, med, q3 = _quartiles(_etts(mine))
        good, pruned = sum(r["good"] for r in mine), sum(r["good_pruned"] for r in mine)
        rows.append({
            "side": side, "reached": f"{sum(r['reached'] for r in mine)}/{len(mine)}",
            "epochs_to_target": med, "epochs_q1": q1, "epochs_q3": q3,
            "false_prune_rate": round(pruned / good, 3) if good else None, "good_pruned": f"{pruned}/{good}",
            **{k: round(statistics.median([r[k] for r in mine if r.get(k) is not None]), 4)
               for k in ("best_val_acc", "epochs_run", "trials_run", "wall_s")},
        })
    return rows


# tuner's default against each peer, and the goal for that ratio of epochs to target.
GOALS = {"optuna": 1 / 3, "ray_tune_asha": 0.8, "optuna_sh": 1.0}


def ratios(runs: list[dict[str, Any]], task: str, side: str = "tuner") -> dict[str, Any]:
    """``side``'s epochs to target over each peer's: of the medians, and the quartiles of the per-seed ratios."""
    goals = {"optuna": 1.0} if task == "crossing" else GOALS  # crossing: no worse than un-pruned TPE
    mine = {r["seed"]: r for r in runs if r["task"] == task and r["side"] == side}
    out = {}
    for peer, goal in goals.items():
        theirs = {r["seed"]: r for r in runs if r["task"] == task and r["side"] == peer}
        if not mine or not theirs:
            continue
        a, b = _quartiles(_etts(list(mine.values())))[1], _quartiles(_etts(list(theirs.values())))[1]
        per_seed = []
        for seed in mine.keys() & theirs.keys():
            te, pe = _etts([mine[seed]])[0], _etts([theirs[seed]])[0]
            if not (math.isinf(te) and math.isinf(pe)):
                per_seed.append(te / pe if pe and not math.isinf(pe) else (0.0 if not math.isinf(te) else math.inf))
        of_medians = a / b if a and b else None
        q = [round(float(np.percentile(per_seed, p)), 3) if per_seed else None for p in (25, 50, 75)]
        out[f"{side}/{peer}"] = {"of_medians": None if of_medians is None else round(of_medians, 3),
                                 "per_seed_q1_median_q3": q, "goal": f"<= {goal:.3g}",
                                 "met": None if of_medians is None else of_medians <= goal}
    return out


def latency(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Verdict waits (ms) per tuner side, pooled over tasks and seeds: median and p99."""
    out = {}
    for side in TUNER_PRUNERS:
        waits = [w for r in runs if r["side"] == side for w in r.get("verdict_waits_ms", [])]
        if waits:
            out[side] = {"n": len(waits), "median_ms": round(float(np.median(waits)), 2),
                         "p99_ms": round(float(np.percentile(waits, 99)), 2)}
    return out


def print_results(runs: list[dict[str, Any]], report: dict[str, Any], sizes: dict[str, int]) -> None:
    for task, body in report.items():
        title = (f"{task}: val_acc >= {body['target']}, {sizes['trials']} trials x {sizes['epochs']} epochs, "
                 f"parallel {sizes['parallel']}, {sizes['seeds']} seed(s)")
        print_table(title, body["summary"], COLUMNS, ratio_of="epochs_to_target", baseline="optuna")
        for name, r in body["ratios"].items():
            verdict = {True: "met", False: "MISSED", None: "-"}[r["met"]]
            print(f"  {name}: {r['of_medians']} of medians, per seed q1/median/q3 {r['per_seed_q1_median_q3']} "
                  f"(goal {r['goal']}: {verdict})")


def check_quick(runs: list[dict[str, Any]], tasks: Sequence[str], sides: Sequence[str]) -> None:
    """CI's check: every side ran on every task and its epochs were counted (not whether it reached the target)."""
    problems = [f"{t}/{s}: no result" for t in tasks for s in sides
                if not any(r["side"] == s and r["task"] == t for r in runs)]
    problems += [f"{r['task']}/{r['side']}: no epochs counted" for r in runs if not r["epochs_run"]]
    if problems:
        raise SystemExit("compute_to_target --quick produced no results: " + "; ".join(problems))


# --- command line -----------------------------------------------------------------------


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    preset = QUICK if args.quick else FULL
    return {key: getattr(args, key, None) or preset[key] for key in preset}


def run_all(args: argparse.Namespace, sizes: dict[str, int], tasks: dict[str, Task], targets: dict[str, float],
            sides: list[str]) -> list[dict[str, Any]]:
    """Every seed, task and side, the sides' order rotated per seed so no side always goes first."""
    custom = yaml.safe_load(args.tuner_pruner) if args.tuner_pruner else None
    e = args.epoch_s
    run = {
        **{s: functools.partial(run_tuner, pruner=custom if s == "tuner" else p) for s, p in TUNER_PRUNERS.items()},
        "optuna": run_optuna, "optuna_sh": functools.partial(run_optuna, prune=True),
        "ray_tune_asha": run_ray_tune_asha, "topk": run_topk,
    }
    runs = []
    for seed in range(args.first_seed, args.first_seed + sizes["seeds"]):
        for name, task in tasks.items():
            k = seed % len(sides)
            for side in sides[k:] + sides[:k]:
                if side.startswith("tuner") or side == "ray_tune_asha":
                    warm_ray(sizes["parallel"])  # tuner's stop kills its running workers
                with temp_workdir(f"bench-ctt-{side}-") as workdir:
                    row = run_side(f"{name}/{side}", functools.partial(
                        run[side], task, sizes, seed, targets[name], workdir, e))
                if row is not None:
                    runs.append({"seed": seed, "task": name, **row, "side": side})
                    if args.out is not None:  # partial results survive a run cut short
                        args.out.mkdir(parents=True, exist_ok=True)
                        with open(args.out / "compute_to_target_runs.jsonl", "a") as f:
                            f.write(json.dumps(runs[-1]) + "\n")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help=f"epochs per trial (default {FULL['epochs']})")
    parser.add_argument("--trials", type=int, help=f"trial cap per study (default {FULL['trials']})")
    parser.add_argument("--parallel", type=int, help=f"trials at a time (default {FULL['parallel']})")
    parser.add_argument("--seeds", type=int, help=f"repetitions, sampler seeds (default {FULL['seeds']})")
    parser.add_argument("--first-seed", type=int, default=0, help="the first sampler seed (default 0)")
    parser.add_argument("--tasks", help=f"comma-separated subset of: {', '.join(TASKS)} (default: all; --quick: "
                                        f"{QUICK_TASKS})")
    parser.add_argument("--epoch-s", type=float, default=EPOCH_S, help=f"seconds per replayed epoch ({EPOCH_S})")
    parser.add_argument("--target", type=float, help="one target val_acc for every task (default: the target file's)")
    parser.add_argument("--target-file", type=Path, default=TARGET_FILE, help="where the pools and targets are kept")
    parser.add_argument("--measure-target", action="store_true",
                        help="train the pools again and write them and the targets to --target-file")
    parser.add_argument("--pool", type=int, help=f"configurations per pool for --measure-target ({FULL['pool']})")
    parser.add_argument("--tuner-pruner",
                        help="the `tuner` side's pruner instead of its default, as YAML, e.g. '{type: hyperband}'")
    add_common_args(parser, SIDES)
    args = parser.parse_args(argv)
    sizes = _sizes(args)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    if args.measure_target:
        import torch

        torch.set_num_threads(1)  # one thread per trial, as Ray gives its workers
        record = measure_target(sizes, args.target_file)
        print(json.dumps({k: v["target_val_acc"] for k, v in record["tasks"].items()}))
        print(f"wrote {args.target_file}")
        return 0

    record = load_record(args.target_file, sizes["epochs"])
    names = [t.strip() for t in (args.tasks or (QUICK_TASKS if args.quick else ",".join(TASKS))).split(",")]
    if unknown := [t for t in names if t not in TASKS]:
        raise SystemExit(f"--tasks takes names from {list(TASKS)}, but got {unknown}.")
    tasks = {n: t for n, t in load_tasks(record).items() if n in names}
    targets = {n: args.target if args.target is not None else
               quick_target(t, sizes["epochs"]) if args.quick else record["tasks"][n]["target_val_acc"]
               for n, t in tasks.items()}
    sides = chosen_sides(args, SIDES)
    started = time.time()
    if any(s.startswith("tuner") or s == "ray_tune_asha" for s in sides):
        start_ray(sizes["parallel"])
    runs = run_all(args, sizes, tasks, targets, sides)
    report = {n: {"target": targets[n], "summary": summarize(runs, n, sides), "ratios": ratios(runs, n)}
              for n in tasks}
    elapsed = round(time.time() - started, 1)
    print_results(runs, report, sizes)
    lat = latency(runs)
    print(f"verdict waits: {lat}")
    print(f"run time {elapsed} s")
    out = args.out if args.out is not None else Path(temp_dir())
    path = write_json(out, "compute_to_target", {
        "sizes": sizes, "epoch_s": args.epoch_s, "tasks": report, "target_file": str(args.target_file),
        "target_evidence": {n: {k: v for k, v in record["tasks"][n].items() if k != "final_val_accs"} for n in tasks},
        "asha": ASHA, "tuner_pruner": args.tuner_pruner, "verdict_waits": lat, "run_s": elapsed,
        "runs": [{k: v for k, v in r.items() if k != "verdict_waits_ms"} for r in runs],
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    print(f"wrote {path}")
    if args.quick:
        check_quick(runs, list(tasks), sides)
    return 0


def temp_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="bench-compute-to-target-")


if __name__ == "__main__":
    raise SystemExit(main())
