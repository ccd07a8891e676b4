"""The Python API: launch, resume and load studies.

>>> import tuner
>>> study = tuner.launch("search_spaces/mnist1d_mlp.yaml", strategy="gp", trials=30)
>>> study.best_params, study.best_value, study.epochs()
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import shlex
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tuner import optuna_objective, probe, recovery, strategies
from tuner.errors import NoResultError, SpecError, StorageError, TunerError
from tuner.executors import make_executor
from tuner.orchestrator import Orchestrator, Progress
from tuner.progress import shown
from tuner.plan import Plan
from tuner.spec import (
    CALLABLE_PREFIX, MAX_NAME_LENGTH, TRIAL_SUFFIX, FloatParam, StudySpec, check_study_name, load_spec,
    point_problems, unfit_shape,
)
from tuner.store import Store, resolve_url
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
        """The best COMPLETE trial; :class:`NoResultError` says why where there is none (e.g. every trial failed)."""
        return self._best("best_trial")

    @property
    def best_params(self) -> dict[str, Any]:
        return self._best("best_params").params

    @property
    def best_value(self) -> float:
        value = self._best("best_value").value
        assert value is not None  # a COMPLETE trial of one objective has its value
        return value

    def _best(self, name: str) -> FrozenTrial:
        self._one_objective(name)
        try:
            return self.optuna.best_trial
        except ValueError:  # Optuna's bare "Record does not exist."
            why = self.why_no_result()
            if why is None:
                raise
            raise NoResultError(f"{name}: study {self.name} has none, as no trial completed: {why}") from None

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

    def why_no_result(self) -> str | None:
        """Why the study has no result (no COMPLETE, feasible trial), in a sentence; None when it has one.

        A study without a result has nothing to report or warm-start from, however its trials ended
        (all failed, all pruned, none run before a timeout): the CLI exits 1 on it, and a scheduled
        run is recorded failed.
        """
        trials = self.optuna.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        complete = states.count(optuna.trial.TrialState.COMPLETE)
        if complete and self.optuna.best_trials:
            return None
        if complete:
            return (f"none of its {complete} completed trials is feasible (objective.max_gap). Fix: raise max_gap "
                    "or drop it, and `tuner resume` for more trials.")
        if not trials:
            timeout = (self.plan.spec.timeout if self.plan is not None else None) or self.spec.get("timeout")
            when = f" before its timeout ({timeout:g} s) passed" if timeout else ""
            return (f"no trial ran{when}. Fix: a longer timeout (--timeout, timeout=), then "
                    f"`tuner resume {shlex.quote(self.name)}`.")
        pruned = states.count(optuna.trial.TrialState.PRUNED)
        failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
        counts = ", ".join(f"{n} {what}" for n, what in ((len(failed), "failed"), (pruned, "pruned")) if n)
        if failed:
            first = failed[0]
            reason = first.user_attrs.get(record.FAIL_REASON) or "no reason recorded"
            every = "all " if len(failed) == len(trials) else ""
            return f"{every}{counts}. Trial {first.number} failed with: {reason}."
        if pruned == len(trials):
            rules = sorted({str(t.user_attrs.get(record.PRUNE_RULE, "the pruner")) for t in trials})
            if all(rule.startswith("diagnostics:") for rule in rules):
                fix = (f"see why in `tuner show {shlex.quote(self.name)}` and narrow the space where trials go "
                       "wrong, or set "
                       "`pruner: {diagnostics: false}`")
            else:
                fix = ("`pruner: none`, or a later first rung (e.g. pruner: {type: successive_halving, "
                       "min_resource: EPOCHS/2})")
            return f"all {pruned} were pruned ({', '.join(rules)}), so none ran to its end. Fix: {fix}."
        return f"its {len(trials)} trials are {counts or 'still waiting or running'}."

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
        return self.checkpoint(self._best_number("checkpoint"), to)

    def _best_number(self, what: str) -> int:
        """The best trial's number; a TunerError for a study with several objectives or no completed trial."""
        if len(self.optuna.directions) > 1:
            raise TunerError(f"study {self.name!r} has several objectives, so no one best trial. Fix: pick a trial "
                             f"of its Pareto front (tuner best) and call study.{what}(N)"
                             + (" (tuner checkpoint STUDY --trial N)." if what == "checkpoint" else "."))
        try:
            return self.optuna.best_trial.number
        except ValueError:
            raise TunerError(f"study {self.name!r} has no completed trial yet, so no best {what}.") from None

    def checkpoint(self, trial: int, to: str | Path | None = None) -> Path:
        """Trial ``trial``'s model (its best epoch's checkpoint), from the study's artifact store to ``to``; its path."""
        from tuner import checkpoints

        return checkpoints.download(self.store, self.optuna, self._trial(trial), to)

    def best_model(self) -> Any:
        """The best trial's model as a torch module, on the CPU in eval mode, with the weights of its best
        epoch's checkpoint (that epoch's value is the trial's).

        For the built-in workloads (``mlp``, ``cnn``); the module takes the
        data set's features as ``workers.load(data, seed)`` gives them
        (standardized inside, as the trial trained). For your own workload a
        TunerError says how to load :meth:`best_checkpoint` into your model.
        """
        return self.model(self._best_number("model"))

    def model(self, trial: int) -> Any:
        """Trial ``trial``'s model as a torch module (see :meth:`best_model`)."""
        import importlib

        from tuner import checkpoints

        spec = self._spec()
        if not spec.is_builtin:
            raise TunerError(
                f"study {self.name!r} trains your own workload ({spec.workload.removeprefix(CALLABLE_PREFIX)}), "
                "so only your code can build its model. Fix: load the checkpoint it passed to "
                "report(..., checkpoint=...) into your model yourself: for a state dict, "
                "model.load_state_dict(torch.load(study.best_checkpoint())); model.eval() "
                "(README.md, Checkpoints: Lightning and Hugging Face too)."
            )
        frozen = self._trial(trial)
        state = checkpoints.fetch(self.store, self.optuna, frozen).load()
        workload = importlib.import_module(spec.workload_target.partition(":")[0])
        return workload.model({**spec.context(), **frozen.params}, state)

    def _trial(self, number: int) -> FrozenTrial:
        found = [t for t in self.optuna.get_trials(deepcopy=False) if t.number == number]
        if not found:
            raise TunerError(f"trial: study {self.name!r} has no trial {number} (its trials are 0 to "
                             f"{len(self.trials) - 1}). Fix: pick one that `tuner show {shlex.quote(self.name)}` "
                             "lists.")
        return found[0]

    def _spec(self) -> StudySpec:
        saved = self.optuna.user_attrs.get(SPEC_ATTR)
        if not saved:
            raise StorageError(f"study {self.name!r} was not launched by tuner (it has no {SPEC_ATTR!r}), so "
                               "tuner does not know its workload. Fix: load its checkpoint into your model "
                               "yourself: model.load_state_dict(torch.load(study.best_checkpoint())).")
        return load_spec({**saved, "name": saved.get("name", self.name)})

    @property
    def artifacts(self) -> Path:
        """The study's Optuna artifact store (a directory), where its trials' checkpoints are kept."""
        from tuner import checkpoints

        return checkpoints.location(self.store)

    def accounting(self) -> dict[str, Any]:
        """Compute spent (epochs, wall and GPU seconds) and what pruning saved."""
        return metrics.accounting(self.trials, int(self.spec.get("epochs") or 0))

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
    progress: bool | None = None,
    if_exists: str = "error",
    **overrides: Any,
) -> Study:
    """Validate a spec, create its study, and run it to its budget.

    ``objective`` is tuner's ``train(params, report)`` (with ``space=``), or
    Optuna's define-by-run ``objective(trial)`` as it is, with no space:
    ``tuner.launch(objective=objective, n_trials=100, direction="maximize")``
    runs each trial on a Ray worker, whose ``trial.suggest_*`` the study's
    sampler answers, ``trial.report(value, step)`` records the step as an epoch
    (tuner's metrics as keywords: ``trial.report(acc, step, val_loss=vl)``),
    ``trial.should_prune()`` asks tuner's pruner, and the returned value is the
    trial's (see tuner/optuna_objective.py).

    ``if_exists`` says what to do when a study of that name is in the store:
    ``"error"`` (the default) refuses, ``"replace"`` deletes it (its trials and
    epochs) and launches anew, ``"new_name"`` launches under the first free
    name ``NAME-2``, ``NAME-3``, ... (``study.name`` says which).

    ``overrides`` replace top-level spec keys (``strategy``, ``trials`` or
    ``n_trials``, ``parallel``, ``epochs``, ``seed``, ``timeout``, ...);
    ``metric``/``direction`` set the objective. ``warm_start`` configurations
    (e.g. the best of a previous study: ``tuner.load(name).best_configurations(5)``)
    run first; those that no longer fit the space are left out. ``callbacks``
    are Optuna's ``callback(study, frozen_trial)``, called as each trial ends
    (see :class:`tuner.recorder.Callbacks`). ``progress`` shows the CLI's
    header and progress bar on stderr (True), or nothing (False); by default
    it shows in a terminal or a notebook, not in a log.
    """
    overrides = optuna_objective.create_study_keywords(overrides)  # study_name=, as optuna.create_study has
    with shown(_check_progress(progress), on_start, on_progress) as (on_start, on_progress):
        return launch_with(
            spec_path_or_dict, _renamed(overrides, "keyword"), objective=objective, space=space, study=study,
            storage=storage, executor=executor, ray_address=ray_address, on_progress=on_progress,
            on_start=on_start, warm_start=warm_start, callbacks=callbacks, if_exists=if_exists,
        )


@contextlib.contextmanager
def _optuna_quiet() -> Iterator[None]:
    """While a study runs from Python, Optuna is as quiet as under the CLI; the user's settings come back after.

    Its INFO lines ("A new study created in RDB ...", each trial's end) repeat what tuner shows, and its
    ExperimentalWarnings are for features tuner chose (TPE's ``group``), not the user.
    """
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


@_optuna_quiet()
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
    if_exists: str = "error",
    given_as: str = "keyword",
) -> Study:
    """:func:`launch` with ``overrides`` as spec keys (an :class:`~tuner.spec.Overrides` names
    the flag or keyword a bad value came from, e.g. ``--trials`` from the CLI); ``given_as``
    ("keyword" or "flag") says how the other arguments were spelled, for the same purpose."""
    _check_objective(objective)
    if study is not None:
        check_study_name(study, "--study" if given_as == "flag" else "study=")
    spec = _make_spec(spec_path_or_dict, objective, space, overrides)
    callbacks = _callbacks(spec, callbacks)
    workload = _workload(objective, spec)
    if if_exists not in IF_EXISTS:
        option = "--replace / --new-name" if given_as == "flag" else "if_exists="
        raise TunerError(f"{option}: must be one of {', '.join(map(repr, IF_EXISTS))}, but got {if_exists!r}. "
                         "Fix: e.g. if_exists='new_name'.")
    # Nothing is created until the launch is sure to go: a refused one leaves no store behind.
    existing = Store.existing(storage)
    name = study or spec.name
    try:
        if existing is not None and existing.has_study(name):
            if if_exists == "error":
                raise StorageError(_taken(existing, name, given_as))
            if if_exists == "new_name":
                name = _free_name(existing, name)
        runner = make_executor(executor, ray_address)
        runner.check_workload(workload)
        spec, probed = probe.before_study(spec, workload)  # the spec's lr range test; with narrow: its bounds
    except BaseException:  # refused: the store's connections go with it
        if existing is not None:
            existing.close()
        raise
    plan = Plan.of(spec)
    with study_lock(resolve_url(storage), name):
        runner.start(spec.resources.model_dump(), spec.parallel)
        try:
            store = existing or Store(storage)
            if if_exists == "replace" and store.has_study(name):
                # Under the study's lock (SQLite) no orchestrator runs it; PostgreSQL: none with a fresh heartbeat.
                recovery.refuse_if_run_elsewhere(store, name, "replace it",
                                                 force=f"`tuner delete {shlex.quote(name)} --force` first")
                store.delete_study(name)
            optuna_study = _create(store, name, plan, warm_start)
            if probed is not None:
                optuna_study.set_user_attr(probe.ATTR, probed.evidence())
            result = Study(optuna_study, store, plan)
            if on_start is not None:  # the spec as this run runs it: inline runs one trial at a time
                on_start(spec.model_copy(update={"parallel": runner.at_once(spec.parallel)}), result)
            orchestrator = Orchestrator(spec, store, optuna_study, runner, workload, on_progress, plan, callbacks)
        except BaseException:  # until the orchestrator owns it, the runner (a local Ray) is closed here
            runner.close()
            raise
        orchestrator.run()
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
    progress: bool | None = None,
    **overrides: Any,
) -> Study:
    """Continue a study to its budget with the spec it was launched with.

    Trials left RUNNING by an orchestrator that died are marked failed (they
    do not count toward the budget); ``trials`` may be raised to run more.
    ``callbacks`` and ``progress`` as for :func:`launch`.
    """
    with shown(_check_progress(progress), None, on_progress) as (_, on_progress):
        return resume_with(
            name, _renamed(overrides, "keyword"), objective=objective, storage=storage, executor=executor,
            ray_address=ray_address, on_progress=on_progress, callbacks=callbacks,
        )


def _check_progress(progress: Any) -> bool | None:
    if progress is not None and not isinstance(progress, bool):
        raise TunerError(f"progress=: must be True (show the progress bar), False (show nothing) or None (show it "
                         f"in a terminal or a notebook), but got {progress!r}. Fix: e.g. progress=False.")
    return progress


@_optuna_quiet()
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
    store = Store(storage, create=False)
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
    optuna_study = store.load_study(name, sampler=plan.sampler())
    with study_lock(store.url, name) as exclusive:
        runner = make_executor(executor, ray_address)
        _check_objective(objective)
        workload = _workload(objective, spec)
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
    """Open an existing study (read it, or look at its epochs); a store that does not exist is not created."""
    store = Store(storage, create=False)
    return Study(store.load_study(name), store)


def enqueue(name: str, points: Sequence[Mapping[str, Any]], storage: str | None = None, *,
            source: str = "points") -> Study:
    """Queue configurations to run first in a study (Optuna's ``enqueue_trial``), each checked against its space.

    A running study takes them at its next trial; otherwise the next
    ``resume`` does, within the study's budget. A point may leave params out:
    they are sampled, as with Optuna's ``enqueue_trial``. Nothing is queued
    unless every point fits, and all are queued in one transaction (an
    interrupt queues none): a problem names the point, the param, its range
    and the fix (``source`` names where the points came from, e.g. the JSON file).
    """
    store = Store(storage, create=False)
    optuna_study = store.load_study(name)
    saved = optuna_study.user_attrs.get(SPEC_ATTR)
    if not saved:
        raise StorageError(f"study {name!r} was not launched by tuner (it has no {SPEC_ATTR!r}); "
                           "use optuna's study.enqueue_trial for it.")
    spec = load_spec({**saved, "name": saved.get("name", name)})
    problems: list[str] = []
    for i, params in enumerate(points):
        # An Optuna objective(trial) makes its space as it runs: a point is queued as Optuna's enqueue_trial takes it.
        # A point may leave params out: they are sampled (as with Optuna's enqueue_trial).
        found = point_problems(spec, params, partial=True) if spec.params else _free_point_problems(params)
        problems += [f"point {i + 1} of {len(points)}: {p}" if len(points) > 1 else p for p in found]
        if len(problems) >= _MAX_POINT_PROBLEMS:
            problems = problems[:_MAX_POINT_PROBLEMS] + [f"(checking stopped at point {i + 1} of {len(points)})"]
            break
    if problems:
        raise SpecError(source, problems)
    floats = [k for k, p in spec.params.items() if isinstance(p, FloatParam)]
    queued = [{**params, **{k: float(params[k]) for k in floats if k in params}} for params in points]
    store.enqueue_trials(optuna_study, queued, {ENQUEUED_ATTR: True})
    return Study(optuna_study, store, Plan.of(spec))


# A list of many points with a systematic mistake names this many problems, not one per point.
_MAX_POINT_PROBLEMS = 20


def _free_point_problems(params: Any) -> list[str]:
    """What keeps a point of a study with no declared space (an Optuna objective(trial) makes its own) from
    being queued: it must map param names to plain values, as Optuna's ``enqueue_trial`` stores them."""
    if not isinstance(params, Mapping):
        return [f"a point maps param names to values, but got {params!r:.80} ({type(params).__name__}). "
                'Fix: e.g. {"lr": 0.01, "optimizer": "adam"}.']
    return [f"{key!r}: a queued value is a plain number, string or true/false, but got {value!r:.80} "
            f"({type(value).__name__}). Fix: pass it as a Python value, e.g. float(x) or int(n)."
            for key, value in params.items()
            if not isinstance(key, str) or not isinstance(value, (bool, int, float, str))]


# ---------------------------------------------------------------------- helpers

# What launch does when the study's name is taken (the CLI's --replace and --new-name).
IF_EXISTS = ("error", "replace", "new_name")


def _free_name(store: Store, name: str) -> str:
    """The first of NAME-2, NAME-3, ... that no study in the store has (cut to the name rule's length)."""
    for n in itertools.count(2):
        suffix = f"-{n}"
        candidate = name[: MAX_NAME_LENGTH - len(suffix)] + suffix
        if not store.has_study(candidate):
            return candidate
    raise AssertionError("unreachable")


def _taken(store: Store, name: str, given_as: str) -> str:
    """Why a launch onto an existing study is refused, and every way on, spelled as the user calls tuner."""
    free = _free_name(store, name)
    if given_as == "flag":
        ways = (f"--replace to delete it and launch anew, --new-name to launch as {free!r}, --study NAME for a "
                f"name of your own, or `tuner resume {shlex.quote(name)}` to continue it")
    else:
        ways = (f"if_exists='replace' to delete it and launch anew, if_exists='new_name' to launch as {free!r}, "
                f"study='NAME' for a name of your own, or tuner.resume({name!r}) to continue it")
    return f"study {name!r} already exists in {store.safe_url}. Fix: {ways}."


def _workload(objective: Callable[..., Any] | None, spec: StudySpec) -> Any:
    """What the workers run: the spec's workload, tuner's ``train(params, report)``, or an Optuna objective(trial)
    wrapped so that its trial asks the driver's study."""
    if objective is None:
        return spec.workload_target
    if optuna_objective.takes_trial(objective):
        return optuna_objective.wrap(objective, spec.objective.metric)
    return objective


def _check_objective(objective: Callable[..., Any] | None) -> None:
    """Refuse, before anything is created, an objective that is neither ``train(params, report)`` nor Optuna's
    ``objective(trial)``."""
    if objective is None or optuna_objective.takes_trial(objective):
        return
    shape = unfit_shape(objective)
    if shape:
        raise TunerError(
            f"objective: tuner calls it as Optuna's objective(trial) or as train(params, report), but "
            f"{shape} can take neither. Fix: take Optuna's trial (and call trial.suggest_*), or the "
            "sampled params and a report callable, with the space in space=:\n"
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
    trial_shaped = objective is not None and optuna_objective.takes_trial(objective)
    if trial_shaped:
        _define_by_run(source, space, extra)
        source = None
        space = {}
    if source is None:
        if space is None or objective is None:
            raise TunerError(
                "launch() needs a spec (a YAML path or a dict), or both `space=` and `objective=`."
            )
        name = getattr(objective, "__name__", None) or getattr(getattr(objective, "func", None), "__name__", "study")
        source = {"name": name.replace("_", "-").strip("-<>") or "study"}
        if trial_shaped:  # without epochs=, how many steps an objective(trial) reports is unknown, not 10
            source["epochs"] = None
    if space is not None:
        extra["params"] = dict(space)
    if objective is not None:
        # functools.partial and callable objects have no __qualname__ of their own.
        target = getattr(objective, "func", objective)
        qualname = getattr(target, "__qualname__", type(target).__qualname__)
        extra["workload"] = f"{CALLABLE_PREFIX}{getattr(target, '__module__', '?')}:{qualname}"
        if trial_shaped:
            extra["workload"] += TRIAL_SUFFIX
    return load_spec(source, extra)


def _define_by_run(source: Any, space: Mapping[str, Any] | None, extra: dict[str, Any]) -> None:
    """An Optuna objective(trial) asks for its own params: refuse a space or a spec given with it, and a grid
    (which needs the space up front); ``trial.report``'s value is recorded as Optuna's ``value`` unless
    ``metric=`` names it."""
    if space is not None or source is not None:
        given = "space=" if space is not None else "a spec"
        raise TunerError(
            f"objective: an Optuna objective(trial) asks for its params itself (trial.suggest_*), so {given} "
            "cannot be given with it. Fix: leave it out: tuner.launch(objective=objective, n_trials=..., "
            "direction=...), with other settings as keywords (epochs=, pruner=, parallel=, ...)."
        )
    if extra.get("strategy") == "grid":
        raise TunerError(
            "strategy=: grid search lists every point of the space before the first trial, but an Optuna "
            "objective(trial) makes its space as it runs. Fix: leave strategy out (TPE), or pass a "
            "train(params, report) function with space= to run a grid."
        )
    objective = extra.get("objective")
    if not isinstance(objective, Mapping) or "metric" not in objective:
        extra["objective"] = {"metric": optuna_objective.METRIC, **(objective or {})}
    if extra.get("epochs") is None:  # how many steps it reports is unknown, not tuner's default 10
        pruner = extra.get("pruner")
        if (pruner.get("type") if isinstance(pruner, Mapping) else pruner) == "extrapolating":
            raise TunerError(
                "pruner='extrapolating' extrapolates each curve to the last step, but without epochs= how many "
                "steps the objective reports is unknown. Fix: pass epochs=N (the steps it reports), or "
                "pruner='successive_halving' (or 'median', 'hyperband'), which learn it as Optuna's do."
            )


def _create(store: Store, name: str, plan: Plan, warm_start: Sequence[Mapping[str, Any]] = ()) -> optuna.Study:
    """Create the study with its spec snapshot, the warm-start points and (grid search) the points it runs queued."""
    spec = plan.spec
    study = store.create_study(name, spec.directions, plan.sampler())  # quiet: launch_with is _optuna_quiet
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
    # An Optuna objective(trial) makes its space as it runs: its points are Optuna's enqueued trials, as they are.
    fitting = [params for params in warm_start if not spec.params or strategies.fits(spec, params)]
    # Past the budget a queued point would wait forever: the first ones (best_configurations: the best) run.
    queued = fitting[: plan.trials]
    for params in queued:
        study.enqueue_trial(dict(params), user_attrs={record.WARM_START: True}, skip_if_exists=True)
    if warm_start:
        outside, over = len(warm_start) - len(fitting), len(fitting) - len(queued)
        notes = ([f"{outside} left out: outside this space"] if outside else []) + (
            [f"{over} left out: past the budget of {plan.trials} trial{'' if plan.trials == 1 else 's'}"]
            if over else [])
        log.info("warm start: %d configuration%s queued first%s", len(queued), "" if len(queued) == 1 else "s",
                 f" ({'; '.join(notes)})" if notes else "")
    return study
