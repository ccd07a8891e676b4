"""What a study found: an HTML report, learning-curve plots, sparklines, comparisons.

Every plot is a matplotlib figure, so one drawing serves the report (PNGs
embedded as base64: the file opens offline, with no CDN and no script), its
``--png DIR`` copies, the dashboard's trial pages and ``tuner compare``.
Figures are made with ``matplotlib.figure.Figure``, not pyplot, which keeps no
global state: the dashboard draws in a background thread while it serves.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.diagnosis import HEALTHY, KINDS
from tuner.errors import TunerError

Row = Mapping[str, Any]

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
# Learning curves shown in a report: the best trials, and a few pruned ones to
# see what the pruner stopped.
BEST_CURVES = 4
PRUNED_CURVES = 4
GAP_PARAMS = 4  # the overfitting gap is plotted against this many params, most important first
TRAIN, VAL = "#1f77b4", "#d62728"
LOSSES = (("train_loss", TRAIN, "--", "train loss"), ("val_loss", VAL, "-", "validation loss"))
ACCURACIES = (("train_acc", TRAIN, "--", "train accuracy"), ("val_acc", VAL, "-", "validation accuracy"))
DIAGNOSIS_COLORS = {
    "healthy": "#2ca02c", "overfitting": "#ff7f0e", "stalled": "#7f7f7f", "diverged": "#d62728",
    "exploding_gradients": "#9467bd", "vanishing_gradients": "#17becf", "none": "#bbbbbb",
}
STATE_MARKERS = {"COMPLETE": "o", "PRUNED": "x", "FAIL": "v"}
# Public test accuracies from the MNIST-1D paper (Greydanus & Kobak, 2020), to put a score in context.
MNIST1D_PAPER = "logistic regression 32%, MLP 68%, CNN 94% (MNIST-1D paper)"


# ---------------------------------------------------------------------- facts


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

    @property
    def finished(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state.is_finished()]

    def state(self, state: TrialState) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == state]

    @property
    def completed(self) -> list[FrozenTrial]:
        """COMPLETE trials with a finite value, best first."""
        done = [t for t in self.state(TrialState.COMPLETE) if _finite(t.value)]
        return sorted(done, key=lambda t: (t.value if self.direction == "minimize" else -t.value, t.number))

    @property
    def best(self) -> FrozenTrial | None:
        return self.completed[0] if self.completed else None


def collect(study: Any) -> Facts:
    """Read a :class:`tuner.api.Study` (trials, epochs, spec, accounting) in a few queries."""
    spec = study.spec
    return Facts(
        name=study.name, direction=study.optuna.direction.name.lower(),
        metric=spec.get("objective", {}).get("metric", "value"), spec=spec,
        trials=list(study.trials), curves=collect_curves(study.epochs()), accounting=study.accounting(),
    )


def collect_curves(rows: Iterable[Row]) -> dict[int, list[dict[str, Any]]]:
    """Epoch rows (``Study.epochs()``) grouped by trial number, in epoch order."""
    curves: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        curves[row["trial"]].append(dict(row))
    return dict(curves)


def sparkline(values: Sequence[float | None], width: int = 20) -> str:
    """``values`` as unicode blocks, low to high (▁ to █); × marks a NaN or infinite value.

    Longer series are sampled evenly, first and last kept, to ``width`` characters.
    """
    if not values:
        return ""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    finite = [v for v in values if _finite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
    out = []
    for v in values:
        if not _finite(v):
            out.append("×")
        elif hi == lo:
            out.append(SPARK_BLOCKS[3])
        else:
            out.append(SPARK_BLOCKS[min(int((v - lo) / (hi - lo) * len(SPARK_BLOCKS)), len(SPARK_BLOCKS) - 1)])
    return "".join(out)


def importances(study: optuna.Study, facts: Facts) -> tuple[dict[str, float], str]:
    """Optuna's fANOVA importances of the params, or why there are none."""
    n = len(facts.completed)
    if n < 2:
        return {}, f"Parameter importances need at least 2 completed trials; this study has {n}."
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # seeded: the same report twice
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as exc:
        return {}, f"Optuna could not compute parameter importances: {exc}"
    conditional = sorted({p for t in facts.completed for p in t.params} - set(values))
    note = f"fANOVA over {n} completed trials."
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
    for name, dist in _distributions(everyone).items():
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


def timing(facts: Facts) -> dict[str, float | None]:
    """Wall-clock seconds from the first trial's start to the last trial's end, and to the best trial's end."""
    starts = [t.datetime_start for t in facts.trials if t.datetime_start]
    ends = [t.datetime_complete for t in facts.trials if t.datetime_complete]
    if not starts:
        return {"elapsed": None, "to_best": None}
    first = min(starts)
    best = facts.best
    return {
        "elapsed": _seconds(first, max(ends)) if ends else None,
        "to_best": _seconds(first, best.datetime_complete) if best and best.datetime_complete else None,
    }


# ---------------------------------------------------------------------- test score


def test_score(facts: Facts) -> tuple[dict[str, float] | None, str]:
    """The best configuration retrained on train+validation and scored once on the test split.

    Only the built-in workloads (``mlp``, ``cnn``) have a test split tuner can
    reach; a custom workload gets the reason instead. It trains for the best
    trial's best epoch, the number of epochs the study chose.
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
    loss, acc = _final_fit(workload, params)
    return {"test_loss": loss, "test_acc": acc, "epochs": params["epochs"]}, (
        f"Trial {best.number}'s configuration retrained on train+validation for {params['epochs']} epochs "
        "(its best epoch), then scored once on the held-out test split.")


def _final_fit(workload: str, params: Mapping[str, Any]) -> tuple[float, float]:
    """Train on train+validation with the workers' own steps; (test loss, test accuracy).

    This follows ``workers.training.fit`` step for step with other splits:
    ``fit`` always validates on the validation split, and a final score needs
    the test split, untouched by the search.
    """
    import torch

    # One thread, as a trial on a 1-CPU Ray worker trains: the same arithmetic, and no OpenMP
    # threads spinning against other processes (on a busy 2-core machine, 2 threads ran 10x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_and_score(workload, params)
    finally:
        torch.set_num_threads(threads)


def _fit_and_score(workload: str, params: Mapping[str, Any]) -> tuple[float, float]:
    import numpy as np
    import torch

    from workers import cnn, mlp, training
    from workers.config import Config

    build = {"mlp": mlp.build, "cnn": cnn.build}[workload]
    defaults = {"width": cnn.DEFAULT_WIDTH} if workload == "cnn" else {}  # as cnn.train passes them
    cfg = Config.from_params(params, **defaults)
    data = training.shrink(training.load(cfg.data, cfg.seed), cfg.train_size, cfg.seed)
    data = dataclasses.replace(
        data, x_train=np.concatenate([data.x_train, data.x_val]), y_train=np.concatenate([data.y_train, data.y_val]),
        x_val=data.x_test, y_val=data.y_test,
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train, test = training.to_splits(data, cfg.standardize, device)
    batch_size = len(train.y) if cfg.batch_size == "full" else min(cfg.batch_size, len(train.y))
    torch.manual_seed(cfg.seed)
    model = build(cfg, data).to(device)
    optimizer = training.make_optimizer(cfg, model)
    schedule = training.make_schedule(cfg, optimizer)
    order = torch.Generator().manual_seed(cfg.seed)
    augment = training.make_augment(cfg, data, torch.Generator().manual_seed(cfg.seed + 1))
    for _ in range(cfg.epochs):
        training.train_epoch(model, optimizer, train, cfg, batch_size, order, augment)
        if schedule is not None:
            schedule.step()
    return training.evaluate(model, test)


# ---------------------------------------------------------------------- figures


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def draw_curve(ax: Any, trial: FrozenTrial, rows: Sequence[Row], title: bool = True) -> None:
    """Training and validation loss of one trial, its best epoch, and where it stopped."""
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    for key, color, style, label in LOSSES:
        values = _series(rows, key)
        if any(_finite(v) for v in values):
            ax.plot(epochs, values, style, color=color, label=label, marker="." if len(rows) < 12 else None)
    broken = [r["epoch"] for r in rows if any(k in r and not _finite(r[k]) for k in ("train_loss", "val_loss"))]
    if broken:
        ax.axvline(broken[0], color=VAL, lw=0.8, ls="-.", label=f"NaN or inf from epoch {broken[0]}")
    attrs = trial.user_attrs
    if attrs.get("best_epoch"):
        ax.axvline(attrs["best_epoch"], color="#999999", lw=0.8, ls=":", label=f"best epoch {attrs['best_epoch']}")
    if trial.state != TrialState.COMPLETE and rows:
        ax.annotate(trial.state.name.lower(), (epochs[-1], _last_finite(rows)), textcoords="offset points",
                    xytext=(4, 4), fontsize=8, color="#555555")
    _auto_log(ax, [r.get(k) for r in rows for k in ("train_loss", "val_loss")])
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(epochs) == 1:  # one point: show epochs around it, not fractions of one
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    if title:
        diagnosis = attrs.get("diagnosis", "")
        ax.set_title(f"#{trial.number} {trial.state.name.lower()} · {diagnosis}", fontsize=9)
    if not rows:
        ax.text(0.5, 0.5, "no epoch recorded", ha="center", va="center", transform=ax.transAxes, color="#777777")
    ax.grid(alpha=0.3)


def learning_curve_png(trial: FrozenTrial, rows: Sequence[Row]) -> bytes:
    """One trial's curves as a PNG: losses, and accuracies where the workload reports them."""
    has_acc = any(_finite(r.get("val_acc")) for r in rows)
    fig = _figure(9 if has_acc else 6, 3.6)
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    draw_curve(axes[0], trial, rows, title=False)
    _legend(axes[0], fontsize=8)
    if has_acc:
        epochs = [r["epoch"] for r in rows]
        for key, color, style, label in ACCURACIES:
            axes[1].plot(epochs, _series(rows, key), style, color=color, label=label)
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("accuracy")
        axes[1].xaxis.set_major_locator(axes[0].xaxis.get_major_locator())
        axes[1].legend(fontsize=8)
        axes[1].grid(alpha=0.3)
    diagnosis = trial.user_attrs.get("diagnosis", "not diagnosed")
    fig.suptitle(f"trial {trial.number}: {trial.state.name.lower()}, {diagnosis}", fontsize=10)
    return png(fig)


def history_figure(facts: Facts) -> Any:
    """Each trial's value by trial number, with the best so far."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(8, 3.8)
    ax = fig.subplots()
    for state in (TrialState.COMPLETE, TrialState.PRUNED):
        trials = [t for t in facts.state(state) if _finite(t.value)]
        ax.scatter([t.number for t in trials], [t.value for t in trials], marker=STATE_MARKERS[state.name],
                   color="#1f77b4" if state == TrialState.COMPLETE else "#999999", label=state.name.lower(), zorder=3)
    best = _running_best(facts)
    if best:
        xs, ys = [t.number for t, _ in best], [b for _, b in best]
        last = max(t.number for t in facts.trials)
        ax.step(xs + [last], ys + ys[-1:], where="post", color="#d62728", label="best so far")
    failed = facts.state(TrialState.FAIL)
    for t in failed:
        ax.axvline(t.number, color="#cccccc", lw=0.8, zorder=0)
    _auto_log(ax, [t.value for t in facts.finished])
    ax.set_xlabel("trial" + (" (grey lines: failed)" if failed else ""))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{facts.metric} ({facts.direction})")
    _legend(ax, fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def curves_figure(facts: Facts, trials: Sequence[FrozenTrial]) -> Any:
    """Learning curves of ``trials``, one small panel each."""
    cols = min(len(trials), 4)
    rows = math.ceil(len(trials) / cols)
    fig = _figure(3.4 * cols, 2.8 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, trial in zip(axes, trials, strict=False):
        draw_curve(ax, trial, facts.curves.get(trial.number, []))
    for ax in axes[len(trials):]:
        ax.set_visible(False)
    _legend(axes[0], fontsize=7)
    return fig


def gap_figure(facts: Facts, params: Sequence[str]) -> Any:
    """The overfitting gap (validation minus training loss, last epoch) against each param."""
    fig = _figure(3.4 * len(params), 3.2)
    axes = fig.subplots(1, len(params), squeeze=False)[0]
    dists = _distributions(facts.finished)
    trials = [t for t in facts.finished if _finite(t.user_attrs.get("final_gap"))]
    for ax, name in zip(axes, params, strict=True):
        for state, marker in STATE_MARKERS.items():
            group = [t for t in trials if t.state.name == state and name in t.params]
            xs = [_position(dists[name], t.params[name]) for t in group]
            ax.scatter(xs, [t.user_attrs["final_gap"] for t in group], marker=marker, label=state.lower(),
                       color=_colors(group))
        _param_axis(ax, name, dists[name])
        _auto_log(ax, [t.user_attrs["final_gap"] for t in trials])
        ax.axhline(0, color="#999999", lw=0.8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("val loss − train loss (last epoch)")
    _diagnosis_legend(fig, axes[-1], trials)
    return fig


def importance_figure(values: Mapping[str, float]) -> Any:
    names = list(values)[::-1]
    fig = _figure(6, 0.45 * len(names) + 1.2)
    ax = fig.subplots()
    ax.barh(names, [values[n] for n in names], color="#1f77b4")
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.grid(alpha=0.3, axis="x")
    return fig


def diagnosis_figure(facts: Facts, x: str, y: str) -> Any:
    """Each finished trial at its (x, y) params, coloured by its diagnosis."""
    fig = _figure(7, 4.6)
    ax = fig.subplots()
    dists = _distributions(facts.finished)
    trials = [t for t in facts.finished if x in t.params and y in t.params]
    for state, marker in STATE_MARKERS.items():
        group = [t for t in trials if t.state.name == state]
        xs = [_position(dists[x], t.params[x]) for t in group]
        ax.scatter(xs, [_position(dists[y], t.params[y]) for t in group], marker=marker, s=40, color=_colors(group))
    _param_axis(ax, x, dists[x])
    _param_axis(ax, y, dists[y], axis="y")
    ax.grid(alpha=0.3)
    _diagnosis_legend(fig, ax, trials)
    return fig


def compare_figure(studies: Sequence[Facts]) -> Any:
    """Best value so far of each study, by trial and by wall-clock time."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(11, 4)
    by_trial, by_time = fig.subplots(1, 2)
    for facts in studies:
        best, in_time = _running_best(facts), _running_best(facts, by_completion=True)
        start = min((t.datetime_start for t in facts.trials if t.datetime_start), default=None)
        if not best or start is None:
            continue
        by_trial.step([t.number for t, _ in best], [b for _, b in best], where="post", label=facts.name)
        minutes = [_seconds(start, t.datetime_complete) / 60 for t, _ in in_time]
        by_time.step(minutes, [b for _, b in in_time], where="post", label=facts.name)
    by_trial.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax, label in ((by_trial, "trial"), (by_time, "minutes since the study started")):
        ax.set_xlabel(label)
        ax.set_ylabel("best value so far")
        ax.grid(alpha=0.3)
    _legend(by_trial, fontsize=8)
    return fig


# ---------------------------------------------------------------------- HTML report


@dataclass
class Plot:
    """One figure of the report: its name (anchor and PNG file name), caption and picture."""

    name: str
    caption: str
    data: bytes

    def html(self) -> str:
        data = base64.b64encode(self.data).decode()
        return (f'<figure class="plot" id="plot-{self.name}"><img src="data:image/png;base64,{data}" '
                f'alt="{_e(self.caption)}"><figcaption>{_e(self.caption)}</figcaption></figure>')


def write(
    study: Any, out: str | Path, png_dir: str | Path | None = None, retrain: bool = True,
    on_step: Callable[[str], None] = lambda step: None,
) -> list[Plot]:
    """Write the report of ``study`` to ``out`` (one self-contained HTML file); the plots are returned.

    ``png_dir`` also gets every plot as ``<name>.png``; ``retrain=False`` skips
    retraining the best configuration for its test score. ``on_step`` hears
    each slow step as it starts (the CLI prints them: a report takes seconds).
    """
    out = Path(out)
    check_writable(out, "-o")
    if png_dir is not None:
        check_directory(Path(png_dir), "--png")
    on_step(f"reading {len(study.trials)} trials and their epochs")
    facts = collect(study)
    plots: list[Plot] = []
    sections = _sections(study, facts, retrain, plots, on_step)
    on_step(f"writing {out}")
    _write_file(out, _page(f"tuner report: {facts.name}", "".join(sections)).encode(), "-o")
    if png_dir is not None:
        for plot in plots:
            _write_file(Path(png_dir) / f"{plot.name}.png", plot.data, "--png")
    return plots


def _sections(
    study: Any, facts: Facts, retrain: bool, plots: list[Plot], on_step: Callable[[str], None]
) -> list[str]:
    """The report's sections in order; each plot drawn is appended to ``plots``."""

    def plot(name: str, caption: str, fig: Any) -> str:
        on_step(f"plotting {name}")
        plots.append(Plot(name, caption, png(fig)))
        return plots[-1].html()

    on_step("parameter importances")
    values, note = importances(study.optuna, facts)
    sections = [_overview(facts)]
    if facts.completed:
        if retrain:
            on_step("retraining the best configuration on train+validation for its test score")
        sections.append(_best_section(facts, retrain))
        caption = f"{facts.metric} of each trial (pruned: its last value) and the best so far"
        sections.append(_section("history", "Optimization history", plot("history", caption, history_figure(facts))))
    else:
        sections.append(_section("no-completed", "No completed trial", _warn(
            f"Study {facts.name} has {len(facts.trials)} trials and none completed with a finite value, so it has "
            "no best configuration, history or importances yet. What is known about its trials follows.")))
    sections.append(_curves_section(facts, plot))
    if facts.completed:
        body = plot("importance", note, importance_figure(values)) if values else _warn(note)
        sections.append(_section("importance", "Parameter importances", body))
        sections.append(_gap_section(facts, list(values), plot))
    sections += [_diagnosis_section(facts, values, plot), _compute_section(facts), _trials_section(facts)]
    return sections


def _overview(facts: Facts) -> str:
    counts = Counter(t.state.name.lower() for t in facts.trials)
    best, spec = facts.best, facts.spec
    facts_line = [
        f"{len(facts.trials)} trials ({', '.join(f'{n} {s}' for s, n in counts.most_common())})",
        f"best {facts.metric} {fmt(best.value)} (trial {best.number})" if best else "no completed trial",
        f"{facts.direction} {facts.metric}",
        f"strategy {spec.get('strategy', '?')}, pruner {(spec.get('pruner') or {}).get('type', '?')}",
        f"workload {spec.get('workload', '?')}" + (f" on {spec['data']}" if spec.get("data") else ""),
        f"up to {spec.get('epochs', '?')} epochs",
    ]
    return (f'<section id="overview"><h1>Study {_e(facts.name)}</h1><p>{_e(" · ".join(facts_line))}</p>'
            f'<p class="muted">Generated {datetime.now():%Y-%m-%d %H:%M} by <code>tuner report</code>.</p></section>')


def _best_section(facts: Facts, retrain: bool) -> str:
    best = facts.completed[0]  # only a study with a completed trial gets this section
    attrs = best.user_attrs
    rows = [(k, fmt(v)) for k, v in best.params.items()]
    rows += [(f"validation {facts.metric}", fmt(best.value)), ("best epoch", fmt(attrs.get("best_epoch"))),
             ("overfitting gap (last epoch)", fmt(attrs.get("final_gap"))), ("diagnosis", attrs.get("diagnosis", ""))]
    curve = facts.curves.get(best.number) or [{}]
    at_best = next((r for r in curve if r.get("epoch") == attrs.get("best_epoch")), curve[-1])
    if _finite(at_best.get("val_acc")):
        rows.append(("validation accuracy (best epoch)", f"{at_best['val_acc']:.2%}"))
    score, how = test_score(facts) if retrain else (None, "Not retrained (--no-test): the score above is the "
                                                           "validation score.")
    if score is not None:
        rows += [("test loss", fmt(score["test_loss"])), ("test accuracy", f"{score['test_acc']:.2%}")]
        if facts.spec.get("data") == "mnist1d":
            how += f" For reference, published test accuracies: {MNIST1D_PAPER}."
    return _section("best", f"Best configuration: trial {best.number}",
                    _kv(rows) + f'<p class="muted" id="test-note">{_e(how)}</p>')


def _curves_section(facts: Facts, plot: Any) -> str:
    parts = []
    best = [t for t in facts.completed if facts.curves.get(t.number)][:BEST_CURVES]
    if best:
        parts.append(plot("curves-best", f"Training (dashed) and validation (solid) loss of the {len(best)} best "
                          "trials", curves_figure(facts, best)))
    recorded = [t for t in facts.state(TrialState.PRUNED) if facts.curves.get(t.number)]
    longest = sorted(recorded, key=lambda t: -len(facts.curves[t.number]))
    pruned = sorted(longest[:PRUNED_CURVES], key=lambda t: t.number)
    if pruned:
        parts.append(plot("curves-pruned", f"Learning curves of {len(pruned)} pruned trials (those that ran longest)",
                          curves_figure(facts, pruned)))
    return _section("curves", "Learning curves",
                    "".join(parts) or _warn("No completed or pruned trial recorded an epoch."))


def _gap_section(facts: Facts, ranked: list[str], plot: Any) -> str:
    """The gap against the most important params (all of them, in spec order, without importances)."""
    dists = _distributions(facts.finished)
    params = [p for p in (ranked or list(dists)) if p in dists][:GAP_PARAMS]
    if not params or not any(_finite(t.user_attrs.get("final_gap")) for t in facts.finished):
        return _section("gap", "Overfitting gap against the main parameters", _warn("No trial recorded a gap."))
    caption = "Gap between validation and training loss at the last epoch; colour: diagnosis"
    return _section("gap", "Overfitting gap against the main parameters",
                    plot("gap", caption, gap_figure(facts, params)))


def _diagnosis_section(facts: Facts, values: Mapping[str, float], plot: Any) -> str:
    found = diagnoses(facts)
    rows = [(_dot(d["kind"]) + _e(d["kind"]), d["count"], _e(", ".join(map(str, d["trials"]))), _e(d["where"]))
            for d in found]
    body = (_grid(("diagnosis", "trials", "which", "where in the space"), rows) if found
            else _warn("No trial has a diagnosis yet."))
    reasons = stop_reasons(facts)
    if reasons:
        body += "<h3>Why trials stopped early</h3>" + _grid(
            ("state", "rule or error", "trials"), [(s.lower(), _e(why), n) for s, why, n in reasons])
    dists = _distributions(facts.finished)
    numeric = [p for p in (list(values) or list(dists)) if not isinstance(dists.get(p), CategoricalDistribution)]
    if len(numeric) >= 2 and found:
        which = " (the two most important numeric params)" if values else ""
        body += plot("diagnoses", f"Diagnoses over {numeric[0]} and {numeric[1]}{which}",
                     diagnosis_figure(facts, numeric[0], numeric[1]))
    return _section("diagnoses", "Diagnoses", body)


def _compute_section(facts: Facts) -> str:
    acct, clock = facts.accounting, timing(facts)
    per_epoch = acct["wall_seconds"] / acct["epochs_run"] if acct["epochs_run"] else 0.0
    saved = (f"{acct['epochs_saved']} ({acct['saved_fraction']:.0%} of running every trial to the full budget, "
             f"≈ {acct['epochs_saved'] * per_epoch:.0f} trial-seconds at this study's mean seconds per epoch)")
    return _section("compute", "Compute", _kv([
        ("trials run", acct["trials"]), ("epochs run", acct["epochs_run"]),
        ("trial wall seconds (summed)", f"{acct['wall_seconds']:.1f}"), ("GPU seconds", f"{acct['gpu_seconds']:.1f}"),
        ("study wall-clock", _duration(clock["elapsed"])), ("time to the best trial", _duration(clock["to_best"])),
        ("pruned · early-stopped", f"{acct['pruned']} · {acct['early_stopped']}"),
        ("epochs saved by stopping early", saved),
    ]))


def _trials_section(facts: Facts) -> str:
    rows = []
    for t in facts.completed + [t for t in facts.trials if t not in facts.completed]:
        a = t.user_attrs
        curve = sparkline([r.get("val_loss") for r in facts.curves.get(t.number, [])])
        why = a.get("prune_reason") or a.get("fail_reason") or a.get("stop_reason") or ""
        params = " ".join(f"{k}={fmt(v)}" for k, v in t.params.items())
        rows.append((t.number, t.state.name.lower(), fmt(t.value), f'<span class="spark">{curve}</span>',
                     _e(a.get("diagnosis", "")), fmt(a.get("epochs")), _e(params), _e(why)))
    head = ("#", "state", "value", "val loss", "diagnosis", "epochs", "params", "stopped because")
    return _section("trials", "All trials, best first", _grid(head, rows, "trials"))


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
table.kv th{background:#f6f6f6;font-weight:600}table.trials td{font-size:12px}
.spark{font-family:ui-monospace,monospace;white-space:nowrap}.muted{color:#666}
.warn{background:#fff4e5;padding:.6em;border-left:4px solid #ff9800}
figure.plot{margin:1em 0}figure.plot img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
.dot{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.4em}
"""


def _page(title: str, body: str) -> str:
    """A whole HTML document with the style inline: nothing is fetched when it opens."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f"<body>{body}</body></html>\n")


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def _kv(rows: Iterable[tuple[Any, Any]]) -> str:
    """A two-column table of names and values (both escaped)."""
    return '<table class="kv">' + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _grid(head: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    """A table with a header row; cells are HTML already (escape text with ``_e``)."""
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{header}</tr>{body}</table>'


def _warn(text: str) -> str:
    return f'<p class="warn">{_e(text)}</p>'


def _dot(kind: str) -> str:
    return f'<span class="dot" style="background:{DIAGNOSIS_COLORS.get(kind, "#bbbbbb")}"></span>'


# ---------------------------------------------------------------------- comparison


def compare_rows(studies: Sequence[Facts]) -> list[tuple[str, list[str]]]:
    """The side-by-side table of ``tuner compare``: one row per fact, one column per study."""
    params = list(dict.fromkeys(p for f in studies if f.best for p in f.best.params))
    rows: list[tuple[str, list[str]]] = [
        ("objective", [f"{f.direction} {f.metric}" for f in studies]),
        ("best value", [fmt(f.best.value) if f.best else "no completed trial" for f in studies]),
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
        ("wall-clock", [_duration(timing(f)["elapsed"]) for f in studies]),
        ("time to best", [_duration(timing(f)["to_best"]) for f in studies]),
    ]
    return rows


def write_compare(studies: Sequence[Facts], out: str | Path) -> None:
    """The optimization histories of ``studies`` as a PNG, or an HTML page with the table and the plot."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".html"):
        raise TunerError(f"-o: the plot must be a .png or .html file, but got {str(out)!r}. "
                         "Fix: e.g. -o compare.html.")
    check_writable(out, "-o")
    plot = Plot("compare", "Best value so far, by trial and by wall-clock time", png(compare_figure(studies)))
    if out.suffix.lower() == ".png":
        _write_file(out, plot.data, "-o")
        return
    names = [f.name for f in studies]
    table = _grid(["", *names], [(_e(k), *map(_e, vs)) for k, vs in compare_rows(studies)], "kv")
    body = f"<h1>{_e(' vs '.join(names))}</h1>{table}{plot.html()}"
    _write_file(out, _page(f"tuner compare: {', '.join(names)}", body).encode(), "-o")


# ---------------------------------------------------------------------- files


def check_writable(path: Path, option: str) -> None:
    """Fail before any work if ``path`` cannot be written: the option, the path, why, and the fix."""
    if path.is_dir():
        example = str(path / "report.html")
        raise TunerError(f"{option}: {str(path)!r} is a directory. Fix: name a file in it, e.g. {example!r}.")
    parent = path.parent
    if not parent.is_dir():
        raise TunerError(f"{option}: cannot write {str(path)!r}: the directory {str(parent)!r} does not exist. "
                         "Fix: create it, or choose another path.")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TunerError(f"{option}: cannot write {str(path)!r}: permission denied. Fix: choose a writable path.")


def check_directory(path: Path, option: str) -> None:
    if path.exists() and not path.is_dir():
        raise TunerError(f"{option}: {str(path)!r} is a file, not a directory. Fix: name a directory for the PNGs.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TunerError(f"{option}: cannot create the directory {str(path)!r}: {exc.strerror}. "
                         "Fix: choose a writable path.") from None


def _write_file(path: Path, data: bytes, option: str) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise TunerError(
            f"{option}: cannot write {str(path)!r}: {exc.strerror}. Fix: choose a writable path."
        ) from None


# ---------------------------------------------------------------------- helpers


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _better(value: float, than: float, direction: str) -> bool:
    return value < than if direction == "minimize" else value > than


def fmt(value: Any) -> str:
    """A value for people: floats to 4 significant digits, None as nothing."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _log(value: float) -> float:
    return math.log10(value) if value > 0 else 0.0


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"


def _series(rows: Sequence[Row], key: str) -> list[float]:
    """``key`` of each row, NaN where it is missing or not finite (matplotlib leaves a gap there)."""
    return [float(r[key]) if _finite(r.get(key)) else math.nan for r in rows]


def _colors(trials: Iterable[FrozenTrial]) -> list[str]:
    return [DIAGNOSIS_COLORS.get(t.user_attrs.get("diagnosis", "none"), "#bbbbbb") for t in trials]


def _running_best(facts: Facts, by_completion: bool = False) -> list[tuple[FrozenTrial, float]]:
    """Each completed trial, in trial order (or the order trials ended in), with the best value up to it.

    Trials run in parallel end out of number order: a best-so-far line over
    wall-clock time must follow completion order, or it goes back in time.
    """
    def order(t: FrozenTrial) -> Any:
        return (t.datetime_complete, t.number) if by_completion else t.number

    out: list[tuple[FrozenTrial, float]] = []
    for t in sorted((t for t in facts.state(TrialState.COMPLETE) if t.datetime_complete or not by_completion),
                    key=order):
        if _finite(t.value) and (not out or _better(t.value, out[-1][1], facts.direction)):
            out.append((t, t.value))
        elif out:
            out.append((t, out[-1][1]))
    return out


def _last_finite(rows: Sequence[Row]) -> float:
    for row in reversed(rows):
        for key in ("val_loss", "train_loss"):
            if _finite(row.get(key)):
                return float(row[key])
    return 0.0


def _auto_log(ax: Any, values: Iterable[Any]) -> None:
    """A log scale when values span more than two decades (a diverging curve next to good ones).

    Values of both signs (a gap) get a symmetric log scale, linear near zero.
    """
    finite = [float(v) for v in values if _finite(v)]
    if not finite:
        return
    if min(finite) > 0 and max(finite) / min(finite) > 100:
        ax.set_yscale("log")
        return
    typical = sorted(abs(v) for v in finite)[3 * len(finite) // 4] or 1e-3  # linear up to most values
    if max(abs(v) for v in finite) > 100 * typical:
        ax.set_yscale("symlog", linthresh=typical)
    else:
        ax.ticklabel_format(axis="y", useOffset=False)


def _distributions(trials: Iterable[FrozenTrial]) -> dict[str, Any]:
    dists: dict[str, Any] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            dists.setdefault(name, dist)
    return dists


def _position(dist: Any, value: Any) -> float:
    """Where ``value`` goes on a param's axis: categorical choices at 0, 1, 2, ..."""
    if isinstance(dist, CategoricalDistribution):
        return float(dist.choices.index(value)) if value in dist.choices else math.nan
    return float(value)


def _param_axis(ax: Any, name: str, dist: Any, axis: str = "x") -> None:
    set_label, set_scale = (ax.set_xlabel, ax.set_xscale) if axis == "x" else (ax.set_ylabel, ax.set_yscale)
    set_label(name)
    if isinstance(dist, CategoricalDistribution):
        ticks = range(len(dist.choices))
        labels = [str(c) for c in dist.choices]
        (ax.set_xticks if axis == "x" else ax.set_yticks)(list(ticks), labels)
        (ax.set_xlim if axis == "x" else ax.set_ylim)(-0.5, len(dist.choices) - 0.5)
    elif getattr(dist, "log", False):
        set_scale("log")


def _legend(ax: Any, **options: Any) -> None:
    if ax.get_legend_handles_labels()[0]:  # a curve-less panel gets no empty legend (and no warning)
        ax.legend(**options)


def _diagnosis_legend(fig: Any, ax: Any, trials: Sequence[FrozenTrial]) -> None:
    from matplotlib.lines import Line2D

    kinds = sorted({t.user_attrs.get("diagnosis", "none") for t in trials})
    handles = [Line2D([], [], marker="o", ls="", color=DIAGNOSIS_COLORS.get(k, "#bbbbbb"), label=k) for k in kinds]
    handles += [Line2D([], [], marker=m, ls="", color="#555555", label=s.lower()) for s, m in STATE_MARKERS.items()
                if any(t.state.name == s for t in trials)]
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="best")

