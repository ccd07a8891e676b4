"""Search quality: how good a configuration each searcher finds in a fixed budget, offline.

Three families of problems, every side on the same problems with the same
budget, in one run:

- ``bbob``: COCO's BBOB functions f1 (sphere), f6 (attractive sector), f10
  (ellipsoid), f15 (Rastrigin), f20 (Schwefel) in dimension 5 through
  ``cocoex``, 60 evaluations. COCO's instances are the repetitions: seed k
  runs instance k+1, so a task is one (function, instance). Regret is the
  best f minus f_opt (f_opt is f at the problem's known optimum).
- ``bayesmark``: Bayesmark-style model tuning on scikit-learn's bundled data
  (digits, wine, breast_cancer, diabetes) x (DecisionTree, kNN, SVM, MLP),
  3-fold cross-validation, 32 evaluations; minimized: 1 - accuracy, or the
  MSE for diabetes. A task is one (model, data set), run once per seed.
- ``mnist1d``: the built-in MLP on MNIST-1D (``workers.mlp:train``), a small
  space with a conditional param, a handful of trials, best val_loss. tuner
  runs it through its own workers with epochs as fidelity (its default
  successive-halving pruner); the Optuna sides call ``workers.mlp.train``
  directly and run every epoch.

Sides: ``tuner_auto`` (``tuner.launch`` with a Python objective, the default
``auto`` strategy, ``executor="inline"``, SQLite in a temp dir: the
product's path), Optuna's samplers used directly (``optuna_random``,
``optuna_tpe``, ``optuna_gp``, ``optuna_cmaes``, each with its defaults and
the run's seed), and Ray Tune (``ray_random``: ``tune.Tuner`` with
``tune.uniform`` etc.; ``ray_optuna``: ``OptunaSearch``) on a subset of the
tasks (``RAY_TASKS``), since Ray Tune costs ~0.2 s per trial here. The
mnist1d family runs tuner, TPE and random only.

Score, as Bayesmark normalizes it: per task, ``100 * (random - best) /
(random - optimum)``, where ``random`` is the expected best of random search
with the same budget (computed from a pool of random evaluations) and
``optimum`` is f_opt for BBOB, else the best value any side found on that
task. 100 is the optimum, 0 is what random search gets, below 0 is worse
than random. A task's score is its median over seeds, a family's the median
over its tasks, ``overall`` the median over all tasks.

    python benchmarks/quality.py                 # 3 seeds, every family and side: 13 min on 2 otherwise
                                                 # idle cores (42 min while the machine was shared)
    python benchmarks/quality.py --quick         # CI: 1 seed, one task per family, tiny budgets (~1-2 min)
    python benchmarks/quality.py --seeds 5 --jobs 2 --out DIR
    python benchmarks/quality.py --sides tuner_auto,optuna_gp,optuna_random --families bbob
    python benchmarks/quality.py --aggregate DIR/quality_runs.jsonl   # score a run's log, also one cut short
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from _common import add_common_args, chosen_sides, keep_ray_on_loopback, print_table, temp_workdir, write_json

keep_ray_on_loopback()  # before anything imports ray

SIDES = ("tuner_auto", "optuna_random", "optuna_tpe", "optuna_gp", "optuna_cmaes", "ray_random", "ray_optuna")
RAY_SIDES = ("ray_random", "ray_optuna")
FAMILIES = ("bbob", "bayesmark", "mnist1d")
# mnist1d trains torch models: tuner against plain Optuna TPE, random search as the reference.
MNIST1D_SIDES = ("tuner_auto", "optuna_tpe", "optuna_random")
BBOB_FUNCTIONS = (1, 6, 10, 15, 20)
BBOB_DIM = 5
MODELS = ("DT", "kNN", "SVM", "MLP")
DATASETS = ("digits", "wine", "breast_cancer", "diabetes")
# Ray Tune runs seed 0 of these tasks only: one BBOB instance per function and one data set per model.
RAY_TASKS = (
    *(f"f{f}_i1" for f in BBOB_FUNCTIONS),
    "DT-digits", "kNN-wine", "SVM-breast_cancer", "MLP-diabetes",
)
FULL = {"seeds": 3, "bbob_evals": 60, "bayesmark_evals": 32, "mnist1d_trials": 12, "mnist1d_epochs": 10}
QUICK = {"seeds": 1, "bbob_evals": 8, "bayesmark_evals": 6, "mnist1d_trials": 3, "mnist1d_epochs": 2}
# BBOB's expected best of random search comes from this many uniform draws (cheap: no model is trained).
BBOB_RANDOM_POOL = 5000
TRAIN_SEED = 0  # every mnist1d trial of every side trains with this seed: one curve per configuration


# --- tasks ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Task:
    """One problem: a search space in tuner's spec format, an objective to minimize, a budget."""

    family: str
    name: str
    space: dict[str, Any]
    budget: int
    f_opt: float | None = None  # known optimum (BBOB); None: estimated from every side's results


def bbob_space() -> dict[str, Any]:
    return {f"x{i}": {"type": "float", "low": -5.0, "high": 5.0} for i in range(BBOB_DIM)}


def _bbob_problem(function: int, instance: int) -> Any:
    import cocoex

    options = f"dimensions:{BBOB_DIM} function_indices:{function} instance_indices:{instance}"
    return cocoex.Suite("bbob", "", options)[0]


def bbob_f_opt(function: int, instance: int) -> float:
    """f at the problem's optimum: cocoex writes x_opt to ./._bbob_problem_best_parameter.txt."""
    import numpy as np

    problem = _bbob_problem(function, instance)
    with tempfile.TemporaryDirectory() as tmp, _cwd(Path(tmp)):
        problem._best_parameter("print")
        x_opt = np.loadtxt("._bbob_problem_best_parameter.txt")
    return float(problem(x_opt))


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


# Bayesmark's sklearn spaces, trimmed to the params that matter at 32 evaluations.
MODEL_SPACES: dict[str, dict[str, Any]] = {
    "DT": {
        "max_depth": {"type": "int", "low": 1, "high": 15},
        "min_samples_split": {"type": "float", "low": 0.01, "high": 0.9},
        "min_samples_leaf": {"type": "float", "low": 0.01, "high": 0.49},
        "max_features": {"type": "float", "low": 0.01, "high": 0.99},
        "min_impurity_decrease": {"type": "float", "low": 0.0, "high": 0.5},
    },
    "kNN": {
        "n_neighbors": {"type": "int", "low": 1, "high": 25},
        "p": {"type": "int", "low": 1, "high": 4},
        "weights": {"type": "categorical", "choices": ["uniform", "distance"]},
    },
    "SVM": {
        "C": {"type": "float", "low": 1.0e-2, "high": 1.0e3, "log": True},
        "gamma": {"type": "float", "low": 1.0e-4, "high": 1.0, "log": True},
        "tol": {"type": "float", "low": 1.0e-5, "high": 1.0e-1, "log": True},
    },
    "MLP": {
        "hidden_layer_sizes": {"type": "int", "low": 16, "high": 128, "log": True},
        "alpha": {"type": "float", "low": 1.0e-5, "high": 10.0, "log": True},
        "batch_size": {"type": "int", "low": 16, "high": 256, "log": True},
        "learning_rate_init": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True},
        "beta_1": {"type": "float", "low": 0.5, "high": 0.99},
    },
}
MLP_MAX_ITER = 30  # small, so that 32 evaluations of 3 folds stay cheap; the warning it causes is expected

MNIST1D_SPACE = {
    "lr": {"type": "float", "low": 1.0e-4, "high": 0.3, "log": True},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"optimizer": "sgd"}},
    "depth": {"type": "int", "low": 1, "high": 3},
    "width": {"type": "int", "low": 32, "high": 256, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3},
}


def make_tasks(sizes: dict[str, int], families: Sequence[str], quick: bool) -> list[Task]:
    """Every task of the chosen families; ``quick`` keeps one per family."""
    tasks: list[Task] = []
    if "bbob" in families:
        functions = BBOB_FUNCTIONS[2:3] if quick else BBOB_FUNCTIONS
        for f in functions:
            for instance in range(1, sizes["seeds"] + 1):
                tasks.append(Task("bbob", f"f{f}_i{instance}", bbob_space(), sizes["bbob_evals"],
                                  bbob_f_opt(f, instance)))
    if "bayesmark" in families:
        pairs = [("kNN", "wine")] if quick else [(m, d) for m in MODELS for d in DATASETS]
        for model, data in pairs:
            tasks.append(Task("bayesmark", f"{model}-{data}", MODEL_SPACES[model], sizes["bayesmark_evals"]))
    if "mnist1d" in families:
        tasks.append(Task("mnist1d", "mlp-mnist1d", MNIST1D_SPACE, sizes["mnist1d_trials"]))
    return tasks


def evaluate(task: Task, params: dict[str, Any], epochs: int = 0) -> float:
    """The value (to minimize) of one configuration of ``task``."""
    if task.family == "bbob":
        function, instance = (int(part[1:]) for part in task.name.split("_"))
        return float(_cached_problem(function, instance)([params[f"x{i}"] for i in range(BBOB_DIM)]))
    if task.family == "bayesmark":
        model, data = task.name.split("-")
        return cv_loss(model, data, params)
    return mnist1d_loss(params, epochs)


_PROBLEMS: dict[tuple[int, int], Any] = {}


def _cached_problem(function: int, instance: int) -> Any:
    key = (function, instance)
    if key not in _PROBLEMS:
        _PROBLEMS[key] = _bbob_problem(function, instance)
    return _PROBLEMS[key]


def cv_loss(model: str, data: str, params: dict[str, Any]) -> float:
    """3-fold cross-validated 1 - accuracy (classifiers) or MSE (diabetes) of a standardized pipeline."""
    from sklearn import datasets
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = getattr(datasets, f"load_{data}")(return_X_y=True)
    regression = data == "diabetes"
    estimator = make_pipeline(StandardScaler(), _estimator(model, params, regression))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLP's ConvergenceWarning at MLP_MAX_ITER
        score = cross_val_score(estimator, x, y, cv=3, scoring="neg_mean_squared_error" if regression else "accuracy")
    value = -score.mean() if regression else 1.0 - score.mean()
    return float(value) if math.isfinite(value) else 1e12  # a diverged MLP


def _estimator(model: str, params: dict[str, Any], regression: bool) -> Any:
    from sklearn import neighbors, neural_network, svm, tree

    if model == "DT":
        cls = tree.DecisionTreeRegressor if regression else tree.DecisionTreeClassifier
        return cls(random_state=0, **params)
    if model == "kNN":
        return (neighbors.KNeighborsRegressor if regression else neighbors.KNeighborsClassifier)(**params)
    if model == "SVM":
        return (svm.SVR if regression else svm.SVC)(**params)
    cls = neural_network.MLPRegressor if regression else neural_network.MLPClassifier
    params = {**params, "hidden_layer_sizes": (params["hidden_layer_sizes"],)}
    return cls(solver="adam", max_iter=MLP_MAX_ITER, random_state=0, **params)


def mnist1d_loss(params: dict[str, Any], epochs: int) -> float:
    """Best val_loss over ``epochs`` of the built-in MLP, trained directly (no tuner)."""
    from workers import mlp

    losses: list[float] = []
    mlp.train({**params, "epochs": epochs, "data": "mnist1d", "seed": TRAIN_SEED},
              lambda epoch, **m: losses.append(m["val_loss"]))
    finite = [v for v in losses if math.isfinite(v)]
    return min(finite) if finite else math.inf


# --- the sides ---------------------------------------------------------------------------


def optuna_suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """``space`` (tuner's format) as plain Optuna suggestions, in order, conditionals where active."""
    params: dict[str, Any] = {}
    for name, p in space.items():
        if any(params.get(k) != v for k, v in (p.get("when") or {}).items()):
            continue
        if p["type"] == "categorical":
            params[name] = trial.suggest_categorical(name, p["choices"])
        elif p["type"] == "int":
            params[name] = trial.suggest_int(name, p["low"], p["high"], log=p.get("log", False))
        else:
            params[name] = trial.suggest_float(name, p["low"], p["high"], log=p.get("log", False))
    return params


OPTUNA_SAMPLERS: dict[str, Callable[[int], Any]] = {
    "optuna_random": lambda seed: _samplers().RandomSampler(seed=seed),
    "optuna_tpe": lambda seed: _samplers().TPESampler(seed=seed),
    "optuna_gp": lambda seed: _samplers().GPSampler(seed=seed),
    "optuna_cmaes": lambda seed: _samplers().CmaEsSampler(seed=seed),
}


def _samplers() -> Any:
    import optuna

    return optuna.samplers


def run_optuna(task: Task, side: str, seed: int, epochs: int) -> dict[str, Any]:
    """Optuna's sampler, used directly: an in-memory study, ``study.optimize`` for the budget."""
    import optuna

    study = optuna.create_study(sampler=OPTUNA_SAMPLERS[side](seed))
    study.optimize(lambda t: evaluate(task, optuna_suggest(t, task.space), epochs), n_trials=task.budget)
    values = [t.value for t in study.trials if t.value is not None]
    return {"best": min(values), "evals": len(values), "values": values}


def run_tuner(task: Task, seed: int, epochs: int, workdir: Path) -> dict[str, Any]:
    """tuner's product path: ``tuner.launch`` with its default strategy (auto), inline, on SQLite."""
    import tuner

    storage = f"sqlite:///{workdir / 'tuner.db'}"
    if task.family == "mnist1d":
        spec = {"name": f"q-{task.name}-{seed}", "workload": "mlp", "data": "mnist1d", "epochs": epochs,
                "trials": task.budget, "seed": seed, "fixed": {"seed": TRAIN_SEED}, "params": task.space,
                "objective": {"metric": "val_loss", "direction": "minimize", "mode": "best"}}
        study = tuner.launch(spec, storage=storage, executor="inline")
        epochs_run = len(study.epochs())
    else:
        def objective(params: dict[str, Any], report: Callable[..., None]) -> float:
            return evaluate(task, {k: v for k, v in params.items() if k in task.space})

        study = tuner.launch(space=task.space, objective=objective, study=f"q-{task.name}-{seed}",
                             trials=task.budget, seed=seed, pruner="none", direction="minimize",
                             storage=storage, executor="inline")
        epochs_run = None
    values = [t.value for t in study.trials if t.value is not None and t.state.name == "COMPLETE"]
    spec = tuner.load_spec({**study.spec, "name": study.name})
    from tuner import strategies

    return {"best": min(values), "evals": len(study.trials), "values": values, "epochs_run": epochs_run,
            "auto": strategies.resolved(spec)}


def ray_param_space(space: dict[str, Any]) -> dict[str, Any]:
    """``space`` as Ray Tune's distributions (no conditionals: the Ray sides skip mnist1d)."""
    from ray import tune

    out = {}
    for name, p in space.items():
        if p["type"] == "categorical":
            out[name] = tune.choice(p["choices"])
        elif p["type"] == "int":  # Tune's randint excludes its upper bound
            out[name] = (tune.lograndint if p.get("log") else tune.randint)(p["low"], p["high"] + 1)
        else:
            out[name] = (tune.loguniform if p.get("log") else tune.uniform)(p["low"], p["high"])
    return out


def run_ray(task: Task, side: str, seed: int, workdir: Path) -> dict[str, Any]:
    """Ray Tune's ``Tuner``: random search (BasicVariantGenerator) or OptunaSearch, one trial at a time.

    One at a time like every other side here (all are sequential), with
    ``reuse_actors=True``, Tune's setting for short trials.
    """
    from ray import tune
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    def trainable(config: dict[str, Any]) -> dict[str, float]:
        return {"value": evaluate(task, config)}

    search = BasicVariantGenerator(random_state=seed) if side == "ray_random" else OptunaSearch(seed=seed)
    grid = tune.Tuner(
        trainable,
        param_space=ray_param_space(task.space),
        tune_config=tune.TuneConfig(metric="value", mode="min", num_samples=task.budget, search_alg=search,
                                    max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(name="quality", storage_path=str(workdir.resolve()), verbose=0),
    ).fit()
    values = [r.metrics["value"] for r in grid if r.metrics and "value" in r.metrics]
    return {"best": min(values), "evals": len(values), "values": values, "errors": grid.num_errors}


def run_job(task: Task, side: str, seed: int, epochs: int) -> dict[str, Any]:
    """One (task, side, seed) in a pool worker; returns the run's record."""
    start, cpu = time.perf_counter(), time.process_time()
    load = round(os.getloadavg()[0], 2)
    with temp_workdir("bench-quality-") as workdir:
        if side == "tuner_auto":
            result = run_tuner(task, seed, epochs, workdir)
        else:
            result = run_optuna(task, side, seed, epochs)
    # CPU seconds as well as wall: on a shared machine the wall time says more about the others' load.
    return {"family": task.family, "task": task.name, "side": side, "seed": seed, **result,
            "wall_s": round(time.perf_counter() - start, 2), "cpu_s": round(time.process_time() - cpu, 2),
            "load_1m_before": load}


def _init_worker() -> None:
    """One thread per worker (BLAS and torch), as the pool runs ``--jobs`` of them; Optuna quiet."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")  # ExperimentalWarning, CMA-ES's independent-sampling warning


# --- running everything -----------------------------------------------------------------


def jobs_for(tasks: Sequence[Task], sides: Sequence[str], seeds: int) -> list[tuple[Task, str, int]]:
    """Every (task, side, seed) that runs in the pool; BBOB's seed is its instance, so one per task.

    Task by task, the families interleaved and Ray's tasks first, so that a run
    cut short (see ``--aggregate``) still holds whole tasks of every family.
    """
    jobs = []
    for task in interleaved(tasks):
        task_seeds = [bbob_seed(task)] if task.family == "bbob" else range(seeds)
        task_sides = MNIST1D_SIDES if task.family == "mnist1d" else SIDES
        for seed in task_seeds:
            jobs += [(task, side, seed) for side in sides if side in task_sides and side not in RAY_SIDES]
    return jobs


def interleaved(tasks: Sequence[Task]) -> list[Task]:
    """One task of each family in turn; within a family, RAY_TASKS first."""
    queues = [sorted((t for t in tasks if t.family == f), key=lambda t: t.name not in RAY_TASKS) for f in FAMILIES]
    order = []
    while any(queues):
        order += [q.pop(0) for q in queues if q]
    return order


def bbob_seed(task: Task) -> int:
    """BBOB's repetitions are its instances: instance k+1 runs with seed k."""
    return int(task.name.rsplit("_i", 1)[1]) - 1


def run_pool(jobs: list[tuple[Task, str, int]], n_jobs: int, epochs: int, log: Path) -> list[dict[str, Any]]:
    """Run the jobs on ``n_jobs`` fresh processes (spawned: no Ray or torch state shared); log each run."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")  # read at import by torch and numpy: one thread per worker
    context = multiprocessing.get_context("spawn")
    runs = []
    with concurrent.futures.ProcessPoolExecutor(n_jobs, mp_context=context, initializer=_init_worker) as pool:
        futures = [pool.submit(run_job, task, side, seed, epochs) for task, side, seed in jobs]
        for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
            runs.append(_logged(future.result(), log, f"[{i}/{len(jobs)}] "))
    return runs


def _logged(run: dict[str, Any], log: Path, prefix: str = "") -> dict[str, Any]:
    """Append the run to the JSON-lines log as it ends (``--aggregate`` reads it back) and say so."""
    with open(log, "a") as f:
        f.write(json.dumps(run) + "\n")
    print(f"{prefix}{run['task']} {run['side']} seed {run['seed']}: best {run['best']:.4g} "
          f"({run['wall_s']} s, {run.get('cpu_s', '-')} CPU s)", file=sys.stderr, flush=True)
    return run


def run_ray_sides(tasks: Sequence[Task], sides: Sequence[str], quick: bool, log: Path) -> list[dict[str, Any]]:
    """Ray Tune's sides on RAY_TASKS (quick: on every task), seed 0, on one local Ray started here."""
    chosen = [s for s in sides if s in RAY_SIDES]
    subset = [t for t in tasks if t.family != "mnist1d" and (quick or t.name in RAY_TASKS)]
    if not chosen or not subset:
        return []
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this file
    runs = []
    with temp_workdir("ray-") as ray_tmp:
        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 _temp_dir=str(ray_tmp), log_to_driver=False, logging_level="ERROR")
        try:
            for task in subset:
                for side in chosen:
                    runs.append(_logged(_ray_run(task, side), log))
        finally:
            ray.shutdown()
    return runs


def _ray_run(task: Task, side: str) -> dict[str, Any]:
    start, load = time.perf_counter(), round(os.getloadavg()[0], 2)
    seed = bbob_seed(task) if task.family == "bbob" else 0
    with temp_workdir("bench-quality-ray-") as workdir:
        result = run_ray(task, side, seed, workdir)
    return {"family": task.family, "task": task.name, "side": side, "seed": seed, **result,
            "wall_s": round(time.perf_counter() - start, 2), "load_1m_before": load}


def bbob_random_pool(task: Task, seed: int = 12345) -> list[float]:
    """Uniform draws over the BBOB box: random search's values, many more than one study takes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    function, instance = (int(part[1:]) for part in task.name.split("_"))
    problem = _cached_problem(function, instance)
    return [float(problem(x)) for x in rng.uniform(-5.0, 5.0, size=(BBOB_RANDOM_POOL, BBOB_DIM))]


# --- scores ------------------------------------------------------------------------------


def expected_best(pool: Sequence[float], k: int) -> float:
    """The expected minimum of ``k`` draws (with replacement) from ``pool``: random search's mean best."""
    values, n = sorted(pool), len(pool)
    # P(min is the i-th smallest) = ((n - i) / n)^k - ((n - i - 1) / n)^k, for i counted from 0.
    return sum(v * (((n - i) / n) ** k - ((n - i - 1) / n) ** k) for i, v in enumerate(values))


def references(tasks: Sequence[Task], runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per task: random search's expected best at the budget, and the optimum (known or best seen)."""
    refs = {}
    for task in tasks:
        mine = [r for r in runs if r["task"] == task.name]
        pool = [v for r in mine if r["side"] in ("optuna_random", "ray_random") for v in r["values"]]
        if task.family == "bbob":
            pool += bbob_random_pool(task)
        if not pool or not mine:
            continue
        best_seen = min(min(pool), *(r["best"] for r in mine))
        optimum = task.f_opt if task.f_opt is not None else best_seen
        refs[task.name] = {"random": expected_best(pool, task.budget), "optimum": min(optimum, best_seen),
                           "pool": len(pool)}
    return refs


def normalized(best: float, ref: dict[str, float]) -> float | None:
    """Bayesmark's normalized score: 100 at the optimum, 0 at random search's expected best."""
    span = ref["random"] - ref["optimum"]
    return 100.0 * (ref["random"] - best) / span if span > 0 else None


def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(statistics.median(kept), 2) if kept else None


def task_scores(runs: Sequence[dict[str, Any]], refs: dict[str, dict[str, float]]) -> dict[tuple[str, str], float]:
    """(task, side) -> the median normalized score over the side's seeds on that task."""
    by_key: dict[tuple[str, str], list[float | None]] = {}
    for r in runs:
        if r["task"] in refs:
            by_key.setdefault((r["task"], r["side"]), []).append(normalized(r["best"], refs[r["task"]]))
    return {key: m for key, scores in by_key.items() if (m := _median(scores)) is not None}


def summarize(tasks: Sequence[Task], runs: Sequence[dict[str, Any]], sides: Sequence[str],
              refs: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per side: median score per family and overall, tasks run, share of tasks beating random."""
    scores = task_scores(runs, refs)
    family_of = {t.name: t.family for t in tasks}
    rows = []
    for side in sides:
        mine = {task: s for (task, sd), s in scores.items() if sd == side}
        if not mine:
            continue
        row: dict[str, Any] = {"side": side}
        for family in FAMILIES:
            row[family] = _median([s for task, s in mine.items() if family_of[task] == family])
        row["overall"] = _median(list(mine.values()))
        row["tasks"] = len(mine)
        row["beats_random"] = round(sum(s > 0 for s in mine.values()) / len(mine), 3)
        row["wins_vs_random_run"] = _head_to_head(runs, side, "optuna_random")
        rows.append(row)
    return rows


def _head_to_head(runs: Sequence[dict[str, Any]], side: str, other: str) -> float | None:
    """Share of (task, seed) where ``side``'s best beats ``other``'s run with the same seed (ties: half)."""
    theirs = {(r["task"], r["seed"]): r["best"] for r in runs if r["side"] == other}
    pairs = [(r["best"], theirs[(r["task"], r["seed"])]) for r in runs
             if r["side"] == side and (r["task"], r["seed"]) in theirs]
    if not pairs or side == other:
        return None
    return round(sum(1.0 if a < b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs), 3)


def peer_ratios(runs: Sequence[dict[str, Any]], refs: dict[str, dict[str, float]],
                sides: Sequence[str], me: str = "tuner_auto") -> list[dict[str, Any]]:
    """tuner_auto against each peer on the tasks both ran: median scores, their ratio, task wins."""
    scores = task_scores(runs, refs)
    rows = []
    for peer in sides:
        common = [t for (t, s) in scores if s == peer and (t, me) in scores]
        if peer == me or not common:
            continue
        mine, theirs = [scores[(t, me)] for t in common], [scores[(t, peer)] for t in common]
        m, p = statistics.median(mine), statistics.median(theirs)
        rows.append({
            "side": peer, "tasks": len(common), "auto_median": round(m, 2), "peer_median": round(p, 2),
            "auto_over_peer": round(m / p, 3) if p > 0 else None,
            "auto_task_wins": round(sum(1.0 if a > b else 0.5 if a == b else 0.0
                                        for a, b in zip(mine, theirs)) / len(common), 3),
            "auto_run_wins": _head_to_head(runs, me, peer),
        })
    return rows


def targets(summary: Sequence[dict[str, Any]], ratios: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals: auto's median >= every peer's (on the tasks both ran), and beats random on >= 90%."""
    auto = next((r for r in summary if r["side"] == "tuner_auto"), None)
    if auto is None:
        return {}
    behind = [r["side"] for r in ratios if r["auto_median"] < r["peer_median"]]
    return {
        "auto_matches_best_peer": not behind, "peers_ahead_of_auto": behind,
        "auto_beats_random_share": auto["beats_random"], "auto_beats_random_on_90pct": auto["beats_random"] >= 0.9,
    }


# --- command line ----------------------------------------------------------------------


def print_results(summary: list[dict[str, Any]], ratios: list[dict[str, Any]], goals: dict[str, Any],
                  title: str) -> None:
    cols = (*FAMILIES, "overall", "tasks", "beats_random", "wins_vs_random_run")
    print_table(f"{title}: median normalized score (100 optimum, 0 random search)", summary, cols,
                ratio_of="overall", baseline="tuner_auto")
    print("tuner_auto against each peer, on the tasks both ran:")
    for r in ratios:  # print_table's ratio column (to one baseline row) has no meaning here
        print(f"  {r['side']:>14}: {r['tasks']} tasks, median {r['auto_median']} vs {r['peer_median']} "
              f"(auto/peer {r['auto_over_peer']}), auto wins {r['auto_task_wins']:.0%} of tasks, "
              f"{r['auto_run_wins'] if r['auto_run_wins'] is None else format(r['auto_run_wins'], '.0%')} of runs")
    for name, value in goals.items():
        print(f"{name}: {value}")


def check_results(runs: Sequence[dict[str, Any]], sides: Sequence[str], families: Sequence[str]) -> None:
    """Every chosen side produced a result in every family it runs in (CI's check, not their values)."""
    problems = []
    for family in families:
        for side in sides:
            if family == "mnist1d" and side not in MNIST1D_SIDES:
                continue
            if not any(r["family"] == family and r["side"] == side and math.isfinite(r["best"]) for r in runs):
                problems.append(f"{side} on {family}")
    if problems:
        raise SystemExit("quality: no result for " + ", ".join(problems))


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    sizes = dict(QUICK if args.quick else FULL)
    if args.seeds:
        sizes["seeds"] = args.seeds
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, help=f"repetitions (default {FULL['seeds']}; --quick: 1)")
    parser.add_argument("--jobs", type=int, default=2, help="processes running studies at once (default 2)")
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"subset of {', '.join(FAMILIES)}")
    parser.add_argument("--aggregate", type=Path, metavar="JSONL",
                        help="score the runs logged in JSONL (a run's quality_runs.jsonl, also one cut short) "
                             "instead of running; give the sizes and --seeds it ran with")
    add_common_args(parser, SIDES)
    args = parser.parse_args(argv)
    args.families = [f for f in args.families.split(",") if f]
    if set(args.families) - set(FAMILIES):
        raise SystemExit(f"--families takes names from {list(FAMILIES)}, but got {args.families}.")
    return args


def collect_runs(args: argparse.Namespace, tasks: list[Task], sides: list[str], sizes: dict[str, int],
                 out: Path) -> list[dict[str, Any]]:
    """Run every side (Ray Tune's first: the slowest per trial, kept by a run cut short), or read a log."""
    if args.aggregate:
        return [json.loads(line) for line in args.aggregate.read_text().splitlines() if line.strip()]
    log = out / "quality_runs.jsonl"
    log.unlink(missing_ok=True)
    runs = run_ray_sides(tasks, sides, args.quick, log)
    return runs + run_pool(jobs_for(tasks, sides, sizes["seeds"]), args.jobs, sizes["mnist1d_epochs"], log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sides, sizes, started = chosen_sides(args, SIDES), _sizes(args), time.time()
    tasks = make_tasks(sizes, args.families, args.quick)
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="bench-quality-"))
    out.mkdir(parents=True, exist_ok=True)
    runs = collect_runs(args, tasks, sides, sizes, out)
    sides = [s for s in sides if any(r["side"] == s for r in runs)] if args.aggregate else sides
    tasks = [t for t in tasks if any(r["task"] == t.name for r in runs)]
    refs = references(tasks, runs)
    summary, ratios = summarize(tasks, runs, sides, refs), peer_ratios(runs, refs, sides)
    goals = targets(summary, ratios)
    elapsed = round(time.time() - started, 1)
    print_results(summary, ratios, goals, f"Search quality, {sizes['seeds']} seed(s), {len(tasks)} tasks")
    pool_cpu = round(sum(r.get("cpu_s") or 0.0 for r in runs), 1)
    print(f"run time {elapsed} s; the pool's studies used {pool_cpu} CPU s ({args.jobs} processes); "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    path = write_json(out, "quality", {
        "sizes": sizes, "quick": args.quick, "jobs": args.jobs, "sides": sides, "families": args.families,
        "ray_tasks": list(RAY_TASKS), "run_s": elapsed, "pool_cpu_s": pool_cpu, "summary": summary,
        "peer_ratios": ratios, "targets": goals, "references": refs,
        "task_scores": [{"task": t, "side": s, "score": v} for (t, s), v in sorted(task_scores(runs, refs).items())],
        "runs": [{k: v for k, v in r.items() if k != "values"} for r in runs],
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    print(f"wrote {path}")
    if not args.aggregate:  # a run cut short may lack some; scoring it is still worth it
        check_results(runs, sides, args.families)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
