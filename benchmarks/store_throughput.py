"""Store write throughput: per-epoch values committed to SQLite per second, tuner next to plain Optuna.

Two runs per side: one writer reporting ``--values`` steps into one trial, then
``--threads`` writers at once, each reporting ``--values`` steps into its own
trial of one study on one SQLite file. A write that fails with ``database is
locked`` is counted and the run goes on.

    python benchmarks/store_throughput.py               # 2000 values per writer, 1 and 4 writers
    python benchmarks/store_throughput.py --quick       # 200 values per writer, for CI
    python benchmarks/store_throughput.py --values 5000 --threads 8 --out results/
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from _common import add_common_args, chosen_sides, print_table, run_side, temp_workdir, write_json

import peers

FULL = {"values": 2000, "threads": 4}
QUICK = {"values": 200, "threads": 4}
SIDES = ("optuna", "tuner")
COLUMNS = ("values_per_s", "values_committed", "values_recorded", "locked_errors", "wall_s", "peak_rss_mib")


# === TUNER SIDE: filled in once tuner's store exists ===========================
def run_tuner(n_values: int, workdir: Path, threads: int = 1) -> dict[str, Any]:
    """Write the same values through tuner's worker-to-store path; return the keys in ``COLUMNS``.

    Expected: ``threads`` writers each recording ``n_values`` epochs of its own
    trial into a fresh ``sqlite:///{workdir}/tuner.db``; ``values_recorded``
    counted by reading the database back once every writer has flushed.
    """
    raise NotImplementedError("tuner side is added once tuner.launch exists")
# ==============================================================================


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, help=f"reports per writer (default {FULL['values']})")
    parser.add_argument("--threads", type=int, help=f"concurrent writers (default {FULL['threads']})")
    add_common_args(parser, SIDES)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    n_values, threads = args.values or preset["values"], args.threads or preset["threads"]
    run = {"optuna": peers.optuna_report_rate, "tuner": run_tuner}

    tables: dict[int, list[dict[str, Any]]] = {1: [], threads: []}
    for side in chosen_sides(args, SIDES):
        for writers in tables:
            with temp_workdir(f"bench-store-{side}-") as workdir:
                row = run_side(f"{side} x{writers}", lambda: run[side](n_values, workdir, threads=writers))
            if row is not None:
                tables[writers].append({**row, "side": side})

    for writers, rows in tables.items():
        title = f"Store write throughput: {writers} writer(s) x {n_values} values, SQLite"
        print_table(title, rows, COLUMNS, ratio_of="values_per_s", baseline="optuna")
    if args.out is not None:
        results = [row for rows in tables.values() for row in rows]
        path = write_json(args.out, "store_throughput", {"sizes": {"values": n_values, "threads": threads}, "results": results})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
