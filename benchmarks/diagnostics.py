"""Diagnostics that pay for themselves: compute to target with tuner's diagnostics pruner on and off.

A space with pathological regions on MNIST-1D (an MLP, SGD with momentum, no
normalization): a learning rate over 6 decades (the top one diverges), up to
8 layers of sigmoid or tanh (whose gradients vanish) or relu. Both sides run
the same TPE sampler, seed and Optuna pruner (median); only ``pruner.diagnostics``
differs. Per seed: epochs and seconds until a trial first reaches the target
val_acc, and the share of epochs spent in trials diagnosed diverged, exploding
or vanishing. Then the per-epoch cost of the gradient summary, timed on the
same epochs with the summary on and stubbed out.

The target is the 25th percentile of the per-run best val_acc, pooled over both
sides and every seed (so most runs reach it, and neither side picks it); a run
that never reaches it is counted at all the compute it spent (censored).

    python benchmarks/diagnostics.py                # 5 seeds, 20 trials x 10 epochs
    python benchmarks/diagnostics.py --quick        # 1 seed, 4 trials x 2 epochs, for CI
    python benchmarks/diagnostics.py --seeds 10 --out results/
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from _common import add_common_args, add_size_args, chosen_sides, print_table, run_side, temp_workdir, write_json

FULL = {"seeds": 5, "trials": 20, "epochs": 10}
QUICK = {"seeds": 1, "trials": 4, "epochs": 2}
SIDES = ("diagnostics_off", "diagnostics_on")
BAD = ("diverged", "exploding_gradients", "vanishing_gradients")
SPACE = {
    "lr": {"type": "float", "low": 1.0e-5, "high": 10.0, "log": True},
    "depth": {"type": "int", "low": 1, "high": 8},
    "width": {"type": "int", "low": 32, "high": 256, "log": True},
    "activation": {"type": "categorical", "choices": ["sigmoid", "tanh", "relu"]},
}
FIXED = {"optimizer": "sgd", "momentum": 0.9, "norm": "none", "batch_size": 64}
PRUNER = {"type": "median", "n_startup_trials": 4, "n_warmup_steps": 2}
COLUMNS = ("seeds", "reached", "epochs_to_target_median", "epochs_to_target_q1", "epochs_to_target_q3",
           "seconds_to_target_median", "bad_compute_share", "epochs_run_median")


def study_spec(seed: int, trials: int, epochs: int, **extra: Any) -> dict[str, Any]:
    return {"name": f"bench-{seed}", "workload": "mlp", "data": "mnist1d", "strategy": "tpe", "seed": seed,
            "trials": trials, "epochs": epochs, "objective": {"metric": "val_acc", "direction": "maximize"},
            "params": SPACE, "fixed": FIXED, **extra}


def run_study(spec: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
    """One study inline (one process, one torch thread, as Ray gives a trial); per trial, in order:
    epochs, seconds, diagnosis and its val_acc per epoch."""
    import optuna
    import torch

    import tuner

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    study = tuner.launch(dict(spec), storage=f"sqlite:///{workdir / (spec['name'] + '.db')}", executor="inline")
    wall = time.perf_counter() - started
    curves: dict[int, list[float]] = {}
    for row in study.epochs():
        curves.setdefault(row["trial"], []).append(row.get("val_acc") or 0.0)
    trials = [{"number": t.number, "epochs": int(t.user_attrs.get("epochs", 0)),
               "seconds": float(t.user_attrs.get("wall_seconds", 0.0)), "diagnosis": t.user_attrs.get("diagnosis"),
               "state": t.state.name, "val_acc": curves.get(t.number, [])} for t in study.trials]
    return {"wall_s": round(wall, 2), "trials": trials, "probe": study.optuna.user_attrs.get("tuner.probe")}


def to_target(run: Mapping[str, Any], target: float) -> dict[str, Any]:
    """Epochs and seconds (probe included) until a trial's val_acc first reaches ``target``."""
    probe = run.get("probe") or {}
    epochs, seconds = float(probe.get("cost_epochs", 0.0)), float(probe.get("seconds", 0.0))
    for t in sorted(run["trials"], key=lambda t: t["number"]):
        hit = next((i for i, v in enumerate(t["val_acc"], start=1) if v >= target), None)
        if hit is not None:
            share = hit / max(1, len(t["val_acc"]))
            return {"reached": True, "epochs": epochs + hit, "seconds": seconds + share * t["seconds"]}
        epochs, seconds = epochs + t["epochs"], seconds + t["seconds"]
    return {"reached": False, "epochs": epochs, "seconds": seconds}  # censored: everything it spent


def summarize(runs: Sequence[Mapping[str, Any]], target: float) -> dict[str, Any]:
    """Median and quartiles over seeds of compute to target, and the share of epochs in bad trials."""
    hits = [to_target(r, target) for r in runs]
    epochs = [h["epochs"] for h in hits]
    run_epochs = [sum(t["epochs"] for t in r["trials"]) for r in runs]
    bad = sum(t["epochs"] for r in runs for t in r["trials"] if t["diagnosis"] in BAD)
    return {
        "seeds": len(runs), "reached": sum(h["reached"] for h in hits), "target_val_acc": round(target, 4),
        "epochs_to_target_median": statistics.median(epochs), **_quartiles("epochs_to_target", epochs),
        "seconds_to_target_median": round(statistics.median(h["seconds"] for h in hits), 2),
        "bad_compute_share": round(bad / max(1, sum(run_epochs)), 3),
        "epochs_run_median": statistics.median(run_epochs), "per_seed_epochs_to_target": epochs,
    }


def _quartiles(name: str, values: Sequence[float]) -> dict[str, float]:
    if len(values) < 2:
        return {f"{name}_q1": values[0], f"{name}_q3": values[0]}
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {f"{name}_q1": q1, f"{name}_q3": q3}


def pooled_target(runs: Sequence[Mapping[str, Any]], quantile: float = 0.25) -> float:
    """The ``quantile`` of the best val_acc of every run: a bar most runs clear, chosen by neither side."""
    bests = sorted(max((v for t in r["trials"] for v in t["val_acc"]), default=0.0) for r in runs)
    return bests[min(len(bests) - 1, int(quantile * len(bests)))]


def run_sides(sides: Sequence[str], make: Callable[[str, int], dict[str, Any]], seeds: int) -> dict[str, list]:
    """Every side on every seed, seeds interleaved so that a change of load hits both sides alike."""
    runs: dict[str, list] = {side: [] for side in sides}
    with temp_workdir("tuner-bench-") as workdir:
        for seed in range(seeds):
            for side in sides:
                result = run_side(f"{side} seed {seed}", lambda: run_study({**make(side, seed), "name": f"{side}-{seed}"}, workdir))
                runs[side].append(result)
    return runs


def summary_overhead(epochs: int, repeats: int) -> list[dict[str, Any]]:
    """Seconds per training epoch with the gradient summary on and stubbed out, alternating, per model;
    and the share of the summarized epochs' time spent inside the summary's own calls, which a
    shared machine's noise moves far less than the difference of two epoch times."""
    import torch

    import workers.training as training
    from workers.config import Config
    from workers.mlp import build

    torch.set_num_threads(1)
    real = (training.summarize, training.snapshot, training.update_ratio)
    stub = (lambda model: {}, lambda model: None, lambda model, before: 0.0)
    inside = [0.0]

    def timed(fn: Any) -> Any:
        def call(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args)
            finally:
                inside[0] += time.perf_counter() - started
        return call

    rows = []
    for depth, width, batch in ((2, 128, 64), (8, 128, 64), (2, 128, 16)):
        cfg = Config.from_params({"depth": depth, "width": width, "batch_size": batch, "activation": "sigmoid",
                                  "optimizer": "sgd", "momentum": 0.9, "lr": 0.01, "epochs": epochs})
        run = training.Run.start(cfg, training.dataset(cfg), build)
        times: dict[str, list[float]] = {"on": [], "off": []}
        inside[0] = 0.0
        for i in range(2 * repeats):
            side = "on" if i % 2 == 0 else "off"
            training.summarize, training.snapshot, training.update_ratio = (
                tuple(timed(f) for f in real) if side == "on" else stub)
            started = time.perf_counter()
            training.train_epoch(run.model, run.optimizer, run.train, cfg, run.batch_size, run.order, None)
            times[side].append(time.perf_counter() - started)
        training.summarize, training.snapshot, training.update_ratio = real
        on, off = statistics.median(times["on"]), statistics.median(times["off"])
        share = inside[0] / (sum(times["on"]) - inside[0])
        rows.append({"side": f"depth {depth}, width {width}, batch {batch}", "epoch_s_summary_on": round(on, 4),
                     "epoch_s_summary_off": round(off, 4), "overhead": round(on / off - 1, 4),
                     "overhead_inside_calls": round(share, 4)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_args(parser, FULL)
    parser.add_argument("--pruner", default="median",
                        help="Optuna's pruner on both sides: median (default, with warm-up 2) or none")
    add_common_args(parser, SIDES)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    sizes = {k: getattr(args, k) or preset[k] for k in preset}

    def make(side: str, seed: int) -> dict[str, Any]:
        pruner = {**(PRUNER if args.pruner == "median" else {"type": args.pruner}), "diagnostics": side == "diagnostics_on"}
        return study_spec(seed, sizes["trials"], sizes["epochs"], pruner=pruner)

    runs = run_sides(chosen_sides(args, SIDES), make, sizes["seeds"])
    target = args.target or pooled_target([r for side in runs.values() for r in side])
    rows = [{"side": side, **summarize(side_runs, target)} for side, side_runs in runs.items()]
    print_table(f"diagnostics pruner beside {args.pruner}: compute to val_acc >= {target:.3f} ({sizes})", rows, COLUMNS,
                ratio_of="epochs_to_target_median", baseline="diagnostics_off")
    overhead = summary_overhead(sizes["epochs"], 3 if args.quick else 7)
    print_table("gradient summary: seconds per epoch", overhead,
                ("epoch_s_summary_on", "epoch_s_summary_off", "overhead", "overhead_inside_calls"),
                ratio_of="epoch_s_summary_on", baseline=overhead[0]["side"])
    if args.out:
        path = write_json(args.out, "diagnostics", {"sizes": sizes, "pruner": args.pruner, "target_val_acc": target, "results": rows,
                                                    "overhead": overhead, "runs": runs})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
