"""Why a trial went wrong: diverged, exploding or vanishing gradients, overfitting, stalled.

Read from a trial's epoch rows alone (what the built-in workers report, or any
workload that reports the same keys; ``workers.gradients.summarize`` computes
the gradient ones), so it runs in the orchestrator after every batch of
epochs and once more when the trial ends. Thresholds are named, documented
and set in the spec's ``diagnostics:`` section.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Row = Mapping[str, Any]

DIVERGED = "diverged"
EXPLODING = "exploding_gradients"
VANISHING = "vanishing_gradients"
OVERFITTING = "overfitting"
STALLED = "stalled"
FAILED = "failed"  # a FAIL trial whose epochs show none of the above: its fail reason says why
HEALTHY = "healthy"
KINDS = (DIVERGED, EXPLODING, VANISHING, OVERFITTING, STALLED, FAILED, HEALTHY)


class Thresholds(BaseModel):
    """When each diagnosis is made. Defaults suit the usual classification losses."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: Vanishing: the first layer's gradient norm is below this fraction of the
    #: last layer's (a deep sigmoid net reaches 1e-4 and less; healthy nets stay near 0.1-10).
    vanishing_ratio: float = Field(default=1e-3, gt=0, lt=1)
    #: ... for this many consecutive epochs (one bad epoch at initialization is common).
    vanishing_epochs: int = Field(default=3, ge=1)
    #: Exploding: the global gradient norm exceeds this ...
    exploding_norm: float = Field(default=1e4, gt=0)
    #: ... or grows to this many times its first-epoch value.
    exploding_growth: float = Field(default=1e3, gt=1)
    #: Diverged: a loss is NaN or infinite, or rises above this multiple of its first value.
    divergence_factor: float = Field(default=3.0, gt=1)
    #: Overfitting: validation loss stayed above its best for this many epochs while
    #: training loss kept falling.
    overfit_patience: int = Field(default=3, ge=1)
    #: Stalled: over at least ``stall_epochs`` epochs, neither loss moved by more than
    #: this fraction of its first value.
    stall_tolerance: float = Field(default=0.01, gt=0, lt=1)
    stall_epochs: int = Field(default=5, ge=2)


@dataclass(frozen=True)
class Finding:
    """A diagnosis, the epoch it was made at, and the numbers behind it."""

    kind: str
    epoch: int | None = None
    detail: str = ""
    values: dict[str, float] = field(default_factory=dict)

    def as_attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {"diagnosis": self.kind}
        if self.epoch is not None:
            attrs["diagnosis_epoch"] = self.epoch
        if self.detail:
            attrs["diagnosis_detail"] = self.detail
        return attrs


def _bad(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isfinite(value)


def _num(row: Row, key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def diverged(rows: Sequence[Row], t: Thresholds) -> Finding | None:
    first: dict[str, float] = {}
    for row in rows:
        for key in ("train_loss", "val_loss"):
            value = _num(row, key)
            if value is None:
                continue
            if not math.isfinite(value):
                return Finding(DIVERGED, row["epoch"], f"{key} became {value} at epoch {row['epoch']}",
                               {key: value})
            start = first.setdefault(key, value)
            if start > 0 and value > t.divergence_factor * start:
                return Finding(
                    DIVERGED, row["epoch"],
                    f"{key} rose to {value:.4g}, over {t.divergence_factor:g}x its first value {start:.4g}",
                    {key: value, f"first_{key}": start},
                )
    return None


def exploding(rows: Sequence[Row], t: Thresholds) -> Finding | None:
    first = None
    for row in rows:
        norm = _num(row, "grad_norm")
        if norm is None:
            continue
        if not math.isfinite(norm) or norm > t.exploding_norm:
            return Finding(EXPLODING, row["epoch"],
                           f"gradient norm {norm:.4g} exceeds {t.exploding_norm:g}", {"grad_norm": norm})
        first = norm if first is None else first
        if first > 0 and norm > t.exploding_growth * first:
            return Finding(
                EXPLODING, row["epoch"],
                f"gradient norm grew {norm / first:.3g}x since epoch 1 ({first:.3g} -> {norm:.3g})",
                {"grad_norm": norm, "first_grad_norm": first},
            )
    return None


def vanishing(rows: Sequence[Row], t: Thresholds, epochs: int | None = None) -> Finding | None:
    """``epochs`` consecutive epochs (default: the threshold's) with a tiny first/last ratio."""
    needed = epochs or t.vanishing_epochs
    streak: list[Row] = []
    for row in rows:
        ratio = _num(row, "grad_ratio")
        streak = streak + [row] if ratio is not None and ratio < t.vanishing_ratio else []
        if len(streak) >= needed:
            worst = min(_num(r, "grad_ratio") or 0.0 for r in streak)
            return Finding(
                VANISHING, row["epoch"],
                f"first-layer gradients {worst:.2g}x the last layer's for {len(streak)} epochs "
                f"since epoch {streak[0]['epoch']} (threshold {t.vanishing_ratio:g})",
                {"grad_ratio": worst},
            )
    return None


def overfitting(rows: Sequence[Row], t: Thresholds) -> Finding | None:
    scored = [r for r in rows if _num(r, "val_loss") is not None and math.isfinite(r["val_loss"])]
    if len(scored) < t.overfit_patience + 1:
        return None
    best_i = min(range(len(scored)), key=lambda i: (scored[i]["val_loss"], i))
    after = scored[best_i + 1:]
    if len(after) < t.overfit_patience:
        return None
    best, last = scored[best_i], scored[-1]
    train_falling = (_num(last, "train_loss") or math.inf) < (_num(best, "train_loss") or -math.inf)
    if not train_falling:
        return None
    gap = _num(last, "gap_loss")
    return Finding(
        OVERFITTING, after[t.overfit_patience - 1]["epoch"],
        f"validation loss best at epoch {best['epoch']} ({best['val_loss']:.4g}), then rose for "
        f"{len(after)} epochs to {last['val_loss']:.4g} while training loss fell; gap {gap:.4g}"
        if gap is not None else "validation loss rose while training loss fell",
        {"best_epoch": float(best["epoch"]), "gap_loss": gap if gap is not None else math.nan},
    )


def stalled(rows: Sequence[Row], t: Thresholds) -> Finding | None:
    if len(rows) < t.stall_epochs:
        return None
    moved = []
    for key in ("train_loss", "val_loss"):
        values = [_num(r, key) for r in rows if _num(r, key) is not None]
        if len(values) < 2 or values[0] == 0:
            continue
        moved.append(max(abs(v - values[0]) for v in values) / abs(values[0]))
    if moved and max(moved) <= t.stall_tolerance:
        return Finding(STALLED, rows[-1]["epoch"],
                       f"neither loss moved more than {max(moved):.2%} in {len(rows)} epochs",
                       {"moved": max(moved)})
    return None


def alarm(rows: Sequence[Row], t: Thresholds) -> Finding | None:
    """What the diagnostics pruner stops a trial for: diverged, exploding, or vanishing for a while."""
    return diverged(rows, t) or exploding(rows, t) or vanishing(rows, t)


def diagnose(rows: Sequence[Row], t: Thresholds, failed: str | None = None) -> Finding:
    """The one diagnosis of a whole trial, most severe first.

    ``failed``: the reason a FAIL trial has no value. Such a trial is never healthy: unless its epochs
    show what went wrong (diverged, say), its diagnosis is ``failed``, with that reason.
    """
    short = min(t.vanishing_epochs, max(len(rows), 1))
    return (
        diverged(rows, t) or exploding(rows, t) or vanishing(rows, t, short)
        or overfitting(rows, t) or stalled(rows, t)
        or (Finding(FAILED, detail=failed) if failed is not None else Finding(HEALTHY))
    )
