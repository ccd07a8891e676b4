"""The schedule book: schedules and their runs in the store (``tuner_schedules``, ``tuner_runs``).

Every check on what a user asks for happens here, before anything is
written: the name, the cron expression and its timezone, the spec (it must
validate now), the policies. A schedule that is added is one that can fire.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tuner.errors import TunerError
from tuner.schedule import timing
from tuner.schedule.secrets import without_password
from tuner.spec import NAME_PATTERN, load_spec
from tuner.store import Store
from tuner.store.models import RunRecord, ScheduleRecord
from tuner.store.sql import check_url

POLICIES = {
    "overlap": ("skip", "queue"),
    "catch_up": ("once", "skip"),
    "on_interrupt": ("resume", "report"),
    "executor": ("ray", "inline"),
}
ACTIVE = ("queued", "running")
Clock = Callable[[], datetime]


class Schedules:
    """Add, read, pause and remove schedules; read their runs."""

    def __init__(self, store: Store, clock: Clock = timing.utcnow) -> None:
        self.store = store
        self.clock = clock

    def session(self) -> Session:
        # Objects stay readable after the session closes: callers get plain records.
        return Session(self.store.engine, expire_on_commit=False)

    def now(self) -> datetime:
        return timing.to_naive(self.clock())

    # ------------------------------------------------------------------ writing

    def add(
        self,
        name: str,
        spec_path: str | Path,
        cron: str,
        *,
        timezone: str = "UTC",
        warm_start: int = 0,
        overlap: str = "skip",
        catch_up: str = "once",
        on_interrupt: str = "resume",
        storage: str | None = None,
        ray_address: str | None = None,
        executor: str = "ray",
    ) -> ScheduleRecord:
        """Validate everything, then write the schedule with its first firing time."""
        _check_name(name)
        cron = timing.check_cron(cron)
        timezone = timing.check_timezone(timezone)
        for field, value in (("overlap", overlap), ("catch_up", catch_up), ("on_interrupt", on_interrupt),
                             ("executor", executor)):
            _check_policy(field, value)
        if isinstance(warm_start, bool) or not isinstance(warm_start, int) or warm_start < 0:
            raise TunerError(f"--warm-start: the number of best configurations to carry over must be a whole "
                             f"number >= 0, but got {warm_start!r}. Fix: e.g. --warm-start 5 (0 turns it off).")
        if storage is not None:
            check_url(storage)
            storage = without_password(storage)  # supplied by the daemon at run time (see run.study_storage)
        path = Path(spec_path).expanduser().resolve()
        load_spec(path)  # a schedule that cannot launch now is refused now
        now = self.now()
        record = ScheduleRecord(
            name=name, cron=cron, timezone=timezone, spec_path=str(path), spec_text=path.read_text(),
            workdir=os.getcwd(), storage=storage, ray_address=ray_address, executor=executor, enabled=True,
            overlap=overlap, catch_up=catch_up, on_interrupt=on_interrupt, warm_start=warm_start,
            next_fire_at=_first_firing(cron, timezone, now), created_at=now,
        )
        taken = TunerError(f"schedule {name!r} already exists in {self.store.safe_url}. Fix: choose another name, "
                           f"or `tuner schedule remove {name}` first to replace it.")
        with self.session() as session:
            if session.scalar(sa.select(ScheduleRecord.id).where(ScheduleRecord.name == name)) is not None:
                raise taken
            session.add(record)
            try:
                session.commit()
            except sa.exc.IntegrityError:  # added by someone else between the check and the insert
                raise taken from None
        return record

    def set_enabled(self, name: str, enabled: bool) -> ScheduleRecord:
        """Pause or resume; a resumed schedule fires next at its next time from now, not for the pause."""
        with self.session() as session:
            record = self._get(session, name)
            record.enabled = enabled
            if enabled:
                record.next_fire_at = timing.next_after(record.cron, record.timezone, self.now())
            session.commit()
            return record

    def remove(self, name: str) -> None:
        with self.session() as session:
            record = self._get(session, name)
            session.execute(sa.delete(RunRecord).where(RunRecord.schedule_id == record.id))
            session.delete(record)
            session.commit()

    # ------------------------------------------------------------------ reading

    def get(self, name: str) -> ScheduleRecord:
        with self.session() as session:
            return self._get(session, name)

    def all(self) -> list[ScheduleRecord]:
        with self.session() as session:
            return list(session.scalars(sa.select(ScheduleRecord).order_by(ScheduleRecord.name)))

    def runs(self, name: str | None = None, limit: int | None = None) -> list[RunRecord]:
        """Runs, newest first (of one schedule when ``name`` is given)."""
        query = sa.select(RunRecord).order_by(RunRecord.scheduled_for.desc(), RunRecord.attempt.desc())
        with self.session() as session:
            if name is not None:
                query = query.where(RunRecord.schedule_id == self._get(session, name).id)
            return list(session.scalars(query.limit(limit)))

    def run(self, run_id: int) -> tuple[RunRecord, ScheduleRecord]:
        with self.session() as session:
            run = session.get(RunRecord, run_id)
            if run is None:
                raise TunerError(f"no run {run_id} in {self.store.safe_url}.")
            return run, session.get(ScheduleRecord, run.schedule_id)

    def previous_success(self, run: RunRecord) -> RunRecord | None:
        """The latest run of the same schedule, before this one, that succeeded with a best value."""
        query = (
            sa.select(RunRecord)
            .where(RunRecord.schedule_id == run.schedule_id, RunRecord.id != run.id,
                   RunRecord.status == "succeeded", RunRecord.best_value.is_not(None),
                   RunRecord.scheduled_for <= run.scheduled_for)
            .order_by(RunRecord.scheduled_for.desc(), RunRecord.id.desc())
            .limit(1)
        )
        with self.session() as session:
            return session.scalar(query)

    def finish(self, run_id: int, status: str, **fields: Any) -> None:
        """Record how a run ended (only a run still going can end: a finished record is kept)."""
        with self.store.engine.begin() as conn:
            conn.execute(
                sa.update(RunRecord)
                .where(RunRecord.id == run_id, RunRecord.status.in_(ACTIVE))
                .values(status=status, ended_at=self.now(), **fields)
            )

    def _get(self, session: Session, name: str) -> ScheduleRecord:
        record = session.scalar(sa.select(ScheduleRecord).where(ScheduleRecord.name == name))
        if record is None:
            names = list(session.scalars(sa.select(ScheduleRecord.name).order_by(ScheduleRecord.name)))
            known = f"Schedules there: {', '.join(names)}." if names else "It holds no schedules yet."
            raise TunerError(f"no schedule named {name!r} in {self.store.safe_url}. {known} "
                             "Fix: check the name (`tuner schedule list`).")
        return record


def study_name(schedule: str, moment: datetime) -> str:
    """The study a firing launches: the schedule's name and the firing time (UTC), e.g. nightly-20261201T0200Z.

    Cron firings fall on whole minutes; a manual one (run-now) is named to the
    second, so two run-nows in one minute launch two studies.
    """
    seconds = f"{moment:%S}" if moment.second else ""
    return f"{schedule}-{moment:%Y%m%dT%H%M}{seconds}Z"


def _first_firing(cron: str, tz: str, now: datetime) -> datetime:
    try:
        return timing.next_after(cron, tz, now)
    except Exception:  # croniter gives up on dates that never come (Feb 30)
        raise TunerError(f"--cron: {cron!r} never fires (no such date comes in the next years). "
                         "Fix: check the day of month and the month.") from None


def _check_name(name: str) -> None:
    if not re.fullmatch(NAME_PATTERN, name or "") or len(name) > 100:
        raise TunerError(
            f"schedule name: must start with a letter or digit and hold only letters, digits, '.', '_' and "
            f"'-' (at most 100), but got {name!r}. Fix: e.g. nightly-mnist1d."
        )


def _check_policy(field: str, value: str) -> None:
    valid = POLICIES[field]
    if value not in valid:
        flag = "--" + field.replace("_", "-")
        raise TunerError(f"{flag}: must be one of {', '.join(valid)}, but got {value!r}. Fix: e.g. {flag} {valid[0]}.")
