"""What a study will do, decided once from its spec: strategy, budget, grid, sampler, pruner, jobs.

``auto`` is resolved here and nowhere else; the launch header, the study's
creation, the orchestrator and a resume all read the same :class:`Plan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from tuner import strategies
from tuner.spec import StudySpec
from tuner.trial.messages import FLUSH_SECONDS, TrialJob
from tuner.store import internals


@dataclass(frozen=True)
class Plan:
    spec: StudySpec
    strategy: str  # what runs: spec.strategy, or what auto chose
    description: str  # one line: the strategy, and for auto why
    trials: int  # the budget: `trials`, or the grid's size
    grid_cut: str | None  # what a grid cut short by `trials` leaves out
    pruner: optuna.pruners.BasePruner

    @classmethod
    def of(cls, spec: StudySpec) -> Plan:
        choice = strategies.choose(spec) if spec.strategy == "auto" else None
        strategy = choice.strategy if choice is not None else spec.strategy
        return cls(
            spec=spec, strategy=strategy, description=strategies.describe(spec, choice),
            trials=strategies.planned_trials(spec, strategy), grid_cut=strategies.grid_cut(spec, strategy),
            pruner=strategies.make_pruner(spec),
        )

    @property
    def is_grid(self) -> bool:
        return self.strategy == "grid"

    @property
    def judging(self) -> bool:
        """Whether the driver must see every epoch as it ends (a pruner or early stopping judges it)."""
        return self.spec.pruner.type != "none" or self.spec.early_stopping is not None

    def grid_points(self) -> list[dict[str, Any]]:
        """The grid's points in order (grid search only)."""
        return strategies.grid_points(self.spec) if self.is_grid else []

    def sampler(self, seed: int | None = None) -> optuna.samplers.BaseSampler:
        return strategies.make_sampler(self.spec, self.strategy, seed)

    def job(self, trial: optuna.Trial, params: dict[str, Any], workload: Any) -> TrialJob:
        spec = self.spec
        return TrialJob(
            trial.number, internals.trial_id(trial), params, spec.context(), workload,
            flush_seconds=0.0 if self.judging else FLUSH_SECONDS,
            watch=spec.diagnostics.model_dump() if spec.pruner.diagnostics else None,
            timeout=spec.trial_timeout,
        )
