"""The scheduler daemon: fire due schedules exactly once, run each firing as a study, watch the runs.

Each run is a child process (``python -m tuner.schedule.run RUN``) that
launches the study with tuner's own orchestrator, connected to the
schedule's Ray cluster. A process per run, rather than a Ray job: a run that
crashes, hangs or leaks memory never takes the daemon down; the daemon keeps
firing other schedules while runs go; and the driver stays where the
database is reachable, as for `tuner launch` (Ray workers never touch the
database). The child dies with the daemon (SIGINT on the daemon's death), so
a run is never left going without a daemon that answers for it.

Exactly once: a firing is claimed by moving ``next_fire_at`` forward in the
same transaction that inserts its run, with the schedule row locked
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so a second daemon passes over a
schedule being fired instead of firing it again), and the run's (schedule,
firing time, attempt) is unique as a last guard. On SQLite a second daemon
is refused (a file lock, freed even by kill -9).

Time comes from ``clock`` (UTC), so tests drive a daemon with a fake clock.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

import sqlalchemy as sa

from tuner.errors import TunerError
from tuner.recovery import HEARTBEAT_GRACE
from tuner.schedule import timing
from tuner.schedule.book import ACTIVE, Clock, Schedules, study_name
from tuner.store import Store
from tuner.store.lock import scheduler_lock
from tuner.store.models import RunRecord, ScheduleRecord

# A firing handled later than this is a missed one (the daemon was down): catch_up decides.
MISFIRE_GRACE = timedelta(minutes=5)
# On PostgreSQL, a running run whose daemon has not beaten for this long has no daemon left.
RUN_GRACE = timedelta(minutes=2)
# How many missed firings are counted before the count stops (a schedule paused for years).
MAX_MISSED = 10_000
STOP_SECONDS = 30
# How long an interrupted run's trials may keep a fresh Optuna heartbeat (the orchestrator's grace).
TRIALS_GRACE = timedelta(seconds=HEARTBEAT_GRACE)

log = logging.getLogger("tuner")


class Child(Protocol):
    """A run being executed: what the daemon needs of it."""

    pid: int

    def poll(self) -> int | None: ...

    def interrupt(self) -> None: ...

    def tail(self) -> str: ...


Launcher = Callable[[str, int, "str | None"], Child]


class Scheduler:
    """Fires the store's due schedules and answers for the runs it starts."""

    def __init__(
        self,
        store: Store,
        clock: Clock = timing.utcnow,
        interval: float = 30.0,
        launcher: Launcher | None = None,
        run_grace: timedelta = RUN_GRACE,
    ) -> None:
        self.store = store
        self.book = Schedules(store, clock)
        self.interval = interval
        self.launcher = launcher or launch_child
        self.run_grace = run_grace
        self.me = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.children: dict[int, Child] = {}

    # ------------------------------------------------------------------ loop

    def serve(self, once: bool = False, sleep: Callable[[float], None] = time.sleep) -> None:
        """Tick every ``interval`` seconds until stopped; ``once``: fire what is due, wait for it, return."""
        with scheduler_lock(self.store.url):
            try:
                if once:  # one pass, then only watch what it started
                    self.tick()
                    while self.children:
                        sleep(min(self.interval, 0.5))
                        self._watch()
                        self._start_queued()
                    return
                while True:
                    self._tick_through_outages()
                    sleep(self.interval)
            finally:
                self.stop_children()

    def _tick_through_outages(self) -> None:
        """A pass; a database that is down (a restart, a network cut) is waited out, not fatal."""
        self._through_outage(self.tick, self.interval)

    def _through_outage(self, step: Callable[[], Any], retry: float) -> bool:
        """``step()``, True when the store answered; False (and a warning) when it was down."""
        try:
            step()
        except sa.exc.DBAPIError as exc:
            reason = self.store.redact(str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else "")
            log.warning("the store %s did not answer (%s); trying again in %g s", self.store.safe_url, reason, retry)
            return False
        return True

    def tick(self) -> None:
        """One pass: recover runs whose daemon died, fire due schedules, start queued runs, watch the rest."""
        self._recover()
        self._fire_due()
        self._start_queued()
        self._watch()

    def run_now(self, name: str, wait: Callable[[float], None] = time.sleep) -> RunRecord:
        """Fire ``name`` now, outside its cron times, and wait for the run to end."""
        now = self.book.now()
        with self.book.session() as session:
            sched = self.book._get(session, name)
            active = _active_run(session, sched.id)
            if active is not None:
                raise TunerError(
                    f"schedule {name!r} has a run still {active.status} (run {active.id}, study {active.study}). "
                    "Fix: wait for it to end (`tuner schedule show NAME`), then run-now again."
                )
            run = self._new_run(sched, now, "manual", "running")
            session.add(run)
            session.commit()
        self._spawn(run, sched)
        # The run waits out a database restart; so does this wait for it (`docker compose restart postgres`).
        while run.id in self.children:
            wait(0.5)
            self._through_outage(self._watch, 0.5)
        ended: list[RunRecord] = []
        while not self._through_outage(lambda: ended.append(self.book.run(run.id)[0]), 1.0):
            wait(1.0)
        return ended[0]

    # ------------------------------------------------------------------ firing

    def _fire_due(self) -> None:
        now = self.book.now()
        with self.book.session() as session:
            due = session.scalars(
                sa.select(ScheduleRecord)
                .where(ScheduleRecord.enabled.is_(True), ScheduleRecord.next_fire_at <= now)
                .order_by(ScheduleRecord.id)
                .with_for_update(skip_locked=True)
            ).all()
            runs = [(self._firing(session, sched, now), sched) for sched in due]
            session.add_all([run for run, _ in runs])
            try:
                session.commit()
            except sa.exc.IntegrityError:
                # Another daemon recorded one of these firings first: it is theirs.
                session.rollback()
                return
        for run, sched in runs:
            self._say(run, sched)
            if run.status == "running":
                self._spawn(run, sched)

    def _firing(self, session: Any, sched: ScheduleRecord, now: datetime) -> RunRecord:
        """The run for a due schedule (running, queued or skipped), and its next firing moved past now."""
        times = _due_times(sched, now)
        latest = times[-1]
        late = now - latest > MISFIRE_GRACE
        sched.next_fire_at = timing.next_after(sched.cron, sched.timezone, now)
        missed = len(times) - (0 if late else 1)
        if late and sched.catch_up == "skip":
            return self._new_run(sched, latest, "cron", "skipped", (
                f"missed {len(times)} firing(s) while no scheduler ran, the last at {latest:%Y-%m-%d %H:%M} UTC; "
                "catch_up: skip"))
        trigger = "catch-up" if missed else "cron"
        reason = f"{missed} missed firing(s) run once (catch_up: once)" if missed else None
        active = _active_run(session, sched.id)
        if active is None:
            return self._new_run(sched, latest, trigger, "running", reason)
        if sched.overlap == "skip":
            return self._new_run(sched, latest, trigger, "skipped",
                                 f"run {active.id} ({active.study}) was still {active.status}; overlap: skip")
        return self._new_run(sched, latest, trigger, "queued",
                             f"waits for run {active.id} ({active.study}); overlap: queue")

    def _new_run(self, sched: ScheduleRecord, moment: datetime, trigger: str, status: str,
                 reason: str | None = None, attempt: int = 1, study: str | None = None) -> RunRecord:
        now = self.book.now()
        running = status == "running"
        return RunRecord(
            schedule_id=sched.id, scheduled_for=moment, attempt=attempt, trigger=trigger,
            study=study or study_name(sched.name, moment), status=status, reason=reason,
            started_at=now if running else None, ended_at=now if status == "skipped" else None,
            daemon=self.me if running else None, heartbeat_at=now if running else None,
            handled=False,
        )

    def _start_queued(self) -> None:
        """Start each queued run whose schedule has nothing running any more (oldest first)."""
        with self.book.session() as session:
            queued = session.scalars(sa.select(RunRecord).where(RunRecord.status == "queued")
                                     .order_by(RunRecord.scheduled_for, RunRecord.id)).all()
        for run in queued:
            with self.book.session() as session:
                sched = session.scalar(sa.select(ScheduleRecord).where(ScheduleRecord.id == run.schedule_id)
                                       .with_for_update())
                if sched is None or _runs_of(session, sched.id, ("running",)):
                    continue
                now = self.book.now()
                claimed = session.execute(
                    sa.update(RunRecord).where(RunRecord.id == run.id, RunRecord.status == "queued")
                    .values(status="running", started_at=now, daemon=self.me, heartbeat_at=now)
                ).rowcount
                session.commit()
            if claimed == 1:
                run.status = "running"
                self._say(run, sched)
                self._spawn(run, sched)

    # ------------------------------------------------------------------ runs

    def _spawn(self, run: RunRecord, sched: ScheduleRecord) -> None:
        try:
            child = self.launcher(self.store.url, run.id, sched.workdir)
        except OSError as exc:
            self.book.finish(run.id, "failed", reason=f"the run's process could not start: {exc}")
            return
        self.children[run.id] = child
        with self.store.engine.begin() as conn:
            conn.execute(sa.update(RunRecord).where(RunRecord.id == run.id).values(pid=child.pid))

    def _watch(self) -> None:
        """Record runs whose process ended without saying how; beat for the live ones."""
        for run_id, child in list(self.children.items()):
            code = child.poll()
            if code is None:
                continue
            status = "interrupted" if code in (130, -signal.SIGINT) else "failed"
            self.book.finish(run_id, status, reason=f"the run's process exited with code {code}: {child.tail()}")
            del self.children[run_id]  # once recorded: a store that is down meanwhile is tried again
            run, sched = self.book.run(run_id)
            self._say(run, sched)
        if self.children:
            with self.store.engine.begin() as conn:
                conn.execute(sa.update(RunRecord).where(RunRecord.id.in_(list(self.children)))
                             .values(heartbeat_at=self.book.now()))

    def _recover(self) -> None:
        """Mark interrupted the runs no daemon answers for, then resume or report them (on_interrupt)."""
        now = self.book.now()
        with self.book.session() as session:
            running = session.scalars(sa.select(RunRecord).where(
                RunRecord.status == "running", RunRecord.id.not_in(list(self.children) or [-1]))).all()
        for run in running:
            if self._orphaned(run, now):
                with self.store.engine.begin() as conn:
                    conn.execute(sa.update(RunRecord).where(RunRecord.id == run.id, RunRecord.status == "running",
                                                            RunRecord.heartbeat_at == run.heartbeat_at).values(
                        status="interrupted", ended_at=now,
                        reason="the scheduler that ran it stopped (killed, or its machine went down)"))
        with self.book.session() as session:
            pending = session.scalars(sa.select(RunRecord).where(
                RunRecord.status == "interrupted", RunRecord.handled.is_(False))).all()
        for run in pending:
            self._handle_interrupted(run)

    def _orphaned(self, run: RunRecord, now: datetime) -> bool:
        """No live daemon answers for ``run``: its process is gone (same host), or it stopped beating."""
        if run.heartbeat_at is None or now - run.heartbeat_at > self.run_grace:
            return True
        host, _, rest = (run.daemon or "").partition(":")
        pid = rest.partition(":")[0]
        if host != socket.gethostname() or not pid.isdigit():
            return False  # another machine's daemon: only its heartbeat tells
        # A restarted container may give the new daemon its predecessor's pid.
        return int(pid) == os.getpid() or not _alive(int(pid))

    def _handle_interrupted(self, run: RunRecord) -> None:
        if self.store.backend == "postgresql" and self.book.now() - (run.ended_at or self.book.now()) < TRIALS_GRACE:
            # Its trials may still look alive there until their heartbeats age: a resume now would count
            # them as running. SQLite's resume holds the study's lock, so every RUNNING trial is stale at once.
            return
        with self.book.session() as session:
            claimed = session.execute(sa.update(RunRecord).where(RunRecord.id == run.id, RunRecord.handled.is_(False))
                                      .values(handled=True)).rowcount
            sched = session.get(ScheduleRecord, run.schedule_id)
            if claimed != 1 or sched is None:
                session.rollback()
                return
            active = _active_run(session, sched.id)
            why_not = ("on_interrupt: report" if sched.on_interrupt != "resume" else
                       "the schedule is paused" if not sched.enabled else
                       f"run {active.id} of the schedule is {active.status}" if active is not None else None)
            if why_not:
                session.commit()
                log.warning("run %d of %s (study %s) was interrupted (%s); not resumed: %s.",
                            run.id, sched.name, run.study, run.reason, why_not)
                return
            resumed = self._new_run(sched, run.scheduled_for, "resume", "running",
                                    f"resumes run {run.id}, interrupted: {run.reason}", run.attempt + 1, run.study)
            session.add(resumed)
            try:
                session.commit()
            except sa.exc.IntegrityError:
                session.rollback()
                return
        self._say(resumed, sched)
        self._spawn(resumed, sched)

    def stop_children(self) -> None:
        """Interrupt the runs this daemon started (they record themselves interrupted), then wait for them."""
        for child in self.children.values():
            child.interrupt()
        deadline = time.monotonic() + STOP_SECONDS
        while self.children and time.monotonic() < deadline:
            time.sleep(0.2)
            self._watch()

    def _say(self, run: RunRecord, sched: ScheduleRecord) -> None:
        what = {"running": "started", "queued": "queued", "skipped": "skipped"}.get(run.status, run.status)
        detail = f" ({run.reason})" if run.reason else ""
        if run.status == "succeeded":
            detail = f": best {run.best_value:.6g}" if run.best_value is not None else ""
            if run.change is not None:
                detail += f" ({run.change:+.4g} against run {run.previous_run_id})"
        log.info("schedule %s: run %d %s, study %s%s", sched.name, run.id, what, run.study, detail)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _due_times(sched: ScheduleRecord, now: datetime) -> list[datetime]:
    """Every firing from the unclaimed ``next_fire_at`` up to ``now`` (at most MAX_MISSED)."""
    times = [sched.next_fire_at]
    while len(times) < MAX_MISSED:
        nxt = timing.next_after(sched.cron, sched.timezone, times[-1])
        if nxt > now:
            break
        times.append(nxt)
    return times


def _runs_of(session: Any, schedule_id: int, statuses: tuple[str, ...]) -> list[RunRecord]:
    return list(session.scalars(sa.select(RunRecord).where(RunRecord.schedule_id == schedule_id,
                                                           RunRecord.status.in_(statuses))
                                .order_by(RunRecord.id.desc())))


def _active_run(session: Any, schedule_id: int) -> RunRecord | None:
    runs = _runs_of(session, schedule_id, ACTIVE)
    return runs[0] if runs else None


# ---------------------------------------------------------------------- child processes


class ChildProcess:
    """A run's process, its output kept in a temporary file for the record."""

    def __init__(self, popen: subprocess.Popen, output: IO[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.output = output

    def poll(self) -> int | None:
        return self.popen.poll()

    def interrupt(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)

    def tail(self, lines: int = 5) -> str:
        self.output.seek(0)
        text = self.output.read().decode(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"


def launch_child(url: str, run_id: int, workdir: str | None) -> ChildProcess:
    """Start ``python -m tuner.schedule.run RUN`` (the store's URL in the environment, never in `ps`)."""
    output = tempfile.TemporaryFile()
    cwd = workdir if workdir and Path(workdir).is_dir() else None
    env = {**os.environ, "TUNER_STORAGE": url, "PYTHONUNBUFFERED": "1"}
    if cwd:
        # A spec's workload module is importable from where the schedule was added, as for `tuner launch`.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, os.environ.get("PYTHONPATH")) if p)
    popen = subprocess.Popen([sys.executable, "-m", "tuner.schedule.run", str(run_id)], cwd=cwd, env=env,
                             stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                             preexec_fn=_die_with_parent)
    return ChildProcess(popen, output)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGINT when the daemon dies, so it records itself interrupted."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)
