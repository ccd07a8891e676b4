"""The compute-to-target benchmark's tasks: learning curves every side replays, and what a full run of them ends at.

Two tasks are tables of real curves: a pool of configurations drawn at
random from the space and trained once to the full budget with the
built-in MLP (``workers.mlp.train``, training seed fixed), on mnist1d and on
digits. A side's trial trains the pool configuration nearest to what its
sampler proposed (a nearest-neighbour surrogate, as tabular HPO benchmarks
such as HPOBench and LCBench do), one epoch at a time, each epoch taking
``epoch_s`` seconds of sleep. The third task is built so that curves cross:
a large learning rate climbs fast to a low plateau, a small one (and strong
regularization) climbs slowly to a high one.

Why replay and not train: on 2 shared cores, 10 seeds x 7 sides x 3 tasks of
real training does not fit in the time the issue gives, and the false-prune
rate needs each pruned configuration's full-budget result; a table knows it
for every trial for free. Every side still runs its own library (Optuna's
samplers and pruners, Ray Tune's ASHA, tuner end to end on Ray); only the
training is replayed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

# The MLP's search space, written once per tool (keep them in step).
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
# The crossing-curves task's space: lr sets the speed and (inversely) the plateau.
CROSS_SPACE = {
    "lr": {"type": "float", "low": 1.0e-4, "high": 1.0, "log": True},
    "reg": {"type": "float", "low": 0.0, "high": 1.0},
    "width": {"type": "int", "low": 16, "high": 512, "log": True},
}


def mlp_params(trial: optuna.Trial) -> dict[str, Any]:
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


def cross_params(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "lr": trial.suggest_float("lr", 1e-4, 1.0, log=True),
        "reg": trial.suggest_float("reg", 0.0, 1.0),
        "width": trial.suggest_int("width", 16, 512, log=True),
    }


def mlp_ray_space() -> dict[str, Any]:
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


def cross_ray_space() -> dict[str, Any]:
    from ray import tune

    return {"lr": tune.loguniform(1e-4, 1.0), "reg": tune.uniform(0.0, 1.0), "width": tune.lograndint(16, 513)}


# --- curves -------------------------------------------------------------------------------


def crossing_curve(params: dict[str, Any], epochs: int) -> list[float]:
    """val_acc per epoch of the constructed task: fast starters plateau low, slow starters end high.

    u in [0, 1] is log10(lr) from 1e-4 to 1. The rate of climb grows with u
    and shrinks with ``reg``; the plateau falls with u and rises a little with
    ``reg``; width is a mild nuisance (best near 128). A small deterministic
    jitter per (config, epoch) keeps curves from being perfectly smooth.
    """
    u = (math.log10(params["lr"]) + 4.0) / 4.0
    reg, width = params["reg"], params["width"]
    rate = (0.025 + 1.2 * u**2) * (1.0 - 0.5 * reg)
    plateau = 0.95 - 0.55 * u + 0.08 * reg - 0.02 * (math.log2(width / 128.0) / 3.0) ** 2
    key = json.dumps([round(params["lr"], 8), round(reg, 6), int(width)])
    curve = []
    for t in range(1, epochs + 1):
        jitter = (int(hashlib.sha256(f"{key}/{t}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF - 0.5) * 0.01
        curve.append(round(0.1 + (plateau - 0.1) * (1.0 - math.exp(-rate * t)) + jitter, 4))
    return curve


_NUMERIC = {"lr": (1e-4, 0.3, True), "momentum": (0.0, 0.99, False), "depth": (1, 4, False),
            "width": (32, 256, True), "dropout": (0.0, 0.3, False)}


def _unit(name: str, value: float) -> float:
    low, high, log = _NUMERIC[name]
    if log:
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def _distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Between two MLP configurations: numerics on [0, 1] (log where the space is log), categoricals 0 or 1."""
    d = sum((_unit(k, a.get(k, 0.0)) - _unit(k, b.get(k, 0.0))) ** 2 for k in _NUMERIC)
    return d + sum(a[k] != b[k] for k in ("optimizer", "activation", "batch_size"))


@dataclass(frozen=True)
class Task:
    """One problem: its space per tool, and each configuration's curve of val_acc."""

    name: str
    space: dict[str, Any]  # tuner's YAML-shaped space
    optuna_params: Callable[[optuna.Trial], dict[str, Any]]
    ray_space: Callable[[], dict[str, Any]]
    pool: tuple[dict[str, Any], ...] = ()  # [{"params", "val_acc": [...]}]; empty: the curve is a formula

    def curve(self, params: dict[str, Any], epochs: int) -> tuple[str, list[float]]:
        """(a key naming the configuration that runs, its val_acc per epoch, at most ``epochs`` long)."""
        if not self.pool:
            p = {"lr": params["lr"], "reg": params["reg"], "width": int(params["width"])}
            return json.dumps(p, sort_keys=True), crossing_curve(p, epochs)
        clean = {**params, "momentum": params.get("momentum", 0.0) if params.get("optimizer") == "sgd" else 0.0}
        i = min(range(len(self.pool)), key=lambda j: _distance(clean, self.pool[j]["params"]))
        return f"pool{i}", list(self.pool[i]["val_acc"][:epochs])


def load_tasks(record: dict[str, Any]) -> dict[str, Task]:
    """The three tasks, the tables from the target file's ``pools``."""
    pools = record.get("pools", {})
    return {
        "mnist1d_mlp": Task("mnist1d_mlp", SPACE, mlp_params, mlp_ray_space, tuple(pools.get("mnist1d_mlp", ()))),
        "digits_mlp": Task("digits_mlp", SPACE, mlp_params, mlp_ray_space, tuple(pools.get("digits_mlp", ()))),
        "crossing": Task("crossing", CROSS_SPACE, cross_params, cross_ray_space),
    }


def train_pool(data: str, n: int, epochs: int, seed: int, parallel: int) -> list[dict[str, Any]]:
    """Random configurations of SPACE, each trained once to ``epochs`` with the built-in MLP on ``data``."""
    from workers import mlp

    def objective(trial: optuna.Trial) -> float:
        params = mlp_params(trial)
        accs: list[float] = []
        mlp.train({**params, "epochs": epochs, "data": data, "seed": 0},
                  lambda epoch, **m: accs.append(m["val_acc"]))
        trial.set_user_attr("val_acc", [round(a, 4) for a in accs])
        trial.set_user_attr("params", params)
        return accs[-1]  # the final epoch's, also for a run that diverged and ended early

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    study.optimize(objective, n_trials=n, n_jobs=parallel)
    return [{"params": t.user_attrs["params"], "val_acc": t.user_attrs["val_acc"]}
            for t in sorted(study.trials, key=lambda t: t.number)]


# --- the workload every side runs -----------------------------------------------------------


def replay(task: Task, log: Path, epoch_s: float) -> Callable[..., None]:
    """A training function that replays ``task``'s curve, logging each epoch; ``first`` resumes a paused one.

    ``train(params, report, first=1)`` sleeps ``epoch_s`` per epoch, appends
    ``{"t", "run", "cfg", "epoch", "val_acc", "final", "length"}`` to ``log``
    (by the process that ran it, so every side is counted alike, also the
    epochs a side ran but did not record) and calls ``report(epoch,
    val_acc=..., val_loss=...)``, which may raise to stop the trial.
    ``final`` is the configuration's full-budget result, for the
    false-prune rate. A closure, so cloudpickle ships it to Ray by value.
    """
    path = str(log)

    def train(params: dict[str, Any], report: Callable[..., None], first: int = 1, last: int | None = None,
              run: str | None = None) -> None:
        epochs = int(params["epochs"])
        cfg, curve = task.curve(params, epochs)
        run = run or uuid.uuid4().hex
        for epoch in range(first, min(len(curve), last or epochs) + 1):
            time.sleep(epoch_s)
            acc = curve[epoch - 1]
            line = {"t": time.time(), "run": run, "cfg": cfg, "epoch": epoch, "val_acc": acc,
                    "final": curve[-1], "length": len(curve)}
            with open(path, "a") as f:  # one short write per line: no interleaving
                f.write(json.dumps(line) + "\n")
            report(epoch, val_acc=acc, val_loss=1.0 - acc, train_loss=1.0 - acc)

    return train
