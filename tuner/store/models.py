"""tuner's own tables, next to Optuna's in the same database.

Optuna's schema holds studies, trials, params, values and one intermediate
value per epoch (so optuna-dashboard and the `optuna` CLI read a study with
no export step). What Optuna has no place for lives here, under a `tuner_`
prefix.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class EpochRecord(Base):
    """One epoch of one trial: the learning curve, its gap, and what it cost.

    ``trial_id`` is Optuna's ``trials.trial_id``. (trial_id, epoch) is unique
    so that recording is idempotent: a row sent twice (live, then again with the
    trial's result) is stored once.
    """

    __tablename__ = "tuner_epochs"
    __table_args__ = (UniqueConstraint("trial_id", "epoch", name="uq_tuner_epochs_trial_epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(Integer, index=True)
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
