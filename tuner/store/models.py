"""tuner's own tables, next to Optuna's in the same database.

Optuna's schema holds studies, trials, params, values and one intermediate
value per epoch (so optuna-dashboard and the `optuna` CLI read a study with
no export step). What Optuna has no place for lives here, under a `tuner_`
prefix.
"""

from __future__ import annotations

from typing import Any

from datetime import datetime

from sqlalchemy import (
    JSON, BigInteger, Boolean, Column, DateTime, Float, ForeignKey, Integer, MetaData, String, Table, Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


# Optuna's trials table, as far as tuner's foreign key needs to name it. Optuna
# creates and owns it; being in a MetaData of its own, Base.metadata.create_all
# never creates it.
OPTUNA_TRIALS = Table("trials", MetaData(), Column("trial_id", Integer, primary_key=True))


class EpochRecord(Base):
    """One epoch of one trial: the learning curve, its gap, and what it cost.

    ``trial_id`` is Optuna's ``trials.trial_id``, a foreign key with ON DELETE
    CASCADE: a row lives and dies with its trial. It must, because SQLite hands
    a deleted trial's id to the next trial created (Optuna's ``trial_id`` is a
    plain INTEGER PRIMARY KEY, not AUTOINCREMENT), so a row that outlived its
    trial would be read as the new trial's. (trial_id, epoch) is unique so that
    recording is idempotent: a row sent twice (live, then again with the trial's
    result) is stored once. tuner/store/schema.py upgrades tables made before
    the foreign key.
    """

    __tablename__ = "tuner_epochs"
    __table_args__ = (UniqueConstraint("trial_id", "epoch", name="uq_tuner_epochs_trial_epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(
        ForeignKey(OPTUNA_TRIALS.c.trial_id, ondelete="CASCADE", name="fk_tuner_epochs_trial_id"), index=True
    )
    epoch: Mapped[int] = mapped_column(Integer)
    # SQLite's INTEGER holds 64 bits; PostgreSQL's holds 32, and a step count can pass 2**31.
    iterations: Mapped[int | None] = mapped_column(BigInteger)
    train_loss: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    train_acc: Mapped[float | None] = mapped_column(Float)
    val_acc: Mapped[float | None] = mapped_column(Float)
    # val - train loss, and train - val accuracy: both grow when a model overfits.
    gap_loss: Mapped[float | None] = mapped_column(Float)
    gap_acc: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    # No length: PostgreSQL enforces one (SQLite does not), and a workload names its own device.
    device: Mapped[str | None] = mapped_column(String)
    # Every other float the workload reported (gradient summary, custom metrics).
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)


COLUMNS = (
    "iterations", "train_loss", "val_loss", "train_acc", "val_acc",
    "gap_loss", "gap_acc", "lr", "seconds", "device",
)


class ScheduleRecord(Base):
    """A recurring sweep: which spec to launch, when (cron in a timezone), where, and how.

    ``next_fire_at`` (UTC) is the next firing not yet claimed; a daemon claims a
    firing by moving it forward in the same transaction that records the run,
    so each firing is claimed once (see tuner.schedule.daemon).
    """

    __tablename__ = "tuner_schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    cron: Mapped[str] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # The spec's path (re-read at each firing, so edits take effect) and a
    # snapshot of its content (used where the path is gone, e.g. on a scheduler
    # container that has only the database).
    spec_path: Mapped[str] = mapped_column(Text)
    spec_text: Mapped[str] = mapped_column(Text)
    workdir: Mapped[str | None] = mapped_column(Text)
    # Where the studies go (None: this same store) and run (None: a local Ray).
    storage: Mapped[str | None] = mapped_column(Text)
    ray_address: Mapped[str | None] = mapped_column(String(255))
    executor: Mapped[str] = mapped_column(String(16), default="ray")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    overlap: Mapped[str] = mapped_column(String(16), default="skip")
    catch_up: Mapped[str] = mapped_column(String(16), default="once")
    on_interrupt: Mapped[str] = mapped_column(String(16), default="resume")
    warm_start: Mapped[int] = mapped_column(Integer, default=0)
    next_fire_at: Mapped[datetime] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class RunRecord(Base):
    """One firing of a schedule: its study, when it ran, how it ended, and what changed.

    (schedule_id, scheduled_for, attempt) is unique: whatever two daemons do,
    one firing is recorded once. ``attempt`` > 1 is a resume of an interrupted run.
    """

    __tablename__ = "tuner_runs"
    __table_args__ = (UniqueConstraint("schedule_id", "scheduled_for", "attempt", name="uq_tuner_runs_firing"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("tuner_schedules.id", ondelete="CASCADE"), index=True)
    scheduled_for: Mapped[datetime] = mapped_column(DateTime)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    # cron | catch-up | manual | resume
    trigger: Mapped[str] = mapped_column(String(16))
    study: Mapped[str] = mapped_column(String(512))
    # queued -> running -> succeeded | failed | interrupted; or skipped
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The daemon that runs it ("host:pid:token") and its last sign of life.
    daemon: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
    pid: Mapped[int | None] = mapped_column(Integer)
    best_value: Mapped[float | None] = mapped_column(Float)
    # best_value minus the previous successful run's, and that run's id.
    change: Mapped[float | None] = mapped_column(Float)
    previous_run_id: Mapped[int | None] = mapped_column(Integer)
    trials: Mapped[int | None] = mapped_column(Integer)
    warm_started: Mapped[int | None] = mapped_column(Integer)
    # An interrupted run whose resume (or report) has been decided.
    handled: Mapped[bool] = mapped_column(Boolean, default=False)
