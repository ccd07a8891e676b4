"""tuner: hyperparameter tuning for deep-learning training.

Optuna chooses configurations, Ray runs them as PyTorch trials, and one SQL
database records every epoch (Optuna's schema, so optuna-dashboard reads it).
"""

from __future__ import annotations

from tuner.api import Study, launch, load, resume
from tuner.errors import SpecError, StorageError, TunerError
from tuner.spec import StudySpec, load_spec

__version__ = "0.1.0"

__all__ = [
    "SpecError",
    "StorageError",
    "Study",
    "StudySpec",
    "TunerError",
    "launch",
    "load",
    "load_spec",
    "resume",
]
