"""tuner: hyperparameter tuning for deep-learning training.

Optuna chooses configurations, Ray runs them as PyTorch trials, and one SQL
database records every epoch (Optuna's schema, so optuna-dashboard reads it).

The names below load on first use, so that a Ray worker, which imports only
``tuner.trial``, never loads the driver (the store, SQLAlchemy, the API).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Study": "tuner.api", "launch": "tuner.api", "load": "tuner.api", "resume": "tuner.api",
    "SpecError": "tuner.errors", "StorageError": "tuner.errors", "TunerError": "tuner.errors",
    "NoResultError": "tuner.errors", "StudyFailedError": "tuner.errors",
    "StudySpec": "tuner.spec", "load_spec": "tuner.spec",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from tuner.api import Study, launch, load, resume
    from tuner.errors import NoResultError, SpecError, StorageError, StudyFailedError, TunerError
    from tuner.spec import StudySpec, load_spec


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tuner' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
