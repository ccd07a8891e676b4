"""The peers tuner is measured against: plain Optuna and Ray Tune, each used the way its docs show.

Each function runs one peer on one benchmark and returns a plain dict of
measurements. Sizes and the working directory are arguments so that the
scripts (``overhead.py``, ``store_throughput.py``) can run every side in one
process with the same settings.

Both peers sample at random with a fixed seed, so the sampler costs the same
everywhere and what differs is the machinery around it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna

from _common import PeakRss, keep_ray_on_loopback, temp_workdir, timed

_STUDY = "bench"


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Silence Optuna's one INFO line per trial for the duration of a run."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def _sqlite_url(workdir: Path, name: str) -> str:
    return f"sqlite:///{Path(workdir).resolve() / name}"


def _read_back(url: str) -> dict[str, int]:
    """Count what the database holds, through a fresh storage so no cache answers."""
    study = optuna.load_study(study_name=_STUDY, storage=optuna.storages.RDBStorage(url))
    trials = study.get_trials(deepcopy=False)
    return {
        "trials_complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials),
        "epochs_recorded": sum(len(t.intermediate_values) for t in trials),
    }


# --- 1. orchestration overhead --------------------------------------------------


def _noop_objective(epochs: int) -> Callable[[optuna.Trial], float]:
    """Two params, ``epochs`` reports, no work: all the time spent is the tuner's."""

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10.0, 10.0)
        y = trial.suggest_int("y", 0, 10)
        value = 0.0
        for epoch in range(epochs):
            value = (x - 2.0) ** 2 + y + 1.0 / (epoch + 1)
            trial.report(value, epoch)
        return value

    return objective


def optuna_plain(n_trials: int, epochs: int, parallel: int, workdir: Path, seed: int = 0) -> dict[str, Any]:
    """Plain Optuna: ``study.optimize`` with ``n_jobs`` threads on a fresh SQLite file, defaults otherwise."""
    url = _sqlite_url(workdir, "optuna_plain.db")
    with _quiet_optuna(), PeakRss() as rss:
        with timed() as setup:
            study = optuna.create_study(
                storage=url, study_name=_STUDY, sampler=optuna.samplers.RandomSampler(seed=seed)
            )
        with timed() as run:
            study.optimize(_noop_objective(epochs), n_trials=n_trials, n_jobs=parallel)
        stored = _read_back(url)
    return {
        "n_trials": n_trials,
        "epochs": epochs,
        "parallel": parallel,
        "startup_s": round(setup["s"], 3),
        "wall_s": round(run["s"], 3),
        "trials_per_s": round(n_trials / run["s"], 3),
        **stored,
        "epochs_expected": n_trials * epochs,
        "peak_rss_mib": rss.peak_mib,
    }


def _ray_trainable(epochs: int) -> Callable[[dict[str, Any]], None]:
    """The same no-op workload as a Tune function trainable.

    Built in a closure so cloudpickle ships it by value: this module is on no
    installed path, so Ray's workers could not import it by name.
    """
    from ray import tune

    def trainable(config: dict[str, Any]) -> None:
        for epoch in range(epochs):
            value = (config["x"] - 2.0) ** 2 + config["y"] + 1.0 / (epoch + 1)
            tune.report({"value": value, "epoch": epoch})

    return trainable


def _ray_tuner(epochs: int, n_trials: int, parallel: int, workdir: Path, seed: int, reuse_actors: bool) -> Any:
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    return tune.Tuner(
        _ray_trainable(epochs),
        param_space={"x": tune.uniform(-10.0, 10.0), "y": tune.randint(0, 11)},  # randint excludes 11
        tune_config=tune.TuneConfig(
            num_samples=n_trials,
            max_concurrent_trials=parallel,
            search_alg=BasicVariantGenerator(random_state=seed),
            reuse_actors=reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=_STUDY, storage_path=str(Path(workdir).resolve() / "ray_results"), verbose=0
        ),
    )


def ray_tune(
    n_trials: int,
    epochs: int,
    parallel: int,
    workdir: Path,
    seed: int = 0,
    *,
    reuse_actors: bool = False,
) -> dict[str, Any]:
    """Ray Tune's ``Tuner`` with random search on a local Ray started here and always shut down.

    Start-up (``ray.init``) and ``tuner.fit()`` are timed apart: start-up is
    paid once per process, fit once per study. ``reuse_actors=False`` is Tune's
    default and starts a worker process per trial; ``True`` is the documented
    setting for many short trials and is several times faster here.
    """
    keep_ray_on_loopback()
    import ray

    # Ray's own short temp dir: its socket paths must fit in 107 bytes, whatever workdir is.
    with temp_workdir("ray-") as ray_tmp, PeakRss() as rss:
        try:
            with timed() as startup:
                ray.init(
                    address="local",  # never join a cluster named by RAY_ADDRESS
                    num_cpus=max(2, parallel),  # each function trainable asks for one CPU
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    _temp_dir=str(ray_tmp),
                    log_to_driver=False,
                    logging_level="ERROR",
                )
            node_ip = ray.util.get_node_ip_address()
            tuner = _ray_tuner(epochs, n_trials, parallel, workdir, seed, reuse_actors)
            with timed() as fit:
                grid = tuner.fit()
            frames = [r.metrics_dataframe for r in grid]
        finally:
            ray.shutdown()  # a no-op when init failed before starting anything
    return {
        "n_trials": n_trials,
        "epochs": epochs,
        "parallel": parallel,
        "reuse_actors": reuse_actors,
        "startup_s": round(startup["s"], 3),
        "wall_s": round(fit["s"], 3),
        "trials_per_s": round(n_trials / fit["s"], 3),
        "trials_complete": grid.num_terminated,
        "trials_errored": grid.num_errors,
        # Read back from each trial's files under storage_path, as Tune stored them.
        "epochs_recorded": sum(len(f) for f in frames if f is not None),
        "epochs_expected": n_trials * epochs,
        "peak_rss_mib": rss.peak_mib,
        "ray_node_ip": node_ip,  # 127.0.0.1 unless ray was imported before keep_ray_on_loopback()
    }


# --- 2. store write throughput ----------------------------------------------------


def _is_locked(exc: BaseException | None) -> bool:
    """Whether SQLite's ``database is locked`` is anywhere in the exception's chain.

    Optuna wraps SQLAlchemy's OperationalError in a StorageInternalError.
    """
    while exc is not None:
        if "database is locked" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _report_steps(url: str, n_values: int, start: threading.Barrier) -> dict[str, int]:
    """One worker: its own storage (as a separate process would have), one trial, ``n_values`` reports."""
    study = optuna.load_study(study_name=_STUDY, storage=url)
    trial = study.ask()
    start.wait()
    committed = locked = 0
    for step in range(n_values):
        try:
            trial.report(float(step), step)
            committed += 1
        except optuna.exceptions.StorageInternalError as exc:
            if not _is_locked(exc):
                raise
            locked += 1
    return {"committed": committed, "locked": locked}


def optuna_report_rate(n_values: int, workdir: Path, threads: int = 1) -> dict[str, Any]:
    """How many ``trial.report()`` values per second Optuna's RDB storage commits into SQLite.

    ``threads`` workers each report ``n_values`` steps into their own trial of
    one study on one SQLite file, at the same time. A report that fails with
    ``database is locked`` is counted, not retried, and the run goes on.
    """
    url = _sqlite_url(workdir, f"report_rate_{threads}.db")
    with _quiet_optuna(), PeakRss() as rss:
        optuna.create_study(storage=url, study_name=_STUDY, sampler=optuna.samplers.RandomSampler(seed=0))
        # The clock starts once every worker holds its trial, so it times reports only;
        # the timeout breaks the barrier if a worker dies before reaching it.
        start = threading.Barrier(threads + 1, timeout=120)
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(_report_steps, url, n_values, start) for _ in range(threads)]
            start.wait()
            with timed() as run:
                counts = [f.result() for f in futures]
        stored = _read_back(url)
    committed = sum(c["committed"] for c in counts)
    return {
        "n_values": n_values,
        "threads": threads,
        "values_committed": committed,
        "values_recorded": stored["epochs_recorded"],
        "locked_errors": sum(c["locked"] for c in counts),
        "wall_s": round(run["s"], 3),
        "values_per_s": round(committed / run["s"], 1),
        "peak_rss_mib": rss.peak_mib,
    }


__all__ = ["optuna_plain", "optuna_report_rate", "ray_tune"]
