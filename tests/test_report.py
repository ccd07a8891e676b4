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
# The built-in MLP on wine, small enough for seconds: its seed gives completed,
# pruned (by successive halving and by divergence) and stalled trials.
WINE = {
    "name": "wine", "workload": "mlp", "data": "wine", "strategy": "random", "seed": 3, "trials": 6, "epochs": 5,
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


def test_show_draws_each_trials_validation_curve_best_first(store, capsys):
    cwd, storage = store
    assert main(["show", "wine", "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "val_loss curve" in out
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
    assert any("retraining the best configuration" in s for s in steps)
    assert any(s.startswith("report: plotting history") for s in steps)
    assert lines[-1].startswith("wrote the report of wine")
