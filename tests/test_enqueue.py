"""`tuner enqueue STUDY params.json` and `tuner launch SPEC --warm-start-from STUDY`, through the installed script.

Each runs the `tuner` console script in a tmp dir with the user's environment
(tests/services.py `user_env`), a workload module of that dir, and the inline
executor (Ray is not the point).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest

import tuner
from tests.services import user_env

WORKLOAD = '''
def train(params, report):
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=(params["x"] - 2) ** 2 + params.get("depth", 0) + 1.0 / epoch)
'''
SPEC = """\
name: {name}
workload: work:train
strategy: random
seed: 3
trials: 2
epochs: 2
pruner: none
params:
  x: {{type: float, low: {low}, high: 4.0}}
  depth: {{type: int, low: 0, high: 3}}
"""


def tuner_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tuner", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=user_env(TUNER_STORAGE=f"sqlite:///{tmp_path / 'tuner.db'}", COLUMNS="200"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 2-trial study `base` in DIR/tuner.db, launched once for the module."""
    where = tmp_path_factory.mktemp("base")
    (where / "work.py").write_text(WORKLOAD)
    (where / "base.yaml").write_text(SPEC.format(name="base", low=0.0))
    done = tuner_cli(where, "launch", "base.yaml", "--executor", "inline", "--quiet")
    assert done.returncode == 0, done.stderr
    return where


@pytest.fixture
def launched(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished study's directory (the store with it), for a test to change."""
    for path in finished.iterdir():
        if path.is_file():
            shutil.copy(path, tmp_path / path.name)
    return tmp_path


def tuner_inline(monkeypatch, capsys, where: Path, *args: str) -> tuple[int, str]:
    """The CLI in this process, for mistakes refused before anything runs: its status and its words."""
    from tuner import cli

    monkeypatch.chdir(where)
    monkeypatch.setenv("TUNER_STORAGE", f"sqlite:///{where / 'tuner.db'}")
    monkeypatch.setenv("COLUMNS", "200")
    code = cli.main(list(args))
    return code, " ".join(capsys.readouterr().err.split())


def trials(tmp_path: Path, name: str):
    return tuner.load(name, f"sqlite:///{tmp_path / 'tuner.db'}").trials


def test_enqueued_points_run_first_at_the_next_resume_with_their_exact_params(launched: Path) -> None:
    points = [{"x": 2, "depth": 0}, {"x": 3.5, "depth": 2}]  # x given as an int: a float param stores 2.0
    (launched / "points.json").write_text(json.dumps(points))
    queued = tuner_cli(launched, "enqueue", "base", "points.json")
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.strip() == ("queued 2 configurations in study base (2/2 trials done); its budget has room "
                                     "for 0 of the 2 queued: `tuner resume base --trials 4` runs them all.")
    assert [t.state.name for t in trials(launched, "base")] == ["COMPLETE", "COMPLETE", "WAITING", "WAITING"]
    resumed = tuner_cli(launched, "resume", "base", "--trials", "4", "--executor", "inline", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    ran = trials(launched, "base")[2:]
    assert [(t.params, t.state.name, t.user_attrs.get("enqueued")) for t in ran] == [
        ({"x": 2.0, "depth": 0}, "COMPLETE", True), ({"x": 3.5, "depth": 2}, "COMPLETE", True)]
    assert isinstance(ran[0].params["x"], float)
    assert ran[0].value == pytest.approx(0.5)  # (2 - 2)^2 + 0 + 1/2: the workload got those params


def test_a_point_outside_the_space_is_refused_with_the_param_its_range_and_the_fix(launched: Path) -> None:
    (launched / "bad.json").write_text(json.dumps([{"x": 9.0, "depth": 1}, {"x": 1.0, "depht": 1}]))
    refused = tuner_cli(launched, "enqueue", "base", "bad.json")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert " ".join(refused.stderr.split()) == " ".join("""error: bad.json: 2 problems
  - point 1 of 2: x: must be a number in [0.0, 4.0], but got 9.0. Fix: use a value in the study's space.
  - point 2 of 2: depht: is not a param of the study's space. Did you mean 'depth'? Valid params: x, depth. Fix: remove it.
""".split())
    assert [t.state.name for t in trials(launched, "base")] == ["COMPLETE", "COMPLETE"]  # nothing queued


@pytest.mark.parametrize("content, problem", [
    ('{"x": 1.0,', "JSON syntax error at line 1, column 11: Expecting property name enclosed in double quotes. "
                   "Fix: correct the JSON there."),
    ("[1, 2]", 'must hold a JSON object of param values, or a non-empty list of them, but got [1, 2]. '
               'Fix: e.g. {"lr": 0.01, "depth": 2}.'),
])
def test_a_params_file_that_is_not_points_is_refused(finished, monkeypatch, capsys, content, problem):
    (finished / "p.json").write_text(content)
    code, said = tuner_inline(monkeypatch, capsys, finished, "enqueue", "base", "p.json")
    assert (code, said) == (2, f"error: p.json: {problem}")


def test_warm_start_from_runs_the_best_of_another_study_first_leaving_out_what_no_longer_fits(launched: Path) -> None:
    base = sorted((t for t in trials(launched, "base")), key=lambda t: t.value)
    low = (base[0].params["x"] + base[1].params["x"]) / 2  # the new space holds only one of the two
    kept = max(base, key=lambda t: t.params["x"])
    (launched / "next.yaml").write_text(SPEC.format(name="next", low=low))
    warm = tuner_cli(launched, "launch", "next.yaml", "--warm-start-from", "base", "--warm-start", "2",
                     "--executor", "inline", "--quiet")
    assert warm.returncode == 0, warm.stderr
    assert "warm start: 1 configuration queued first (1 left out: outside this space)" in warm.stderr
    first = trials(launched, "next")[0]
    assert first.params == kept.params and first.user_attrs["warm_start"] is True


def test_warm_start_of_more_than_the_budget_queues_the_best_that_fit_it_and_leaves_no_trial_waiting(
        launched: Path) -> None:
    best = min(trials(launched, "base"), key=lambda t: t.value)
    (launched / "next.yaml").write_text(SPEC.format(name="next", low=0.0))
    warm = tuner_cli(launched, "launch", "next.yaml", "--warm-start-from", "base", "--warm-start", "2",
                     "--trials", "1", "--executor", "inline")
    assert warm.returncode == 0, warm.stderr
    assert "warm start: 1 configuration queued first (1 left out: past the budget of 1 trial)" in warm.stderr
    assert "study next: 1 trial in" in warm.stdout
    ran = trials(launched, "next")
    assert [t.state.name for t in ran] == ["COMPLETE"] and ran[0].params == best.params
    # Points queued past the budget wait for a larger one; the summary counts only the trials that ran.
    (launched / "p.json").write_text('[{"x": 1.0, "depth": 0}, {"x": 3.0, "depth": 0}]')
    queued = tuner_cli(launched, "enqueue", "next", "p.json")
    assert "its budget has room for 0 of the 2 queued: `tuner resume next --trials 3` runs them all" in queued.stdout
    more = tuner_cli(launched, "resume", "next", "--trials", "2", "--executor", "inline")
    assert more.returncode == 0, more.stderr
    assert [t.state.name for t in trials(launched, "next")] == ["COMPLETE", "COMPLETE", "WAITING"]
    assert "study next: 2 trials in" in more.stdout, more.stdout


def test_warm_start_flags_are_checked(finished, monkeypatch, capsys) -> None:
    code, said = tuner_inline(monkeypatch, capsys, finished, "launch", "base.yaml", "--study", "x", "--warm-start", "3")
    assert (code, said) == (2, "error: --warm-start: says how many configurations to take from --warm-start-from "
                               "STUDY, which is missing. Fix: add --warm-start-from STUDY, or drop --warm-start.")
    code, said = tuner_inline(monkeypatch, capsys, finished, "launch", "base.yaml", "--study", "x",
                              "--warm-start-from", "nope")
    assert code == 2 and said.startswith("error: ") and "'nope'" in said, said


def test_a_partial_point_is_queued_and_its_other_params_are_sampled(launched: Path) -> None:
    (launched / "partial.json").write_text(json.dumps({"x": 2}))  # depth left out, as Optuna's enqueue_trial allows
    queued = tuner_cli(launched, "enqueue", "base", "partial.json")
    assert queued.returncode == 0, queued.stderr
    resumed = tuner_cli(launched, "resume", "base", "--trials", "3", "--executor", "inline", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    ran = trials(launched, "base")[2]
    assert ran.state.name == "COMPLETE" and ran.params["x"] == 2.0 and ran.user_attrs["enqueued"] is True
    assert ran.params["depth"] in range(0, 4)  # sampled from the space
    assert ran.value == pytest.approx(ran.params["depth"] + 0.5)


@pytest.mark.parametrize("content, problem", [
    ("[" * 100_000 + "]" * 100_000, "is nested too deeply to be points (a point is one object of param values). "
                                    'Fix: e.g. [{"lr": 0.01, "depth": 2}].'),
    ('{"x": ' + "9" * 5000 + "}", "holds an integer of 5000 digits (99999999999999999999…), which is no param "
                                 "value. Fix: give the value in the param's range."),
    ('{"x": 1.0, "depth": 1, "x": 3.0}', "the key 'x' appears twice in one object, so which value is meant is "
                                         "unclear. Fix: keep one of them."),
], ids=["100k-deep", "5000-digit int", "duplicate key"])
def test_a_hostile_params_file_gets_one_clear_error_and_queues_nothing(launched, content, problem, tally) -> None:
    (launched / "p.json").write_text(content)
    refused = tuner_cli(launched, "enqueue", "base", "p.json")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert " ".join(refused.stderr.split()) == f"error: p.json: {problem}"
    assert [t.state.name for t in trials(launched, "base")] == ["COMPLETE", "COMPLETE"]
    tally("hostile input")


def test_many_points_go_in_at_once_in_one_transaction(launched: Path, tally) -> None:
    import time

    n = 20_000
    (launched / "many.json").write_text(json.dumps([{"x": 4.0 * i / n, "depth": i % 4} for i in range(n)]))
    started = time.monotonic()
    queued = tuner_cli(launched, "enqueue", "base", "many.json")
    took = time.monotonic() - started
    assert queued.returncode == 0, queued.stderr
    print(f"\ntuner enqueue: {n} points in {took:.1f} s ({n / took:.0f}/s, the command's whole run)")
    assert took < 30  # one commit a point (Optuna's enqueue_trial, about 220/s here) needs 90 s
    url = f"sqlite:///{launched / 'tuner.db'}"
    study = tuner.load("base", url)
    waiting = study.optuna.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    assert [t.number for t in waiting] == list(range(2, n + 2))
    assert [t.system_attrs["fixed_params"] for t in waiting[:2]] == [{"x": 0.0, "depth": 0}, {"x": 4.0 / n, "depth": 1}]

    # A failure halfway through the write (the last point cannot be stored) leaves nothing queued.
    with pytest.raises(TypeError):
        study.store.enqueue_trials(study.optuna, [{"x": 1.0, "depth": 1}] * 999 + [{"x": object()}])
    assert len(study.optuna.get_trials(deepcopy=False)) == n + 2
    tally("fault")
