"""The report and the compare page: one self-contained HTML file each, from Jinja2 templates.

The templates (``templates/``) hold the page's structure; this module chooses
what goes in it and draws the plots. Autoescape is on, so a study's name, a
param value or a failure message shows as text, never as markup. The PNGs are
embedded as base64, the style is inline and there is no script: the file opens
offline, with nothing fetched.
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from tuner.errors import TunerError
from tuner.report.facts import (
    MNIST1D_PAPER, Facts, collect, compare_rows, diagnoses, distributions, duration, importances, stop_reasons,
    test_score, timing, value,
)
from tuner.report.figures import (
    DIAGNOSIS_COLORS, compare_figure, curves_figure, diagnosis_figure, gap_figure, history_figure, importance_figure,
    pareto_figure, png, sparkline,
)
from tuner.trial.metrics import finite, fmt
from tuner.trial.record import why_stopped

# Learning curves shown in a report: the best trials, and a few pruned ones to
# see what the pruner stopped.
BEST_CURVES = 4
PRUNED_CURVES = 4
GAP_PARAMS = 4  # the overfitting gap is plotted against this many params, most important first

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("tuner.report", "templates"),
    autoescape=True,  # every template, whatever its name: all of them write HTML
    undefined=jinja2.StrictUndefined,  # a misspelt name fails the report, not blanks a cell
    trim_blocks=True, lstrip_blocks=True,
)


@dataclass
class Plot:
    """One figure of the report: its name (anchor and PNG file name), caption and picture."""

    name: str
    caption: str
    data: bytes

    @property
    def base64(self) -> str:
        return base64.b64encode(self.data).decode()


Draw = Callable[[str, str, Any], Plot]


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

    def draw(name: str, caption: str, fig: Any) -> Plot:
        on_step(f"plotting {name}")
        plots.append(Plot(name, caption, png(fig)))
        return plots[-1]

    page = _report(study, facts, retrain, draw, on_step)
    on_step(f"writing {out}")
    _write_file(out, TEMPLATES.get_template("report.html").render(page).encode(), "-o")
    if png_dir is not None:
        for plot in plots:
            _write_file(Path(png_dir) / f"{plot.name}.png", plot.data, "--png")
    return plots


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
    rows = [(label, *values) for label, values in compare_rows(studies)]
    page = TEMPLATES.get_template("compare.html").render(names=names, rows=rows, plot=plot)
    _write_file(out, page.encode(), "-o")


# ---------------------------------------------------------------------- what the report shows


def _report(study: Any, facts: Facts, retrain: bool, draw: Draw, on_step: Callable[[str], None]) -> dict[str, Any]:
    """What ``report.html`` shows, section by section, in page order (the plots are drawn in that order)."""
    on_step("parameter importances")
    values, note = importances(study.optuna, facts)
    page: dict[str, Any] = {"name": facts.name, "overview": _overview(facts),
                            "generated": f"{datetime.now():%Y-%m-%d %H:%M}", "completed": bool(facts.completed)}
    page["pareto"] = _pareto(facts, draw) if facts.front else None
    if facts.completed:
        page["best"] = _best(facts, retrain, on_step)
        page["history"] = draw("history", f"{facts.metric} of each trial (pruned: its last value) and the best so far",
                               history_figure(facts))
    else:
        page["no_completed"] = (
            f"Study {facts.name} has {len(facts.trials)} trials and none completed with a finite value, so it has "
            "no best configuration, history or importances yet. What is known about its trials follows.")
    page["curves"] = _curves(facts, draw)
    if facts.completed:
        page["importance"] = draw("importance", note, importance_figure(values)) if values else None
        page["importance_note"] = note
        page["gap"] = _gap(facts, list(values), draw)
    page["diagnoses"] = _diagnoses(facts, values, draw)
    page["compute"] = _compute(facts)
    page["trials"] = _trials(facts)
    return page


def _overview(facts: Facts) -> str:
    counts = Counter(t.state.name.lower() for t in facts.trials)
    best, spec = facts.best, facts.spec
    return " · ".join([
        f"{len(facts.trials)} trials ({', '.join(f'{n} {s}' for s, n in counts.most_common())})",
        f"best {facts.metric} {fmt(value(best))} (trial {best.number})" if best else "no completed trial",
        ", ".join(f"{d} {m}" for d, m in facts.objectives or ((facts.direction, facts.metric),)),
        f"strategy {spec.get('strategy', '?')}, pruner {(spec.get('pruner') or {}).get('type', '?')}",
        f"workload {spec.get('workload', '?')}" + (f" on {spec['data']}" if spec.get("data") else ""),
        f"up to {spec['epochs']} epochs" if spec.get("epochs") else "steps per trial unknown (no epochs=)",
    ])


def _best(facts: Facts, retrain: bool, on_step: Callable[[str], None]) -> dict[str, Any]:
    best = facts.completed[0]  # only a study with a completed trial gets this section
    attrs = best.user_attrs
    rows = [(k, fmt(v)) for k, v in best.params.items()]
    rows += [(f"validation {facts.metric}", fmt(value(best))), ("best epoch", fmt(attrs.get("best_epoch"))),
             ("overfitting gap (last epoch)", fmt(attrs.get("final_gap"))), ("diagnosis", attrs.get("diagnosis", ""))]
    curve = facts.curves.get(best.number) or [{}]
    at_best = next((r for r in curve if r.get("epoch") == attrs.get("best_epoch")), curve[-1])
    if finite(at_best.get("val_acc")):
        rows.append(("validation accuracy (best epoch)", f"{at_best['val_acc']:.2%}"))
    score, how = test_score(facts, on_step) if retrain else (None, "Not retrained (--no-test): the score above is the "
                                                           "validation score.")
    if score is not None:
        rows += [("test loss", fmt(score["test_loss"])), ("test accuracy", f"{score['test_acc']:.2%}")]
        if facts.spec.get("data") == "mnist1d":
            how += f" For reference, published test accuracies: {MNIST1D_PAPER}."
    title = f"Best on {facts.metric}: trial {best.number}" if facts.objectives else f"Best configuration: trial {best.number}"
    return {"number": best.number, "rows": rows, "note": how, "title": title}


def _pareto(facts: Facts, draw: Draw) -> dict[str, Any]:
    """The Pareto front of a study with several objectives: a plot of the first two, and a table of every one."""
    names = [m for _, m in facts.objectives]
    caption = (f"{names[1]} against {names[0]} of each completed trial; red: the Pareto front (no trial is better "
               "on every objective)" + (f"; drawn in the plane of the first two of {len(names)}" if len(names) > 2 else ""))
    rows = [(t.number, *(fmt(v) for v in t.values), " ".join(f"{k}={fmt(v)}" for k, v in t.params.items()))
            for t in facts.front]
    objectives = ", ".join(f"{d} {m}" for d, m in facts.objectives)
    return {"plot": draw("pareto", caption, pareto_figure(facts)), "header": ("trial", *names, "params"),
            "rows": rows, "note": f"{len(facts.front)} of {len(facts.completed)} completed trials ({objectives})."}


def _curves(facts: Facts, draw: Draw) -> list[Plot]:
    plots = []
    best = [t for t in facts.completed if facts.curves.get(t.number)][:BEST_CURVES]
    if best:
        plots.append(draw("curves-best", f"Training (dashed) and validation (solid) loss of the {len(best)} best "
                          "trials", curves_figure(facts, best)))
    recorded = [t for t in facts.state(TrialState.PRUNED) if facts.curves.get(t.number)]
    longest = sorted(recorded, key=lambda t: -len(facts.curves[t.number]))
    pruned = sorted(longest[:PRUNED_CURVES], key=lambda t: t.number)
    if pruned:
        plots.append(draw("curves-pruned", f"Learning curves of {len(pruned)} pruned trials (those that ran longest)",
                          curves_figure(facts, pruned)))
    return plots


def _gap(facts: Facts, ranked: list[str], draw: Draw) -> Plot | None:
    """The gap against the most important params (all of them, in spec order, without importances)."""
    dists = distributions(facts.finished)
    params = [p for p in (ranked or list(dists)) if p in dists][:GAP_PARAMS]
    if not params or not any(finite(t.user_attrs.get("final_gap")) for t in facts.finished):
        return None
    caption = "Gap between validation and training loss at the last epoch; colour: diagnosis"
    return draw("gap", caption, gap_figure(facts, params))


def _diagnoses(facts: Facts, values: Mapping[str, float], draw: Draw) -> dict[str, Any]:
    found = [{**d, "color": DIAGNOSIS_COLORS.get(d["kind"], "#bbbbbb")} for d in diagnoses(facts)]
    reasons = [(state.lower(), why, n) for state, why, n in stop_reasons(facts)]
    section: dict[str, Any] = {"found": found, "reasons": reasons, "plot": None}
    dists = distributions(facts.finished)
    numeric = [p for p in (list(values) or list(dists)) if not isinstance(dists.get(p), CategoricalDistribution)]
    if len(numeric) >= 2 and found:
        which = " (the two most important numeric params)" if values else ""
        section["plot"] = draw("diagnoses", f"Diagnoses over {numeric[0]} and {numeric[1]}{which}",
                               diagnosis_figure(facts, numeric[0], numeric[1]))
    return section


def _compute(facts: Facts) -> list[tuple[str, Any]]:
    acct, clock = facts.accounting, timing(facts)
    per_epoch = acct["wall_seconds"] / acct["epochs_run"] if acct["epochs_run"] else 0.0
    saved = (f"{acct['epochs_saved']} ({acct['saved_fraction']:.0%} of running every trial to the full budget, "
             f"≈ {acct['epochs_saved'] * per_epoch:.0f} trial-seconds at this study's mean seconds per epoch)")
    return [
        ("trials run", acct["trials"]), ("epochs run", acct["epochs_run"]),
        ("trial wall seconds (summed)", f"{acct['wall_seconds']:.1f}"), ("GPU seconds", f"{acct['gpu_seconds']:.1f}"),
        ("study wall-clock", duration(clock["elapsed"])), ("time to the best trial", duration(clock["to_best"])),
        ("pruned · early-stopped", f"{acct['pruned']} · {acct['early_stopped']}"),
        ("epochs saved by stopping early", saved),
    ]


def _trials(facts: Facts) -> list[dict[str, Any]]:
    """All trials, best first: the completed ones in rank order, then the rest by number."""
    rows = []
    for t in facts.completed + [t for t in facts.trials if t not in facts.completed]:
        a = t.user_attrs
        rows.append({
            "number": t.number, "state": t.state.name.lower(), "value": _value_text(facts, t),
            "curve": sparkline([r.get("val_loss") for r in facts.curves.get(t.number, [])]),
            "diagnosis": a.get("diagnosis", ""), "epochs": fmt(a.get("epochs")),
            "params": " ".join(f"{k}={fmt(v)}" for k, v in t.params.items()), "why": why_stopped(a),
        })
    return rows


def _value_text(facts: Facts, trial: Any) -> str:
    if not facts.objectives or not trial.values:
        return fmt(value(trial))
    return ", ".join(f"{m}={fmt(v)}" for (_, m), v in zip(facts.objectives, trial.values))


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
