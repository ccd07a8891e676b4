"""`tuner show` fits the terminal it prints to: 80 and 120 columns, a real tmux pane, and a pipe.

Through the installed `tuner` script, on a study shaped like the MNIST-1D preset (13 params, a dozen
metrics an epoch, a failed trial): no line wider than the terminal, no header or value cut to `…`,
no `name=value` pair broken across lines.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pytest

from tests.conftest import _missing
from tests.services import user_env
from tuner.cli import PIPED_WIDTH
from tuner.trial.metrics import fmt

TUNER = shutil.which("tuner")

WORKLOAD = '''
import math


def train(params, report):
    """MNIST-1D's metrics, without the training: a dozen numbers an epoch."""
    if params["optimizer"] == "rmsprop":
        raise RuntimeError("the optimizer diverged on the first batch")
    floor = (math.log10(params["lr"]) + 3) ** 2 + params["dropout"]
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, train_loss=floor + 0.5 / epoch, val_loss=floor + 0.8 / epoch, train_acc=0.5,
               val_acc=0.5 + 0.01 * epoch, lr=params["lr"], iterations=125 * epoch, n_params=123456.0,
               grad_norm=1.234, grad_first=0.0123, grad_last=0.345, grad_ratio=0.0356,
               grad_zero_frac=0.01234, update_ratio=0.00123)
'''

SPEC = """name: wide
workload: wide:train
strategy: random
trials: 6
epochs: 3
seed: 3
pruner: none
params:
  lr:            {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  batch_size:    {type: categorical, choices: [32, 64, 128, 256]}
  optimizer:     {type: categorical, choices: [adam, sgd, rmsprop]}
  momentum:      {type: float, low: 0.8, high: 0.99, when: {optimizer: sgd}}
  lr_schedule:   {type: categorical, choices: [none, cosine]}
  depth:         {type: int, low: 1, high: 4}
  width:         {type: int, low: 64, high: 1024, log: true}
  activation:    {type: categorical, choices: [relu, gelu, tanh]}
  norm:          {type: categorical, choices: [none, batch]}
  dropout:       {type: float, low: 0.0, high: 0.5}
  weight_decay:  {type: float, low: 1.0e-6, high: 1.0e-3, log: true}
  augment_shift: {type: int, low: 0, high: 10}
  augment_noise: {type: float, low: 0.0, high: 0.4}
"""


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> tuple[Path, list[optuna.trial.FrozenTrial]]:
    assert TUNER is not None, "the `tuner` console script is not installed: pip install -e ."
    cwd = tmp_path_factory.mktemp("wide")
    (cwd / "wide.py").write_text(WORKLOAD)
    (cwd / "wide.yaml").write_text(SPEC)
    launched = subprocess.run([TUNER, "launch", "wide.yaml", "--executor", "inline", "--quiet"], cwd=cwd,
                              env=user_env(), capture_output=True, text=True, timeout=120)
    assert launched.returncode == 0, launched.stderr
    trials = optuna.load_study(study_name="wide", storage=f"sqlite:///{cwd / 'tuner.db'}").trials
    assert {t.state.name for t in trials} == {"COMPLETE", "FAIL"}, [t.state for t in trials]
    return cwd, trials


def show(cwd: Path, *args: str, columns: int | None) -> str:
    env = {k: v for k, v in user_env().items() if k not in ("COLUMNS", "LINES")}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    result = subprocess.run([TUNER, "show", "wide", *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result.stdout


def assert_fits(out: str, width: int, trials: list[optuna.trial.FrozenTrial], headers: list[str]) -> None:
    widest = max(out.splitlines(), key=len)
    assert len(widest) <= width, f"a line of {len(widest)} > {width} columns:\n{widest}\n{out}"
    assert "…" not in out and "..." not in out, out
    words = set(re.split(r"[\s│┃]+", out))
    for name in headers:  # every header whole (a two-word header may wrap between its words)
        assert set(name.split()) <= words, (name, out)
    for t in trials:  # every name=value pair whole, on one line
        for name, value in t.params.items():
            assert f"{name}={fmt(value)}" in words, (f"{name}={fmt(value)}", out)


SHOWN = ["#", "state", "value", "diagnosis", "stopped because"]  # kept at any width


@pytest.mark.parametrize("columns", [80, 120, None], ids=["80-columns", "120-columns", "piped"])
def test_show_fits_the_terminal(wide, columns):
    cwd, trials = wide
    width = columns or PIPED_WIDTH
    out = show(cwd, columns=columns)
    assert_fits(out, width, trials, SHOWN)
    assert out.count("COMPLETE") + out.count("FAIL") == len(trials)
    lines = len(out.splitlines())
    assert lines <= 8 + 6 * len(trials), f"{lines} lines for {len(trials)} trials:\n{out}"

    epochs = show(cwd, "--trial", str(trials[0].number), columns=columns)
    metrics = ["epoch", "train_loss", "val_loss", "val_acc", "grad_zero_frac", "update_ratio", "n_params"]
    assert_fits(epochs, width, trials[:1], metrics)
    assert "1.235e+05" in epochs  # a value, whole


def test_show_fits_a_real_80_column_terminal(wide, tmp_path):
    """A tmux pane of 80 columns: rich reads the width from the terminal itself (no COLUMNS)."""
    if shutil.which("tmux") is None:
        _missing("tmux is not installed (apt-get install -y tmux)")
    cwd, trials = wide
    socket = f"tuner-test-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in user_env().items() if k not in ("COLUMNS", "LINES", "TMUX")}
    env.setdefault("TERM", "xterm-256color")
    done = tmp_path / "done"
    command = f"{TUNER} show wide > /dev/tty; touch {done}; sleep 60"
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    subprocess.run([*tmux, "new-session", "-d", "-x", "80", "-y", "200", "-c", str(cwd), command], env=env,
                   check=True, timeout=30)
    try:
        deadline = time.monotonic() + 60
        while not done.exists():
            assert time.monotonic() < deadline, "tuner show did not finish in the tmux pane"
            time.sleep(0.2)
        # -J joins lines the terminal wrapped, so a line wider than the pane shows as one long line.
        pane = subprocess.run([*tmux, "capture-pane", "-p", "-J", "-S", "-"], env=env, capture_output=True,
                              text=True, check=True, timeout=30).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], env=env, capture_output=True, timeout=30)
    assert "COMPLETE" in pane, pane
    assert_fits("\n".join(line.rstrip() for line in pane.splitlines()), 80, trials, SHOWN)


def test_show_of_several_objectives_fits_80_columns(tmp_path):
    """Each trial's values are `metric=value` pairs too: they wrap between pairs, and the table still fits."""
    (tmp_path / "wide.py").write_text(WORKLOAD)
    (tmp_path / "mo.yaml").write_text(SPEC.replace("name: wide", "name: mo").replace("rmsprop", "adamw").replace(
        "pruner: none", "pruner: none\nobjective: [{metric: val_loss}, {metric: n_params, direction: minimize}]"))
    # (no trial fails, so "stopped because" is empty: rich, left to itself, kept its header whole, too wide)
    launched = subprocess.run([TUNER, "launch", "mo.yaml", "--executor", "inline", "--quiet"], cwd=tmp_path,
                              env=user_env(), capture_output=True, text=True, timeout=120)
    assert launched.returncode == 0, launched.stderr
    trials = optuna.load_study(study_name="mo", storage=f"sqlite:///{tmp_path / 'tuner.db'}").trials
    env = {**{k: v for k, v in user_env().items() if k != "LINES"}, "COLUMNS": "80"}
    out = subprocess.run([TUNER, "show", "mo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert_fits(out.stdout, 80, trials, SHOWN)
    for t in trials:
        if t.values:
            assert f"n_params={fmt(t.values[1])}" in out.stdout, out.stdout


LONG = "learning_rate_for_the_backbone_network"  # with its value, wider than what is left of a 50-column line


def assert_pairs_whole(out: str, width: int, trials: list[optuna.trial.FrozenTrial]) -> None:
    """Every name=value pair on one line, or, wider than a whole line, broken after its `=` only:
    the name and `=` ending a line, the value alone on the next."""
    lines = [line.rstrip() for line in out.splitlines()]
    assert max(map(len, lines)) <= width, out
    words = set(re.split(r"[\s│┃]+", out))
    for t in trials:
        for name, value in t.params.items():
            pair = f"{name}={fmt(value)}"
            at = [i for i, line in enumerate(lines) if line.endswith(f"{name}=")]
            assert pair in words or any(lines[i + 1].strip() == fmt(value) for i in at), (pair, out)
            if len(pair) <= width - 3:  # it fits a line even of the params block (3 columns for the number)
                assert pair in words, (pair, out)


def test_show_breaks_a_pair_wider_than_the_line_only_at_its_equals_sign(tmp_path):
    (tmp_path / "wide.py").write_text(WORKLOAD.replace('params["lr"]', f'params["{LONG}"]'))
    (tmp_path / "long.yaml").write_text(SPEC.replace("name: wide", "name: long").replace("  lr:", f"  {LONG}:"))
    launched = subprocess.run([TUNER, "launch", "long.yaml", "--executor", "inline", "--quiet"], cwd=tmp_path,
                              env=user_env(), capture_output=True, text=True, timeout=120)
    assert launched.returncode == 0, launched.stderr
    trials = optuna.load_study(study_name="long", storage=f"sqlite:///{tmp_path / 'tuner.db'}").trials
    assert any(len(f"{LONG}={fmt(t.params[LONG])}") > 47 for t in trials)  # the case this test is about
    env = {**{k: v for k, v in user_env().items() if k != "LINES"}, "COLUMNS": "50"}
    for args in (["show", "long"], *(["show", "long", "--trial", str(t.number)] for t in trials)):
        out = subprocess.run([TUNER, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        shown = [t for t in trials if args[-1] == "long" or t.number == int(args[-1])]
        assert_pairs_whole(out.stdout, 50, shown)


@pytest.mark.parametrize("columns", [None, 90], ids=["piped", "90-columns"])
def test_launch_output_fits_a_pipe_without_padding(tmp_path, columns):
    """`tuner launch | tee log`: the summary's params wrap between pairs, log lines are not padded."""
    (tmp_path / "wide.py").write_text(WORKLOAD.replace('params["lr"]', f'params["{LONG}"]'))
    name = "a-study-with-a-name-long-enough-to-push-the-header-of-the-progress-display-past-the-width"
    (tmp_path / "long.yaml").write_text(SPEC.replace("name: wide", f"name: {name}").replace("  lr:", f"  {LONG}:"))
    env = {k: v for k, v in user_env().items() if k not in ("COLUMNS", "LINES")}
    if columns:
        env["COLUMNS"] = str(columns)
    width = columns or PIPED_WIDTH
    outputs = []
    for args in (["launch", "long.yaml", "--executor", "inline"], ["resume", name, "--executor", "inline"]):
        ran = subprocess.run([TUNER, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
        outputs += [ran.stdout, ran.stderr]
    assert "INFO     " in outputs[3] and "budget reached" in outputs[3], outputs[3]  # a log line, from resume
    for out in outputs:
        for line in out.splitlines():
            assert len(line) <= width and line == line.rstrip(), (len(line), line, out)
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'tuner.db'}").trials
    best = sorted((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    words = set(outputs[0].split())
    for t in best[:3]:
        for key, value in t.params.items():
            assert f"{key}={fmt(value)}" in words, (key, outputs[0])
