"""Epoch rows live and die with their trial, whoever deletes the trial.

SQLite hands a deleted trial's id to the next trial created (Optuna's
``trials.trial_id`` is a plain INTEGER PRIMARY KEY), so a ``tuner_epochs`` row
that outlives its trial is read as the new trial's. Three things prevent that:

* the foreign key ``tuner_epochs.trial_id -> trials.trial_id ON DELETE CASCADE``
  (tuner/store/models.py). PostgreSQL always enforces it; SQLite only on a
  connection with ``PRAGMA foreign_keys=ON``, which tuner's connections set
  (tuner/store/sql.py);
* on SQLite, a trigger that deletes a trial's rows with the trial, for the
  programs that do not set the pragma: ``optuna delete-study``, a standalone
  optuna-dashboard, the sqlite3 shell;
* :func:`tie_epochs`, run at every open, which upgrades a store made before the
  foreign key: it drops the rows that outlived their trial and adds the key.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import optuna
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tuner.trial import metrics
from tuner.errors import StorageError
from tuner.store import internals
from tuner.store.models import COLUMNS, EpochRecord

EPOCHS = EpochRecord.__tablename__
# Where tuner keeps a study's spec among its Optuna user attributes (tuner.api.SPEC_ATTR;
# the store cannot import the API, which imports the store).
SPEC_ATTR = "tuner.spec"
TRIGGER = "tuner_epochs_die_with_trial"
# SQLite drops a table's triggers with it (Optuna's schema upgrades rebuild `trials`),
# so the trigger is checked at every open.
_TRIGGER_SQL = (
    f"CREATE TRIGGER IF NOT EXISTS {TRIGGER} AFTER DELETE ON trials FOR EACH ROW "
    f"BEGIN DELETE FROM {EPOCHS} WHERE trial_id = OLD.trial_id; END"
)
_UNTIED = f"{EPOCHS}_untied"


# The Optuna table schemas (alembic revisions) whose tables tuner writes directly
# (sql.py batches intermediate values and user attributes); a new revision may
# move a column, so it is refused until tuner is checked against it.
KNOWN_SCHEMAS = ("v3.2.0.a",)


def check_version(storage: Any, where: str) -> None:
    """Refuse a store whose Optuna schema this Optuna or this tuner does not know, saying which fix applies.

    ``storage`` is opened with Optuna's own check skipped: its message for a
    schema newer than the library tells the user to upgrade Optuna, which may
    leave tuner's tested range, and names no URL.
    """
    head, current = storage.get_head_version(), storage.get_current_version()
    if head not in KNOWN_SCHEMAS:
        raise StorageError(
            f"optuna {optuna.__version__} has table schema {head}, which this tuner was not made for (it writes "
            f"Optuna's trial tables directly; it knows {', '.join(KNOWN_SCHEMAS)}). Fix: install an optuna release "
            "with that schema, e.g. pip install 'optuna>=5.0,<5.2'."
        )
    if current == head:
        return
    made_by = _library_version(storage.engine)
    if current in storage.get_all_versions():
        raise StorageError(
            f"storage {where} has Optuna's table schema {current} (made by optuna {made_by}), older than this "
            f"optuna's ({optuna.__version__}, schema {head}). Fix: back the database up, then upgrade it in place: "
            f"optuna storage upgrade --storage '{where}'."
        )
    raise StorageError(
        f"storage {where} has Optuna's table schema {current} (made by optuna {made_by}), which this optuna "
        f"({optuna.__version__}, schema {head}) does not know. Fix: open it from the environment that made it, "
        "or copy its studies out there with tuner copy STUDY --to URL."
    )


def _library_version(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT library_version FROM version_info")).scalar() or "unknown")


def tie_epochs(storage: Any) -> int:
    """Make ``tuner_epochs`` follow ``trials`` on the store behind an Optuna RDBStorage.

    A store made before the foreign key is upgraded in one transaction; returns
    the number of rows that upgrade dropped (0 when there was nothing to do).
    """
    engine: Engine = storage.engine
    sqlite = engine.dialect.name == "sqlite"
    dropped = 0
    if not _tied(engine):
        dropped = _upgrade_sqlite(storage) if sqlite else _upgrade_postgresql(storage)
    if sqlite:
        _ensure_trigger(engine)
    return dropped


def _tied(bind: Engine | Connection) -> bool:
    return any(fk["referred_table"] == "trials" for fk in sa.inspect(bind).get_foreign_keys(EPOCHS))


def _ensure_trigger(engine: Engine) -> None:
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = ?", (TRIGGER,)
        ).scalar_one()
        if not found:
            conn.exec_driver_sql(_TRIGGER_SQL)
            conn.commit()


def _upgrade_sqlite(storage: Any) -> int:
    """Rebuild the table with the foreign key (SQLite has no ALTER TABLE ADD CONSTRAINT)."""
    with storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # The write lock first: a second process opening the store waits here,
        # then finds the work done.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            # A statement on the table first: PRAGMA foreign_key_list may answer from the schema this
            # connection cached before another process rebuilt the table; a query reloads it.
            conn.exec_driver_sql(f"SELECT * FROM {EPOCHS} LIMIT 0").close()
            dropped = 0
            if not _tied(conn):
                dropped = _drop_outlived(conn, storage)
                names = [c["name"] for c in sa.inspect(conn).get_columns(EPOCHS)]
                kept = ", ".join(c.name for c in EpochRecord.__table__.columns if c.name in names)
                # A rename rewrites the triggers that name the table; this one is made again below.
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TRIGGER}")
                conn.exec_driver_sql(f"ALTER TABLE {EPOCHS} RENAME TO {_UNTIED}")
                for index in sa.inspect(conn).get_indexes(_UNTIED):  # index names are per database
                    conn.exec_driver_sql(f'DROP INDEX "{index["name"]}"')
                EpochRecord.__table__.create(conn)
                conn.exec_driver_sql(f"INSERT INTO {EPOCHS} ({kept}) SELECT {kept} FROM {_UNTIED}")
                conn.exec_driver_sql(f"DROP TABLE {_UNTIED}")
            conn.exec_driver_sql("COMMIT")
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise
    return dropped


def _upgrade_postgresql(storage: Any) -> int:
    with storage.engine.begin() as conn:
        # Taken by every process that opens the store meanwhile: the second one
        # waits here, then finds the key.
        conn.exec_driver_sql(f"LOCK TABLE {EPOCHS} IN ACCESS EXCLUSIVE MODE")
        if _tied(conn):
            return 0
        dropped = _drop_outlived(conn, storage)
        (key,) = EpochRecord.__table__.foreign_key_constraints
        conn.execute(sa.schema.AddConstraint(key))
    return dropped


# ---------------------------------------------------------------------- rows that outlived their trial


def _drop_outlived(conn: Connection, storage: Any) -> int:
    """Delete the rows of deleted trials: those of no trial, and those whose id a new trial took."""
    ep = EpochRecord.__table__
    trials = sa.table("trials", sa.column("trial_id"))
    orphans = conn.execute(ep.delete().where(ep.c.trial_id.not_in(sa.select(trials.c.trial_id)))).rowcount
    stale = list(_taken_over(conn, storage))
    for start in range(0, len(stale), 500):
        conn.execute(ep.delete().where(ep.c.id.in_(stale[start:start + 500])))
    return orphans + len(stale)


def _taken_over(conn: Connection, storage: Any) -> Iterator[int]:
    """Ids of rows whose trial id now names a trial that did not record them.

    tuner writes each row's objective as Optuna's intermediate value of the same
    epoch, in the same transaction; a new trial that took a deleted one's id has
    its own intermediate values, which the old rows disagree with. A trial with
    such a row keeps only the rows its intermediate values vouch for.
    """
    known = _optuna_record(storage)
    ep = EpochRecord.__table__
    query = sa.select(ep.c.id, ep.c.trial_id, ep.c.epoch, *[ep.c[c] for c in COLUMNS], ep.c.extra).order_by(
        ep.c.trial_id, ep.c.epoch
    )
    for trial_id, group in itertools.groupby(conn.execute(query), key=lambda r: r.trial_id):
        if trial_id not in known:
            continue
        values, objective = known[trial_id]
        verdicts = [(row.id, _agrees(row, values, objective)) for row in group]
        if any(v is False for _, v in verdicts):
            yield from (row_id for row_id, v in verdicts if v is not True)


def _optuna_record(storage: Any) -> dict[int, tuple[dict[int, float], Any]]:
    """Trial id -> (its intermediate values, its study's objective), for every trial in the store."""
    known = {}
    for study in storage.get_all_studies():
        spec = study.user_attrs.get(SPEC_ATTR) or {}
        objective = SimpleNamespace(
            metric=spec.get("objective", {}).get("metric", "val_loss"),
            gap_penalty=spec.get("objective", {}).get("gap_penalty", 0.0),
            resolved_direction=study.directions[0].name.lower(),
        )
        for trial in storage.get_all_trials(internals.study_id(study), deepcopy=False):
            known[internals.trial_id(trial)] = (trial.intermediate_values, objective)
    return known


def _agrees(row: Any, values: dict[int, float], objective: Any) -> bool | None:
    """Whether the trial's intermediate value of this epoch is this row's objective (None: nothing to compare)."""
    reported = {**{c: getattr(row, c) for c in COLUMNS}, **(row.extra or {})}
    try:
        score = metrics.score(reported, objective)
    except (TypeError, ValueError):  # not a number: nothing to compare
        score = None
    value = values.get(row.epoch)
    if score is None:
        # A non-finite metric is stored as NULL, and its intermediate value as NaN or inf.
        return None if value is None else (False if math.isfinite(value) else None)
    if value is None:
        return False
    if math.isnan(score) or math.isnan(value):
        return math.isnan(score) and math.isnan(value)
    return math.isclose(score, value, rel_tol=1e-12, abs_tol=0.0)
