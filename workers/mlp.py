"""The built-in workload ``mlp``: a multilayer perceptron, for every data set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from workers.config import Config
from workers.data import Dataset
from workers.layers import hidden_block
from workers.training import Report, checkpoint_score, fit, fit_final, saved_model


def build(cfg: Config, data: Dataset) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` units, then a linear classifier."""
    layers: list[nn.Module] = []
    features = data.n_features
    for _ in range(cfg.depth):
        layers.append(nn.Linear(features, cfg.width))
        layers += hidden_block(
            cfg.width, activation=cfg.activation, norm=cfg.norm, dropout=cfg.dropout, conv=False
        )
        features = cfg.width
    layers.append(nn.Linear(features, data.n_classes))
    return nn.Sequential(*layers)


def train(params: Mapping[str, Any], report: Report) -> None:
    """Train an MLP as ``params`` say (see :class:`workers.config.Config`), reporting each epoch."""
    return fit(params, report, build)


def final_score(params: Mapping[str, Any]) -> tuple[float, float]:
    """Retrain an MLP as ``params`` say on train+validation; (test loss, test accuracy)."""
    return fit_final(params, build)


def saved_score(params: Mapping[str, Any], state: Mapping[str, Any]) -> tuple[float, float]:
    """An MLP trial's saved model scored on the test split; (test loss, test accuracy)."""
    return checkpoint_score(params, build, state)


def model(params: Mapping[str, Any], state: Mapping[str, Any]) -> nn.Module:
    """An MLP trial's saved model (its checkpoint's ``state``) as a module, in eval mode; it takes raw features."""
    return saved_model(params, build, state)
