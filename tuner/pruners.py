"""Successive halving that reads a trial's learning curve before it stops it.

Optuna's pruners rank a trial by its value at a rung, so a configuration
that starts slowly and ends best (a small learning rate, strong
regularization) ranks low there and is stopped: the curves cross after the
rung. Where Optuna's ``SuccessiveHalvingPruner`` would stop a trial, this one
fits saturating curves to the trial's values so far and keeps it while the
optimistic end of those fits could still beat the best value the study has
seen. The idea is freeze-thaw's (Swersky et al. 2014) and DPL's (Kadra et
al. 2023: an ensemble of power laws, its spread the uncertainty), kept to
two parametric families and a leave-one-out ensemble.

Only numpy, scipy and Optuna: a strategy never imports torch, ray or sqlalchemy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner, SuccessiveHalvingPruner
from optuna.study import StudyDirection
from scipy.optimize import OptimizeWarning, curve_fit

# The fewest values a curve is fitted to: each family has three parameters.
MIN_POINTS = 3


def _exp3(t: np.ndarray, c: float, a: float, rate: float) -> np.ndarray:
    """Exponential saturation towards the plateau ``c``."""
    return c - a * np.exp(-rate * t)


def _pow3(t: np.ndarray, c: float, a: float, alpha: float) -> np.ndarray:
    """Power-law saturation towards ``c`` (slower to flatten than the exponential)."""
    return c - a * np.power(t, -alpha)


# Each family rises to a plateau (a >= 0); the bounds on the rate keep a fit of a few points finite.
FAMILIES: dict[str, tuple[Callable[..., np.ndarray], tuple[list[float], list[float]]]] = {
    "exp3": (_exp3, ([-np.inf, 0.0, 1e-3], [np.inf, np.inf, 5.0])),
    "pow3": (_pow3, ([-np.inf, 0.0, 1e-2], [np.inf, np.inf, 3.0])),
}


def extrapolations(steps: Sequence[float], values: Sequence[float], final_step: int) -> list[float]:
    """Each fit's value at ``final_step``: both families, on all the points and on each leave-one-out subset.

    ``values`` rise towards a plateau (negate a loss first). The spread of
    the ensemble is the uncertainty of the extrapolation: few points, or
    noisy ones, give fits that disagree. A fit that fails to converge is left out.
    """
    t, y = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    keep = np.arange(len(t))
    subsets = [keep] + ([np.delete(keep, i) for i in keep] if len(t) > MIN_POINTS else [])
    out = []
    for family, bounds in FAMILIES.values():
        for subset in subsets:
            params = _fit(family, bounds, t[subset], y[subset])
            if params is not None:
                out.append(float(family(np.float64(final_step), *params)))
    return [v for v in out if math.isfinite(v)]


def _fit(family: Callable[..., np.ndarray], bounds: Any, t: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    span = max(float(y[-1] - y[0]), 1e-3)
    start = [float(y[-1]) + span, 2.0 * span, 0.5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            params, _ = curve_fit(family, t, y, p0=start, bounds=bounds, maxfev=2000)
        except (RuntimeError, ValueError):
            return None
    return params


def optimistic_final(steps: Sequence[float], values: Sequence[float], final_step: int, quantile: float) -> float:
    """The ``quantile`` of the ensemble's extrapolations, never above what the latest slope could add.

    A saturating curve gains at most its current slope per remaining step,
    so that line caps a fit that shoots off; ``-inf`` when no fit converged.
    """
    fits = extrapolations(steps, values, final_step)
    if not fits:
        return -math.inf
    slope = max((values[-1] - values[-3]) / (steps[-1] - steps[-3]), 0.0)
    cap = values[-1] + slope * (final_step - steps[-1])
    return min(float(np.quantile(fits, quantile)), cap)


class ExtrapolatingPruner(BasePruner):
    """Optuna's successive halving, with a stop vetoed while the trial's curve could still beat the best.

    ``max_resource`` is the last step a trial reaches (the epoch budget); a
    trial there is never stopped. With fewer than ``MIN_POINTS`` values the
    rung's verdict stands. ``quantile`` is how optimistic the veto is: the
    share of the ensemble's extrapolations that must fall below the best value
    seen for the stop to stand (1.0: every fit).
    """

    def __init__(self, max_resource: int, min_resource: int | str = "auto", reduction_factor: int = 4,
                 min_early_stopping_rate: int = 0, bootstrap_count: int = 0, quantile: float = 0.9) -> None:
        if not isinstance(max_resource, int) or max_resource < 1:
            raise ValueError(f"max_resource: must be an int >= 1, got {max_resource!r}. Fix: the epoch budget")
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile: must be within [0, 1], got {quantile!r}. Fix: e.g. quantile: 0.9")
        self._halving = SuccessiveHalvingPruner(min_resource, reduction_factor, min_early_stopping_rate,
                                                bootstrap_count)
        self._max_resource = max_resource
        self._quantile = quantile

    def prune(self, study: optuna.study.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step >= self._max_resource or not self._halving.prune(study, trial):
            return False
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        curve = sorted((s, sign * v) for s, v in trial.intermediate_values.items() if math.isfinite(v))
        if len(curve) < MIN_POINTS:
            return True
        steps, values = [float(s) for s, _ in curve], [v for _, v in curve]
        best = _best_seen(study, trial.number, sign)
        return optimistic_final(steps, values, self._max_resource, self._quantile) <= best


def _best_seen(study: optuna.study.Study, number: int, sign: float) -> float:
    """The best per-step value any other trial of the study has reported (signed so that higher is better)."""
    seen = [sign * v for t in study.get_trials(deepcopy=False) if t.number != number
            for v in t.intermediate_values.values() if math.isfinite(v)]
    return max(seen, default=-math.inf)


__all__ = ["ExtrapolatingPruner", "extrapolations", "optimistic_final"]
