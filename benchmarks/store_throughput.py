"""Store write throughput: per-epoch values committed to SQLite per second, tuner next to plain Optuna.

Two runs per side: one writer reporting ``--values`` steps into one trial, then
``--threads`` writers at once, each reporting ``--values`` steps into its own
trial of one study on one SQLite file. A write that fails with ``database is
locked`` is counted and the run goes on.

The sides ``tuner+tensorboard``, ``tuner+mlflow`` and ``tuner+mlflow-sqlite``
write the same rows through the same path with a per-epoch logger attached
(``log: {tensorboard: DIR}``, ``log: {mlflow: file:...}``, ``log: {mlflow:
sqlite:///...}``, MLflow 3's default store): ``values_per_s`` is the epoch path's rate, and
``started_s`` how long the loggers' process took to start (the driver starts it
with the study, while its first trials start; the rate is measured once it is
up), ``drained_s`` how long it took after the last write to log everything
queued (it runs apart from the epoch path, see tuner/integrations/_process.py).

    python benchmarks/store_throughput.py               # 2000 values per writer, 1 and 4 writers, 3 rounds
    python benchmarks/store_throughput.py --quick       # 200 values per writer, for CI
    python benchmarks/store_throughput.py --values 5000 --threads 8 --out results/
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from _common import PeakRss, add_common_args, chosen_sides, print_table, run_side, temp_workdir, timed, write_json

import peers

FULL = {"values": 2000, "threads": 4, "repeats": 3}
QUICK = {"values": 200, "threads": 4, "repeats": 1}
SIDES = ("optuna", "tuner", "tuner+tensorboard", "tuner+mlflow", "tuner+mlflow-sqlite")
COLUMNS = ("values_per_s", "values_committed", "values_recorded", "locked_errors", "wall_s", "started_s", "drained_s",
           "peak_rss_mib")


# === TUNER SIDE ================================================================
BATCH = 100  # rows per transaction: what the orchestrator writes when trials stream fast


def run_tuner(n_values: int, workdir: Path, threads: int = 1, logger: str | None = None) -> dict[str, Any]:
    """Write the same values through tuner's store path: batched epoch rows plus Optuna's intermediate values.

    Each writer is one trial's stream arriving at the store: ``n_values`` epoch
    rows (train/val loss and accuracy, gap, lr, seconds, device, a gradient
    summary), written ``BATCH`` rows per transaction, each row also becoming
    the trial's Optuna intermediate value. Writers run in threads, each with its
    own Store (engine and connections) on the one SQLite file.

    With ``logger`` (``tensorboard``, ``mlflow`` or ``mlflow-sqlite``), each committed batch is
    also handed to that per-epoch logger, as the recorder hands it on
    (:class:`tuner.recorder.Callbacks`: queued for the loggers' own process).
    """
    import threading
    from types import SimpleNamespace

    import optuna
    import sqlalchemy as sa

    from tuner.recorder import Callbacks
    from tuner.store import Store

    url = f"sqlite:///{Path(workdir).resolve() / 'tuner.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = Store(url)
    study = store.create_study("store", "minimize")
    trials = [study.ask() for _ in range(threads)]
    trial_ids = [t._trial_id for t in trials]
    runs = {t._trial_id: SimpleNamespace(number=t.number, params={"lr": 1e-3}) for t in trials}
    callbacks = Callbacks(study, [_logger(logger, Path(workdir))] if logger else [], url)
    with timed() as started:  # the driver starts it with the study; the rate measured is the steady one
        callbacks.start(wait=None)
    errors: list[str] = []

    def write(trial_id: int) -> None:
        own = Store(url)
        rows = [
            {"trial_id": trial_id, "epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_acc": 0.9,
             "val_acc": 0.8, "gap_loss": 0.2 / e, "gap_acc": 0.1, "lr": 1e-3, "iterations": 50 * e,
             "seconds": 0.01, "device": "cpu", "grad_norm": 1.0, "grad_ratio": 0.5}
            for e in range(1, n_values + 1)
        ]
        try:
            for i in range(0, n_values, BATCH):
                own.record_epochs(rows[i:i + BATCH], "val_loss")
                callbacks.epochs(rows[i:i + BATCH], runs)
        except sa.exc.OperationalError as exc:
            errors.append(str(exc.orig))
        finally:
            own.close()

    workers = [threading.Thread(target=write, args=(tid,)) for tid in trial_ids]
    with PeakRss() as rss, timed() as run:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    with timed() as drain:
        callbacks.close()
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("select count(*) from tuner_epochs")).scalar()
        values = conn.execute(sa.text("select count(*) from trial_intermediate_values")).scalar()
    store.close()
    return {
        "writers": threads,
        "values_per_s": round(threads * n_values / run["s"], 1),
        "values_committed": threads * n_values if not errors else None,
        "values_recorded": min(rows, values),
        "locked_errors": sum("locked" in e for e in errors),
        "wall_s": round(run["s"], 3),
        "started_s": round(started["s"], 3) if logger else None,
        "drained_s": round(drain["s"], 3) if logger else None,
        "peak_rss_mib": rss.peak_mib,
    }


def _logger(name: str, workdir: Path) -> Any:
    """The per-epoch logger a spec's ``log:`` section builds, writing under ``workdir``."""
    if name == "tensorboard":
        from tuner.integrations.tensorboard import TensorBoardCallback

        return TensorBoardCallback(workdir / "tb")
    from tuner.integrations.mlflow import MLflowCallback

    if name == "mlflow-sqlite":
        return MLflowCallback(f"sqlite:///{(workdir / 'mlflow.db').resolve()}")
    return MLflowCallback((workdir / "mlruns").resolve().as_uri())
# ==============================================================================


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, help=f"reports per writer (default {FULL['values']})")
    parser.add_argument("--threads", type=int, help=f"concurrent writers (default {FULL['threads']})")
    parser.add_argument("--repeats", type=int, help=f"rounds of every side (default {FULL['repeats']}); the median shown")
    add_common_args(parser, SIDES)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    n_values, threads = args.values or preset["values"], args.threads or preset["threads"]
    run = {"optuna": peers.optuna_report_rate, "tuner": run_tuner,
           "tuner+tensorboard": functools.partial(run_tuner, logger="tensorboard"),
           "tuner+mlflow": functools.partial(run_tuner, logger="mlflow"),
           "tuner+mlflow-sqlite": functools.partial(run_tuner, logger="mlflow-sqlite")}

    # Sides interleaved, ``--repeats`` rounds; each side's median-rate run is the one shown (noise on a shared
    # machine moves single runs by tens of percent).
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(args.repeats or preset["repeats"]):
        for side in chosen_sides(args, SIDES):
            for writers in (1, threads):
                with temp_workdir(f"bench-store-{side}-") as workdir:
                    row = run_side(f"{side} x{writers}", lambda: run[side](n_values, workdir, threads=writers))
                if row is not None:
                    runs.setdefault((side, writers), []).append({**row, "side": side})
    tables: dict[int, list[dict[str, Any]]] = {1: [], threads: []}
    for (side, writers), done in runs.items():
        ranked = sorted(done, key=lambda r: r["values_per_s"])
        tables[writers].append({**ranked[len(ranked) // 2], "rates": [r["values_per_s"] for r in done]})

    for writers, rows in tables.items():
        title = f"Store write throughput: {writers} writer(s) x {n_values} values, SQLite"
        print_table(title, rows, COLUMNS, ratio_of="values_per_s", baseline="optuna")
        plain = next((r["values_per_s"] for r in rows if r["side"] == "tuner"), None)
        for row in rows:
            if row["side"].startswith("tuner+") and plain:
                row["vs_tuner"] = round(row["values_per_s"] / plain, 3)
                print(f"{row['side']} x{writers}: {row['vs_tuner']:.3f}x tuner's rate without a logger "
                      f"(target >= 0.9), then {row['drained_s']} s to drain its queue")
    if args.out is not None:
        results = [row for rows in tables.values() for row in rows]
        path = write_json(args.out, "store_throughput", {"sizes": {"values": n_values, "threads": threads, "repeats": args.repeats or preset["repeats"]}, "results": results})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
