"""A study as pandas DataFrames: one row per trial, one row per epoch.

``trials_dataframe`` is Optuna's own ``Study.trials_dataframe()`` (so code
written for Optuna reads it unchanged) with tuner's per-trial facts beside it,
under plain names: ``diagnosis``, ``best_epoch``, ``final_gap``, ``epochs``
(how many ran) and ``stopped_because`` (the pruning, failure or
early-stopping reason, as ``tuner show`` says it). ``epochs_dataframe`` is
every recorded epoch with every key a workload reported, one row each.

pandas is imported here only, when a frame is asked for (``pip install
"tuner[pandas]"``); Parquet files need pyarrow too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial

from tuner.errors import TunerError

if TYPE_CHECKING:
    import pandas as pd

    from tuner.api import Study

# tuner's columns in trials_dataframe, in this order after Optuna's.
TRIAL_COLUMNS = ("diagnosis", "best_epoch", "final_gap", "epochs", "stopped_because")
# Epoch counts are whole numbers, missing (<NA>) where a trial recorded none; a gap is a float (NaN where none).
_DTYPES = {"best_epoch": "Int64", "epochs": "Int64", "final_gap": "float64"}
# The epoch frame's first columns; the rest follow in the store's order, then each metric where it first appears.
EPOCH_INDEX = ("study", "trial", "epoch")


def trials_dataframe(study: Study, **optuna_options: Any) -> pd.DataFrame:
    """Optuna's ``trials_dataframe(**optuna_options)`` plus tuner's columns (``TRIAL_COLUMNS``)."""
    pd = _pandas()
    trials = study.optuna.get_trials(deepcopy=False)  # the order of Optuna's own frame
    frame = study.optuna.trials_dataframe(**optuna_options)
    if frame.empty:
        return pd.DataFrame(columns=[*frame.columns, *TRIAL_COLUMNS])
    facts = [_facts(t) for t in trials]
    for column in TRIAL_COLUMNS:
        values = pd.array([f[column] for f in facts], dtype=_DTYPES.get(column))
        frame[(column, "") if isinstance(frame.columns, pd.MultiIndex) else column] = values
    return frame


def epochs_dataframe(study: Study, trial: int | None = None) -> pd.DataFrame:
    """One row per recorded epoch (``trial``: only that trial's), with the study's name and the trial number."""
    pd = _pandas()
    rows = study.epochs(trial)
    if not rows:
        return pd.DataFrame(columns=list(EPOCH_INDEX))
    frame = pd.DataFrame(rows)
    frame.insert(0, "study", study.name)
    return frame


def to_parquet(frame: pd.DataFrame, path: str | Path, option: str = "--parquet") -> int:
    """Write ``frame`` to a Parquet file; how many rows it holds."""
    try:
        import pyarrow  # noqa: F401  (pandas names the engine it lacks less clearly)
    except ImportError:
        raise TunerError(f'{option}: writing Parquet needs pyarrow. Fix: pip install "tuner[pandas]" '
                         "(or pip install pyarrow).") from None
    try:
        frame.to_parquet(path, index=False)
    except OSError as exc:
        raise TunerError(f"{option}: cannot write {str(path)!r}: {exc.strerror or exc}. "
                         "Fix: choose a writable path.") from None
    return len(frame)


def _facts(trial: FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        "diagnosis": attrs.get("diagnosis"),
        "best_epoch": attrs.get("best_epoch"),
        "final_gap": attrs.get("final_gap"),
        "epochs": attrs.get("epochs"),
        "stopped_because": attrs.get("prune_reason") or attrs.get("fail_reason") or attrs.get("stop_reason") or "",
    }


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise TunerError('DataFrames need pandas. Fix: pip install "tuner[pandas]" (or pip install pandas).') from None
    return pandas
