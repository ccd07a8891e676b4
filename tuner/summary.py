"""What a trial's epoch rows add up to: its objective value, best epoch and gap."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def best_row(rows: Sequence[Row], metric: str, direction: str) -> Row | None:
    """The row where ``metric`` is best (the earliest of ties), ignoring NaN and inf."""
    scored = [r for r in rows if _finite(r.get(metric))]
    if not scored:
        return None
    sign = 1.0 if direction == "minimize" else -1.0
    return min(scored, key=lambda r: (sign * r[metric], r["epoch"]))


def objective_value(rows: Sequence[Row], metric: str, direction: str, mode: str) -> float | None:
    """The trial's value: ``metric`` at its best epoch, or at its last one.

    None when the workload never reported the metric. A last value that is NaN
    or infinite is returned as is, so a diverged run is seen for what it is.
    """
    if mode == "last":
        reported = [r for r in rows if r.get(metric) is not None]
        return float(reported[-1][metric]) if reported else None
    best = best_row(rows, metric, direction)
    if best is not None:
        return float(best[metric])
    reported = [r for r in rows if r.get(metric) is not None]
    return float(reported[-1][metric]) if reported else None


def trial_summary(rows: Sequence[Row], metric: str, direction: str) -> dict[str, Any]:
    """Per-trial facts kept as Optuna user attributes (visible in the dashboard)."""
    summary: dict[str, Any] = {"epochs": len(rows)}
    if not rows:
        return summary
    # The best epoch is judged on validation loss where there is one, since the
    # objective may be an accuracy that plateaus while the loss still moves.
    key, way = ("val_loss", "minimize") if any(_finite(r.get("val_loss")) for r in rows) else (metric, direction)
    best = best_row(rows, key, way)
    if best is not None:
        summary["best_epoch"] = int(best["epoch"])
    last = rows[-1]
    if _finite(last.get("gap_loss")):
        summary["final_gap"] = round(float(last["gap_loss"]), 6)
    if _finite(last.get("gap_acc")):
        summary["final_gap_acc"] = round(float(last["gap_acc"]), 6)
    return summary
