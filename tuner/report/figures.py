"""The pictures of a study: matplotlib figures, PNGs and terminal sparklines.

One drawing serves the report, its ``--png DIR`` copies, the dashboard's trial
pages and ``tuner compare``. Figures are ``matplotlib.figure.Figure``, not
pyplot, which keeps no global state: the dashboard draws in a background thread
while it serves. matplotlib is imported where a figure is made, so that
``tuner show`` draws its sparklines without loading it.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.report.facts import Facts, Row, distributions, running_best, seconds, value
from tuner.trial.metrics import finite

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
TRAIN, VAL = "#1f77b4", "#d62728"
LOSSES = (("train_loss", TRAIN, "--", "train loss"), ("val_loss", VAL, "-", "validation loss"))
ACCURACIES = (("train_acc", TRAIN, "--", "train accuracy"), ("val_acc", VAL, "-", "validation accuracy"))
DIAGNOSIS_COLORS = {
    "healthy": "#2ca02c", "overfitting": "#ff7f0e", "stalled": "#7f7f7f", "diverged": "#d62728",
    "exploding_gradients": "#9467bd", "vanishing_gradients": "#17becf", "failed": "#8c564b", "none": "#bbbbbb",
}
STATE_MARKERS = {"COMPLETE": "o", "PRUNED": "x", "FAIL": "v"}


def sparkline(values: Sequence[float | None], width: int = 20) -> str:
    """``values`` as unicode blocks, low to high (▁ to █); × marks a NaN or infinite value, a blank one that is
    missing (None: not reported).

    Longer series are sampled evenly, first and last kept, to ``width`` characters.
    """
    if not values:
        return ""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    finite_values = [v for v in values if finite(v)]
    lo, hi = (min(finite_values), max(finite_values)) if finite_values else (0.0, 0.0)
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif not finite(v):
            out.append("×")
        elif hi == lo:
            out.append(SPARK_BLOCKS[3])
        else:
            out.append(SPARK_BLOCKS[min(int((v - lo) / (hi - lo) * len(SPARK_BLOCKS)), len(SPARK_BLOCKS) - 1)])
    return "".join(out)


def png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def learning_curve_png(trial: FrozenTrial, rows: Sequence[Row]) -> bytes:
    """One trial's curves as a PNG: losses, and accuracies where the workload reports them."""
    has_acc = any(finite(r.get("val_acc")) for r in rows)
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


def draw_curve(ax: Any, trial: FrozenTrial, rows: Sequence[Row], title: bool = True) -> None:
    """Training and validation loss of one trial, its best epoch, and where it stopped."""
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    for key, color, style, label in LOSSES:
        values = _series(rows, key)
        if any(finite(v) for v in values):
            ax.plot(epochs, values, style, color=color, label=label, marker="." if len(rows) < 12 else None)
    broken = [r["epoch"] for r in rows if any(k in r and not finite(r[k]) for k in ("train_loss", "val_loss"))]
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


def history_figure(facts: Facts) -> Any:
    """Each trial's value by trial number, with the best so far."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(8, 3.8)
    ax = fig.subplots()
    for state in (TrialState.COMPLETE, TrialState.PRUNED):
        trials = [t for t in facts.state(state) if finite(value(t))]
        ax.scatter([t.number for t in trials], [value(t) for t in trials], marker=STATE_MARKERS[state.name],
                   color="#1f77b4" if state == TrialState.COMPLETE else "#999999", label=state.name.lower(), zorder=3)
    best = running_best(facts)
    if best:
        xs, ys = [t.number for t, _ in best], [b for _, b in best]
        last = max(t.number for t in facts.trials)
        ax.step(xs + [last], ys + ys[-1:], where="post", color="#d62728", label="best so far")
    failed = facts.state(TrialState.FAIL)
    for t in failed:
        ax.axvline(t.number, color="#cccccc", lw=0.8, zorder=0)
    _auto_log(ax, [value(t) for t in facts.finished])
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
    dists = distributions(facts.finished)
    trials = [t for t in facts.finished if finite(t.user_attrs.get("final_gap"))]
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
    dists = distributions(facts.finished)
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
        best, in_time = running_best(facts), running_best(facts, by_completion=True)
        start = min((t.datetime_start for t in facts.trials if t.datetime_start), default=None)
        if not best or start is None:
            continue
        by_trial.step([t.number for t, _ in best], [b for _, b in best], where="post", label=facts.name)
        minutes = [seconds(start, t.datetime_complete) / 60 for t, _ in in_time]
        by_time.step(minutes, [b for _, b in in_time], where="post", label=facts.name)
    by_trial.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax, label in ((by_trial, "trial"), (by_time, "minutes since the study started")):
        ax.set_xlabel(label)
        ax.set_ylabel("best value so far")
        ax.grid(alpha=0.3)
    _legend(by_trial, fontsize=8)
    return fig


# ---------------------------------------------------------------------- helpers


def pareto_figure(facts: Facts) -> Any:
    """The first two objectives of every completed trial, the Pareto front's trials marked and joined.

    With more than two objectives the front is drawn in the plane of the first
    two, where some of its trials may look dominated (they win on a third).
    """
    (dx, mx), (dy, my) = facts.objectives[:2]
    fig = _figure(7, 4.8)
    ax = fig.subplots()
    on_front = {t.number for t in facts.front}
    done = [t for t in facts.state(TrialState.COMPLETE) if t.values and all(finite(v) for v in t.values[:2])]
    rest = [t for t in done if t.number not in on_front]
    ax.scatter([t.values[0] for t in rest], [t.values[1] for t in rest], color="#999999", label="completed", zorder=2)
    front = sorted((t for t in facts.front if all(finite(v) for v in t.values[:2])), key=lambda t: t.values[:2])
    xs, ys = [t.values[0] for t in front], [t.values[1] for t in front]
    ax.scatter(xs, ys, color="#d62728", label="Pareto front", zorder=3)
    if len(facts.objectives) == 2:  # a staircase is the front's shape in two dimensions only
        ax.step(xs, ys, where="post" if (dx == "minimize") == (dy == "minimize") else "pre", color="#d62728",
                lw=1, alpha=0.6, zorder=1)
    for t in front:
        ax.annotate(str(t.number), (t.values[0], t.values[1]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"{mx} ({dx})")
    ax.set_ylabel(f"{my} ({dy})")
    _legend(ax, fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _series(rows: Sequence[Row], key: str) -> list[float]:
    """``key`` of each row, NaN where it is missing or not finite (matplotlib leaves a gap there)."""
    return [float(r[key]) if finite(r.get(key)) else math.nan for r in rows]


def _colors(trials: Iterable[FrozenTrial]) -> list[str]:
    return [DIAGNOSIS_COLORS.get(t.user_attrs.get("diagnosis", "none"), "#bbbbbb") for t in trials]


def _last_finite(rows: Sequence[Row]) -> float:
    for row in reversed(rows):
        for key in ("val_loss", "train_loss"):
            if finite(row.get(key)):
                return float(row[key])
    return 0.0


def _auto_log(ax: Any, values: Iterable[Any]) -> None:
    """A log scale when values span more than two decades (a diverging curve next to good ones).

    Values of both signs (a gap) get a symmetric log scale, linear near zero.
    """
    finite_values = [float(v) for v in values if finite(v)]
    if not finite_values:
        return
    if min(finite_values) > 0 and max(finite_values) / min(finite_values) > 100:
        ax.set_yscale("log")
        return
    typical = sorted(abs(v) for v in finite_values)[3 * len(finite_values) // 4] or 1e-3  # linear up to most values
    if max(abs(v) for v in finite_values) > 100 * typical:
        ax.set_yscale("symlog", linthresh=typical)
    else:
        ax.ticklabel_format(axis="y", useOffset=False)


def _position(dist: Any, value: Any) -> float:
    """Where ``value`` goes on a param's axis: categorical choices at 0, 1, 2, ..."""
    if isinstance(dist, CategoricalDistribution):
        return float(dist.choices.index(value)) if value in dist.choices else math.nan
    return float(value)


def _param_axis(ax: Any, name: str, dist: Any, axis: str = "x") -> None:
    """A param's axis: its name; a categorical's choices at 0, 1, 2, ...; an int's whole numbers; log when it is.

    Numbers (an int's range, or a list of `values`) get as many labelled
    ticks as fit side by side (a list keeps an unlabelled tick at every
    value); a categorical's names are each shown.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter

    set_label, set_scale = (ax.set_xlabel, ax.set_xscale) if axis == "x" else (ax.set_ylabel, ax.set_yscale)
    set_label(name)
    scale = ax.xaxis if axis == "x" else ax.yaxis
    if isinstance(dist, CategoricalDistribution):
        labels = [str(c) for c in dist.choices]
        if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in dist.choices):  # `values: [...]`
            scale.set_major_locator(_roomy())
            scale.set_major_formatter(FuncFormatter(lambda x, _: labels[round(x)] if 0 <= x < len(labels) else ""))
            scale.set_minor_locator(FixedLocator(range(len(labels))))
        else:  # names: each one shown
            scale.set_ticks(range(len(labels)), labels)
        (ax.set_xlim if axis == "x" else ax.set_ylim)(-0.5, len(dist.choices) - 0.5)
    elif getattr(dist, "log", False):
        set_scale("log")
    elif isinstance(dist, IntDistribution):
        scale.set_major_locator(_roomy())


def _roomy() -> Any:
    """A locator of whole-number ticks with room between their labels (see ``_roomy_class``)."""
    return _roomy_class()()


@functools.cache
def _roomy_class() -> type:
    """The class, made on first use: matplotlib loads only where a figure is made."""
    from matplotlib.ticker import MaxNLocator

    class Roomy(MaxNLocator):
        """Whole-number ticks, as many as leave room between their labels (``MaxNLocator(integer=True)``).

        matplotlib's own count allows 3 characters a label; an int's 100000
        or a choice's name is wider, so the count here shrinks until each
        label, measured in the tick labels' font, clears its neighbours.
        """

        MOST = 9

        def __init__(self) -> None:
            super().__init__(nbins=self.MOST, steps=[1, 2, 2.5, 5, 10], integer=True, min_n_ticks=1)

        def __call__(self) -> Any:
            low, high = sorted(self.axis.get_view_interval())
            for nbins in range(self.MOST, 0, -1):
                self.set_params(nbins=nbins)
                ticks = [t for t in self.tick_values(low, high) if low <= t <= high]
                if self._room(ticks, low, high):
                    break
            return ticks

        def _room(self, ticks: Sequence[float], low: float, high: float) -> bool:
            from matplotlib import rcParams
            from matplotlib.font_manager import FontProperties
            from matplotlib.textpath import text_to_path

            if len(ticks) < 2 or high <= low:
                return True
            across = self.axis.axis_name == "x"
            font = FontProperties(size=rcParams[f"{self.axis.axis_name}tick.labelsize"])
            em = font.get_size_in_points()
            if across:  # label widths, in points
                sizes = [text_to_path.get_text_width_height_descent(label, font, ismath=False)[0]
                         for label in self.axis.get_major_formatter().format_ticks(ticks)]
            else:  # stacked labels: one line each
                sizes = [1.2 * em] * len(ticks)
            box = self.axis.axes.bbox
            points = (box.width if across else box.height) * 72 / self.axis.axes.figure.dpi / (high - low)
            return all((b - a) * points >= (wa + wb) / 2 + em / 2
                       for a, b, wa, wb in zip(ticks, ticks[1:], sizes, sizes[1:]))

    return Roomy


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
