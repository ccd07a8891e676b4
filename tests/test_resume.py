"""Resume and the end of a study, driven through the installed `tuner` script from the user's own directory.

Each test writes a workload module beside its spec, as a user would, and prints
its figures (distinct configurations, states).
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.services import user_env

TUNER = shutil.which("tuner")

WORKLOAD = '''
import time


def curve(params, report):
    """Converges to (x - 0.3)^2; `sleep` seconds an epoch."""
    for epoch in range(1, params["epochs"] + 1):
        time.sleep(params.get("sleep", 0.0))
        report(epoch, val_loss=(params["x"] - 0.3) ** 2 + 1.0 / epoch)


def level_until_the_end(params, report):
    """Every trial looks the same until its final epoch, where they part."""
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=(params["x"] - 0.3) ** 2 if epoch == params["epochs"] else 1.0)


def explodes_at_the_end(params, report):
    """Healthy until its final epoch, whose gradient norm explodes; its loss stays finite."""
    for epoch in range(1, params["epochs"] + 1):
        norm = 1e6 if epoch == params["epochs"] else 1.0
        report(epoch, val_loss=params["x"] + 1.0 / epoch, grad_norm=norm)


def interrupts(params, report):
    raise KeyboardInterrupt


def broken(params, report):
    raise RuntimeError("the data loader could not find its files")
'''


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    (tmp_path / "work.py").write_text(WORKLOAD)
    spec = tmp_path / name
    spec.write_text(text)
    return spec


def tuner(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    assert TUNER is not None, "the `tuner` console script is not installed: pip install -e ."
    return subprocess.run([TUNER, *args], cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=timeout)


def trials(cwd: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{cwd / 'tuner.db'}").trials


def configs(ts) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in ts if t.state == TrialState.COMPLETE]


@pytest.mark.parametrize("strategy", ["random", "tpe", "gp"])
def test_resume_never_repeats_a_configuration_it_already_ran(tmp_path, strategy):
    write(tmp_path, f"name: w\nworkload: work:curve\nstrategy: {strategy}\nepochs: 2\nseed: 7\npruner: none\n"
                    "params:\n  x: {type: float, low: 0, high: 1}\n  y: {type: float, low: 0, high: 1}\n")
    first = tuner(tmp_path, "launch", "study.yaml", "--trials", "4", "--executor", "inline", "--quiet")
    assert first.returncode == 0, first.stderr
    resumed = tuner(tmp_path, "resume", "w", "--trials", "8", "--executor", "inline", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    seen = configs(trials(tmp_path, "w"))
    print(f"\n{strategy}: launch 4 + resume to 8: {len(seen)} COMPLETE, {len(set(seen))} distinct configurations")
    assert len(seen) == 8
    assert len(set(seen)) == 8


def test_a_spec_and_seed_reproduce_one_uninterrupted_study(tmp_path):
    runs = []
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write(tmp_path / sub, "name: w\nworkload: work:curve\nstrategy: random\nepochs: 1\nseed: 3\npruner: none\n"
                              "trials: 5\nparams:\n  x: {type: float, low: 0, high: 1}\n")
        result = tuner(tmp_path / sub, "launch", "study.yaml", "--executor", "inline", "--quiet")
        assert result.returncode == 0, result.stderr
        runs.append(configs(trials(tmp_path / sub, "w")))
    assert runs[0] == runs[1] and len(set(runs[0])) == 5


def test_ctrl_c_then_resume_runs_the_interrupted_configurations_again(tmp_path):
    write(tmp_path, "name: c\nworkload: work:curve\nstrategy: random\ntrials: 6\nparallel: 2\nepochs: 6\n"
                    "seed: 1\npruner: none\nfixed: {sleep: 0.3}\nparams:\n  x: {type: float, low: 0, high: 1}\n")
    env = user_env()
    proc = subprocess.Popen([TUNER, "launch", "study.yaml", "--quiet"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            if sum(t.state == TrialState.COMPLETE for t in trials(tmp_path, "c")) >= 2:
                break
        except Exception:  # the study is not created yet
            pass
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    interrupted = [t for t in trials(tmp_path, "c") if t.user_attrs.get("fail_kind") == "interrupted"]
    assert interrupted, "the Ctrl-C came when no trial was running"

    resumed = tuner(tmp_path, "resume", "c")
    assert resumed.returncode == 0, resumed.stderr
    after = trials(tmp_path, "c")
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    rerun = {t.user_attrs.get("retry_of"): t for t in complete if "retry_of" in t.user_attrs}
    print(f"\nCtrl-C with {len(interrupted)} trials running, then resume: {len(complete)} COMPLETE of 6, "
          f"interrupted configurations run again {sum(t.number in rerun for t in interrupted)}/{len(interrupted)}, "
          f"RUNNING {sum(t.state == TrialState.RUNNING for t in after)}")
    assert len(complete) == 6
    for t in interrupted:
        assert rerun[t.number].params == t.params
    assert len(set(configs(after))) == 6


def test_resume_of_a_finished_study_says_budget_reached_and_starts_nothing(tmp_path):
    write(tmp_path, "name: f\nworkload: work:curve\nstrategy: random\ntrials: 2\nepochs: 1\npruner: none\n"
                    "params:\n  x: {type: float, low: 0, high: 1}\n")
    assert tuner(tmp_path, "launch", "study.yaml", "--executor", "inline", "--quiet").returncode == 0
    result = tuner(tmp_path, "resume", "f")  # the Ray executor: starting Ray would take seconds and print
    assert result.returncode == 0, result.stderr
    assert "budget reached (2/2 trials)" in result.stderr
    assert "--trials N" in result.stderr
    assert len(trials(tmp_path, "f")) == 2


def test_a_trial_that_ran_its_whole_budget_completes_and_is_never_pruned_at_its_final_epoch(tmp_path):
    # Median pruning from the first trial; the trials tie until their final epoch, where
    # those worse than the median would be pruned unless the final epoch is exempt.
    write(tmp_path, "name: g\nworkload: work:level_until_the_end\nstrategy: grid\nepochs: 2\n"
                    "pruner: {type: median, n_startup_trials: 0, n_warmup_steps: 0}\n"
                    "params:\n  x: {type: float, low: 0, high: 1, values: [0.3, 0.5, 0.7, 0.9, 0.1, 0.0]}\n")
    result = tuner(tmp_path, "launch", "study.yaml", "--executor", "inline", "--quiet")
    assert result.returncode == 0, result.stderr
    ts = trials(tmp_path, "g")
    states = collections.Counter(t.state.name for t in ts)
    pruned_at = collections.Counter(t.user_attrs.get("prune_epoch") for t in ts if t.state == TrialState.PRUNED)
    print(f"\ngrid of 6 with 2 epochs and a median pruner: {dict(states)}, pruned at epochs {dict(pruned_at)}")
    assert states == {"COMPLETE": 6}
    assert all(t.value is not None for t in ts if t.state == TrialState.COMPLETE)


@pytest.mark.parametrize("executor", ["inline", "ray"])
def test_a_diagnostics_finding_at_the_final_epoch_keeps_the_trials_result(tmp_path, executor):
    write(tmp_path, "name: e\nworkload: work:explodes_at_the_end\nstrategy: random\ntrials: 2\nepochs: 3\n"
                    "pruner: none\nparams:\n  x: {type: float, low: 0, high: 1}\n")
    result = tuner(tmp_path, "launch", "study.yaml", "--executor", executor, "--quiet")
    assert result.returncode == 0, result.stderr
    ts = trials(tmp_path, "e")
    print(f"\nexploding gradients at the final epoch ({executor}): "
          f"{[(t.state.name, t.user_attrs.get('diagnosis')) for t in ts]}")
    assert [t.state for t in ts] == [TrialState.COMPLETE] * 2
    assert all(t.user_attrs["diagnosis"] == "exploding_gradients" for t in ts)
    assert all(len(t.intermediate_values) == 3 for t in ts)


def test_a_workload_that_raises_keyboard_interrupt_on_ray_fails_with_that_reason(tmp_path):
    write(tmp_path, "name: k\nworkload: work:interrupts\nstrategy: random\ntrials: 1\nepochs: 1\npruner: none\n"
                    "params:\n  x: {type: float, low: 0, high: 1}\n")
    result = tuner(tmp_path, "launch", "study.yaml", "--quiet")
    (trial,) = trials(tmp_path, "k")
    print(f"\nKeyboardInterrupt in the workload on Ray: {trial.state.name}, {trial.user_attrs['fail_reason']!r}")
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "KeyboardInterrupt"
    assert result.returncode == 1
    assert "no trial completed" in result.stderr


def test_a_study_in_which_every_trial_failed_exits_non_zero(tmp_path):
    write(tmp_path, "name: b\nworkload: work:broken\nstrategy: random\ntrials: 2\nepochs: 1\npruner: none\n"
                    "params:\n  x: {type: float, low: 0, high: 1}\n")
    result = tuner(tmp_path, "launch", "study.yaml", "--executor", "inline", "--quiet")
    assert result.returncode == 1
    assert "no trial completed: all 2 failed" in result.stderr
    assert "the data loader could not find its files" in result.stderr
    assert "Traceback" not in result.stderr
    assert not [t for t in trials(tmp_path, "b") if t.state == TrialState.RUNNING]


def test_the_debug_hint_works_as_printed_and_shows_the_workloads_own_traceback(tmp_path):
    write(tmp_path, "name: d\nworkload: work:broken\nstrategy: random\ntrials: 5\nepochs: 1\npruner: none\n"
                    "params:\n  x: {type: float, low: 0, high: 1}\n")
    first = tuner(tmp_path, "launch", "study.yaml", "--executor", "inline", "--quiet")
    assert first.returncode == 1
    assert "the first 3 trials all failed" in first.stderr
    hint = first.stderr.split("To see its traceback, run: ")[1].split()
    assert hint[:2] == ["tuner", "launch"] and "Traceback" not in first.stderr
    again = tuner(tmp_path, *hint[1:])
    print(f"\nthe hint {' '.join(hint)!r}: exit {again.returncode}\n{again.stderr}")
    assert again.returncode == 1
    assert "Traceback (most recent call last):" in again.stderr
    assert again.stderr.index("Traceback") < again.stderr.index("error: study d-debug: no trial completed")
    assert 'work.py", line' in again.stderr and "in broken" in again.stderr
    assert "RuntimeError: the data loader could not find its files" in again.stderr
    assert trials(tmp_path, "d-debug")[0].user_attrs["fail_traceback"].startswith("Traceback")


def test_launch_into_a_log_prints_a_line_a_trial_and_ends_with_the_time_and_the_top_three(tmp_path):
    write(tmp_path, "name: l\nworkload: work:curve\nstrategy: random\ntrials: 4\nepochs: 2\npruner: none\nseed: 2\n"
                    "params:\n  x: {type: float, low: 0, high: 1}\n")
    result = tuner(tmp_path, "launch", "study.yaml", "--executor", "inline")  # stdout and stderr are pipes
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("trials ")]
    print(f"\n{result.stderr}{result.stdout}")
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert "study l: 4 trials in" in result.stdout and "; best 3:" in result.stdout
    ranked = sorted((t for t in trials(tmp_path, "l")), key=lambda t: t.value)[:3]
    shown = [line.split()[1].rstrip(":") for line in result.stdout.splitlines() if line.startswith("  trial ")]
    assert shown == [str(t.number) for t in ranked]


@pytest.mark.parametrize("width", [80, 120])
def test_show_fits_the_terminal_and_show_and_studies_have_json_and_csv(tmp_path, width):
    write(tmp_path, "name: s\nworkload: work:broken\nstrategy: random\ntrials: 1\nepochs: 1\npruner: none\n"
                    "params:\n  learning_rate_of_the_optimizer: {type: float, low: 0, high: 1}\n")
    tuner(tmp_path, "launch", "study.yaml", "--executor", "inline", "--quiet")
    (tmp_path / "study.yaml").write_text(
        "name: s2\nworkload: work:curve\nstrategy: random\ntrials: 3\nepochs: 2\npruner: none\n"
        "params:\n  x: {type: float, low: 0, high: 1}\n  optimizer: {type: categorical, choices: [adam, sgd]}\n")
    assert tuner(tmp_path, "launch", "study.yaml", "--executor", "inline", "--quiet").returncode == 0
    env = user_env(COLUMNS=str(width))
    for study in ("s", "s2"):
        shown = subprocess.run([TUNER, "show", study], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert shown.returncode == 0, shown.stderr
        print(f"\n{shown.stdout}")
        assert all(len(line) <= width for line in shown.stdout.splitlines())
        assert "…" not in shown.stdout
        assert ("FAIL" if study == "s" else "COMPLETE") in shown.stdout
    failed = subprocess.run([TUNER, "show", "s"], cwd=tmp_path, env=env, capture_output=True, text=True).stdout
    assert "s (1 trial, best first)" in failed and "loader" in failed
    import json

    (failed_row,) = json.loads(tuner(tmp_path, "show", "s", "--json").stdout)
    assert failed_row["stopped because"] == "RuntimeError: the data loader could not find its files"
    rows = json.loads(tuner(tmp_path, "show", "s2", "--json").stdout)
    assert [sorted(r["params"]) for r in rows] == [["optimizer", "x"]] * 3
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    studies = json.loads(tuner(tmp_path, "studies", "--json").stdout)
    assert {s["study"]: s["complete"] for s in studies} == {"s": 0, "s2": 3}
    assert tuner(tmp_path, "studies", "--csv", "studies.csv").returncode == 0
    assert (tmp_path / "studies.csv").read_text().splitlines()[0] == "study,direction,trials,complete,failed,best value"


def test_a_mistyped_flag_gets_the_closest_one(tmp_path):
    write(tmp_path, "name: m\nworkload: work:curve\nparams:\n  x: {type: float, low: 0, high: 1}\n")
    result = tuner(tmp_path, "launch", "study.yaml", "--trails", "3")
    assert result.returncode == 2
    assert result.stderr.strip().endswith("unrecognized arguments: --trails 3; --trails: did you mean --trials?")
    assert not (tmp_path / "tuner.db").exists()


def test_resuming_a_grid_cut_short_runs_its_next_points_not_random_ones(tmp_path):
    write(tmp_path, "name: gr\nworkload: work:curve\nstrategy: grid\nepochs: 1\n"
                    "params:\n  x: {type: float, low: 0, high: 1, values: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]}\n")
    first = tuner(tmp_path, "launch", "study.yaml", "--trials", "2", "--executor", "inline", "--quiet")
    assert first.returncode == 0, first.stderr
    resumed = tuner(tmp_path, "resume", "gr", "--trials", "6", "--executor", "inline", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    ts = trials(tmp_path, "gr")
    xs = sorted(t.params["x"] for t in ts if t.state == TrialState.COMPLETE)
    print(f"\ngrid of 6 launched with 2 trials, resumed to 6: x = {xs}, {len(ts)} trials")
    assert xs == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] and len(ts) == 6
