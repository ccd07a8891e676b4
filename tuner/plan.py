"""What a study will do, decided once from its spec: strategy, budget, grid, sampler, pruner, jobs.

``auto`` is resolved here and nowhere else; the launch header, the study's
creation, the orchestrator and a resume all read the same :class:`Plan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from tuner import strategies
from tuner.spec import CALLABLE_PREFIX, TRIAL_SUFFIX, StudySpec
from tuner.trial.messages import FLUSH_SECONDS, Scoring, TrialJob
from tuner.trial.optuna_trial import OptunaObjective
from tuner.store import internals


@dataclass(frozen=True)
class Plan:
    spec: StudySpec
    strategy: str  # what runs: spec.strategy, or what auto chose
    description: str  # one line: the strategy, and for auto why
    trials: int  # the budget: `trials`, or the grid's size
    grid_cut: str | None  # what a grid cut short by `trials` leaves out
    pruner: optuna.pruners.BasePruner
    pruner_options: dict[str, Any]  # the spec's, with budget-derived defaults filled in
    wait_at: tuple[int, ...]  # epochs where a verdict may fall (a pruner's rungs)
    wait_from: int | None  # and every epoch from this one on (per-epoch pruners, early stopping)

    @classmethod
    def of(cls, spec: StudySpec) -> Plan:
        choice = strategies.choose(spec) if spec.strategy == "auto" else None
        strategy = choice.strategy if choice is not None else spec.strategy
        defaults = _budget_defaults(spec)  # also in place of an explicit "auto"
        options = {**defaults, **{k: v for k, v in spec.pruner.options.items() if not (k in defaults and v == "auto")}}
        wait_at, wait_from = _verdict_epochs(spec, options)
        return cls(
            spec=spec, strategy=strategy, description=strategies.describe(spec, choice),
            trials=strategies.planned_trials(spec, strategy), grid_cut=strategies.grid_cut(spec, strategy),
            pruner=strategies.make_pruner(spec, options), pruner_options=options,
            wait_at=wait_at, wait_from=wait_from,
        )

    @property
    def pruner_description(self) -> str:
        """The pruner for the launch header, with where it judges."""
        kind = self.spec.pruner.type
        if kind == "none" and self.spec.multi_objective:
            # Optuna's pruners rank one value per epoch (optuna/optuna#3450).
            watch = "diagnostics pruner" if self.spec.pruner.diagnostics else "no pruner"
            stop = " and early stopping on " + self.spec.objective.metric if self.spec.early_stopping else ""
            return f"{watch}{stop} (Optuna's pruners rank one objective)"
        if kind == "none":
            return "no pruner"
        if self.wait_at:
            return f"pruner {kind} (rungs at epochs {', '.join(map(str, self.wait_at))})"
        if self.spec.epochs is None and kind in ("successive_halving", "hyperband"):
            return f"pruner {kind} (rungs learnt from the first trials to finish, as Optuna's)"
        return f"pruner {kind}"

    @property
    def define_by_run(self) -> bool:
        """Whether the study runs an Optuna objective(trial), which asks for its params as it runs."""
        workload = self.spec.workload
        return workload.startswith(CALLABLE_PREFIX) and workload.endswith(TRIAL_SUFFIX)

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

    def sampler(self) -> optuna.samplers.BaseSampler:
        """The sampler of one session of the study (a launch, a resume): seeded apart from every other one."""
        return strategies.session_sampler(self.spec, self.strategy)

    def job(self, trial: optuna.Trial, params: dict[str, Any], workload: Any) -> TrialJob:
        spec = self.spec
        # An Optuna objective asks the driver for its params as it runs, so its worker's channel is drained as
        # often as a streaming one's; it hears verdicts where it asks (trial.should_prune), not at set epochs.
        asks = isinstance(workload, OptunaObjective)
        waits = self.judging and not asks
        return TrialJob(
            trial.number, internals.trial_id(trial), params, spec.context(), workload,
            flush_seconds=0.0 if self.judging or asks else FLUSH_SECONDS,
            watch=spec.diagnostics.model_dump() if spec.pruner.diagnostics else None,
            timeout=spec.trial_timeout, wait_at=self.wait_at if waits else (),
            wait_from=self.wait_from if waits else None,
            objective=Scoring.of(spec.objective) if spec.value_at_best else None,
        )


def _budget_defaults(spec: StudySpec) -> dict[str, Any]:
    """Options a pruner would otherwise learn from the first trial to finish, set from the epoch budget.

    Optuna's ``auto`` waits for one trial to complete before it prunes at all
    (successive halving's ``min_resource``, hyperband's ``max_resource``): with
    trials running in parallel that is the whole first wave run to the end.
    The budget is known up front, so the rungs are too: successive halving's
    first rung is ``epochs / reduction_factor**2`` (three rungs below the
    budget), hyperband's brackets span 1 to ``epochs``. An Optuna objective
    launched without ``epochs=`` has no known budget: its pruner learns it as
    Optuna's own does for such an objective (``auto``).
    """
    kind, options = spec.pruner.type, spec.pruner.options
    if spec.epochs is None:
        return {"max_resource": "auto"} if kind == "hyperband" else {}
    if kind == "successive_halving":
        factor = options.get("reduction_factor", 4)
        return {"min_resource": max(1, spec.epochs // factor**2)}
    if kind == "extrapolating":
        # Its first rung waits for four values: one more than a curve fit needs, so that the
        # fits leaving one out give the extrapolation its spread.
        factor = options.get("reduction_factor", 4)
        return {"min_resource": min(max(4, spec.epochs // factor**2), spec.epochs), "max_resource": spec.epochs}
    if kind == "hyperband":
        return {"max_resource": spec.epochs}
    return {}


def _verdict_epochs(spec: StudySpec, options: dict[str, Any]) -> tuple[tuple[int, ...], int | None]:
    """Where the driver may stop a trial: the worker waits for its verdict there and nowhere else."""
    kind = spec.pruner.type
    wait_from = spec.early_stopping.patience + 1 if spec.early_stopping is not None else None
    if kind in ("successive_halving", "hyperband", "extrapolating") and spec.epochs is not None:
        # Optuna promotes at step min_resource * factor**(rate + rung); hyperband's brackets
        # differ only in the rate, so their rungs together are min_resource * factor**j.
        factor = options.get("reduction_factor", 3 if kind == "hyperband" else 4)
        step = options.get("min_resource", 1) * factor ** options.get("min_early_stopping_rate", 0)
        rungs = []
        while step < spec.epochs:  # never at the final epoch: stopping there saves nothing
            rungs.append(int(step))
            step *= factor
        return tuple(rungs), wait_from
    if kind in ("median", "percentile", "threshold"):
        first = max(int(options.get("n_warmup_steps", 0)), 1)
        wait_from = first if wait_from is None else min(first, wait_from)
    return (), wait_from
