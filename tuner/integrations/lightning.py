"""Tune a PyTorch Lightning module: a callback that reports every epoch and honours tuner's stops.

>>> def train(params, report):
...     trainer = pl.Trainer(max_epochs=params["epochs"], callbacks=[TunerCallback(report)])
...     trainer.fit(MyModule(lr=params["lr"]), train_loader, val_loader)

At the end of each training epoch (after its validation) the callback reports
what the module logged, under the names it was logged as (``train_loss``,
``val_loss``, ``train_acc`` and ``val_acc`` fill tuner's columns and feed its
diagnoses), plus the learning rate, the steps taken and the gradient summary of
workers.gradients. Log training metrics with ``self.log(..., on_epoch=True)``
so the epoch's mean is reported, not the last step's.

When tuner stops the trial (a pruner, its diagnostics, early stopping),
``report`` raises tuner's ``StopTrial`` (an ``optuna.TrialPruned``). The callback sets
``trainer.should_stop``, so the trainer ends after this epoch the way Lightning
ends any run (checkpoints and loggers finish), and then re-raises the stop from
``teardown``: ``trainer.fit`` raises it, no further epoch runs, and the trial
is recorded as tuner decided (PRUNED with its rule and reason; COMPLETE and
early-stopped for early stopping). This is what
optuna-integration's ``PyTorchLightningPruningCallback`` does with
``check_pruned()``, without the call to remember.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import optuna

try:  # `lightning` installs `pytorch_lightning` too; Lightning calls callback hooks by name, so either Trainer takes this
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover - an install of `lightning` without it
    import lightning.pytorch as pl

from tuner.integrations._steps import StepGradients

__all__ = ["TunerCallback"]


class TunerCallback(pl.Callback):
    """Report each epoch's logged metrics to tuner; stop the trainer when tuner says so.

    ``monitor``: the logged metric tuner's objective reads (``val_loss`` by
    default). An epoch that did not log it is an error that names what was
    logged, since a pruner would otherwise wait for values that never come;
    ``None`` reports whatever was logged. ``updates=False`` leaves out
    ``update_ratio``, which copies the weights at each summarized step.
    """

    def __init__(self, report: Callable[..., None], monitor: str | None = "val_loss", *,
                 gradients: bool = True, updates: bool = True) -> None:
        super().__init__()
        self.report = report
        self.monitor = monitor
        self.gradients = gradients
        self.updates = updates
        self.stopped: optuna.TrialPruned | None = None
        self._steps: StepGradients | None = None
        self._lr: float | None = None

    # 1. each epoch: reset the gradient summary, note the learning rate it trains with
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stopped is not None:
            # The trainer went on regardless (min_epochs not met): stop before a batch of this epoch runs.
            self._raise_stop()
        batches = trainer.num_training_batches
        per_epoch = int(batches) if math.isfinite(batches) else None
        self._steps = StepGradients(per_epoch, self.updates) if self.gradients else None
        self._lr = _learning_rate(trainer)

    # 2. each step: gradients before the optimizer moves the weights, the move after
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if self._steps is not None:
            self._steps.before(pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._steps is not None:
            self._steps.after(pl_module)

    # 3. the epoch's end, after its validation: report, and turn a stop into trainer.should_stop
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = epoch_metrics(trainer.callback_metrics)
        epoch = trainer.current_epoch + 1
        if self.monitor is not None and self.monitor not in metrics:
            raise ValueError(
                f"TunerCallback(monitor={self.monitor!r}): epoch {epoch} logged no {self.monitor!r}; it logged "
                f"{', '.join(sorted(metrics)) or 'nothing'}. Fix: self.log({self.monitor!r}, ...) in "
                "validation_step (validate every epoch), or pass monitor= one of those, or monitor=None."
            )
        extra: dict[str, float] = {"iterations": float(trainer.global_step)}
        if self._lr is not None:
            extra["lr"] = self._lr
        if self._steps is not None:
            extra.update(self._steps.result())
        try:
            self.report(epoch, **{**extra, **metrics})
        except optuna.TrialPruned as stop:
            self.stopped = stop
            trainer.should_stop = True

    # 4. after the trainer has finished its own teardown: the trial ends PRUNED
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.stopped is not None:
            self._raise_stop()

    def _raise_stop(self) -> None:
        stop, self.stopped = self.stopped, None  # once: a later fit with this callback starts clean
        assert stop is not None
        raise stop


def epoch_metrics(logged: Mapping[str, Any]) -> dict[str, float]:
    """Scalar metrics by their logged names; ``x_epoch`` stands for ``x`` and ``x_step`` is left out.

    (``self.log("x", ..., on_step=True, on_epoch=True)`` logs ``x_step`` and ``x_epoch``.)
    """
    out: dict[str, float] = {}
    for key, value in logged.items():
        if key.endswith("_step"):
            continue
        if key.endswith("_epoch"):
            key = key.removesuffix("_epoch")
        number = _scalar(value)
        if number is not None:
            out[key] = number
    return out


def _scalar(value: Any) -> float | None:
    if hasattr(value, "numel"):
        return float(value.detach().float().item()) if value.numel() == 1 else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _learning_rate(trainer: pl.Trainer) -> float | None:
    optimizers = trainer.optimizers
    if not optimizers or not optimizers[0].param_groups:
        return None
    lr = optimizers[0].param_groups[0].get("lr")
    return float(lr) if isinstance(lr, (int, float)) else None
