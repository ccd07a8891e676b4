"""Per-epoch MLflow logging: one MLflow run per trial, its metrics at step = epoch, written while it trains.

>>> ml = MLflowCallback("file:./mlruns")        # or sqlite:///mlflow.db, or a tracking server
>>> ml.on_epochs(study, 3, params, rows)         # the driver, each time epoch rows of trial 3 arrive
>>> ml(study, frozen_trial)                      # the driver, when the trial has ended (Optuna's callback)

The experiment is the study's name (or ``experiment=``); trial 3 is the run
``trial-0003``, tagged ``tuner.study`` and ``tuner.trial``, with the trial's
params. Every number of every epoch row is a metric of that name at step =
epoch, sent in one batch per call. When the trial ends, its objective value is
the metric ``value``, tuner's per-trial facts (diagnosis, best epoch, final gap,
why it stopped) are ``tuner.*`` tags, and the run ends FINISHED (COMPLETE),
KILLED (PRUNED) or FAILED.

optuna-integration's ``MLflowCallback`` logs one run per trial with its final
value only; it works with tuner too, as any ``callback(study, frozen_trial)``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from tuner.integrations._logging import SUMMARY_ATTRS, metrics, run_name, why

__all__ = ["MLflowCallback", "check_reachable"]

# Tracking stores behind a network connection, checked once before any run is made: MLflow itself
# retries an unreachable database for minutes, then raises with a long traceback.
_DATABASES = ("postgresql", "mysql", "mssql")
_CONNECT_SECONDS = 10


def check_reachable(tracking_uri: str) -> None:
    """Raise a TunerError, in one line and without the password, if the tracking server or database
    at ``tracking_uri`` cannot be reached now (a file or SQLite store is made where it is named)."""
    import socket
    from urllib.parse import urlsplit

    from tuner.errors import TunerError
    from tuner.store.sql import _without_password, safe_url

    scheme = tracking_uri.partition(":")[0].split("+")[0].lower()
    try:
        if scheme in _DATABASES:
            import sqlalchemy as sa

            engine = sa.create_engine(tracking_uri, connect_args={"connect_timeout": _CONNECT_SECONDS}
                                      if scheme != "mssql" else {"timeout": _CONNECT_SECONDS})
            try:
                engine.connect().close()
            finally:
                engine.dispose()
        elif scheme in ("http", "https"):
            parts = urlsplit(tracking_uri)
            port = parts.port or (443 if scheme == "https" else 80)
            socket.create_connection((parts.hostname or "", port), timeout=_CONNECT_SECONDS).close()
    except Exception as exc:  # the driver's own errors (OperationalError, ImportError of a DBAPI, OSError)
        text = str(getattr(exc, "orig", None) or exc).strip()
        reason = _without_password(text.splitlines()[0] if text else type(exc).__name__, tracking_uri)
        raise TunerError(
            f"the MLflow tracking store {safe_url(tracking_uri)} cannot be reached: {reason}. Fix: start the "
            "tracking server or database (or correct its host, port, user and password), or log to a local "
            "store, e.g. file:./mlruns."
        ) from None

# MLflow takes at most 1000 metrics and 100 params in one log_batch call.
_MAX_METRICS, _MAX_PARAMS = 1000, 100
_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}
_MAX_TAG = 5000  # MLflow's limit on a tag's value (mlflow.utils.validation.MAX_TAG_VAL_LENGTH)


class MLflowCallback:
    """MLflow runs of every trial's epochs, in the experiment named after the study.

    ``tracking_uri``: where MLflow keeps them, e.g. ``file:./mlruns`` or
    ``sqlite:///mlflow.db`` (None: MLflow's own default). MLflow 3 keeps its
    file store in maintenance mode and refuses it unless
    ``MLFLOW_ALLOW_FILE_STORE=true``; naming a ``file:`` URI here is taken as
    that choice, so it is set for this process when unset.
    """

    separate_process = True  # its file store's writes a metric are spent outside the driver's process

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None) -> None:
        if tracking_uri is not None and tracking_uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        if tracking_uri is not None:
            check_reachable(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        self.experiment = experiment
        self._runs: dict[tuple[str, int], str] = {}
        self._experiments: dict[str, str] = {}

    def on_epochs(self, study: optuna.Study, number: int, params: Mapping[str, Any],
                  rows: Sequence[Mapping[str, Any]]) -> None:
        """Trial ``number``'s new epoch rows, as metrics at step = epoch (its run starts with the first rows)."""
        key = (study.study_name, number)
        if key not in self._runs:
            self._runs[key] = self._start(study, number, params)
        run_id = self._runs[key]
        now = int(time.time() * 1000)
        batch = [Metric(key, value, now, int(row["epoch"])) for row in rows for key, value in metrics(row).items()]
        for start in range(0, len(batch), _MAX_METRICS):
            self.client.log_batch(run_id, metrics=batch[start:start + _MAX_METRICS])

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """The trial has ended: its value, tuner's facts about it, and its final status."""
        run_id = (self._runs.pop((study.study_name, trial.number), None) or self._find(study, trial.number)
                  or self._start(study, trial.number, trial.params))
        now = int(time.time() * 1000)
        values = [Metric("value", trial.value, now, trial.last_step or 0)] if trial.value is not None else []
        tags = {"tuner.state": trial.state.name, "tuner.why": why(trial)}
        tags |= {f"tuner.{k}": str(trial.user_attrs[k]) for k in SUMMARY_ATTRS if k in trial.user_attrs}
        self.client.log_batch(run_id, metrics=values,
                              tags=[RunTag(k, v[:_MAX_TAG]) for k, v in tags.items() if v != ""])
        self.client.set_terminated(run_id, _STATUS.get(trial.state, RunStatus.to_string(RunStatus.FAILED)))

    def close(self) -> None:
        """Forget the runs of trials that never ended here (MLflow shows them RUNNING, as they were left)."""
        self._runs.clear()

    def _start(self, study: optuna.Study, number: int, params: Mapping[str, Any]) -> str:
        run = self.client.create_run(self._experiment_id(study), run_name=run_name(number),
                                     tags={"tuner.study": study.study_name, "tuner.trial": str(number)})
        items = [Param(k, str(v)) for k, v in params.items()]
        for start in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(run.info.run_id, params=items[start:start + _MAX_PARAMS])
        return run.info.run_id

    def _find(self, study: optuna.Study, number: int) -> str | None:
        """The run of a trial that started under another driver (a resumed study), if there is one."""
        found = self.client.search_runs(
            [self._experiment_id(study)], max_results=1,
            filter_string=f"tags.`tuner.study` = '{study.study_name}' and tags.`tuner.trial` = '{number}'",
        )
        return found[0].info.run_id if found else None

    def _experiment_id(self, study: optuna.Study) -> str:
        name = self.experiment or study.study_name
        if name not in self._experiments:
            existing = self.client.get_experiment_by_name(name)
            self._experiments[name] = existing.experiment_id if existing else self.client.create_experiment(name)
        return self._experiments[name]
