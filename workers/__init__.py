"""Workers: the side of tuner that trains networks.

A workload is ``train(params, report) -> float | None``; ``report(epoch,
**metrics)`` records one epoch and may raise to stop a pruned trial. The
built-in workloads are :func:`workers.mlp.train` and :func:`workers.cnn.train`;
their hyperparameters and defaults are :class:`workers.config.Config`.
:func:`workers.gradients.summarize` serves user workloads too.

Workers never know which strategy chose their params.
"""

from __future__ import annotations

from typing import Any

from workers.data import DATASETS, Dataset, load

__all__ = ["DATASETS", "Dataset", "load", "summarize"]


def __getattr__(name: str) -> Any:
    # torch loads only when a gradient helper is used, not on `import workers`.
    if name == "summarize":
        from workers.gradients import summarize

        return summarize
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
