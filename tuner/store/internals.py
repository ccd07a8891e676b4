"""Every use of Optuna's and optuna-dashboard's private API, in one module.

tuner stays on their public APIs where one exists. What is here has none:

- a trial's and a study's storage ids (``_trial_id``, ``_study_id``): Optuna's
  storage API is keyed by them, and a finished trial or a loaded study exposes
  them only privately;
- Optuna's ORM models of its tables, which ``store/sql.py`` writes in batches
  (one transaction per batch instead of one commit per value) — why the
  package pins ``optuna<6`` and ``store/schema.py`` checks the schema version;
- the stale-trial query behind Optuna's heartbeat (it is public only inside
  ``Study.optimize``);
- optuna-dashboard's note keys, to write a note on a finished trial (its public
  ``save_note`` takes a live ``optuna.Trial``).

A new Optuna or optuna-dashboard release is checked against this file.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages._rdb import models

TrialModel = models.TrialModel
TRIALS = models.TrialModel.__table__
INTERMEDIATE_VALUES = models.TrialIntermediateValueModel
USER_ATTRIBUTES = models.TrialUserAttributeModel


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of a trial (unique in the database; its number is unique in its study)."""
    return trial._trial_id


def study_id(study: optuna.Study) -> int:
    return study._study_id


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def frozen_trial(study: optuna.Study, trial_id: int) -> optuna.trial.FrozenTrial:
    """One trial by id, without reading every trial of the study (``study.trials`` does)."""
    return study._storage.get_trial(trial_id)


def stale_trial_ids(storage: Any, study_id: int, interval: int, grace: int) -> list[int]:
    """RUNNING trials whose heartbeat is older than ``grace`` seconds."""
    # Optuna reads these two to judge staleness; left set, they would make
    # every later ask() warn that heartbeats belong to Study.optimize.
    storage.heartbeat_interval, storage.grace_period = interval, grace
    try:
        return storage._get_stale_trial_ids(study_id)
    finally:
        storage.heartbeat_interval = storage.grace_period = None


def unbeaten_trial_ids(storage: Any, study_id: int) -> list[int]:
    """RUNNING trials that never had a heartbeat, which Optuna's stale-trial query never counts as stale."""
    import sqlalchemy as sa

    trials, beats = TRIALS, models.TrialHeartbeatModel.__table__
    query = (sa.select(trials.c.trial_id).select_from(trials.outerjoin(beats, beats.c.trial_id == trials.c.trial_id))
             .where(trials.c.study_id == study_id, trials.c.state == optuna.trial.TrialState.RUNNING,
                    beats.c.trial_id.is_(None)))
    with storage.engine.connect() as conn:
        return list(conn.execute(query).scalars())


def dashboard_note_key(trial_id: int) -> str:
    """The study system attribute under which optuna-dashboard keeps a trial's note version."""
    from optuna_dashboard._note import note_ver_key

    return note_ver_key(trial_id)


def save_dashboard_note(storage: Any, study_id: int, trial_id: int, body: str) -> None:
    """Write a finished trial's note as optuna-dashboard stores it (version 1)."""
    from optuna_dashboard._note import save_note_with_version

    save_note_with_version(storage, study_id, trial_id, 1, body)
