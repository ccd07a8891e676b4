"""What epoch rows add up to: a trial's score, value, best epoch and gap; a study's compute."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]


def finite(value: Any) -> bool:
    """A real number, neither NaN nor infinite (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any) -> str:
    """A value for people: floats to 4 significant digits, None as nothing."""
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def better(value: float, than: float, direction: str) -> bool:
    """Whether ``value`` beats ``than`` under ``direction`` ("minimize" or "maximize"); a tie does not."""
    return value < than if direction == "minimize" else value > than


def score(row: Row, objective: Any) -> float | None:
    """The objective of one epoch: the metric, penalized by the overfitting gap if asked.

    Minimizing: metric + gap_penalty * (val_loss - train_loss). Maximizing:
    metric - gap_penalty * (train_acc - val_acc). A missing gap means no penalty.
    """
    value = row.get(objective.metric)
    if value is None:
        return None
    value = float(value)
    if objective.gap_penalty:
        minimize = objective.resolved_direction == "minimize"
        gap = row.get("gap_loss" if minimize else "gap_acc")
        if finite(gap):
            value = value + objective.gap_penalty * gap if minimize else value - objective.gap_penalty * gap
    return value


def improves(row: Row, objective: Any, best: float | None) -> float | None:
    """The row's score when it is finite and beats ``best`` (None: nothing to beat yet) under the objective's
    direction; else None."""
    found = score(row, objective)
    if not finite(found) or (best is not None and not better(found, best, objective.resolved_direction)):
        return None
    return found


def best_row(
    rows: Sequence[Row], key: str | Callable[[Row], float | None], direction: str, min_delta: float = 0.0
) -> Row | None:
    """The row where ``key`` is best, ignoring NaN and inf.

    With ``min_delta``, a later row must beat the best so far by more than it
    to count as better (early stopping's notion of improvement).
    """
    get = key if callable(key) else (lambda r: r.get(key))
    sign = 1.0 if direction == "minimize" else -1.0
    best, best_value = None, math.inf
    for row in rows:
        value = get(row)
        if not finite(value):
            continue
        if best is None or sign * value < best_value - min_delta:
            best, best_value = row, sign * value
    return best


def objective_value(rows: Sequence[Row], objective: Any, direction: str, mode: str | None = None) -> float | None:
    """The trial's value: its score at its best epoch, or at its last one.

    None when the workload never reported the metric. A last value that is NaN
    or infinite is returned as is, so a diverged run is seen for what it is.
    """
    reported = [s for s in (score(r, objective) for r in rows) if s is not None]
    if not reported:
        return None
    if (mode or objective.mode) == "last":
        return reported[-1]
    usable = [s for s in reported if finite(s)]
    if not usable:
        return reported[-1]
    return min(usable) if direction == "minimize" else max(usable)


def objective_values(rows: Sequence[Row], objectives: Sequence[Any], mode: str | None = None) -> list[float | None]:
    """A multi-objective trial's values: each objective read at one epoch, the one the first objective keeps.

    That epoch is the first objective's best (or its last, by its ``mode``), so
    the vector describes one model, not the best of each metric from different
    epochs. ``seconds`` is the training time up to and including that epoch
    (what it cost to train that model); any other metric is that epoch's score.
    An empty list when the first objective was never reported; None for a
    metric that epoch lacks.
    """
    first = objectives[0]
    reported = [i for i, r in enumerate(rows) if score(r, first) is not None]
    if not reported:
        return []
    usable = [i for i in reported if finite(score(rows[i], first))]
    if (mode or first.mode) == "last" or not usable:
        kept = reported[-1]
    else:
        sign = 1.0 if first.resolved_direction == "minimize" else -1.0
        kept = min(usable, key=lambda i: (sign * score(rows[i], first), i))
    return [_elapsed(rows, kept) if o.metric == "seconds" else score(rows[kept], o) for o in objectives]


def _elapsed(rows: Sequence[Row], through: int) -> float | None:
    spent = [r.get("seconds") for r in rows[: through + 1]]
    return float(sum(spent)) if all(finite(s) for s in spent) else None


def gap_at_best(rows: Sequence[Row], objective: Any, direction: str) -> float | None:
    best = best_row(rows, lambda r: score(r, objective), direction)
    return float(best["gap_loss"]) if best is not None and finite(best.get("gap_loss")) else None


def trial_summary(rows: Sequence[Row], objective: Any, direction: str) -> dict[str, Any]:
    """Per-trial facts kept as Optuna user attributes (visible in the dashboard)."""
    summary: dict[str, Any] = {"epochs": len(rows)}
    if not rows:
        return summary
    # The best epoch is judged on validation loss where there is one (the
    # epoch to keep), else on the objective.
    if any(finite(r.get("val_loss")) for r in rows):
        best = best_row(rows, "val_loss", "minimize")
    else:
        best = best_row(rows, lambda r: score(r, objective), direction)
    if best is not None:
        summary["best_epoch"] = int(best["epoch"])
    last = rows[-1]
    if finite(last.get("gap_loss")):
        summary["final_gap"] = round(float(last["gap_loss"]), 6)
    if finite(last.get("gap_acc")):
        summary["final_gap_acc"] = round(float(last["gap_acc"]), 6)
    return summary


def accounting(trials: Iterable[Any], epochs_budget: int) -> dict[str, Any]:
    """Compute spent by a study, and what stopping trials early saved.

    ``epochs_saved`` counts the epochs that pruned and early-stopped trials
    did not run, compared with running every trial to the full budget.
    """
    totals = {"trials": 0, "epochs_run": 0, "wall_seconds": 0.0, "gpu_seconds": 0.0,
              "pruned": 0, "early_stopped": 0, "epochs_saved": 0}
    for t in trials:
        attrs = t.user_attrs
        if "epochs" not in attrs:
            continue
        totals["trials"] += 1
        totals["epochs_run"] += int(attrs["epochs"])
        totals["wall_seconds"] += float(attrs.get("wall_seconds", 0.0))
        totals["gpu_seconds"] += float(attrs.get("gpu_seconds", 0.0))
        stopped = t.state.name == "PRUNED" or attrs.get("early_stopped")
        if t.state.name == "PRUNED":
            totals["pruned"] += 1
        elif attrs.get("early_stopped"):
            totals["early_stopped"] += 1
        if stopped:
            totals["epochs_saved"] += max(epochs_budget - int(attrs["epochs"]), 0)
    full = totals["epochs_run"] + totals["epochs_saved"]
    totals["saved_fraction"] = totals["epochs_saved"] / full if full else 0.0
    totals["wall_seconds"] = round(totals["wall_seconds"], 3)
    totals["gpu_seconds"] = round(totals["gpu_seconds"], 3)
    return totals
