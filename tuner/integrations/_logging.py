"""What the logger callbacks share: the numbers of an epoch row, and a trial's end in words."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.trial import FrozenTrial

# Which epoch and trial a row belongs to: the step and the run, not metrics.
_IDENTITY = ("epoch", "trial", "trial_id", "study", "id")
# Per-trial facts tuner keeps as user attributes, shown with each run's end (tuner/trial/metrics.py, tuner/trial/diagnosis.py).
SUMMARY_ATTRS = ("diagnosis", "diagnosis_epoch", "diagnosis_detail", "best_epoch", "final_gap", "final_gap_acc",
                 "epochs", "wall_seconds", "gpu_seconds", "device", "prune_rule", "prune_epoch", "prune_reason",
                 "fail_reason", "stop_reason", "early_stopped")


def metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """The row's numbers by name (NaN and inf kept: a diverged epoch should show), its step and strings left out."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if key in _IDENTITY or value is None or isinstance(value, (bool, str)):
            continue
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def why(trial: FrozenTrial) -> str:
    """Why the trial ended as it did, as tuner show says it ('' for a trial that ran its budget)."""
    attrs = trial.user_attrs
    return str(attrs.get("prune_reason") or attrs.get("fail_reason") or attrs.get("stop_reason") or "")


def run_name(number: int) -> str:
    """One name for a trial's run in every tracker, sorted by trial number as text too."""
    return f"trial-{number:04d}"
