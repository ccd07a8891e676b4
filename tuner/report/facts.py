"""What a study found, as data: read once, then counted, timed, ranked and compared.

No matplotlib and no HTML here: ``tuner compare`` prints these facts to a
terminal, and the figures and the page are drawn from them.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner import checkpoints
from tuner.trial.checkpoint import TORCH, Checkpoint
from tuner.trial.diagnosis import HEALTHY, KINDS
from tuner.trial.metrics import better, finite, fmt

Row = Mapping[str, Any]

# Public test accuracies from the MNIST-1D paper (Greydanus & Kobak, 2020), to put a score in context.
MNIST1D_PAPER = "logistic regression 32%, MLP 68%, CNN 94% (MNIST-1D paper)"


@dataclass(frozen=True)
class Facts:
    """A study read once: its trials, their epoch rows, its objective and compute."""

    name: str
    direction: str
    metric: str
    spec: dict[str, Any]
    trials: list[FrozenTrial]
    curves: dict[int, list[dict[str, Any]]]
    accounting: dict[str, Any]
    artifacts: Path | None = None  # the study's artifact store, where its trials' checkpoints are
    # Several objectives: each (direction, metric), and the Pareto front, best on the first objective first.
    # The rest of the report ranks trials on the first objective (``direction``, ``metric``).
    objectives: tuple[tuple[str, str], ...] = ()
    front: tuple[FrozenTrial, ...] = ()

    @property
    def finished(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state.is_finished()]

    def state(self, state: TrialState) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == state]

    @property
    def completed(self) -> list[FrozenTrial]:
        """COMPLETE trials with a finite value, best first."""
        done = [t for t in self.state(TrialState.COMPLETE) if finite(value(t))]
        return sorted(done, key=lambda t: (value(t) if self.direction == "minimize" else -value(t), t.number))

    @property
    def best(self) -> FrozenTrial | None:
        return self.completed[0] if self.completed else None


def collect(study: Any) -> Facts:
    """Read a :class:`tuner.api.Study` (trials, epochs, spec, accounting) in a few queries."""
    spec = study.spec
    directions = [d.name.lower() for d in study.optuna.directions]
    names = study.optuna.metric_names or [spec.get("objective", {}).get("metric", "value")]
    several = len(directions) > 1
    return Facts(
        name=study.name, direction=directions[0], metric=names[0], spec=spec,
        trials=list(study.trials), curves=collect_curves(study.epochs()), accounting=study.accounting(),
        artifacts=study.artifacts,
        objectives=tuple(zip(directions, names)) if several else (),
        front=tuple(_pareto_front(study.optuna, directions[0])) if several else (),
    )


def _pareto_front(study: optuna.Study, first: str) -> list[FrozenTrial]:
    """Optuna's Pareto front, best on the first objective first."""
    sign = 1.0 if first == "minimize" else -1.0
    return sorted(study.best_trials, key=lambda t: (sign * t.values[0], t.number))


def value(trial: FrozenTrial) -> float | None:
    """A trial's value: its one value, or its first objective's (what the report ranks trials on)."""
    return trial.values[0] if trial.values else None


def collect_curves(rows: Iterable[Row]) -> dict[int, list[dict[str, Any]]]:
    """Epoch rows (``Study.epochs()``) grouped by trial number, in epoch order."""
    curves: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        curves[row["trial"]].append(dict(row))
    return dict(curves)


# ---------------------------------------------------------------------- what the trials say


def importances(study: optuna.Study, facts: Facts) -> tuple[dict[str, float], str]:
    """Optuna's fANOVA importances of the params, or why there are none."""
    n = len(facts.completed)
    if n < 2:
        return {}, f"Parameter importances need at least 2 completed trials; this study has {n}."
    # Several objectives: importances for the first, which Optuna computes one objective at a time.
    target = value if facts.objectives else None
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # seeded: the same report twice
        values = optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
    except (RuntimeError, ValueError) as exc:
        return {}, f"Optuna could not compute parameter importances: {exc}"
    conditional = sorted({p for t in facts.completed for p in t.params} - set(values))
    note = f"fANOVA over {n} completed trials" + (f", for {facts.metric}." if target else ".")
    if conditional:
        note += f" Params missing from some trials ({', '.join(conditional)}) are left out."
    return dict(values), note


def diagnoses(facts: Facts) -> list[dict[str, Any]]:
    """For each diagnosis: how many trials got it, which, and where in the space they lie."""
    finished = facts.finished
    out = []
    for kind in KINDS:
        trials = [t for t in finished if t.user_attrs.get("diagnosis") == kind]
        if trials:
            out.append({"kind": kind, "count": len(trials), "trials": [t.number for t in trials],
                        "where": "" if kind == HEALTHY else where(trials, finished)})
    return out


def where(group: Sequence[FrozenTrial], everyone: Sequence[FrozenTrial], most: int = 3) -> str:
    """Where ``group`` sits in the search space, in the params that set it apart from ``everyone``.

    A numeric param counts when the group spans less than half of its range (on
    a log scale for log params); a categorical one when one value holds 3/4 of
    the group and is at least 20 points more common there than overall.
    """
    if len(group) == 1:
        t = group[0]
        return f"one trial (#{t.number}): " + ", ".join(f"{k}={fmt(v)}" for k, v in t.params.items())
    found: list[tuple[float, str]] = []
    for name, dist in distributions(everyone).items():
        values = [t.params[name] for t in group if name in t.params]
        if len(values) < 2:
            continue
        if isinstance(dist, CategoricalDistribution):
            value, count = Counter(map(str, values)).most_common(1)[0]
            overall = [str(t.params[name]) for t in everyone if name in t.params]
            share, base = count / len(values), overall.count(value) / len(overall)
            if share >= 0.75 and share - base >= 0.2:
                found.append((share - base, f"{name}={value} ({count} of {len(values)}, {base:.0%} of all trials)"))
        else:
            scale = _log if dist.log else float
            span = (scale(dist.high) - scale(dist.low)) or 1.0
            covered = (scale(max(values)) - scale(min(values))) / span
            if covered < 0.5:
                found.append((1 - covered, f"{name} {fmt(min(values))}–{fmt(max(values))}"))
    found.sort(key=lambda f: -f[0])
    return "; ".join(text for _, text in found[:most]) or "spread over the space"


def stop_reasons(facts: Facts) -> list[tuple[str, str, int]]:
    """(state, rule or error, count) of the pruned and failed trials."""
    counts: Counter[tuple[str, str]] = Counter()
    for t in facts.state(TrialState.PRUNED):
        counts["PRUNED", t.user_attrs.get("prune_rule", "pruner")] += 1
    for t in facts.state(TrialState.FAIL):
        counts["FAIL", str(t.user_attrs.get("fail_reason", "unknown")).splitlines()[0][:120]] += 1
    return [(state, why, n) for (state, why), n in counts.most_common()]


def running_best(facts: Facts, by_completion: bool = False) -> list[tuple[FrozenTrial, float]]:
    """Each completed trial, in trial order (or the order trials ended in), with the best value up to it.

    Trials run in parallel end out of number order: a best-so-far line over
    wall-clock time must follow completion order, or it goes back in time.
    """
    def order(t: FrozenTrial) -> Any:
        return (t.datetime_complete, t.number) if by_completion else t.number

    out: list[tuple[FrozenTrial, float]] = []
    for t in sorted((t for t in facts.state(TrialState.COMPLETE) if t.datetime_complete or not by_completion),
                    key=order):
        if finite(value(t)) and (not out or better(value(t), out[-1][1], facts.direction)):
            out.append((t, value(t)))
        elif out:
            out.append((t, out[-1][1]))
    return out


def distributions(trials: Iterable[FrozenTrial]) -> dict[str, Any]:
    """Each param's distribution, as the first trial that has it declares it."""
    dists: dict[str, Any] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            dists.setdefault(name, dist)
    return dists


# ---------------------------------------------------------------------- time and compute


def timing(facts: Facts) -> dict[str, float | None]:
    """Wall-clock seconds from the first trial's start to the last trial's end, and to the best trial's end."""
    starts = [t.datetime_start for t in facts.trials if t.datetime_start]
    ends = [t.datetime_complete for t in facts.trials if t.datetime_complete]
    if not starts:
        return {"elapsed": None, "to_best": None}
    first = min(starts)
    best = facts.best
    return {
        "elapsed": seconds(first, max(ends)) if ends else None,
        "to_best": seconds(first, best.datetime_complete) if best and best.datetime_complete else None,
    }


def seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def duration(secs: float | None) -> str:
    """Seconds for people: "12.3 s", "4 min 5 s"; None as nothing."""
    if secs is None:
        return ""
    minutes, rest = divmod(int(round(secs)), 60)
    return f"{minutes} min {rest} s" if minutes else f"{secs:.1f} s"


# ---------------------------------------------------------------------- test score


def test_score(facts: Facts, on_step: Callable[[str], None] = lambda step: None
               ) -> tuple[dict[str, float] | None, str]:
    """The best trial's saved model, or else its configuration retrained on train+validation, scored once on
    the test split. ``on_step`` hears which of the two, before it runs (the report command prints it).

    Only the built-in workloads (``mlp``, ``cnn``) have a test split tuner can
    reach; a custom workload gets the reason instead. A best trial that kept
    a checkpoint is scored as it was saved, without training again; otherwise
    the retrain runs for the best trial's best epoch, the number of epochs the
    study chose.
    """
    best = facts.best
    if best is None:
        return None, "No completed trial, so no configuration to test."
    workload = facts.spec.get("workload", "")
    if workload not in ("mlp", "cnn"):
        return None, (f"The workload {workload.removeprefix('callable:')!r} is not built in, so tuner cannot "
                      "retrain it on train+validation; the score above is the validation score.")
    fixed = facts.spec.get("fixed") or {}
    params = {"seed": facts.spec.get("seed") or 0, **({"data": facts.spec["data"]} if facts.spec.get("data") else {}),
              **fixed, **best.params, "epochs": int(best.user_attrs.get("best_epoch") or facts.spec.get("epochs", 10))}
    saved = _saved_model(facts, best)
    if saved is not None:
        on_step(f"scoring trial {best.number}'s saved model (epoch {saved.epoch}) on the test split, not retrained")
        loss, acc = _with_one_thread(lambda: _workload(workload).saved_score(params, saved.load()))
        return {"test_loss": loss, "test_acc": acc, "epochs": saved.epoch, "checkpoint": True}, (
            f"Trial {best.number}'s saved model (its checkpoint of epoch {saved.epoch}), scored once on the "
            "held-out test split; not retrained.")
    on_step(f"retraining trial {best.number}'s configuration on train+validation for {params['epochs']} epochs, "
            "then scoring it on the test split")
    loss, acc = _final_fit(workload, params)
    return {"test_loss": loss, "test_acc": acc, "epochs": params["epochs"]}, (
        f"Trial {best.number}'s configuration retrained on train+validation for {params['epochs']} epochs "
        "(its best epoch), then scored once on the held-out test split.")


def _saved_model(facts: Facts, best: FrozenTrial) -> Checkpoint | None:
    """The best trial's kept model (its best epoch's checkpoint), when a built-in workload wrote one."""
    meta = checkpoints.kept(best)
    if meta is None or facts.artifacts is None or meta.get("format") != TORCH:
        return None
    return checkpoints.read(facts.artifacts, meta, "the report retrains the configuration instead")


def _final_fit(workload: str, params: Mapping[str, Any]) -> tuple[float, float]:
    """The workload's own ``final_score`` (``workers.training.fit_final``): (test loss, test accuracy)."""
    return _with_one_thread(lambda: _workload(workload).final_score(params))


def _workload(name: str) -> Any:
    from workers import cnn, mlp

    return {"mlp": mlp, "cnn": cnn}[name]


def _with_one_thread(score: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    import torch

    # One thread, as a trial on a 1-CPU Ray worker trains: the same arithmetic, and no OpenMP
    # threads spinning against other processes (on a busy 2-core machine, 2 threads ran 10x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return score()
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------- comparison


def compare_rows(studies: Sequence[Facts]) -> list[tuple[str, list[str]]]:
    """The side-by-side table of ``tuner compare``: one row per fact, one column per study."""
    params = list(dict.fromkeys(p for f in studies if f.best for p in f.best.params))
    rows: list[tuple[str, list[str]]] = [
        ("objective", [f"{f.direction} {f.metric}" for f in studies]),
        ("best value", [fmt(value(f.best)) if f.best else "no completed trial" for f in studies]),
        ("best trial", [str(f.best.number) if f.best else "" for f in studies]),
    ]
    rows += [(f"  {p}", [fmt(f.best.params.get(p)) if f.best else "" for f in studies]) for p in params]
    rows += [
        ("trials (complete/pruned/failed)", [
            f"{len(f.trials)} ({len(f.state(TrialState.COMPLETE))}/{len(f.state(TrialState.PRUNED))}/"
            f"{len(f.state(TrialState.FAIL))})" for f in studies]),
        ("epochs run", [str(f.accounting["epochs_run"]) for f in studies]),
        ("trial-seconds", [f"{f.accounting['wall_seconds']:.1f}" for f in studies]),
        ("GPU-seconds", [f"{f.accounting['gpu_seconds']:.1f}" for f in studies]),
        ("wall-clock", [duration(timing(f)["elapsed"]) for f in studies]),
        ("time to best", [duration(timing(f)["to_best"]) for f in studies]),
    ]
    return rows


def _log(value: float) -> float:
    return math.log10(value) if value > 0 else 0.0
