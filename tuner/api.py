"""The Python API: launch, resume and load studies.

>>> import tuner
>>> study = tuner.launch("search_spaces/mnist1d_mlp.yaml", strategy="gp", trials=30)
>>> study.best_params, study.best_value, study.epochs()
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from tuner import probe, strategies
from tuner.errors import SpecError, StorageError, TunerError
from tuner.executors import make_executor
from tuner.orchestrator import Orchestrator, Progress
from tuner.plan import Plan
from tuner.spec import CALLABLE_PREFIX, FloatParam, StudySpec, call_problem, load_spec, point_problems
from tuner.store import Store
from tuner.store.lock import study_lock
from tuner.trial import metrics, record

SPEC_ATTR = "tuner.spec"
ENQUEUED_ATTR = "enqueued"  # a trial whose params a user queued (tuner enqueue)
log = logging.getLogger("tuner")


class Study:
    """A tuner study: Optuna's study plus tuner's per-epoch records."""

    def __init__(self, optuna_study: optuna.Study, store: Store, plan: Plan | None = None) -> None:
        self.optuna = optuna_study
        self.store = store
        self.plan = plan  # what this session runs (None for a study only loaded)

    @property
    def name(self) -> str:
        return self.optuna.study_name

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.optuna.user_attrs.get(SPEC_ATTR, {}))

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.optuna.trials

    @property
    def best_trial(self) -> FrozenTrial:
        self._one_objective("best_trial")
        return self.optuna.best_trial

    @property
    def best_params(self) -> dict[str, Any]:
        self._one_objective("best_params")
        return self.optuna.best_params

    @property
    def best_value(self) -> float:
        self._one_objective("best_value")
        return self.optuna.best_value

    @property
    def multi_objective(self) -> bool:
        return len(self.optuna.directions) > 1

    @property
    def metric_names(self) -> list[str]:
        """What each of a trial's values measures, in order (the spec's objectives)."""
        return self.optuna.metric_names or [self.spec.get("objective", {}).get("metric", "value")]

    @property
    def best_trials(self) -> list[FrozenTrial]:
        """The Pareto front: the COMPLETE (and feasible) trials that no other trial beats on every objective.

        For one objective, the trials that share the best value (Optuna's ``best_trials``).
        """
        return self.optuna.best_trials

    def _one_objective(self, name: str) -> None:
        if self.multi_objective:
            raise TunerError(
                f"{name}: a study with {len(self.optuna.directions)} objectives ({', '.join(self.metric_names)}) "
                f"has a Pareto front of trade-offs, not one best trial. Fix: use best_trials "
                "(each trial's .values follow metric_names)."
            )

    def epochs(self, trial: int | None = None) -> list[dict[str, Any]]:
        """One dict per recorded epoch (``trial`` is the trial number), in order."""
        return self.store.epochs(self.optuna, None if trial is None else [trial])

    def trials_dataframe(self, **optuna_options: Any) -> Any:
        """Optuna's ``trials_dataframe()`` (pandas) plus diagnosis, best_epoch, final_gap, epochs, stopped_because."""
        from tuner import frames

        return frames.trials_dataframe(self, **optuna_options)

    def epochs_dataframe(self, trial: int | None = None) -> Any:
        """One row per recorded epoch (pandas), every key, with the study's name and the trial number."""
        from tuner import frames

        return frames.epochs_dataframe(self, trial)

    def best_configurations(self, k: int) -> list[dict[str, Any]]:
        """The params of the ``k`` best COMPLETE trials, best first: ``warm_start=`` for another study.

        With several objectives, the Pareto front's trials, by the first objective.
        """
        if self.multi_objective:
            return [dict(t.params) for t in self.pareto_front()[:k]]
        done = [t for t in self.optuna.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.value is not None]
        sign = -1.0 if self.optuna.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        return [dict(t.params) for t in sorted(done, key=lambda t: (sign * t.value, t.number))[:k]]

    def pareto_front(self) -> list[FrozenTrial]:
        """:attr:`best_trials` ordered for people: best on the first objective first."""
        sign = -1.0 if self.optuna.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
        return sorted(self.best_trials, key=lambda t: (sign * t.values[0], t.number))

    @property
    def target_reached(self) -> FrozenTrial | None:
        """The first trial that reached the spec's `objective.target` (the study stopped there), or None."""
        target = self.spec.get("objective", {}).get("target")
        if target is None:
            return None
        reached = [t for t in self.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
                   and (t.value <= target if self.optuna.direction.name == "MINIMIZE" else t.value >= target)]
        return min(reached, key=lambda t: t.datetime_complete or t.datetime_start, default=None)

    def best_checkpoint(self, to: str | Path | None = None) -> Path:
        """The best trial's model (its best epoch's checkpoint), downloaded to ``to`` (default
        ``./<study>-trial<N>-<file>``); its path.

        A TunerError says why there is none: no completed trial, several
        objectives (pick a trial: :meth:`checkpoint`), or a workload that
        never passed ``checkpoint=`` to ``report``.
        """
        if len(self.optuna.directions) > 1:
            raise TunerError(f"study {self.name!r} has several objectives, so no one best trial. Fix: pick a trial "
                             "of its Pareto front (tuner best) and call study.checkpoint(N) (tuner checkpoint "
                             "STUDY --trial N).")
        try:
            best = self.optuna.best_trial
        except ValueError:
            raise TunerError(f"study {self.name!r} has no completed trial yet, so no best checkpoint.") from None
        return self.checkpoint(best.number, to)

    def checkpoint(self, trial: int, to: str | Path | None = None) -> Path:
        """Trial ``trial``'s model (its best epoch's checkpoint), from the study's artifact store to ``to``; its path."""
        from tuner import checkpoints

        found = [t for t in self.optuna.get_trials(deepcopy=False) if t.number == trial]
        if not found:
            raise TunerError(f"trial: study {self.name!r} has no trial {trial} (its trials are 0 to "
                             f"{len(self.trials) - 1}). Fix: pick one that `tuner show {self.name}` lists.")
        return checkpoints.download(self.store, self.optuna, found[0], to)

    @property
    def artifacts(self) -> Path:
        """The study's Optuna artifact store (a directory), where its trials' checkpoints are kept."""
        from tuner import checkpoints

        return checkpoints.location(self.store)

    def accounting(self) -> dict[str, Any]:
        """Compute spent (epochs, wall and GPU seconds) and what pruning saved."""
        return metrics.accounting(self.trials, int(self.spec.get("epochs", 0)))

    def __repr__(self) -> str:
        return f"Study(name={self.name!r}, trials={len(self.trials)}, storage={self.store.safe_url!r})"


def launch(
    spec_path_or_dict: str | Path | Mapping[str, Any] | None = None,
    *,
    objective: Callable[..., Any] | None = None,
    space: Mapping[str, Any] | None = None,
    study: str | None = None,
    storage: str | None = None,
    executor: str = "ray",
    ray_address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[StudySpec, Study], None] | None = None,
    warm_start: Sequence[Mapping[str, Any]] = (),
    callbacks: Sequence[Callable[..., Any]] = (),
    **overrides: Any,
) -> Study:
    """Validate a spec, create its study, and run it to its budget.

    ``overrides`` replace top-level spec keys (``strategy``, ``trials`` or
    ``n_trials``, ``parallel``, ``epochs``, ``seed``, ``timeout``, ...);
    ``metric``/``direction`` set the objective. ``warm_start`` configurations
    (e.g. the best of a previous study: ``tuner.load(name).best_configurations(5)``)
    run first; those that no longer fit the space are left out. ``callbacks``
    are Optuna's ``callback(study, frozen_trial)``, called as each trial ends
    (see :class:`tuner.recorder.Callbacks`).
    """
    return launch_with(
        spec_path_or_dict, _renamed(overrides, "keyword"), objective=objective, space=space, study=study,
        storage=storage, executor=executor, ray_address=ray_address, on_progress=on_progress, on_start=on_start,
        warm_start=warm_start, callbacks=callbacks,
    )


def launch_with(
    spec_path_or_dict: str | Path | Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
    *,
    objective: Callable[..., Any] | None = None,
    space: Mapping[str, Any] | None = None,
    study: str | None = None,
    storage: str | None = None,
    executor: str = "ray",
    ray_address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[StudySpec, Study], None] | None = None,
    warm_start: Sequence[Mapping[str, Any]] = (),
    callbacks: Sequence[Callable[..., Any]] = (),
) -> Study:
    """:func:`launch` with ``overrides`` as spec keys (an :class:`~tuner.spec.Overrides` names
    the flag or keyword a bad value came from, e.g. ``--trials`` from the CLI)."""
    _check_objective(objective)
    spec = _make_spec(spec_path_or_dict, objective, space, overrides)
    callbacks = _callbacks(spec, callbacks)
    workload = objective if objective is not None else spec.workload_target
    store = Store(storage)
    name = study or spec.name
    store.check_new(name)
    runner = make_executor(executor, ray_address)
    runner.check_workload(workload)
    spec, probed = probe.before_study(spec, workload)  # the spec's lr range test; with narrow: its bounds
    plan = Plan.of(spec)
    with study_lock(store.url, name):
        runner.start(spec.resources.model_dump(), spec.parallel)
        try:
            optuna_study = _create(store, name, plan, warm_start)
            if probed is not None:
                optuna_study.set_user_attr(probe.ATTR, probed.evidence())
        except BaseException:
            runner.close()
            raise
        result = Study(optuna_study, store, plan)
        if on_start is not None:
            on_start(spec, result)
        Orchestrator(spec, store, optuna_study, runner, workload, on_progress, plan, callbacks).run()
    return result


def resume(
    name: str,
    *,
    objective: Callable[..., Any] | None = None,
    storage: str | None = None,
    executor: str = "ray",
    ray_address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    callbacks: Sequence[Callable[..., Any]] = (),
    **overrides: Any,
) -> Study:
    """Continue a study to its budget with the spec it was launched with.

    Trials left RUNNING by an orchestrator that died are marked failed (they
    do not count toward the budget); ``trials`` may be raised to run more.
    ``callbacks`` as for :func:`launch`.
    """
    return resume_with(
        name, _renamed(overrides, "keyword"), objective=objective, storage=storage, executor=executor,
        ray_address=ray_address, on_progress=on_progress, callbacks=callbacks,
    )


def resume_with(
    name: str,
    overrides: Mapping[str, Any],
    *,
    objective: Callable[..., Any] | None = None,
    storage: str | None = None,
    executor: str = "ray",
    ray_address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    callbacks: Sequence[Callable[..., Any]] = (),
) -> Study:
    """:func:`resume` with ``overrides`` as spec keys (see :func:`launch_with`)."""
    store = Store(storage)
    optuna_study = store.load_study(name)
    saved = optuna_study.user_attrs.get(SPEC_ATTR)
    if not saved:
        raise StorageError(f"study {name!r} was not launched by tuner (it has no {SPEC_ATTR!r}); nothing to resume.")
    spec = load_spec({**saved, "name": saved.get("name", name)}, overrides)
    if spec.workload.startswith(CALLABLE_PREFIX) and objective is None:
        raise TunerError(
            f"study {name!r} runs a Python function ({spec.workload.removeprefix(CALLABLE_PREFIX)}); "
            "resume it from Python: tuner.resume(name, objective=that_function)."
        )
    plan = Plan.of(spec)
    callbacks = _callbacks(spec, callbacks)
    optuna_study = store.load_study(name, sampler=_resumed_sampler(plan, optuna_study))
    with study_lock(store.url, name) as exclusive:
        runner = make_executor(executor, ray_address)
        workload = objective if objective is not None else spec.workload_target
        runner.check_workload(workload)
        orchestrator = Orchestrator(spec, store, optuna_study, runner, workload, on_progress, plan, callbacks)
        orchestrator.recover(every_running=exclusive)
        if orchestrator.budget_reached():
            done = orchestrator.progress
            log.info("study %s: budget reached (%d/%d trials); nothing to run. Fix: tuner resume %s --trials N "
                     "with N > %d to run more.", name, done.finished, done.planned, name, done.planned)
            return Study(optuna_study, store, plan)
        runner.start(spec.resources.model_dump(), spec.parallel)
        orchestrator.run()
    return Study(optuna_study, store, plan)


def load(name: str, storage: str | None = None) -> Study:
    """Open an existing study (read it, or look at its epochs)."""
    store = Store(storage)
    return Study(store.load_study(name), store)


def enqueue(name: str, points: Sequence[Mapping[str, Any]], storage: str | None = None, *,
            source: str = "points") -> Study:
    """Queue configurations to run first in a study (Optuna's ``enqueue_trial``), each checked against its space.

    A running study takes them at its next trial; otherwise the next
    ``resume`` does, within the study's budget. Nothing is queued unless every
    point fits: a problem names the point, the param, its range and the fix
    (``source`` names where the points came from, e.g. the JSON file).
    """
    store = Store(storage)
    optuna_study = store.load_study(name)
    saved = optuna_study.user_attrs.get(SPEC_ATTR)
    if not saved:
        raise StorageError(f"study {name!r} was not launched by tuner (it has no {SPEC_ATTR!r}); "
                           "use optuna's study.enqueue_trial for it.")
    spec = load_spec({**saved, "name": saved.get("name", name)})
    problems = []
    for i, params in enumerate(points):
        found = [] if strategies.fits(spec, params) else point_problems(spec, params) or ["does not fit the space"]
        problems += [f"point {i + 1} of {len(points)}: {p}" if len(points) > 1 else p for p in found]
    if problems:
        raise SpecError(source, problems)
    for params in points:
        floats = {k: float(v) for k, v in params.items() if isinstance(spec.params[k], FloatParam)}
        optuna_study.enqueue_trial({**params, **floats}, user_attrs={ENQUEUED_ATTR: True})
    return Study(optuna_study, store, Plan.of(spec))


# ---------------------------------------------------------------------- helpers


def _check_objective(objective: Callable[..., Any] | None) -> None:
    """Refuse, before anything is created, an objective that cannot be called as ``train(params, report)``.

    The commonest shape in the field is Optuna's ``objective(trial)``, which
    asks for its params itself; tuner samples them from ``space=`` instead.
    """
    if objective is None:
        return
    wrong = call_problem(objective)
    if wrong:
        raise TunerError(
            f"objective: {wrong.removesuffix('.')} (an Optuna-style objective(trial)?). Fix: take the sampled "
            "params and a report "
            "callable, and move each trial.suggest_* into space=:\n"
            "    def train(params, report):              # params['lr'], params['epochs'], ...\n"
            "        for epoch in range(1, params['epochs'] + 1):\n"
            "            ...\n"
            "            report(epoch, val_loss=vl)      # instead of trial.report / trial.should_prune\n"
            "    tuner.launch(space={'lr': {'type': 'float', 'low': 1e-4, 'high': 0.1, 'log': True}}, "
            "objective=train)"
        ) from None


def _callbacks(spec: StudySpec, given: Sequence[Callable[..., Any]]) -> list[Any]:
    """The session's study callbacks: those given, then the spec's `log:` loggers (their library imported only then)."""
    if callable(given) or isinstance(given, (str, bytes)):
        given = [given]  # one callback, not wrapped in a list: what it meant is plain
    for callback in given:
        if not callable(callback):
            raise TunerError(f"callbacks: each must be callable as callback(study, frozen_trial), but got "
                             f"{callback!r} ({type(callback).__name__}). Fix: pass functions or callback objects, "
                             "e.g. callbacks=[optuna_integration.MLflowCallback(...)].")
    loggers: list[Any] = []
    if spec.log is not None and spec.log.tensorboard is not None:
        from tuner.integrations.tensorboard import TensorBoardCallback

        loggers.append(TensorBoardCallback(spec.log.tensorboard))
    if spec.log is not None and spec.log.mlflow is not None:
        from tuner.integrations.mlflow import MLflowCallback

        try:
            loggers.append(MLflowCallback(spec.log.mlflow))
        except TunerError as exc:  # unreachable: said before the study is created
            raise TunerError(f"log.mlflow: {exc}") from None
    return [*given, *loggers]


def _renamed(overrides: Mapping[str, Any], given_as: str | None = None) -> dict[str, Any]:
    """Keyword arguments as spec keys.

    ``given_as`` ("keyword" or "flag") says how the user wrote them, so that a bad
    value blames ``trials=`` or ``--trials``, not the file; None (a caller that
    cannot tell) keeps the file's name on it.
    """
    from tuner.spec import Overrides

    out = dict(overrides)
    spelled = {k: f"{k}=" if given_as == "keyword" else "--" + k.replace("_", "-") for k in out} if given_as else {}
    if "n_trials" in out:
        out["trials"] = out.pop("n_trials")
        spelled["trials"] = spelled.pop("n_trials", "")
    objective = {k: out.pop(k) for k in _OBJECTIVE_KEYS if out.get(k) is not None}
    if objective:
        out["objective"] = objective
        spelled.update({f"objective.{k}": spelled.pop(k, "") for k in objective})
    return Overrides(out, spelled) if given_as else out


_OBJECTIVE_KEYS = ("metric", "direction", "mode", "gap_penalty", "max_gap", "target")


def _make_spec(
    source: str | Path | Mapping[str, Any] | None,
    objective: Callable[..., Any] | None,
    space: Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
) -> StudySpec:
    extra = overrides.copy()
    if source is None:
        if space is None or objective is None:
            raise TunerError(
                "launch() needs a spec (a YAML path or a dict), or both `space=` and `objective=`."
            )
        name = getattr(objective, "__name__", None) or getattr(getattr(objective, "func", None), "__name__", "study")
        source = {"name": name.replace("_", "-").strip("-<>") or "study"}
    if space is not None:
        extra["params"] = dict(space)
    if objective is not None:
        # functools.partial and callable objects have no __qualname__ of their own.
        target = getattr(objective, "func", objective)
        qualname = getattr(target, "__qualname__", type(target).__qualname__)
        extra["workload"] = f"{CALLABLE_PREFIX}{getattr(target, '__module__', '?')}:{qualname}"
    return load_spec(source, extra)


def _resumed_sampler(plan: Plan, study: optuna.Study) -> optuna.samplers.BaseSampler:
    """The sampler of a resumed study, seeded apart from every earlier session of it.

    Rebuilt with the spec's own seed, it would draw the first session's
    configurations again. The seed is derived from the spec's and the number
    of trials already made, so a resume is still reproducible, and a study
    resumed before its first trial draws exactly what one launch would.
    (QMC continues its own sequence from the study, so it keeps the seed.)
    """
    made = len(study.get_trials(deepcopy=False))
    seed = plan.spec.seed
    if seed is None or made == 0 or plan.strategy == "qmc":
        return plan.sampler()
    return plan.sampler(int(np.random.SeedSequence([seed, made]).generate_state(1)[0]))


def _create(store: Store, name: str, plan: Plan, warm_start: Sequence[Mapping[str, Any]] = ()) -> optuna.Study:
    """Create the study with its spec snapshot, the warm-start points and (grid search) the points it runs queued."""
    spec = plan.spec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = store.create_study(name, spec.directions, plan.sampler())
        if spec.multi_objective:  # the dashboard and trials_dataframe() name each value by its metric
            study.set_metric_names(spec.metric_names)
    study.set_user_attr(SPEC_ATTR, {**spec.to_dict(), "name": spec.name})
    if plan.is_grid:
        # Queue the points that will run now: Optuna's GridSampler alone may hand the same
        # point to two trials running at once. Past the budget, a queued point would wait forever.
        if plan.grid_cut:
            log.warning("%s", plan.grid_cut)
        for params in plan.grid_points()[: plan.trials]:
            study.enqueue_trial(params)
        if warm_start:
            log.info("warm start: left out, as a grid runs every point of its space anyway")
        return study  # the grid is queued already; warm-start points would only repeat some
    fitting = [params for params in warm_start if strategies.fits(spec, params)]
    for params in fitting:
        study.enqueue_trial(dict(params), user_attrs={record.WARM_START: True}, skip_if_exists=True)
    if warm_start:
        left = len(warm_start) - len(fitting)
        log.info("warm start: %d configuration%s queued first%s", len(fitting), "" if len(fitting) == 1 else "s",
                 f" ({left} left out: outside this space)" if left else "")
    return study
