"""Time to first result: one trial of one epoch of the MNIST-1D MLP preset, from the command line to its value.

Each side is a fresh process in a fresh directory, timed from its start to its
exit, as a user meets it: tuner's console script with a local Ray (the
default), tuner with ``--executor inline``, and a plain Optuna script that
creates a SQLite study and trains the same built-in workload once. The
ratios are against plain Optuna.

    python benchmarks/first_result.py              # 3 repeats per side
    python benchmarks/first_result.py --quick      # 1 repeat, for CI
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import add_common_args, chosen_sides, print_table, run_side, temp_workdir, write_json

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "search_spaces" / "mnist1d_mlp.yaml"
SIDES = ("optuna", "tuner-inline", "tuner-ray")

# The same workload and the first configuration TPE would try, through Optuna alone.
OPTUNA_SCRIPT = """
import optuna
from workers.mlp import train

def objective(trial):
    params = {"lr": trial.suggest_float("lr", 1e-4, 0.3, log=True), "epochs": 1, "data": "mnist1d", "seed": 0}
    seen = []

    def report(epoch, **metrics):
        trial.report(metrics["val_loss"], epoch)
        seen.append(metrics["val_loss"])

    train(params, report)
    return seen[-1]

optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(storage="sqlite:///optuna.db", study_name="first")
study.optimize(objective, n_trials=1)
print(study.best_value)
"""


def _command(side: str) -> list[str]:
    if side == "optuna":
        return [sys.executable, "-c", OPTUNA_SCRIPT]
    tuner = shutil.which("tuner")
    if tuner is None:
        raise NotImplementedError("the tuner console script is not installed (pip install -e .)")
    executor = "inline" if side == "tuner-inline" else "ray"
    return [tuner, "launch", str(SPEC), "--trials", "1", "--epochs", "1", "--executor", executor, "--quiet"]


def run_once(side: str) -> float:
    with temp_workdir(f"first-{side}") as cwd:
        env = {"PYTHONPATH": str(REPO)} if side == "optuna" else {}
        start = time.perf_counter()
        result = subprocess.run(_command(side), cwd=cwd, capture_output=True, text=True, timeout=600,
                                env={**_environ(), **env})
        took = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{side} failed: {result.stderr[-2000:]}")
    return took


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("TUNER_STORAGE", "RAY_ADDRESS", "PYTHONPATH")}


def measure(side: str, repeats: int) -> dict[str, Any]:
    times = [run_once(side) for _ in range(repeats)]
    return {"seconds_median": statistics.median(times), "seconds_min": min(times), "repeats": repeats,
            "seconds": [round(t, 2) for t in times]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, SIDES)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    rows = [r for side in chosen_sides(args, SIDES) if (r := run_side(side, lambda s=side: measure(s, repeats)))]
    print_table("time to first result (1 trial x 1 epoch, MNIST-1D MLP)", rows,
                ["seconds_median", "seconds_min", "repeats"], ratio_of="seconds_median", baseline="optuna")
    if args.out:
        write_json(args.out, "first_result", {"results": rows, "repeats": repeats})


if __name__ == "__main__":
    main()
