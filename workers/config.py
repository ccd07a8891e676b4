"""The hyperparameters the built-in workloads read from ``params``, with defaults.

Values arrive from YAML search spaces through Optuna, so they are coerced
leniently ("64" is 64, "true" is True, None is "use the default") but checked
strictly: an unknown key or value is a ValueError naming the valid ones, since
a misspelt hyperparameter that is silently ignored wastes a whole study.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from workers.data import DATASETS

OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad")
LR_SCHEDULES = ("none", "cosine", "step")
# Names other libraries use for the same thing, for "did you mean".
_SYNONYMS = {
    "learning_rate": "lr", "l2": "weight_decay", "n_layers": "depth", "num_layers": "depth",
    "hidden_size": "width", "units": "width", "channels": "width", "kernel": "kernel_size",
}


@dataclass(frozen=True)
class Config:
    """One trial's hyperparameters; every field is a key of ``params``."""

    # Keys tuner always passes; the defaults serve direct calls.
    epochs: int = 10
    data: str = "mnist1d"
    seed: int = 0
    # Optimization.
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.0  # sgd and rmsprop; adam and adagrad ignore it
    nesterov: bool = False  # sgd only; with momentum 0 it is plain sgd
    batch_size: int | str = 64  # or "full": one step per epoch over the whole train split
    lr_schedule: str = "none"  # stepped once per epoch
    grad_clip: float = 0.0  # max global gradient norm; 0 is off
    weight_decay: float = 0.0  # L2, through the optimizer
    l1: float = 0.0  # coefficient of sum(|w|) over weights, added to the loss
    # Architecture.
    depth: int = 2  # hidden layers (MLP) or conv blocks (CNN)
    width: int = 128  # hidden units (MLP) or channels (CNN; its default is 32)
    kernel_size: int = 5  # CNN only
    activation: str = "relu"
    dropout: float = 0.0
    norm: str = "none"  # after each hidden linear/conv layer
    # Inputs.
    standardize: bool = True  # with the train split's mean and std
    augment_noise: float = 0.0  # std of Gaussian noise on standardized training inputs
    augment_shift: int = 0  # max circular shift in samples (signals and images only)
    train_size: int = 0  # keep only this many training examples (0: all); small splits overfit

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **defaults: Any) -> Config:
        """Read ``params`` over ``defaults`` (a model's own, like the CNN's width)."""
        for key in params:
            if key not in PARAMS:
                raise ValueError(
                    f"`{key}` is not a hyperparameter of the built-in workloads; they read "
                    f"{', '.join(PARAMS)}.{_did_you_mean(key, PARAMS)} Fix: rename or remove it."
                )
        given = {**defaults, **{k: v for k, v in params.items() if v is not None}}
        types = {f.name: f.type for f in fields(cls)}
        return cls(**{k: _coerce(k, v, types[k]) for k, v in given.items()})

    def __post_init__(self) -> None:
        for name, rule, ok in (
            ("epochs", ">= 1", self.epochs >= 1),
            ("lr", "> 0 and finite", self.lr > 0 and math.isfinite(self.lr)),
            ("momentum", "in [0, 1)", 0 <= self.momentum < 1),
            ("grad_clip", ">= 0", self.grad_clip >= 0),
            ("weight_decay", ">= 0", self.weight_decay >= 0),
            ("l1", ">= 0", self.l1 >= 0),
            ("depth", ">= 0", self.depth >= 0),
            ("width", ">= 1", self.width >= 1),
            ("kernel_size", ">= 1", self.kernel_size >= 1),
            ("dropout", "in [0, 1)", 0 <= self.dropout < 1),
            ("augment_noise", ">= 0", self.augment_noise >= 0),
            ("augment_shift", ">= 0", self.augment_shift >= 0),
        ):
            if not ok:
                raise ValueError(
                    f"`{name}` must be {rule}, but got {getattr(self, name)!r}. "
                    f"Fix: keep its range (or fixed value) {rule}."
                )
        if self.batch_size == 1 and self.norm == "batch":
            raise ValueError(
                "`norm: batch` needs at least 2 examples per batch, but got batch_size=1. "
                "Fix: use norm 'layer' or 'none', or a batch_size >= 2."
            )


# The keys of `params` and `fixed` that the built-in workloads (mlp, cnn) accept: one per field
# of Config. tuner's spec refuses any other when it loads a file, before a trial fails on it.
PARAMS: tuple[str, ...] = tuple(f.name for f in fields(Config))


def _choices(name: str) -> tuple[str, ...] | None:
    # workers.layers imports torch, which a trial needs but reading a spec (PARAMS) does not.
    from workers.layers import ACTIVATIONS, NORMS

    return {
        "data": DATASETS,
        "optimizer": OPTIMIZERS,
        "activation": tuple(ACTIVATIONS),
        "norm": NORMS,
        "lr_schedule": LR_SCHEDULES,
    }.get(name)


def _coerce(name: str, value: Any, kind: str) -> Any:
    choices = _choices(name)
    if choices is not None:
        value = "none" if value is None else str(value)
        if value not in choices:
            raise ValueError(
                f"`{name}` must be one of {', '.join(choices)}, but got {value!r}."
                f"{_did_you_mean(value, choices)} Fix: use one of those."
            )
        return value
    if name == "batch_size":
        return _batch_size(value)
    convert = {"int": _int, "float": _float, "bool": _bool}[kind]
    return convert(name, value)


def _batch_size(value: Any) -> int | str:
    if value == "full":
        return "full"
    size = _whole(value)
    if size is None or size < 1:
        raise ValueError(
            f"`batch_size` must be an int >= 1 or 'full', but got {value!r} "
            f"({type(value).__name__}). Fix: use e.g. 64, \"64\" or full."
        )
    return size


def _int(name: str, value: Any) -> int:
    number = _whole(value)
    if number is None:
        raise ValueError(
            f"`{name}` must be an int, but got {value!r} ({type(value).__name__}). "
            "Fix: use a whole number."
        )
    return number


def _whole(value: Any) -> int | None:
    """64, "64" and 64.0 (a grid over floats) all mean 64; True means nothing."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and not isinstance(value, bool) else None


def _float(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a number, but got {value!r} ({type(value).__name__})."
        ) from None


def _bool(name: str, value: Any) -> bool:
    text = str(value).lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"`{name}` must be true or false, but got {value!r}.")


def closest(value: str, options: tuple[str, ...]) -> str | None:
    """The option ``value`` most likely meant: its synonym in other libraries, else the nearest spelling."""
    if value in _SYNONYMS and _SYNONYMS[value] in options:
        return _SYNONYMS[value]
    # An abbreviation (opt, act, mom) is a prefix; difflib alone would answer opt with dropout.
    prefixed = [o for o in options if len(value) >= 3 and o.startswith(value)]
    if len(prefixed) == 1:
        return prefixed[0]
    close = difflib.get_close_matches(value, options, n=1)
    return close[0] if close else None


def _did_you_mean(value: str, options: tuple[str, ...]) -> str:
    close = closest(value, options)
    return f" Did you mean {close!r}?" if close else ""
