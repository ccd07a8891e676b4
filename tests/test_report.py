"""`tuner report`, `tuner compare` and the sparklines of `tuner show`, on studies from real runs.

The report is opened in a real headless Chromium (see tests/test_dashboard.py
for the browser and where screenshots go).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

import tuner
from tests import workloads
from tests.services import user_env
from tests.test_dashboard import ARTIFACTS, render
from tuner import report
from tuner.cli import main
from tuner.errors import StudyFailedError

REPO = Path(__file__).resolve().parent.parent
# The built-in MLP on wine, small enough for seconds: its seed gives completed
# trials and pruned ones, by successive halving (rungs from the epoch budget)
# and by divergence.
WINE = {
    "name": "wine", "workload": "mlp", "data": "wine", "strategy": "random", "seed": 8, "trials": 6, "epochs": 5,
    "params": {
        "lr": {"type": "float", "low": 1e-4, "high": 3.0, "log": True},
        "width": {"type": "int", "low": 8, "high": 64, "log": True},
        "batch_size": {"type": "categorical", "choices": [16, "full"]},
    },
}
PLOTS = {"history", "curves-best", "curves-pruned", "importance", "gap", "diagnoses"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store with a real wine study and a study whose trials all failed."""
    cwd = tmp_path_factory.mktemp("report")
    storage = f"sqlite:///{cwd / 'tuner.db'}"
    wine = tuner.launch(WINE, executor="inline", storage=storage)
    states = [t.state for t in wine.trials]
    assert TrialState.COMPLETE in states and TrialState.PRUNED in states, states
    with pytest.raises(StudyFailedError):
        tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=workloads.broken,
                     study="broken", trials=4, epochs=2, executor="inline", storage=storage)
    return cwd, storage


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tuner", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_report_renders_offline_with_every_plot_and_no_console_error(store):
    cwd, storage = store
    out, pngs = cwd / "report.html", cwd / "png"
    done = cli("report", "wine", "-o", str(out), "--png", str(pngs), "--storage", storage, cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert f"wrote the report of wine ({len(PLOTS)} plots)" in done.stderr
    text = out.read_text()
    # Self-contained: no script, and nothing fetched from anywhere.
    assert "<script" not in text
    assert not re.findall(r'(?:src|href)="(?!data:|#)', text)

    page = render(out.as_uri(), "report/wine", height=7000, budget_ms=3000)
    figures = re.findall(r'<figure class="plot" id="plot-([a-z-]+)"><img src="data:image/png;base64,([^"]+)"', page.dom)
    assert {name for name, _ in figures} == PLOTS
    assert {p.stem for p in pngs.iterdir()} == PLOTS  # --png writes the same plots
    for _, data in figures:
        from PIL import Image

        width, height = Image.open(io.BytesIO(base64.b64decode(data))).size
        assert width > 300 and height > 150
    assert page.console == [], page.console  # the console stays silent: no error, no warning

    study = tuner.load("wine", storage)
    best = min((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert f"Best configuration: trial {best.number}" in page.dom
    assert "test accuracy" in page.dom and "scored once on the held-out test split" in page.dom
    for kind in {t.user_attrs["diagnosis"] for t in study.trials}:
        assert f"</span>{kind}</td>" in page.dom  # a row of the diagnosis summary
    acct = study.accounting()
    assert f"<th>epochs run</th><td>{acct['epochs_run']}</td>" in page.dom


def test_a_study_without_a_completed_trial_gets_a_report_that_says_so(store, capsys):
    cwd, storage = store
    out = cwd / "broken.html"
    assert main(["report", "broken", "-o", str(out), "--storage", storage]) == 0
    text = out.read_text()
    assert "No completed trial" in text and "has 3 trials and none completed" in text
    assert "the data loader could not find its files" in text  # why they failed


def test_a_missing_study_is_refused_listing_the_existing_ones(store, capsys):
    cwd, storage = store
    assert main(["report", "nope", "-o", str(cwd / "x.html"), "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert "no study named 'nope'" in err and "wine" in err and "broken" in err


@pytest.mark.parametrize("where, message", [
    ("missing/dir/report.html", "the directory '{cwd}/missing/dir' does not exist"),
    (".", "'{cwd}' is a directory"),
])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(store, capsys, where, message):
    cwd, storage = store
    target = str(cwd / where) if where != "." else str(cwd)
    assert main(["report", "wine", "-o", target, "--storage", storage]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "-o: " in err and message.format(cwd=cwd) in err and "Fix:" in err and "Traceback" not in err


def test_compare_prints_studies_side_by_side_and_plots_their_histories(store, capsys):
    cwd, storage = store
    assert main(["compare", "wine", "broken", "-o", str(cwd / "compare.png"), "--storage", storage]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for row in ("best value", "lr", "trials (complete/pruned/failed)", "trial-seconds", "time to best"):
        assert row in out
    assert "no completed trial" in out and "3 (0/0/3)" in out
    assert (cwd / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["compare", "wine", "-o", str(cwd / "compare.html"), "--storage", storage]) == 0
    assert '<figure class="plot" id="plot-compare">' in (cwd / "compare.html").read_text()
    assert main(["compare", "wine", "-o", str(cwd / "compare.txt"), "--storage", storage]) == 2
    assert "must be a .png or .html file" in capsys.readouterr().err


def test_show_draws_each_trials_validation_curve_best_first(store, capsys, monkeypatch):
    cwd, storage = store
    monkeypatch.setenv("COLUMNS", "160")  # a terminal wide enough for every column (at 120 the curve goes first)
    assert main(["show", "wine", "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "curve" in out and "val_loss curve" not in out  # the objective's curve: here val_loss
    study = tuner.load("wine", storage)
    best = min((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    curve = report.sparkline([r["val_loss"] for r in study.epochs(best.number)])
    first_row = next(line for line in out.splitlines() if re.match(r"│ \d", line))
    assert first_row.startswith(f"│ {best.number} ") and curve in first_row


@pytest.mark.parametrize("command", ["report", "compare", "dashboard"])
def test_every_new_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0 and f"usage: tuner {command}" in capsys.readouterr().out


def test_sparkline():
    assert report.sparkline([3.0, 2.0, 1.0]) == "█▅▁"
    assert report.sparkline([1.0, math.nan, 1.0]) == "▄×▄"
    assert report.sparkline([1.0, None, 2.0]) == "▁ █"  # not reported: blank, not a NaN's ×
    assert report.sparkline([]) == ""
    assert len(report.sparkline(list(range(100)), width=20)) == 20
    assert report.sparkline(list(range(100)), width=20)[::19] == "▁█"  # first and last kept


def test_only_a_built_in_workload_is_retrained_for_a_test_score(store):
    _, storage = store
    facts = report.collect(tuner.load("wine", storage))
    custom = dataclasses.replace(facts, spec={**facts.spec, "workload": "callable:tests.workloads:quadratic"})
    score, why = report.test_score(custom)
    assert score is None and "'tests.workloads:quadratic' is not built in" in why
    facts = report.collect(tuner.load("broken", storage))
    assert report.test_score(facts) == (None, "No completed trial, so no configuration to test.")


def test_artifacts_directory_is_ignored_by_git():
    # Screenshots of the browser tests land there; they must never be committed by accident.
    done = subprocess.run(["git", "check-ignore", "-q", str(ARTIFACTS / "x.png")], cwd=REPO)
    assert done.returncode == 0 or os.environ.get("TUNER_TEST_ARTIFACTS"), f"{ARTIFACTS} is not ignored by git"


def test_the_wall_clock_best_so_far_line_never_goes_back_in_time():
    """Trials run in parallel end out of number order: trial 0 ends last here."""
    import datetime as dt

    import numpy as np
    import optuna
    from optuna.distributions import FloatDistribution

    from tuner.report import Facts, compare_figure

    t0 = dt.datetime(2026, 1, 1)
    ends = [50, 10, 20, 30]  # minutes after the start
    trials = [
        optuna.trial.create_trial(
            value=v, params={"x": v}, distributions={"x": FloatDistribution(0, 10)},
        )
        for v in (1.0, 5.0, 3.0, 2.0)
    ]
    for number, (trial, end) in enumerate(zip(trials, ends)):
        trial.number = number
        trial.datetime_start = t0
        trial.datetime_complete = t0 + dt.timedelta(minutes=end)
    facts = Facts("s", "minimize", "val_loss", {}, trials, {}, {})
    fig = compare_figure([facts])
    by_time = fig.axes[1].lines[0]
    minutes, best = np.asarray(by_time.get_xdata()), np.asarray(by_time.get_ydata())
    print(f"\nwall-clock best so far: {list(zip(minutes.tolist(), best.tolist()))}")
    assert (np.diff(minutes) >= 0).all()
    assert best.tolist() == [5.0, 3.0, 2.0, 1.0]


def test_the_report_command_says_what_it_is_doing_as_it_goes(store):
    import shutil

    cwd, storage = store
    result = subprocess.run([shutil.which("tuner"), "report", "wine", "-o", "steps.html", "--storage", storage],
                            cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    print("\n" + "\n".join(lines))
    steps = [line for line in lines if line.startswith("report: ")]
    assert steps[0].startswith("report: reading ") and "trials and their epochs" in steps[0]
    # The step names what the test score is, as the page does: the best trial keeps a checkpoint, so its
    # saved model is scored and nothing is retrained (a line saying "retraining" would contradict the page).
    (tested,) = [s for s in steps if "test split" in s]
    found = re.search(r"scoring trial (\d+)'s saved model \(epoch (\d+)\) on the test split, not retrained", tested)
    assert found and not any("retraining" in s for s in steps), steps
    page = (cwd / "steps.html").read_text()
    assert (f"Trial {found[1]}&#x27;s saved model (its checkpoint of epoch {found[2]}), scored once on the "
            "held-out test split; not retrained.") in page.replace("&#39;", "&#x27;")
    assert any(s.startswith("report: plotting history") for s in steps)
    assert lines[-1].startswith("wrote the report of wine")


# ---------------------------------------------------------------------- the split's promises


class FakeStudy:
    """What the report reads of a :class:`tuner.api.Study`, over an in-memory Optuna study.

    A study made through tuner cannot be named ``<script>``; one in a shared
    database, made by Optuna itself, can, and its report must still be text.
    """

    def __init__(self, optuna_study, spec, epochs, artifacts):
        self.optuna, self.spec, self._epochs = optuna_study, spec, epochs
        self.name = optuna_study.study_name
        self.artifacts = artifacts  # empty: no trial kept a checkpoint

    @property
    def trials(self):
        return self.optuna.trials

    def epochs(self):
        return self._epochs

    def accounting(self):
        from tuner.trial import metrics

        return metrics.accounting(self.trials, self.spec["epochs"])


SCRIPT = "<script>alert('x')</script>"
ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"


def hostile_study(artifacts) -> FakeStudy:
    """Markup in every place a study puts text: its name, a param value, a failure, a diagnosis detail."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    study = optuna.create_study(study_name=f"s{SCRIPT}", storage=optuna.storages.InMemoryStorage())
    dists = {"act": CategoricalDistribution([SCRIPT, "relu"]), "lr": FloatDistribution(1e-3, 1.0, log=True)}
    epochs = []
    for number, (act, lr, value) in enumerate([(SCRIPT, 0.01, 0.3), ("relu", 0.1, 0.5), (SCRIPT, 0.5, 0.4)]):
        attrs = {"diagnosis": "healthy", "best_epoch": 1, "final_gap": 0.01 * number, "epochs": 2}
        study.add_trial(optuna.trial.create_trial(params={"act": act, "lr": lr}, distributions=dists, value=value,
                                                  user_attrs=attrs))
        epochs += [{"trial": number, "epoch": e, "train_loss": value + 0.1 / e, "val_loss": value + 0.2 / e}
                   for e in (1, 2)]
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.FAIL, params={"act": SCRIPT, "lr": 0.9}, distributions=dists,
        user_attrs={"fail_reason": f"RuntimeError: {SCRIPT}", "epochs": 0}))
    return FakeStudy(study, {"workload": "mlp", "epochs": 2, "objective": {"metric": "val_loss"}}, epochs, artifacts)


def test_the_report_shows_a_studys_markup_as_text(tmp_path):
    study = hostile_study(tmp_path / "artifacts")
    out = tmp_path / "report.html"
    report.write(study, out, retrain=False)
    text = out.read_text()
    assert "<script" not in text
    assert f"<title>tuner report: s{ESCAPED}</title>" in text
    assert f"<h1>Study s{ESCAPED}</h1>" in text
    assert f"<td>act={ESCAPED} lr=0.01</td>" in text  # a param value, in the table of all trials
    assert f"<tr><th>act</th><td>{ESCAPED}</td></tr>" in text  # ... and in the best configuration
    assert f"<td>RuntimeError: {ESCAPED}</td>" in text  # why a trial failed


def test_the_compare_page_shows_a_studys_markup_as_text(tmp_path):
    facts = report.collect(hostile_study(tmp_path / "artifacts"))
    out = tmp_path / "compare.html"
    report.write_compare([facts], out)
    text = out.read_text()
    assert "<script" not in text
    assert f"<h1>s{ESCAPED}</h1>" in text and f"<th>s{ESCAPED}</th>" in text
    assert f"<td>  act</td><td>{ESCAPED}</td>" in text


def test_the_templates_escape_whatever_they_are_given():
    from tuner.report.html import TEMPLATES

    assert TEMPLATES.autoescape is True
    page = TEMPLATES.get_template("compare.html").render(names=[SCRIPT], rows=[(SCRIPT, SCRIPT)],
                                                         plot=report.Plot(SCRIPT, SCRIPT, b""))
    # title, h1, column header, two cells, and the plot's anchor, alt text and caption
    assert "<script" not in page and page.count(ESCAPED) == 8


def test_facts_and_sparklines_load_neither_matplotlib_nor_jinja2():
    # `tuner show` and `tuner compare`'s table use these; a figure or a page is what costs the imports.
    code = ("import sys, tuner.report.facts\n"
            "from tuner.report import collect_curves, compare_rows, sparkline\n"
            "heavy = ('matplotlib', 'jinja2', 'torch', 'tuner.report.html')\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n"
            "from tuner.report import learning_curve_png, write\n"
            "import tuner.report.figures as f; f._figure(1, 1)\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.splitlines()
    assert before == "[]"
    assert after == "['jinja2', 'matplotlib', 'tuner.report.html']"  # the check sees them when they load


def test_the_test_score_is_fit_trained_on_train_and_validation_then_scored_once_on_test(monkeypatch):
    """The retrain is the workers' own loop: with the train+validation merge undone it *is* ``fit``."""
    import numpy as np
    import torch

    from workers import data, mlp, training

    params = {"lr": 0.05, "width": 16, "batch_size": 16, "dropout": 0.2, "augment_noise": 0.05,
              "lr_schedule": "cosine"}
    spec = {"workload": "mlp", "data": "iris", "seed": 4, "epochs": 9, "fixed": {"optimizer": "sgd", "momentum": 0.9}}
    best = _trial(params, best_epoch=3)
    facts = report.Facts("iris", "minimize", "val_loss", spec, [best], {}, {})
    epochs, scored = [], []  # what every epoch's training pass returned; the splits evaluated
    train_epoch, evaluate = training.train_epoch, training.evaluate

    def spy_epoch(model, optimizer, train, *rest):
        epochs.append((len(train.y), *train_epoch(model, optimizer, train, *rest)))
        return epochs[-1][1:]

    def spy_evaluate(model, split):
        scored.append(split.y.cpu())
        return evaluate(model, split)

    monkeypatch.setattr(training, "train_epoch", spy_epoch)
    monkeypatch.setattr(training, "evaluate", spy_evaluate)

    # 1. As the report runs it: 3 epochs (the best epoch) on train+validation, then the test split once;
    # the step the report command prints says so, before it runs.
    heard: list[str] = []
    score, how = report.test_score(facts, heard.append)
    assert heard == [f"retraining trial {best.number}'s configuration on train+validation for 3 epochs, then "
                     "scoring it on the test split"]
    iris = data.load("iris", 4)
    assert [n for n, *_ in epochs] == [len(iris.y_train) + len(iris.y_val)] * 3
    assert not np.array_equal(iris.y_val, iris.y_test)  # so the next line tells them apart
    assert len(scored) == 1 and np.array_equal(scored[0].numpy(), iris.y_test)
    assert score["epochs"] == 3 and "retrained on train+validation for 3 epochs" in how

    # 2. Given fit's own splits, the retrain's epochs are fit's, loss for loss, and its score is fit's last one.
    monkeypatch.setattr(training, "final_splits", lambda ds: ds)
    epochs.clear()
    retrained, _ = report.test_score(facts)
    retrain_epochs = list(epochs)
    epochs.clear()
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the report retrains: the same arithmetic
    try:
        mlp.train({"seed": 4, "data": "iris", **spec["fixed"], **params, "epochs": 3},
                  lambda epoch, **metrics: rows.append(metrics))
    finally:
        torch.set_num_threads(threads)
    print(f"\nfit's epochs: {epochs}\nretrain's:    {retrain_epochs}")
    assert len(epochs) == 3 and retrain_epochs == epochs
    reported = [{k: row[k] for k in grads} for row, (*_, grads) in zip(rows, epochs, strict=True)]
    assert [grads for *_, grads in epochs] == reported  # fit reports what its passes measured
    assert (retrained["test_loss"], retrained["test_acc"]) == (rows[-1]["val_loss"], rows[-1]["val_acc"])


def _trial(params, best_epoch):
    import optuna
    from optuna.distributions import CategoricalDistribution

    dists = {k: CategoricalDistribution([v]) for k, v in params.items()}
    return optuna.trial.create_trial(params=params, distributions=dists, value=0.5,
                                     user_attrs={"best_epoch": best_epoch})


def test_the_shared_helpers_the_report_uses():
    from tuner.trial.metrics import better, finite, fmt
    from tuner.trial.record import why_stopped

    assert [fmt(v) for v in (None, 0.123456, 3, math.inf, "full")] == ["", "0.1235", "3", "inf", "full"]
    assert [finite(v) for v in (1, 0.5, math.nan, -math.inf, True, None, "1")] == [True, True] + [False] * 5
    assert better(1.0, 2.0, "minimize") and better(2.0, 1.0, "maximize")
    assert not better(1.0, 1.0, "minimize") and not better(1.0, 1.0, "maximize")  # a tie is no improvement
    assert why_stopped({"stop_reason": "s", "fail_reason": "f", "prune_reason": "p"}) == "p"
    assert why_stopped({"stop_reason": "s", "fail_reason": "f"}) == "f"
    assert why_stopped({"stop_reason": "s", "prune_reason": None}) == "s"
    assert why_stopped({"diagnosis": "healthy"}) == ""


@pytest.mark.parametrize("dist, values", [
    ("values", list(range(8, 520, 24))),  # an int param with `values:` (22 of them): a categorical of ints
    ("range", list(range(0, 100_001, 5000))),  # an int range whose labels are six digits wide
], ids=["values", "wide range"])
def test_the_gap_plots_tick_labels_of_an_int_param_with_many_values_do_not_overlap(dist, values):
    import itertools

    import optuna
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from tuner.report import Facts
    from tuner.report.figures import gap_figure

    width = CategoricalDistribution(values) if dist == "values" else IntDistribution(0, 100_000, step=1000)
    trials = [optuna.trial.create_trial(
        value=0.5, params={"width": v, "lr": 0.01},
        distributions={"width": width, "lr": FloatDistribution(1e-4, 1.0, log=True)},
        user_attrs={"final_gap": 0.1 * (i % 5) - 0.1, "diagnosis": "healthy"}) for i, v in enumerate(values)]
    for number, trial in enumerate(trials):
        trial.number = number
    fig = gap_figure(Facts("s", "minimize", "val_loss", {}, trials, {}, {}), ["width", "lr"])
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    ax = fig.axes[0]
    low, high = sorted(ax.get_xlim())
    shown = [(tick, label) for tick, label in zip(ax.get_xticks(), ax.get_xticklabels())
             if low <= tick <= high and label.get_visible() and label.get_text()]
    texts = [label.get_text() for _, label in shown]
    boxes = [label.get_window_extent(renderer) for _, label in shown]
    print(f"\n{dist}: tick labels {texts}")
    assert len(shown) >= 3
    assert all(text.lstrip("−").isdigit() for text in texts)  # whole numbers
    if dist == "values":
        assert all(int(text) in values for text in texts)  # each label is the value at its tick
    crowded = [(texts[i], texts[j]) for i, j in itertools.combinations(range(len(boxes)), 2)
               if boxes[i].overlaps(boxes[j])]
    assert crowded == []
