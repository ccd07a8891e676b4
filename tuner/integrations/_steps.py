"""The gradient summary of an epoch, gathered from a trainer's optimizer steps.

The trainer callbacks see a step twice: with its gradients before
``optimizer.step()`` and with the new weights after it. Like the built-in
loop (workers/training.py), they summarize at most ``workers.gradients.SUMMARY_STEPS`` evenly
spread steps per epoch, so the summary costs little next to training.
"""

from __future__ import annotations

from typing import Any

from workers.gradients import EpochGradients, snapshot, summarize, summary_every, update_ratio


class StepGradients:
    """``before(model)`` ahead of a step, ``after(model)`` once it is taken, ``result()`` per epoch.

    ``updates=False`` skips ``update_ratio``, which copies the weights at each
    summarized step (too much memory for a model that barely fits).
    """

    def __init__(self, steps_per_epoch: int | None, updates: bool = True) -> None:
        self.every = summary_every(steps_per_epoch)
        self.updates = updates
        self.steps = 0
        self.before_step: list[Any] | None = None
        self.epoch = EpochGradients()

    def before(self, model: Any) -> None:
        self.steps += 1
        if (self.steps - 1) % self.every:
            return
        self.epoch.add(summarize(model))  # raw gradients, before the optimizer moves anything
        if self.updates:
            self.before_step = snapshot(model)

    def after(self, model: Any) -> None:
        if self.before_step is not None:
            self.epoch.add_update(update_ratio(model, self.before_step))
            self.before_step = None

    def result(self) -> dict[str, float]:
        """This epoch's summary; the next epoch starts afresh."""
        out, self.epoch = self.epoch.result(), EpochGradients()
        self.steps = 0
        return out
