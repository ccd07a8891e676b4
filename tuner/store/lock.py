"""One orchestrator per study on SQLite.

SQLite has no row locks to share a study's work safely, so a second
orchestrator on the same study is refused instead. The lock is an advisory
``flock`` on a file next to the database: the OS releases it when the process
dies, even by kill -9, so a resumed study never waits for a dead owner, and
holding it proves that no other orchestrator is running the study's trials.
On PostgreSQL several orchestrators may share a study; heartbeats tell live
trials from stale ones there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from tuner.errors import TunerError


@contextlib.contextmanager
def study_lock(url: str, study: str, doing: str | None = None) -> Iterator[bool]:
    """Hold the study's lock while the block runs; yields True when one was taken (SQLite).

    Whatever runs a study's trials holds it, and so does whatever deletes the study
    (``doing`` names that, e.g. "delete it"): a study is never deleted under its runner.
    """
    if doing is None:
        fix = ("SQLite allows one orchestrator per study. Fix: wait for it to finish (or stop it and run "
               "`tuner resume`), or use a PostgreSQL store to share a study between several orchestrators.")
    else:
        fix = f"Fix: wait for it to finish, or stop it, then {doing}."
    refusal = (f"study {study!r} is being run by another tuner process (pid {{owner}}) on this SQLite "
               f"file. {fix}")
    with _sqlite_flock(url, _file_part(study), refusal) as taken:
        yield taken


def _file_part(study: str) -> str:
    """The study's name as part of a file name: itself where it is short and plain, else cut with a digest."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", study)
    if safe == study and len(study) <= _MAX_PLAIN:
        return study
    return f"{safe[:_MAX_PLAIN // 2]}-{hashlib.sha256(study.encode()).hexdigest()[:16]}"


@contextlib.contextmanager
def scheduler_lock(url: str) -> Iterator[bool]:
    """One scheduler daemon per SQLite store; yields True when the lock was taken (SQLite)."""
    refusal = (
        "another tuner scheduler (pid {owner}) is running on this SQLite store. SQLite allows one "
        "scheduler daemon per store. Fix: stop it first, or use a PostgreSQL store, where several "
        "daemons may run and each firing is claimed by exactly one of them."
    )
    with _sqlite_flock(url, "scheduler", refusal) as taken:
        yield taken


@contextlib.contextmanager
def _sqlite_flock(url: str, suffix: str, refusal: str) -> Iterator[bool]:
    """An exclusive ``flock`` on ``<database>.<suffix>.lock``; ``refusal`` (with {owner}) if it is held.

    The file lives only while the lock is held: its holder removes it before letting go, so no lock
    file is left beside the store (one left by a killed holder is taken over, then removed). A
    process that opened the file just before it was removed finds its lock on a file no longer
    there, and opens the path again.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        yield False
        return
    path = Path(f"{Path(parsed.database).expanduser().resolve()}.{suffix}.lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise TunerError(refusal.format(owner=owner)) from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            break
        os.close(fd)  # its holder removed it meanwhile: the lock is the file now at the path
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield True
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still holding it, so no one takes a lock on a file about to go
        os.close(fd)  # closing releases the flock


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def study_mutex(engine: Engine, study_id: int) -> Iterator[None]:
    """Serialize count-then-ask between orchestrators sharing a study on PostgreSQL.

    A session-level advisory lock keyed by the study: held only around
    counting the budget and asking for the next trial. SQLite needs none (one
    orchestrator per study, see :func:`study_lock`).
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    key = _ADVISORY_NAMESPACE + study_id
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


# A study name longer than this is cut, with a digest, in its lock file's name (NAME_MAX is 255 bytes).
_MAX_PLAIN = 64
# Keeps tuner's advisory-lock keys apart from any other user of the database.
_ADVISORY_NAMESPACE = 0x7475_6E65 << 24
