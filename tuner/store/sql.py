"""The study store: Optuna's RDB storage plus tuner's tables, one database.

Writes are batched. Optuna's ``trial.report()`` commits one value per call,
which caps it at a few hundred values per second on SQLite; here a batch of
epoch rows (and their Optuna intermediate values) goes in one transaction.
Only the orchestrator writes, so concurrent trials never contend for SQLite's
lock; WAL mode lets readers (the dashboard, ``tuner show``) read meanwhile.
The same code runs on PostgreSQL; tests/test_store.py holds both to one contract.

Epoch rows belong to their trial: deleting a trial deletes them (a foreign key,
see tuner/store/schema.py), and copying a trial of this database from a template
(optuna.copy_study, optuna-dashboard's rename) copies them to the new trial.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial
from sqlalchemy.engine import URL, Engine, make_url

from tuner.errors import StorageError
from tuner.store import internals, schema
from tuner.store.models import COLUMNS, Base, EpochRecord
from tuner.trial import limits

DEFAULT_URL = "sqlite:///tuner.db"
log = logging.getLogger("tuner")
SUPPORTED_BACKENDS = ("sqlite", "postgresql")
_IV = internals.INTERMEDIATE_VALUES
_UA = internals.USER_ATTRIBUTES
_TRIALS = internals.TRIALS
_OPEN_ATTEMPTS = 4
# What to check, by a clue in the driver's reason; the last entry is the default.
_OPEN_FIXES = (
    ("password authentication failed", "check the user name and password in {source}, and "
     "URL-encode special characters in the password (@ as %40, : as %3A, / as %2F, % as %25)"),
    ("does not exist", "check the user and database names in {source}; create a new "
     "database first (createdb NAME)"),
    ("", "check that the database server is running and reachable at that host and port, and the user, "
     "password and database name in {source}"),
)
# What to do where a URL names a driver that is not installed.
_DRIVER_FIXES = {
    "psycopg2": "use postgresql+psycopg://... (psycopg 3, which `pip install \"tuner[postgres]\"` installs), or "
                "pip install psycopg2-binary",
    "psycopg": 'pip install "tuner[postgres]" (or pip install "psycopg[binary]")',
}
# Where a URL may come from, first found wins (Optuna's own CLI reads OPTUNA_STORAGE).
URL_VARIABLES = ("TUNER_STORAGE", "OPTUNA_STORAGE")
# Variables that hold a database's URL, password, or where to find one: the orchestrator's alone. A local
# Ray's processes (and the workloads they run) start without them; workers never touch the store.
SECRET_VARIABLES = (
    *URL_VARIABLES, "TUNER_STORAGE_PASSWORD_FILE",
    # libpq's (psycopg's) password, password file, service file and service name, and client key.
    "PGPASSWORD", "PGPASSFILE", "PGSERVICEFILE", "PGSERVICE", "PGSSLKEY",
    "MYSQL_PWD",  # MySQL's password
)
_JOURNAL_PEEK = 1 << 20  # bytes of a suspected JournalStorage file read to name its studies


def url_source(url: str | None = None) -> str:
    """Where :func:`resolve_url` finds the URL, as a user would name it in a fix."""
    if url:
        return "--storage / storage="
    return next((f"${name}" for name in URL_VARIABLES if os.environ.get(name)), "the default")


def resolve_url(url: str | None = None) -> str:
    """The storage URL to use: the argument, else $TUNER_STORAGE, else $OPTUNA_STORAGE, else ./tuner.db.

    A URL without a password takes the one in $TUNER_STORAGE_PASSWORD_FILE
    when that is set (a Docker or Kubernetes secret), so no password needs to
    sit in the environment or on a command line.
    """
    source = url_source(url)
    url = url or next((os.environ[n] for n in URL_VARIABLES if os.environ.get(n)), DEFAULT_URL)
    secret = os.environ.get("TUNER_STORAGE_PASSWORD_FILE")
    if not secret or url.startswith("sqlite"):
        return url
    parsed = _parse(url, source)
    if parsed.password is not None:
        return url
    try:
        password = Path(secret).read_text().strip()
    except OSError as exc:
        raise StorageError(
            f"TUNER_STORAGE_PASSWORD_FILE: cannot read {secret!r}: {exc.strerror}{_whose(secret, exc)}. Fix: point "
            "it to a readable file that holds the database password, or unset it."
        ) from None
    return parsed.set(password=password).render_as_string(hide_password=False)


def _whose(path: str, exc: OSError) -> str:
    """For a file this process may not read: its mode and owner, and who asks (a mounted secret keeps its owner)."""
    if not isinstance(exc, PermissionError):
        return ""
    try:
        info = os.stat(path)
    except OSError:
        return ""
    return (f" (mode {info.st_mode & 0o777:o}, owned by uid {info.st_uid}; this process runs as uid {os.getuid()}: "
            f"make it readable by uid {os.getuid()}, e.g. chmod 644 inside a chmod 700 folder)")


def safe_url(url: str) -> str:
    """The URL with its password masked, for every message a user sees.

    The password runs from the user name's ``:`` to the *last* ``@``: a password
    typed without URL-encoding may hold ``@``, ``:`` or ``/``, and a URL parser
    then splits it in the wrong place and would show the rest as the host.
    """
    head, sep, rest = url.partition("://")
    if head.startswith("sqlite"):
        return url  # a file path, which may hold ":" and "@"; never a password
    if not sep:
        head, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:***@{host}"
    # libpq also takes a password as a query parameter (?password=...).
    return head + sep + re.sub(r"(?i)(\bpassword=)[^&]*", r"\1***", rest)


def check_url(url: str) -> None:
    """Raise a StorageError naming the fix for a URL the store cannot use, without connecting."""
    _parse(url, url_source(url))


class NoStore(StorageError):
    """There is no store at the URL (a missing SQLite file, a database without Optuna's tables)."""


class Store:
    """Optuna's storage and tuner's tables on one SQLAlchemy engine."""

    def __init__(self, url: str | None = None, create: bool = True) -> None:
        """Open the store at ``url``; with ``create=False`` (a command that reads) only one that exists.

        A store that exists is one with Optuna's tables: an SQLite file that is missing, or a
        database without them (a mistyped path or name), is refused with a StorageError, and
        nothing is created there.
        """
        self.source = url_source(url)
        self.url = resolve_url(url)
        self.safe_url = safe_url(self.url)
        parsed = _parse(self.url, self.source)
        self.backend = parsed.get_backend_name()
        if not create:
            self._check_exists(parsed)
        self.storage = self._open(parsed)
        self.engine: Engine = self.storage.engine

    @classmethod
    def existing(cls, url: str | None = None) -> Store | None:
        """The store at ``url`` if there is one; None where there is none yet (nothing is created)."""
        try:
            return cls(url, create=False)
        except NoStore:
            return None

    def _check_exists(self, parsed: URL) -> None:
        def missing(why: str) -> StorageError:
            return NoStore(f"no tuner store at {self.safe_url} (from {self.source}): {why}. Fix: check the URL "
                                "(a store is made by `tuner launch`), or launch a study there first.")

        if self.backend == "sqlite":
            file = Path(parsed.database or "").expanduser()
            if not file.exists():  # connecting would create the file
                raise missing(f"the file {str(file)!r} does not exist")
        engine = None
        try:
            engine = sa.create_engine(self.url, **_engine_kwargs(parsed))
            with engine.connect() as conn:
                tables = sa.inspect(conn)
                made = tables.has_table(internals.STUDIES.name) and tables.has_table(_TRIALS.name)
        except Exception as exc:
            raise StorageError(_unreachable(self.url, exc, self.source)) from None
        finally:
            if engine is not None:
                engine.dispose()
        if not made:
            raise missing("it holds no studies (no Optuna tables)")

    def _open(self, parsed: URL) -> optuna.storages.RDBStorage:
        """Optuna's storage on a new engine, with tuner's tables created next to Optuna's."""
        attempt = 1
        while True:
            try:
                storage = _RDBStorage(self.url, engine_kwargs=_engine_kwargs(parsed), skip_compatibility_check=True)
                schema.check_version(storage, self.safe_url)
                if self.backend == "sqlite":
                    _tune_sqlite(storage.engine)
                Base.metadata.create_all(storage.engine)
                dropped = schema.tie_epochs(storage)
                if dropped:
                    log.warning(f"{self.safe_url}: dropped {dropped} epoch rows of deleted trials while adding "
                                "the foreign key that keeps epoch rows with their trial")
                return storage
            except StorageError:
                raise
            except Exception as exc:
                # Two processes opening a new database at once race to create the
                # same tables (create_all checks, then creates): the loser finds
                # them made, and its next attempt succeeds.
                if attempt == _OPEN_ATTEMPTS or not _lost_schema_race(exc):
                    raise StorageError(_unreachable(self.url, exc, self.source)) from None
                time.sleep(0.05 * attempt)
                attempt += 1

    # ------------------------------------------------------------------ studies

    def study_names(self) -> list[str]:
        return [s.study_name for s in self.storage.get_all_studies()]

    def has_study(self, name: str) -> bool:
        try:
            self.storage.get_study_id_from_name(name)
            return True
        except KeyError:
            return False

    def check_new(self, name: str) -> None:
        if self.has_study(name):
            raise StorageError(
                f"study {name!r} already exists in {self.safe_url}. Fix: pass --study NEW_NAME "
                f"for a new study, or run `tuner resume {shlex.quote(name)}` to continue it."
            )

    def create_study(
        self, name: str, direction: str | Sequence[str], sampler: optuna.samplers.BaseSampler | None = None
    ) -> optuna.Study:
        """A new study; ``direction`` a list of several makes it multi-objective (Optuna's ``directions``)."""
        from tuner.spec import check_study_name

        check_study_name(name, "study name")
        self.check_new(name)
        several = not isinstance(direction, str) and len(direction) > 1
        return optuna.create_study(
            storage=self.storage, study_name=name, sampler=sampler,
            **({"directions": list(direction)} if several else
               {"direction": direction if isinstance(direction, str) else direction[0]}),
        )

    def load_study(self, name: str, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        if not self.has_study(name):
            names = self.study_names()
            known = f"Studies there: {', '.join(names)}." if names else "It holds no studies yet."
            raise StorageError(f"no study named {name!r} in {self.safe_url}. {known}")
        return optuna.load_study(study_name=name, storage=self.storage, sampler=sampler)

    def delete_study(self, name: str) -> tuple[int, int]:
        """Delete a study, its trials and their epoch rows; returns how many trials and rows went."""
        study = self.load_study(name)
        trials, rows = len(study.get_trials(deepcopy=False)), self.count_epochs(study)
        self.storage.delete_study(internals.study_id(study))  # the foreign key takes the epoch rows along
        return trials, rows

    def copy_study(self, name: str, to: Store, new_name: str | None = None) -> tuple[int, int]:
        """Copy a study, its trials and their epoch rows into ``to`` (this store or another one).

        Returns how many trials and epoch rows were copied. Optuna copies the
        study; the epoch rows follow, remapped to the new trial ids. A copy that
        fails halfway is deleted.
        """
        from tuner.spec import check_study_name

        new_name = new_name or name
        check_study_name(new_name, "study name")
        source = self.load_study(name)
        taken = StorageError(
            f"study {new_name!r} already exists in {to.safe_url}. Fix: pass --name NEW_NAME to copy it under "
            f"another name, or delete that study first (`tuner delete {shlex.quote(new_name)}`)."
        )
        if to.has_study(new_name):
            raise taken
        try:
            optuna.copy_study(from_study_name=name, from_storage=self.storage, to_storage=to.storage,
                              to_study_name=new_name)
        except optuna.exceptions.DuplicatedStudyError:  # made meanwhile by someone else: theirs, not ours to delete
            raise taken from None
        except BaseException:
            to._delete_if_there(new_name)
            raise
        try:
            copy = to.load_study(new_name)
            # optuna.copy_study adds the trials in get_trials' order, which numbers them anew.
            pairs = zip(source.get_trials(deepcopy=False), copy.get_trials(deepcopy=False), strict=True)
            new_ids = {old.number: internals.trial_id(new) for old, new in pairs}
            rows = [{**row, "trial_id": new_ids[row["trial"]]} for row in self.epochs(source)]
            to.record_epochs(rows)  # rows the copy already has (same database: see _RDBStorage) are skipped
        except BaseException:
            to._delete_if_there(new_name)
            raise
        return len(new_ids), len(rows)

    def enqueue_trials(self, study: optuna.Study, points: Sequence[Mapping[str, Any]],
                       user_attrs: Mapping[str, Any] | None = None) -> int:
        """Queue ``points`` as WAITING trials, as Optuna's ``enqueue_trial`` does, all in one transaction.

        All or nothing, and fast: Optuna's ``enqueue_trial`` commits each trial on its own (a few
        hundred a second on SQLite; an interrupt leaves part of a list queued). The study's row is
        locked first, as Optuna does to number a new trial, so numbers never collide with a trial
        created meanwhile. Returns how many were queued.
        """
        if not points:
            return 0
        sid = internals.study_id(study)
        studies, system, user = internals.STUDIES, internals.SYSTEM_ATTRIBUTES.__table__, _UA.__table__
        attrs = [(key, json.dumps(value)) for key, value in (user_attrs or {}).items()]
        with self.engine.begin() as conn:
            # A write to the study's row: PostgreSQL locks the row, SQLite takes its write lock.
            conn.execute(studies.update().where(studies.c.study_id == sid).values(study_name=studies.c.study_name))
            first = conn.execute(sa.select(sa.func.count()).select_from(_TRIALS)
                                 .where(_TRIALS.c.study_id == sid)).scalar_one()
            conn.execute(_TRIALS.insert(), [
                {"study_id": sid, "number": first + i, "state": optuna.trial.TrialState.WAITING,
                 "datetime_start": None, "datetime_complete": None} for i in range(len(points))])
            ids = dict(conn.execute(sa.select(_TRIALS.c.number, _TRIALS.c.trial_id)
                                    .where(_TRIALS.c.study_id == sid, _TRIALS.c.number >= first)).all())
            conn.execute(system.insert(), [
                {"trial_id": ids[first + i], "key": internals.FIXED_PARAMS, "value_json": json.dumps(dict(params))}
                for i, params in enumerate(points)])
            if attrs:
                conn.execute(user.insert(), [{"trial_id": ids[first + i], "key": key, "value_json": value}
                                             for i in range(len(points)) for key, value in attrs])
        return len(points)

    def count_trials(self, study: optuna.Study, states: Iterable[optuna.trial.TrialState]) -> int:
        """How many of the study's trials are in one of ``states``, counted by the database."""
        query = (sa.select(sa.func.count()).select_from(_TRIALS)
                 .where(_TRIALS.c.study_id == internals.study_id(study), _TRIALS.c.state.in_(list(states))))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def _delete_if_there(self, name: str) -> None:
        try:
            self.storage.delete_study(self.storage.get_study_id_from_name(name))
        except KeyError:
            pass

    # ------------------------------------------------------------------ epochs

    def record_epochs(
        self, rows: Sequence[Mapping[str, Any]], value_of: str | Callable[[Mapping[str, Any]], float | None] | None = None
    ) -> None:
        """Write epoch rows, and each one's objective as Optuna's intermediate value, in one transaction.

        Each row has ``trial_id`` and ``epoch``; ``value_of`` is the metric's
        name or a function of the row. Rows already stored are skipped, so
        recording the same epoch twice is harmless.
        """
        if not rows:
            return
        records = [_epoch_record(row) for row in rows]
        if isinstance(value_of, str):
            metric = value_of
            value_of = lambda row: row.get(metric)  # noqa: E731
        values = [_intermediate(row, value_of(row)) for row in rows] if value_of else []
        values = [v for v in values if v is not None]
        with self.engine.begin() as conn:
            if self.backend == "sqlite":
                # Plain executemany on SQLite's driver: SQLAlchemy's per-row parameter
                # processing would cost more than the insert itself.
                conn.exec_driver_sql(_SQLITE_EPOCHS, [_epoch_tuple(r) for r in records])
                if values:
                    conn.exec_driver_sql(_SQLITE_VALUES, [_value_tuple(v) for v in values])
                return
            conn.execute(self._insert_ignore(EpochRecord.__table__, ["trial_id", "epoch"]), records)
            if values:
                conn.execute(self._insert_ignore(_IV.__table__, ["trial_id", "step"]), values)

    def set_trial_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Set Optuna user attributes of one trial in one transaction (dashboard-visible).

        One upsert (INSERT ... ON CONFLICT DO UPDATE): orchestrators sharing a
        study may write the same attribute of a trial at the same moment (their
        checkpoint retention), where a delete then an insert would collide on
        the table's unique (trial_id, key).
        """
        if not attrs:
            return
        table = _UA.__table__
        insert = self._dialect_insert(table).values(
            [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()])
        upsert = insert.on_conflict_do_update(index_elements=["trial_id", "key"],
                                              set_={"value_json": insert.excluded.value_json})
        with self.engine.begin() as conn:
            conn.execute(upsert)

    def count_epochs(self, study: optuna.Study) -> int:
        """How many epoch rows the study's trials have."""
        ep = EpochRecord.__table__
        query = (sa.select(sa.func.count()).select_from(ep.join(_TRIALS, _TRIALS.c.trial_id == ep.c.trial_id))
                 .where(_TRIALS.c.study_id == internals.study_id(study)))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def epochs(self, study: optuna.Study, numbers: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """Per-epoch rows of a study, ordered by trial number then epoch."""
        trials = _TRIALS
        ep = EpochRecord.__table__
        study_id = internals.study_id(study)
        query = (
            sa.select(trials.c.number.label("trial"), *[c for c in ep.c if c.name not in ("id",)])
            .join(trials, trials.c.trial_id == ep.c.trial_id)
            .where(trials.c.study_id == study_id)
            .order_by(trials.c.number, ep.c.epoch)
        )
        if numbers is not None:  # a number past 64 bits is no trial's (and the driver cannot bind it)
            query = query.where(trials.c.number.in_([n for n in numbers if -2**63 <= n < 2**63]))
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            row.pop("trial_id", None)
            row.update(row.pop("extra") or {})
        return rows

    def _insert_ignore(self, table: sa.Table, keys: list[str]) -> Any:
        if self.backend == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table).on_conflict_do_nothing(index_elements=keys)

    def _dialect_insert(self, table: sa.Table) -> Any:
        """The backend's own INSERT, which has ON CONFLICT."""
        if self.backend == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def redact(self, text: str) -> str:
        """``text`` (a driver's message, say) with this store's password masked in every spelling."""
        return _without_password(text, self.url)

    def close(self) -> None:
        self.engine.dispose()


class _RDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, whose trials copied from a trial of this database keep its epoch rows.

    optuna.copy_study, Study.add_trial(s) and optuna-dashboard's rename (copy the
    trials, then delete the study) create each trial from a template; without
    this the copy would have no epoch rows, and the rename would lose them.
    Optuna's cached storage calls ``_create_new_trial``, so that is the hook.
    """

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        trial = super()._create_new_trial(study_id, template_trial)
        if template_trial is not None and template_trial.datetime_start is not None:
            _copy_epochs(self.engine, template_trial, internals.trial_id(trial))
        return trial


def _copy_epochs(engine: Engine, template: FrozenTrial, trial_id: int) -> None:
    """Copy the epoch rows of ``template`` to trial ``trial_id`` where ``template`` is a trial of this database.

    A template's trial id may name a trial of another database (a copy between
    two stores), so the trial must also have the template's number and start
    time, which a copy keeps and an unrelated trial does not share.
    """
    ep = EpochRecord.__table__
    names = [c.name for c in ep.columns if c.name not in ("id", "trial_id")]
    rows = (
        sa.select(sa.cast(sa.literal(trial_id), sa.Integer), *[ep.c[n] for n in names])
        .select_from(ep.join(_TRIALS, _TRIALS.c.trial_id == ep.c.trial_id))
        .where(ep.c.trial_id == internals.trial_id(template), _TRIALS.c.number == template.number,
               _TRIALS.c.datetime_start == template.datetime_start)
    )
    with engine.begin() as conn:
        conn.execute(ep.insert().from_select(["trial_id", *names], rows))


# ---------------------------------------------------------------------- helpers


def _parse(url: str, source: str) -> URL:
    if "://" not in url:
        raise StorageError(_a_path_not_a_url(url, source))
    try:
        parsed = make_url(url)
    except Exception:
        raise StorageError(
            f"storage URL {safe_url(url)!r} (from {source}) is malformed. Fix: use sqlite:///path/to/file.db or "
            "postgresql+psycopg://user:password@host:5432/dbname (URL-encode special characters "
            "in the password)."
        ) from None
    if "@" in (parsed.host or ""):
        # "user:p@ss@host" parses as password "p" on host "ss@host".
        raise StorageError(
            f"storage URL {safe_url(url)!r} (from {source}) is malformed: its host holds "
            "an '@'. Fix: URL-encode special characters in the password (@ as %40, : as %3A, / as %2F, "
            "% as %25)."
        )
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise StorageError(
            f"storage URL {safe_url(url)!r} names the database {backend!r}, which tuner does not "
            f"support. Fix: use one of {', '.join(SUPPORTED_BACKENDS)}."
        )
    if backend == "sqlite":
        _check_sqlite_path(url, parsed.database)
    return parsed


def _check_sqlite_path(url: str, path: str | None) -> None:
    if not path or path == ":memory:":
        raise StorageError(
            f"storage URL {url!r} has no file: an in-memory SQLite database vanishes with the "
            "process, and Ray workers and the dashboard cannot see it. Fix: name a file, e.g. "
            "sqlite:///tuner.db."
        )
    file = Path(path).expanduser()
    if not file.resolve().parent.is_dir():
        raise StorageError(
            f"storage URL {url!r}: the directory {str(file.resolve().parent)!r} does not exist. "
            "Fix: create it or point to another path."
        )
    if file.is_dir():
        raise StorageError(
            f"storage URL {url!r}: {path!r} is a directory, not a database file. "
            f"Fix: name a file in it, e.g. sqlite:///{(Path(path) / 'tuner.db').as_posix()}."
        )


def _a_path_not_a_url(url: str, source: str) -> str:
    file = Path(url).expanduser()
    if _journal_studies(file) is not None:
        return _journal_message(url, file)
    return (f"storage {url!r} (from {source}) is a path, not a database URL. "
            f"Fix: use sqlite:///{url} (or postgresql+psycopg://user@host:5432/dbname).")


def _journal_studies(file: Path) -> list[str] | None:
    """The study names in an Optuna JournalStorage file (JSON lines of operations), or None if it is not one."""
    try:
        with file.open("rb") as f:
            head = f.read(_JOURNAL_PEEK)
    except OSError:
        return None
    if not head.startswith(b'{"op_code"'):
        return None
    names = []
    for line in head.splitlines():
        try:
            op = json.loads(line)
        except ValueError:
            break  # the line cut at the end of the peek
        if isinstance(op, dict) and op.get("op_code") == 0 and isinstance(op.get("study_name"), str):
            names.append(op["study_name"])
    return names


def _journal_message(url: str, file: Path) -> str:
    names = _journal_studies(file) or ["NAME"]
    shown = ", ".join(repr(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"storage {url!r} is an Optuna JournalStorage file (studies {shown}); tuner keeps its studies, "
        "with their epoch records, in an SQL database (SQLite or PostgreSQL). Fix: copy a study into one, e.g. "
        "python -c \"import optuna; from optuna.storages import JournalStorage; "
        "from optuna.storages.journal import JournalFileBackend; "
        f"optuna.copy_study(from_study_name={names[0]!r}, "
        f"from_storage=JournalStorage(JournalFileBackend({str(file)!r})), to_storage='sqlite:///tuner.db')\", "
        "then use --storage sqlite:///tuner.db."
    )


def _unreachable(url: str, exc: BaseException, source: str) -> str:
    """Why the store at ``url`` cannot be opened, what to check, and no password."""
    if isinstance(exc, ImportError):  # the URL's driver is not installed: no server was asked anything
        driver = exc.name or "its driver"
        return (f"storage {safe_url(url)}: its database driver {driver!r} is not installed, so nothing was "
                f"connected to. Fix: {_DRIVER_FIXES.get(driver, f'pip install {driver}')}.")
    text = str(getattr(exc, "orig", None) or exc).strip()
    reason = _without_password(text.splitlines()[0] if text else type(exc).__name__, url)
    if url.startswith("sqlite"):
        # Read only once SQLite has refused the file: closing any descriptor of a database file
        # drops the SQLite locks this process holds on it (POSIX advisory locks are per process).
        file = Path(make_url(url).database or "").expanduser()
        if "not a database" in reason and _journal_studies(file) is not None:
            return _journal_message(url, file)
        return f"storage {url} cannot be opened: {reason}. Fix: {_sqlite_fix(reason)}."
    fix = next(fix for clue, fix in _OPEN_FIXES if clue in reason).format(source=source)
    return f"storage {safe_url(url)} cannot be opened: {reason}. Fix: {fix}."


def _sqlite_fix(reason: str) -> str:
    if "not a database" in reason:
        return "point to a SQLite file made by tuner or Optuna, or to a new file name (tuner creates it)"
    if "readonly" in reason or "unable to open" in reason:
        return "check that you may read and write the file and its directory (SQLite writes a journal beside it)"
    return "check that the file is a SQLite database you may read and write, or name a new file"


def _lost_schema_race(exc: BaseException) -> bool:
    if isinstance(exc, sa.exc.IntegrityError):  # two creators inserted the same version row
        return True
    return isinstance(exc, sa.exc.DBAPIError) and "already exists" in str(exc.orig)


def _without_password(text: str, url: str) -> str:
    """``text`` with the URL's password masked in every spelling a driver may echo."""
    try:
        password = make_url(url).password
    except Exception:
        password = None
    if password:
        password = str(password)
        # Raw, URL-encoded, and quoted as in a libpq conninfo string (password='...').
        libpq = password.replace("\\", "\\\\").replace("'", "\\'")
        spellings = {password, quote(password, safe=""), quote_plus(password), libpq}
        for spelling in sorted(spellings, key=len, reverse=True):  # longest first: one may hold another
            text = text.replace(spelling, "***")
    return re.sub(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", text)


def _engine_kwargs(url: URL) -> dict[str, Any]:
    if url.get_backend_name() == "sqlite":
        # Wait for a lock instead of failing with "database is locked" when a
        # reader (dashboard, `tuner show`) holds the file for a moment.
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}


def _tune_sqlite(engine: Engine) -> None:
    # WAL lets readers read while the orchestrator writes; synchronous=NORMAL
    # is durable across process crashes (only an OS crash can lose the last
    # commits) and makes each commit cheap. SQLite enforces foreign keys only
    # where a connection asks: tuner_epochs' ON DELETE CASCADE needs it.
    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    engine.dispose()  # connections opened before the listener get the pragmas too


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _epoch_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as stored; a value the store cannot hold is refused (ValueError) by the rule report() follows."""
    record: dict[str, Any] = {"trial_id": row["trial_id"], "epoch": limits.epoch(row["epoch"])}
    for col in COLUMNS:
        value = row.get(col)
        if col == "device":
            record[col] = None if value is None else limits.text(col, value)
        elif col == "iterations":
            record[col] = None if value is None else limits.iterations(value)
        else:
            record[col] = _finite(value)
    extra = {
        limits.name(k): (float(v) if isinstance(v, (int, float)) else v)
        for k, v in row.items()
        if k not in COLUMNS and k not in ("trial_id", "epoch", "trial")
    }
    # JSON has no NaN: a non-finite extra is stored as its name ("nan", "inf").
    record["extra"] = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in extra.items()} or None
    return record


_EPOCH_COLUMNS = ("trial_id", "epoch", *COLUMNS, "extra")
# ON CONFLICT (these columns) DO NOTHING skips only an epoch already stored, as on
# PostgreSQL; INSERT OR IGNORE would also drop, silently, a row that breaks NOT NULL.
_SQLITE_EPOCHS = (
    f"INSERT INTO {EpochRecord.__tablename__} ({', '.join(_EPOCH_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _EPOCH_COLUMNS)}) ON CONFLICT (trial_id, epoch) DO NOTHING"
)
_SQLITE_VALUES = (
    f"INSERT INTO {_IV.__tablename__} (trial_id, step, intermediate_value, intermediate_value_type) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (trial_id, step) DO NOTHING"
)


def _epoch_tuple(record: Mapping[str, Any]) -> tuple[Any, ...]:
    extra = record["extra"]
    return (*(record[c] for c in _EPOCH_COLUMNS[:-1]), None if extra is None else json.dumps(extra))


def _value_tuple(value: Mapping[str, Any]) -> tuple[Any, ...]:
    # SQLAlchemy's Enum stores the member's name on SQLite.
    return (value["trial_id"], value["step"], value["intermediate_value"], value["intermediate_value_type"].name)


def _intermediate(row: Mapping[str, Any], value: float | None) -> dict[str, Any] | None:
    if value is None:
        return None
    stored, kind = _IV.intermediate_value_to_stored_repr(float(value))
    return {
        "trial_id": row["trial_id"],
        "step": int(row["epoch"]),
        "intermediate_value": stored,
        "intermediate_value_type": kind,
    }
