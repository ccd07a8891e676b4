"""What the study store can hold of an epoch row: one rule for the worker's ``report()`` and the store.

Both databases tuner supports hold an epoch as a 32-bit INTEGER (PostgreSQL's
size, and Optuna's ``step`` of an intermediate value), ``iterations`` as a
64-bit BIGINT, and text without NUL characters (PostgreSQL refuses them). A
workload's ``report()`` refuses any other value, so the trial that reported it
fails with the reason and the study goes on; the store refuses it too, before
it writes anything, so no row gets past one of them.
"""

from __future__ import annotations

import math
from typing import Any

EPOCH_MAX = 2**31 - 1
ITERATIONS_MIN, ITERATIONS_MAX = -(2**63), 2**63 - 1


def epoch(value: Any) -> int:
    """The epoch, an int from 0 to EPOCH_MAX; TypeError or ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"report(epoch, ...): epoch must be an int, but got {value!r}")
    if not 0 <= value <= EPOCH_MAX:
        raise ValueError(f"report(epoch, ...): epoch must be from 0 to {EPOCH_MAX} (the store's INTEGER), but got "
                         f"{value}. Fix: count epochs 1, 2, 3, ...")
    return int(value)


def iterations(value: Any) -> int:
    """``iterations`` as the store's BIGINT holds it (a whole number, a float's fraction dropped)."""
    number: Any = value if isinstance(value, int) and not isinstance(value, bool) else number_of("iterations", value)
    if isinstance(number, float) and math.isfinite(number):
        number = int(number)
    if not isinstance(number, int) or not ITERATIONS_MIN <= number <= ITERATIONS_MAX:
        raise ValueError(f"report(epoch, iterations=...): iterations must be a whole number from {ITERATIONS_MIN} "
                         f"to {ITERATIONS_MAX} (the store's BIGINT), but got {value!r}. Fix: report the number "
                         "of steps run so far (an int).")
    return number


def number_of(key: str, value: Any) -> float:
    """A metric as a float (NaN and infinities included: a diverged run reports them)."""
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"report(epoch, {key}=...): metrics must be numbers, but got {_short(value)}") from None


def text(key: str, value: Any) -> str:
    """A text value (the device) as the store holds it: any length, no NUL character."""
    value = str(value)
    if "\x00" in value:
        raise ValueError(f"report(epoch, {key}=...): {key} must not hold a NUL character (\\x00), which "
                         f"PostgreSQL cannot store, but got {_short(value)}")
    return value


def name(key: str) -> str:
    """A metric's name, which the store keeps as text: no NUL character."""
    if "\x00" in key:
        raise ValueError(f"report(epoch, ...): a metric's name must not hold a NUL character (\\x00), but got "
                         f"{_short(key)}")
    return key


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 200 else f"{shown[:200]}... ({len(shown)} characters)"
