"""Per-epoch TensorBoard logging: one event-file run per trial, written while it trains.

>>> tb = TensorBoardCallback("runs")             # then: tensorboard --logdir runs
>>> tb.on_epochs(study, 3, params, rows)         # the driver, each time epoch rows of trial 3 arrive
>>> tb(study, frozen_trial)                      # the driver, when the trial has ended (Optuna's callback)

Each trial is the run ``runs/<study>/trial-0003``: every number of every epoch
row is a scalar of that name at step = epoch (``train_loss``, ``val_loss``,
``grad_norm``, ...), so TensorBoard overlays the trials' learning curves. When
the trial ends, its params, state and objective value go to the HParams tab
(``trial/value``) and a text ``trial/state`` says how it ended and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from tuner.integrations._logging import metrics, run_name, why

__all__ = ["TensorBoardCallback"]


class TensorBoardCallback:
    """TensorBoard event files of every trial's epochs, under ``log_dir/<study name>/trial-NNNN``."""

    separate_process = True  # its ~0.1 ms a scalar is spent outside the driver's process

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writers: dict[tuple[str, int], SummaryWriter] = {}

    def run_dir(self, study: optuna.Study, number: int) -> Path:
        return self.log_dir / study.study_name / run_name(number)

    def on_epochs(self, study: optuna.Study, number: int, params: Mapping[str, Any],
                  rows: Sequence[Mapping[str, Any]]) -> None:
        """Trial ``number``'s new epoch rows, as scalars at step = epoch; flushed, so TensorBoard sees them live."""
        writer = self._writer(study, number)
        for row in rows:
            for key, value in metrics(row).items():
                writer.add_scalar(key, value, global_step=int(row["epoch"]))
        writer.flush()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """The trial has ended: its params, state and value to the HParams tab; its run is closed."""
        writer = self._writer(study, trial.number)
        state = trial.state.name
        values = {"trial/value": trial.value} if trial.value is not None else {}
        hparam_values = {k: _hparam(v) for k, v in trial.params.items()} | {"state": state}
        for summary in hparams(hparam_values, values):
            writer.file_writer.add_summary(summary)
        for key, value in values.items():
            writer.add_scalar(key, value, global_step=trial.last_step or 0)
        reason = why(trial)
        writer.add_text("trial/state", f"{state}: {reason}" if reason else state)
        writer.close()
        self._writers.pop((study.study_name, trial.number), None)

    def close(self) -> None:
        """Close the runs of trials that never ended here (the study stopped under them)."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _writer(self, study: optuna.Study, number: int) -> SummaryWriter:
        key = (study.study_name, number)
        if key not in self._writers:
            self._writers[key] = SummaryWriter(log_dir=str(self.run_dir(study, number)))
        return self._writers[key]


def _hparam(value: Any) -> Any:
    # TensorBoard's HParams take bool, str and numbers; a categorical choice may be anything else.
    return value if isinstance(value, (bool, int, float, str)) else str(value)
