"""Scale: ask-plus-record latency per trial in a study already holding N finished trials, tuner next to plain Optuna.

For each N, each side gets a study prefilled with the same N finished trials
(4 params, a value and one intermediate value per epoch), then runs
``--measured`` more trials of a workload that reports ``--epochs`` values and
does no work. Their latency is the machinery's cost at that size: ask the
sampler, record the epochs, tell the result.

- **optuna**: ``study.ask()``, four ``suggest_*``, ``trial.report`` each epoch,
  ``study.tell``, with the sampler tuner builds for the same strategy.
- **tuner**: ``tuner.resume`` with the inline executor: the orchestrator's ask
  (budget counted under the study mutex), the store's batched epoch rows and
  trial attributes, Optuna's tell.

A trial's latency is the time between two consecutive trials finishing (the
median over the measured trials; ``cpu_ms_per_trial`` is the same in process
CPU time, steadier on a shared machine, and ``cpu_wait_ms_per_trial`` the time
spent ready to run while other processes held the CPUs). ``startup_s`` is the time to the first
trial finished less one trial: opening the study and loading every trial into
Optuna's cache. The random sampler costs the same at every N, so its rows show
the machinery's own growth; TPE's rows add TPE's, the same on both sides.

    python benchmarks/scale.py                    # N = 100, 1,000, 10,000; 40 measured trials; TPE and random
    python benchmarks/scale.py --quick            # N = 50, 200; 5 measured trials, for CI
    python benchmarks/scale.py --storage postgresql+psycopg://user:password@host/db --out results/
    python benchmarks/scale.py --sizes 10000 --samplers random --sides tuner   # one cell, e.g. under a profiler

The target: tuner's latency at the largest N at most 2x its latency at the smallest.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import statistics
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy as sa
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages._rdb import models as optuna_models
from optuna.trial import FrozenTrial, TrialState

from _common import add_common_args, chosen_sides, print_table, run_side, temp_workdir, timed, write_json

# At 10,000 trials a side takes ~1 minute here (prefill, ~20 s to load the study, ~0.3 s a TPE trial).
FULL = {"sizes": (100, 1_000, 10_000), "measured": 40, "epochs": 20}
QUICK = {"sizes": (50, 200), "measured": 5, "epochs": 20}
SIDES = ("optuna", "tuner")
SAMPLERS = ("tpe", "random")  # tuner's strategy names; random separates the machinery's growth from TPE's
TARGET_GROWTH = 2.0
SEED = 0
PRUNED_SHARE = 0.15  # a share of the prefilled trials stopped early, as a pruner would have

# One search space, written twice: as a tuner spec, and as the Optuna
# distributions the plain side suggests from. The prefill writes params with
# these distributions, so Optuna's storage refuses any mismatch between them.
SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
    "width": {"type": "int", "low": 16, "high": 512, "log": True},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
}
DISTRIBUTIONS = {
    "lr": FloatDistribution(1e-4, 0.3, log=True),
    "width": IntDistribution(16, 512, log=True),
    "optimizer": CategoricalDistribution(["sgd", "adam", "rmsprop"]),
    "dropout": FloatDistribution(0.0, 0.5),
}
# A few per-trial facts of the kind tuner keeps as user attributes, on every prefilled trial.
ATTRS = {"diagnosis": "healthy", "device": "cpu", "wall_seconds": 1.5, "gpu_seconds": 0.0}


def _loss(params: dict[str, Any], epoch: int) -> float:
    """A plausible validation loss: best near lr = 3e-3, falling with each epoch."""
    base = 0.2 + 0.1 * (math.log10(params["lr"]) + 2.5) ** 2 + 0.1 * params["dropout"]
    base += {"sgd": 0.05, "adam": 0.0, "rmsprop": 0.02}[params["optimizer"]]
    base += 0.02 * abs(math.log2(params["width"] / 128))
    return base + 1.0 / epoch


def noop_objective(params: dict[str, Any], report: Any) -> float:
    """tuner's workload: ``epochs`` reports of val_loss and no work (inline executor: no pickling)."""
    value = math.nan
    for epoch in range(1, params["epochs"] + 1):
        value = _loss(params, epoch)
        report(epoch, val_loss=value)
    return value


# === PREFILL ===================================================================
# Optuna's own path (study.add_trials) writes a trial with one ORM query per
# param and per intermediate value: ~35 ms a trial here, so 10,000 trials with
# 20 epochs would take ~6 minutes per study. Instead the same rows go in with
# one INSERT per table, built by Optuna's own conversions from trials made by
# optuna.trial.create_trial (which validates them).


def _finished_trials(n: int, epochs: int, rng: np.random.Generator) -> list[FrozenTrial]:
    """``n`` finished trials in SPACE: most COMPLETE after every epoch, some PRUNED part-way."""
    out = []
    for _ in range(n):
        params = {name: DISTRIBUTIONS[name].to_external_repr(_draw(DISTRIBUTIONS[name], rng)) for name in SPACE}
        pruned = rng.random() < PRUNED_SHARE
        last = int(rng.integers(2, epochs)) if pruned and epochs > 2 else epochs
        noise = float(rng.normal(0.0, 0.01))
        curve = {epoch: _loss(params, epoch) + noise for epoch in range(1, last + 1)}
        out.append(optuna.trial.create_trial(
            state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
            value=None if pruned else curve[last],
            params=params, distributions=DISTRIBUTIONS, user_attrs=ATTRS, intermediate_values=curve,
        ))
    return out


def _draw(dist: Any, rng: np.random.Generator) -> float:
    """A value in Optuna's internal representation, uniform (in log space where ``log``)."""
    if isinstance(dist, CategoricalDistribution):
        return float(rng.integers(len(dist.choices)))
    low, high = (math.log(dist.low), math.log(dist.high)) if dist.log else (dist.low, dist.high)
    value = float(rng.uniform(low, high))
    value = math.exp(value) if dist.log else value
    return float(min(max(round(value), dist.low), dist.high)) if isinstance(dist, IntDistribution) else value


def _utc(when: dt.datetime | None) -> dt.datetime | None:
    # RDBStorage keeps naive UTC (see TrialModel.datetime_start).
    return None if when is None else when.astimezone(dt.timezone.utc).replace(tzinfo=None)


def prefill(engine: sa.Engine, study_id: int, trials: Sequence[FrozenTrial]) -> list[int]:
    """Append ``trials`` to the study in one transaction; returns their trial ids, in order."""
    tables = {m.__tablename__: m.__table__ for m in (
        optuna_models.TrialModel, optuna_models.TrialParamModel, optuna_models.TrialValueModel,
        optuna_models.TrialIntermediateValueModel, optuna_models.TrialUserAttributeModel)}
    tr = tables["trials"]
    with engine.begin() as conn:
        first = conn.execute(sa.select(sa.func.coalesce(sa.func.max(tr.c.number) + 1, 0))
                             .where(tr.c.study_id == study_id)).scalar_one()
        conn.execute(tr.insert(), [
            {"number": first + i, "study_id": study_id, "state": t.state,
             "datetime_start": _utc(t.datetime_start), "datetime_complete": _utc(t.datetime_complete)}
            for i, t in enumerate(trials)])
        ids = dict(conn.execute(sa.select(tr.c.number, tr.c.trial_id)
                                .where(tr.c.study_id == study_id, tr.c.number >= first)).all())
        trial_ids = [ids[first + i] for i in range(len(trials))]
        params, values, steps, attrs = [], [], [], []
        for tid, t in zip(trial_ids, trials):
            params += [{"trial_id": tid, "param_name": k, "param_value": t.distributions[k].to_internal_repr(v),
                        "distribution_json": optuna.distributions.distribution_to_json(t.distributions[k])}
                       for k, v in t.params.items()]
            if t.value is not None:
                value, kind = optuna_models.TrialValueModel.value_to_stored_repr(t.value)
                values.append({"trial_id": tid, "objective": 0, "value": value, "value_type": kind})
            for step, v in t.intermediate_values.items():
                value, kind = optuna_models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(v)
                steps.append({"trial_id": tid, "step": step, "intermediate_value": value,
                              "intermediate_value_type": kind})
            attrs += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)} for k, v in t.user_attrs.items()]
        for name, rows in (("trial_params", params), ("trial_values", values),
                           ("trial_intermediate_values", steps), ("trial_user_attributes", attrs)):
            if rows:
                conn.execute(tables[name].insert(), rows)
    return trial_ids


def _epoch_rows(trial_ids: Sequence[int], trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """tuner's per-epoch rows for prefilled trials, as its workers would have reported them."""
    return [{"trial_id": tid, "epoch": step, "val_loss": v, "seconds": 0.05, "device": "cpu"}
            for tid, t in zip(trial_ids, trials) for step, v in t.intermediate_values.items()]


# === MEASUREMENT ===============================================================


def _now() -> tuple[float, float, float | None]:
    """Wall seconds, process CPU seconds, and seconds spent ready to run while others held the CPUs.

    On a shared machine wall time moves with other people's work; CPU time
    does not, and the run-queue wait (Linux's schedstat) says how much of the
    gap between the two was waiting for a CPU.
    """
    try:
        waited: float | None = int(Path("/proc/self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        waited = None
    return time.perf_counter(), time.process_time(), waited


def _latency(start: tuple[float, ...], finished_at: Sequence[tuple[Any, ...]], expected: int) -> dict[str, Any]:
    """Per-trial latency from the times trials finished; the first trial also carries the start-up.

    Each gap between two consecutive finishes is one whole trial: ask, the
    epochs, the record and the tell. ``startup_s`` is the time to the first
    finish less one typical trial: loading the study (every trial, into
    Optuna's cache) and whatever else the side does once.
    """
    if len(finished_at) != expected:
        raise RuntimeError(f"expected {expected} trials to finish, but saw {len(finished_at)}")

    def per_trial(i: int) -> float | None:
        if finished_at[0][i] is None:
            return None
        return round(1000 * statistics.median(b[i] - a[i] for a, b in zip(finished_at, finished_at[1:])), 2)

    wall = [b[0] - a[0] for a, b in zip(finished_at, finished_at[1:])]
    return {
        "ms_per_trial": per_trial(0),
        "ms_mean": round(1000 * statistics.fmean(wall), 2),
        "ms_max": round(1000 * max(wall), 2),
        "cpu_ms_per_trial": per_trial(1),
        "cpu_wait_ms_per_trial": per_trial(2),
        "startup_s": round(finished_at[0][0] - start[0] - statistics.median(wall), 3),
    }


def _stored(url: str, name: str, from_number: int) -> dict[str, int]:
    """Read back what the measured trials left in the database."""
    engine = sa.create_engine(url)
    tr = optuna_models.TrialModel.__table__
    iv = optuna_models.TrialIntermediateValueModel.__table__
    try:
        with engine.connect() as conn:
            study_id = conn.execute(sa.select(optuna_models.StudyModel.__table__.c.study_id)
                                    .where(optuna_models.StudyModel.__table__.c.study_name == name)).scalar_one()
            new = (tr.c.study_id == study_id) & (tr.c.number >= from_number)
            complete = conn.execute(sa.select(sa.func.count()).where(new, tr.c.state == TrialState.COMPLETE)).scalar()
            epochs = conn.execute(sa.select(sa.func.count()).select_from(iv.join(tr)).where(new)).scalar()
            total = conn.execute(sa.select(sa.func.count()).where(tr.c.study_id == study_id)).scalar()
    finally:
        engine.dispose()
    return {"trials_in_study": total, "measured_complete": complete, "measured_epochs_recorded": epochs}


def _optuna_sampler(strategy: str) -> optuna.samplers.BaseSampler:
    """The sampler tuner's strategy of the same name builds (tuner/strategies.py), seeded alike."""
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=SEED, multivariate=True, group=True)
    return optuna.samplers.RandomSampler(seed=SEED)


def _optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage, on SQLite with the journal settings tuner's store uses.

    tuner's store runs SQLite in WAL mode with synchronous=NORMAL
    (tuner/store/sql.py); with Optuna's default rollback journal each of the
    ~25 commits of a trial (one per report) waits for an fsync, ~300 ms a trial
    on this machine whatever N is. Same settings on both sides leave the
    machinery as the only difference.
    """
    storage = optuna.storages.RDBStorage(url)
    if storage.engine.dialect.name == "sqlite":

        @sa.event.listens_for(storage.engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")

        storage.engine.dispose()  # the connection opened to check the schema gets them too
    return storage


def run_optuna(n: int, measured: int, epochs: int, strategy: str, url: str, name: str) -> dict[str, Any]:
    """Plain Optuna on the same database: ask, suggest, ``trial.report`` each epoch, tell."""
    storage = _optuna_storage(url)
    study_id = optuna.create_study(storage=storage, study_name=name, direction="minimize")._study_id
    trials = _finished_trials(n, epochs, np.random.default_rng(SEED))
    with timed() as fill:
        prefill(storage.engine, study_id, trials)
    storage.engine.dispose()

    finished_at: list[tuple[float, float, float | None]] = []
    start = _now()
    # A new storage, as a new process would open it: nothing cached yet.
    study = optuna.load_study(study_name=name, storage=_optuna_storage(url), sampler=_optuna_sampler(strategy))
    for _ in range(measured + 1):
        trial = study.ask()
        params = {
            "lr": trial.suggest_float("lr", 1e-4, 0.3, log=True),
            "width": trial.suggest_int("width", 16, 512, log=True),
            "optimizer": trial.suggest_categorical("optimizer", ["sgd", "adam", "rmsprop"]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        }
        for epoch in range(1, epochs + 1):
            value = _loss(params, epoch)
            trial.report(value, epoch)
        study.tell(trial, value)
        finished_at.append(_now())
    return {**_latency(start, finished_at, measured + 1), "prefill_s": round(fill["s"], 2), **_stored(url, name, n)}


def run_tuner(n: int, measured: int, epochs: int, strategy: str, url: str, name: str) -> dict[str, Any]:
    """tuner's own path: ``tuner.resume`` with the inline executor on a study holding ``n`` finished trials.

    The study is launched by tuner (one trial, so it carries tuner's spec),
    then prefilled with ``n - 1`` trials plus their rows in ``tuner_epochs``.
    Each measured trial goes through the orchestrator's ask (budget counted
    under the study mutex), the store's batched epoch rows, the trial's
    attributes and Optuna's tell; trials finish as ``on_progress`` sees them.
    """
    import tuner
    from tuner.store import Store

    common = {"objective": noop_objective, "storage": url, "executor": "inline"}
    tuner.launch(space=SPACE, study=name, trials=1, epochs=epochs, strategy=strategy, pruner="none", seed=SEED,
                 **common)
    trials = _finished_trials(n - 1, epochs, np.random.default_rng(SEED))
    store = Store(url)
    with timed() as fill:
        trial_ids = prefill(store.engine, store.storage.get_study_id_from_name(name), trials)
        rows = _epoch_rows(trial_ids, trials)
        for i in range(0, len(rows), 10_000):
            store.record_epochs(rows[i:i + 10_000])  # Optuna's intermediate values are in already
    store.close()

    finished_at: list[tuple[float, float, float | None]] = []

    def on_progress(progress: Any) -> None:
        if progress.finished > n + len(finished_at):
            finished_at.append(_now())

    start = _now()
    tuner.resume(name, trials=n + measured + 1, on_progress=on_progress, **common)
    return {**_latency(start, finished_at, measured + 1), "prefill_s": round(fill["s"], 2), **_stored(url, name, n)}


# ==============================================================================


@contextlib.contextmanager
def _study_location(storage: str | None, label: str) -> Iterator[tuple[str, str]]:
    """A URL and study name for one measurement: a new SQLite file, or a new study in ``--storage``.

    In ``--storage`` the study is deleted afterwards, with one DELETE per table
    (optuna.delete_study loads every row of a 10,000-trial study first).
    """
    name = f"scale-{label}-{uuid.uuid4().hex[:8]}"
    if storage is None:
        with temp_workdir(f"bench-scale-{label}-") as workdir:
            yield f"sqlite:///{Path(workdir).resolve() / 'study.db'}", name
        return
    try:
        yield storage, name
    finally:
        _delete_study(storage, name)


def _delete_study(url: str, name: str) -> None:
    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        studies, trials = meta.tables["studies"], meta.tables["trials"]
        with engine.begin() as conn:
            study_id = conn.execute(sa.select(studies.c.study_id).where(studies.c.study_name == name)).scalar()
            if study_id is None:
                return
            ids = sa.select(trials.c.trial_id).where(trials.c.study_id == study_id).scalar_subquery()
            # Rows of the study's trials first (tuner_epochs has no foreign key to order it by),
            # then the trials and the study's own rows, children before parents.
            for table in meta.sorted_tables:
                if "trial_id" in table.c and table is not trials:
                    conn.execute(table.delete().where(table.c.trial_id.in_(ids)))
            for table in reversed(meta.sorted_tables):
                if "study_id" in table.c:
                    conn.execute(table.delete().where(table.c.study_id == study_id))
    finally:
        engine.dispose()


def _summary(rows: list[dict[str, Any]], sizes: Sequence[int]) -> dict[str, Any]:
    """Growth (largest N over smallest) per side and sampler, and tuner/optuna per N."""
    ms = {(r["side"], r["sampler"], r["n"]): r["ms_per_trial"] for r in rows}
    out: dict[str, Any] = {}
    for strategy in SAMPLERS:
        entry: dict[str, Any] = {}
        for side in SIDES:
            small, large = ms.get((side, strategy, sizes[0])), ms.get((side, strategy, sizes[-1]))
            if small and large:
                entry[f"{side}_growth"] = round(large / small, 2)
                cpu = {r["n"]: r["cpu_ms_per_trial"] for r in rows if r["side"] == side and r["sampler"] == strategy}
                entry[f"{side}_cpu_growth"] = round(cpu[sizes[-1]] / cpu[sizes[0]], 2) if cpu[sizes[0]] else None
        entry["tuner_over_optuna"] = {
            n: round(ms[("tuner", strategy, n)] / ms[("optuna", strategy, n)], 2)
            for n in sizes if ms.get(("tuner", strategy, n)) and ms.get(("optuna", strategy, n))
        }
        if "tuner_growth" in entry:
            entry["target_met"] = entry["tuner_growth"] <= TARGET_GROWTH
        if len(entry) > 1 or entry["tuner_over_optuna"]:
            out[strategy] = entry
    return out


def _print_tables(rows: list[dict[str, Any]], sizes: Sequence[int], measured: int, summary: dict[str, Any],
                  where: str) -> None:
    """One table per sampler: a row per side, its latency at each N, its growth; then tuner/optuna per N."""
    small, large = f"{sizes[0]:,}", f"{sizes[-1]:,}"
    columns = [f"ms @{n:,}" for n in sizes] + [f"growth {large}/{small}", f"cpu growth {large}/{small}",
                                               f"startup s @{large}"]
    for strategy, entry in summary.items():
        table = []
        for side in SIDES:
            cells = {r["n"]: r for r in rows if r["side"] == side and r["sampler"] == strategy}
            if not cells:
                continue
            row: dict[str, Any] = {"side": side, **{f"ms @{n:,}": cells[n]["ms_per_trial"] for n in cells}}
            row[f"growth {large}/{small}"] = entry.get(f"{side}_growth")
            row[f"cpu growth {large}/{small}"] = entry.get(f"{side}_cpu_growth")
            row[f"startup s @{large}"] = cells.get(sizes[-1], {}).get("startup_s")
            table.append(row)
        print_table(f"Ask + record latency, {strategy} sampler, ms per trial (median of {measured}) after N "
                    f"finished trials, {where}", table, columns, ratio_of=f"ms @{large}", baseline="optuna")
        ratios = ", ".join(f"{r:.2f}x @{n:,}" for n, r in entry["tuner_over_optuna"].items())
        print(f"  tuner / optuna: {ratios or '-'}")
        cells = [r for r in rows if r["sampler"] == strategy and r["cpu_wait_ms_per_trial"] is not None]
        if cells:
            waited = {side: sum(r["cpu_wait_ms_per_trial"] for r in cells if r["side"] == side) /
                      sum(r["ms_per_trial"] for r in cells if r["side"] == side) for side in {r["side"] for r in cells}}
            print("  share of the latency spent waiting for a CPU (others' load): "
                  + ", ".join(f"{side} {share:.0%}" for side, share in sorted(waited.items())))
        if "tuner_growth" in entry:
            verdict = "met" if entry["target_met"] else "NOT met"
            print(f"  tuner growth {large}/{small}: {entry['tuner_growth']:.2f}x "
                  f"(target <= {TARGET_GROWTH:g}x): {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", help="comma-separated N, the finished trials before measuring "
                                        f"(default {','.join(map(str, FULL['sizes']))})")
    parser.add_argument("--measured", type=int, help=f"trials measured at each N (default {FULL['measured']})")
    parser.add_argument("--epochs", type=int, help=f"reports per trial (default {FULL['epochs']})")
    parser.add_argument("--samplers", default=",".join(SAMPLERS),
                        help=f"comma-separated subset of: {', '.join(SAMPLERS)} (default: all)")
    parser.add_argument("--storage", help="a database URL to run both sides in (new studies, deleted after); "
                                          "default: a new SQLite file per study")
    add_common_args(parser, SIDES)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    try:
        sizes = sorted(int(s) for s in args.sizes.split(",")) if args.sizes else list(preset["sizes"])
    except ValueError:
        raise SystemExit(f"--sizes takes comma-separated whole numbers (e.g. 100,1000), but got {args.sizes!r}.")
    measured, epochs = args.measured or preset["measured"], args.epochs or preset["epochs"]
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    if unknown := [s for s in samplers if s not in SAMPLERS]:
        raise SystemExit(f"--samplers takes names from {list(SAMPLERS)}, but got {unknown}.")
    if sizes[0] < 2 or measured < 2:
        raise SystemExit(f"--sizes and --measured must be at least 2, but got {sizes=} and {measured=}.")
    sides = chosen_sides(args, SIDES)
    run = {"optuna": run_optuna, "tuner": run_tuner}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate TPE

    rows = []
    with timed() as total:
        for strategy in samplers:
            for n in sizes:
                for side in sides:
                    label = f"{side}-{strategy}-{n}"
                    with _study_location(args.storage, label) as (url, name):
                        row = run_side(f"{side} {strategy} N={n:,}",
                                       lambda: run[side](n, measured, epochs, strategy, url, name))
                    if row is not None:
                        rows.append({**row, "side": side, "sampler": strategy, "n": n,
                                     "measured": measured, "epochs": epochs})

    summary = _summary(rows, sizes)
    where = "SQLite" if args.storage is None else sa.make_url(args.storage).get_backend_name()
    _print_tables(rows, sizes, measured, summary, where)
    # On a shared machine other work skews every number here; the load says how much.
    loads = [r[k] for r in rows for k in ("load_1m_before", "load_1m_after")]
    load = f"{min(loads):.1f} to {max(loads):.1f}" if loads else "-"
    print(f"run time {total['s']:.0f} s; 1-minute load average during the run {load} on {os.cpu_count()} CPUs")
    if args.out is not None:
        payload = {"sizes": {"n": sizes, "measured": measured, "epochs": epochs}, "storage": where,
                   "target_growth": TARGET_GROWTH, "summary": summary, "run_s": round(total["s"], 1),
                   "results": rows}
        print(f"wrote {write_json(args.out, 'scale', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
