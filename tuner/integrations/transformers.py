"""Tune a Hugging Face ``Trainer``: a callback that reports every evaluation and honours tuner's stops.

>>> def train(params, report):
...     args = TrainingArguments(output_dir, eval_strategy="epoch", logging_strategy="epoch",
...                              learning_rate=params["lr"], num_train_epochs=params["epochs"])
...     Trainer(model, args, train_dataset=..., eval_dataset=..., compute_metrics=accuracy,
...             callbacks=[TunerCallback(report)]).train()

Each evaluation is one tuner epoch (the n-th evaluation is epoch n, so with
``eval_strategy="epoch"`` they are the Trainer's epochs). It reports
``eval_loss`` as ``val_loss``, ``eval_accuracy`` as ``val_acc``, every other
``eval_x`` as ``val_x``, the mean of the training losses the Trainer logged
since the previous evaluation as ``train_loss`` (log at least as often as you
evaluate: ``logging_strategy="epoch"``), the learning rate, the optimizer
steps and the gradient summary of workers.gradients.

The gradient summary is taken where the Trainer hands over its gradients,
just before ``optimizer.step()``: after ``max_grad_norm`` clipping (1.0 by
default), which scales every layer alike, so ``grad_ratio`` and
``grad_zero_frac`` are those of the raw gradients while the norms are at most
``max_grad_norm``. Set ``max_grad_norm=0`` to see exploding norms as they are.

When tuner stops the trial, ``report`` raises tuner's ``StopTrial`` (an ``optuna.TrialPruned``);
the callback sets ``control.should_training_stop``, so the Trainer ends its loop
there the way it ends any run, and re-raises the stop from ``on_train_end``:
``trainer.train()`` raises it and the trial is recorded as tuner decided (PRUNED
with its rule and reason; COMPLETE and early-stopped for early stopping).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optuna
import transformers

from tuner.integrations._steps import StepGradients

__all__ = ["TunerCallback"]

# The Trainer's bookkeeping in every evaluation's metrics, not measurements of the model.
_EVAL_BOOKKEEPING = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time", "epoch")
_NAMES = {"loss": "val_loss", "accuracy": "val_acc", "acc": "val_acc"}


class TunerCallback(transformers.TrainerCallback):
    """Report each evaluation to tuner; stop the Trainer when tuner says so.

    ``updates=False`` leaves out ``update_ratio``, which copies the weights at
    each summarized step (too much memory for a model that barely fits).
    """

    def __init__(self, report: Callable[..., None], *, gradients: bool = True, updates: bool = True) -> None:
        self.report = report
        self.gradients = gradients
        self.updates = updates
        self.stopped: optuna.TrialPruned | None = None
        self._reports = 0
        self._losses: list[float] = []
        self._lr: float | None = None
        self._steps: StepGradients | None = None

    # 1. the run's start: refuse a run that would never report
    def on_train_begin(self, args: Any, state: Any, control: Any, train_dataloader: Any = None, **kwargs: Any) -> None:
        if str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "no":
            raise ValueError(
                "TunerCallback reports at each evaluation, but TrainingArguments(eval_strategy='no') never "
                "evaluates. Fix: TrainingArguments(..., eval_strategy='epoch', logging_strategy='epoch') "
                "and an eval_dataset."
            )
        self.stopped, self._reports, self._losses, self._lr = None, 0, [], None
        self._steps = StepGradients(_steps_per_epoch(args, train_dataloader), self.updates) if self.gradients else None

    # 2. each optimizer step: the gradients it steps with, then how far it moved the weights
    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self._steps is not None and model is not None:
            self._steps.before(model)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self._steps is not None and model is not None:
            self._steps.after(model)

    # 3. each log: keep the training losses and the learning rate for the next evaluation's report
    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs:  # a training log (the final summary says train_loss, and comes after the last report)
            self._losses.append(float(logs["loss"]))
            if "learning_rate" in logs:
                self._lr = float(logs["learning_rate"])

    # 4. each evaluation: one report; a stop ends the training loop here
    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None,
                    **kwargs: Any) -> None:
        if self.stopped is not None:  # evaluated again after the stop (trainer.evaluate() by hand): not an epoch
            return
        self._reports += 1
        row = {**eval_metrics(metrics or {}), "iterations": float(state.global_step)}
        if self._losses:
            row["train_loss"] = sum(self._losses) / len(self._losses)
        if self._lr is not None:
            row["lr"] = self._lr
        if self._steps is not None:
            row.update(self._steps.result())
        self._losses = []
        try:
            self.report(self._reports, **row)
        except optuna.TrialPruned as stop:
            self.stopped = stop
            control.should_training_stop = True

    # 5. after the Trainer has wrapped up: the trial ends PRUNED
    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.stopped is not None:
            stop, self.stopped = self.stopped, None
            raise stop


def eval_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """An evaluation's numbers under tuner's names: eval_loss -> val_loss, eval_accuracy -> val_acc, eval_x -> val_x."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = key.split("_", 1)[1] if "_" in key else key  # the metric_key_prefix ("eval") goes
        if name in _EVAL_BOOKKEEPING or isinstance(value, bool):
            continue
        try:
            out[_NAMES.get(name, f"val_{name}")] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def _steps_per_epoch(args: Any, train_dataloader: Any) -> int | None:
    try:
        return len(train_dataloader) // max(1, int(args.gradient_accumulation_steps))
    except TypeError:  # no dataloader, or one of unknown length
        return None
