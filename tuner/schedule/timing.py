"""Cron expressions and timezones: validated with croniter and zoneinfo, never parsed by hand.

All times in the store are naive UTC; a schedule's cron is read in its own
timezone, so "0 2 * * *" in Europe/Berlin fires at 02:00 Berlin time across
daylight-saving changes.
"""

from __future__ import annotations

import difflib
from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter

from tuner.errors import TunerError

FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day of week", "0-6 or sun-sat (7 is Sunday too)"),
)
ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def check_cron(expr: str) -> str:
    """``expr`` if it is a five-field cron expression (or an @alias), else a TunerError naming the field."""
    expr = " ".join(str(expr).split())
    if expr.lower() in ALIASES:
        return expr.lower()
    fields = expr.split(" ")
    if len(fields) != len(FIELDS):
        raise TunerError(
            f"--cron: a cron expression has 5 fields (minute hour day-of-month month day-of-week), but "
            f"{expr!r} has {len(fields)}. Fix: e.g. --cron \"0 2 * * *\" (02:00 every day), or one of "
            f"{', '.join(ALIASES)}."
        )
    for i, (label, allowed) in enumerate(FIELDS):
        # Each field alone, the others '*': so the message can say which one is wrong.
        probe = ["*"] * len(FIELDS)
        probe[i] = fields[i]
        if not croniter.is_valid(" ".join(probe)):
            raise TunerError(
                f"--cron: field {i + 1} ({label}) of {expr!r} is {fields[i]!r}, which is not valid: the "
                f"{label} takes {allowed}, as a value, a list (1,15), a range (1-5) or a step (*/10). "
                "Fix: correct that field, e.g. --cron \"0 2 * * *\"."
            )
    if not croniter.is_valid(expr):
        raise TunerError(f"--cron: {expr!r} is not a valid cron expression. Fix: e.g. --cron \"0 2 * * *\".")
    return expr


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA timezone this machine knows, else a TunerError with the nearest names."""
    try:
        ZoneInfo(name)
        return name
    except (ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, _zones(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise TunerError(
            f"--timezone: {name!r} is not a known IANA timezone.{hint} Fix: use a name such as UTC, "
            "Europe/Berlin or America/New_York."
        ) from None


@lru_cache(maxsize=1)
def _zones() -> list[str]:
    return sorted(available_timezones())


def next_after(expr: str, tz: str, after: datetime) -> datetime:
    """The first firing of ``expr`` in ``tz`` strictly after ``after`` (naive UTC in, naive UTC out)."""
    local = to_aware(after).astimezone(ZoneInfo(tz))
    times = croniter(expr, local)
    nxt = times.get_next(datetime)
    # When the clocks fall back, a local time comes twice: it fires once, as in cron.
    while nxt.replace(tzinfo=None) == local.replace(tzinfo=None):
        nxt = times.get_next(datetime)
    return nxt.astimezone(timezone.utc).replace(tzinfo=None)


def to_aware(moment: datetime) -> datetime:
    """A naive UTC datetime (as stored) made aware; aware ones are converted to UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def to_naive(moment: datetime) -> datetime:
    """UTC without tzinfo, the form the store keeps (SQLite has no timezone type)."""
    return to_aware(moment).replace(tzinfo=None)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
