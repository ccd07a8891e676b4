"""The built-in workload ``cnn``: a 1-D convolutional network.

Made for mnist1d's length-40 signals; every other data set is fed as 1-D
signals too (a digits image as its 64 pixels row by row, a tabular row as its
features in order), so one architecture serves all five.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from workers.config import Config
from workers.data import Dataset
from workers.layers import hidden_block
from workers.training import Report, checkpoint_score, fit, fit_final, saved_model

# Few channels suffice for 40-sample signals; this is also what keeps a CNN
# epoch within a few times an MLP epoch on a CPU.
DEFAULT_WIDTH = 32


def build(cfg: Config, data: Dataset) -> nn.Sequential:
    """``depth`` conv blocks of ``width`` channels, then a linear classifier.

    Each conv has stride 2, halving the length (never below 1), in the manner
    of mnist1d's reference CNN; padding ``kernel_size // 2`` keeps the edges.
    So any depth fits any input, even iris's 4 features.
    """
    k = cfg.kernel_size
    layers: list[nn.Module] = [nn.Unflatten(1, (1, data.n_features))]
    channels, length = 1, data.n_features
    for _ in range(cfg.depth):
        layers.append(nn.Conv1d(channels, cfg.width, k, stride=2, padding=k // 2))
        layers += hidden_block(
            cfg.width, activation=cfg.activation, norm=cfg.norm, dropout=cfg.dropout, conv=True
        )
        channels, length = cfg.width, (length + 2 * (k // 2) - k) // 2 + 1
    layers += [nn.Flatten(), nn.Linear(channels * length, data.n_classes)]
    return nn.Sequential(*layers)


def train(params: Mapping[str, Any], report: Report) -> None:
    """Train a 1-D CNN as ``params`` say (see :class:`workers.config.Config`), reporting each epoch."""
    return fit(params, report, build, width=DEFAULT_WIDTH)


def final_score(params: Mapping[str, Any]) -> tuple[float, float]:
    """Retrain a 1-D CNN as ``params`` say on train+validation; (test loss, test accuracy)."""
    return fit_final(params, build, width=DEFAULT_WIDTH)


def saved_score(params: Mapping[str, Any], state: Mapping[str, Any]) -> tuple[float, float]:
    """A CNN trial's saved model scored on the test split; (test loss, test accuracy)."""
    return checkpoint_score(params, build, state, width=DEFAULT_WIDTH)


def model(params: Mapping[str, Any], state: Mapping[str, Any]) -> nn.Module:
    """A CNN trial's saved model (its checkpoint's ``state``) as a module, in eval mode; it takes raw features."""
    return saved_model(params, build, state, width=DEFAULT_WIDTH)
