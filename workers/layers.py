"""The pieces the built-in models share: activations, normalization, dropout."""

from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}
NORMS = ("none", "batch", "layer")


def hidden_block(features: int, *, activation: str, norm: str, dropout: float, conv: bool) -> list[nn.Module]:
    """What follows each hidden linear or conv layer: norm, activation, dropout.

    For conv features (batch, channels, length), ``layer`` is GroupNorm with one
    group, which normalizes over channels and length as LayerNorm does over the
    features of an MLP.
    """
    layers: list[nn.Module] = []
    if norm == "batch":
        layers.append(nn.BatchNorm1d(features))
    elif norm == "layer":
        layers.append(nn.GroupNorm(1, features) if conv else nn.LayerNorm(features))
    layers.append(ACTIVATIONS[activation]())
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers
