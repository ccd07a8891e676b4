"""The learning-rate range test before the search: diverged trials and compute to target, with and without.

MNIST-1D, an MLP trained by SGD with momentum, and lr bounds six decades too
wide: [1e-7, 1e2] where [1e-4, 1e-1] holds every rate worth trying. Both sides
run tuner's defaults (successive halving, diagnostics pruner) with the same TPE
sampler and seed; the ``probe`` side adds ``probe: {narrow: true}``, and its
compute to target includes the probe's own (its steps, in epochs over the
training split, and its seconds). Diverged trials are those diagnosed
``diverged`` or ``exploding_gradients``. The target is the pooled 25th
percentile of the runs' best val_acc, as in ``diagnostics.py``.

    python benchmarks/probe.py                  # 5 seeds, 20 trials x 10 epochs
    python benchmarks/probe.py --quick          # 1 seed, 4 trials x 2 epochs, for CI
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from _common import add_common_args, add_size_args, chosen_sides, print_table
from diagnostics import pooled_target, run_sides, summarize

FULL = {"seeds": 5, "trials": 20, "epochs": 10}
QUICK = {"seeds": 1, "trials": 4, "epochs": 2}
SIDES = ("no_probe", "probe")
DIVERGED = ("diverged", "exploding_gradients")
SPACE = {
    "lr": {"type": "float", "low": 1.0e-7, "high": 1.0e2, "log": True},
    "depth": {"type": "int", "low": 1, "high": 3},
    "width": {"type": "int", "low": 32, "high": 256, "log": True},
}
FIXED = {"optimizer": "sgd", "momentum": 0.9, "batch_size": 64}
COLUMNS = ("seeds", "reached", "diverged_trials", "epochs_to_target_median", "epochs_to_target_q1",
           "epochs_to_target_q3", "seconds_to_target_median", "probe_epochs", "narrowed_lr")


def make_spec(side: str, seed: int, sizes: dict[str, int]) -> dict[str, Any]:
    spec = {"name": f"probe-{seed}", "workload": "mlp", "data": "mnist1d", "strategy": "tpe", "seed": seed,
            "trials": sizes["trials"], "epochs": sizes["epochs"],
            "objective": {"metric": "val_acc", "direction": "maximize"}, "params": SPACE, "fixed": FIXED}
    return {**spec, "probe": {"narrow": True}} if side == "probe" else spec


def side_row(side: str, runs: list[dict[str, Any]], target: float) -> dict[str, Any]:
    probes = [r["probe"] for r in runs if r.get("probe")]
    narrowed = [p["narrowed"] for p in probes if p.get("narrowed")]
    return {
        "side": side, **summarize(runs, target),
        "diverged_trials": sum(t["diagnosis"] in DIVERGED for r in runs for t in r["trials"]),
        "probe_epochs": round(statistics.median(p["cost_epochs"] for p in probes), 2) if probes else 0,
        "narrowed_lr": (f"[{statistics.median(n['low'] for n in narrowed):.2g}, "
                        f"{statistics.median(n['high'] for n in narrowed):.2g}]") if narrowed else "-",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_args(parser, FULL)
    add_common_args(parser, SIDES)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    sizes = {k: getattr(args, k) or preset[k] for k in preset}

    runs = run_sides(chosen_sides(args, SIDES), lambda side, seed: make_spec(side, seed, sizes), sizes["seeds"])
    target = args.target or pooled_target([r for side in runs.values() for r in side])
    rows = [side_row(side, side_runs, target) for side, side_runs in runs.items()]
    print_table(f"lr range test: compute to val_acc >= {target:.3f} ({sizes})", rows, COLUMNS,
                ratio_of="epochs_to_target_median", baseline="no_probe")
    if args.out:
        from _common import write_json

        path = write_json(args.out, "probe", {"sizes": sizes, "target_val_acc": target, "results": rows, "runs": runs})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
