"""Orchestration overhead: trials per second on a no-op workload, tuner next to its peers.

Every side runs the same study: ``--trials`` trials of two random params, each
reporting ``--epochs`` values and doing no work, ``--parallel`` at a time, on
SQLite (or Tune's files). What is left is the cost of the machinery.

    python benchmarks/overhead.py                   # 200 trials x 20 epochs, parallel 2
    python benchmarks/overhead.py --quick           # 20 trials x 5 epochs, for CI
    python benchmarks/overhead.py --sides optuna,tuner --out results/
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from _common import (
    add_common_args,
    chosen_sides,
    keep_ray_on_loopback,
    print_table,
    run_side,
    temp_workdir,
    write_json,
)

keep_ray_on_loopback()  # before peers or tuner import ray

import peers  # noqa: E402

FULL = {"trials": 200, "epochs": 20, "parallel": 2}
# Ray Tune alone needs ~8 s of start-up and ~1 s a trial, so CI gets a handful.
QUICK = {"trials": 10, "epochs": 5, "parallel": 2}
SIDES = ("optuna", "ray_tune", "tuner")
COLUMNS = (
    "trials_per_s",
    "wall_s",
    "startup_s",
    "trials_complete",
    "epochs_recorded",
    "epochs_expected",
    "peak_rss_mib",
)


# === TUNER SIDE: filled in once tuner.launch exists ===========================
def run_tuner(n_trials: int, epochs: int, parallel: int, workdir: Path) -> dict[str, Any]:
    """Run the same no-op study through tuner and return the keys in ``COLUMNS``.

    Expected: a fresh ``sqlite:///{workdir}/tuner.db``, RandomSampler(seed=0),
    params ``x`` float in [-10, 10] and ``y`` int in [0, 10], ``epochs`` reports
    per trial, ``parallel`` trials at a time; ``startup_s`` for Ray start-up and
    store creation, ``wall_s`` for the study itself, and ``epochs_recorded``
    counted by reading the database back.
    """
    raise NotImplementedError("tuner side is added once tuner.launch exists")
# ==============================================================================


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    preset = QUICK if args.quick else FULL
    return {key: getattr(args, key) or preset[key] for key in preset}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, help=f"trials per study (default {FULL['trials']})")
    parser.add_argument("--epochs", type=int, help=f"reports per trial (default {FULL['epochs']})")
    parser.add_argument("--parallel", type=int, help=f"trials at a time (default {FULL['parallel']})")
    add_common_args(parser, SIDES)
    args = parser.parse_args(argv)
    sizes = _sizes(args)
    run = {"optuna": peers.optuna_plain, "ray_tune": peers.ray_tune, "tuner": run_tuner}

    rows = []
    for side in chosen_sides(args, SIDES):
        with temp_workdir(f"bench-overhead-{side}-") as workdir:
            row = run_side(side, lambda: run[side](sizes["trials"], sizes["epochs"], sizes["parallel"], workdir))
        if row is not None:
            rows.append(row)

    title = f"Orchestration overhead: {sizes['trials']} trials x {sizes['epochs']} epochs, parallel {sizes['parallel']}"
    print_table(title, rows, COLUMNS, ratio_of="trials_per_s", baseline="optuna")
    if args.out is not None:
        path = write_json(args.out, "overhead", {"sizes": sizes, "results": rows})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
