"""What the installed `tuner` script does with studies, names and stores, run from a user's directory.

Each test runs the console script in tmp_path with the user's environment
(tests/services.py `user_env`), a workload module of that directory and the
inline executor (Ray is not the point here), on a real SQLite file.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import optuna
import pytest

from tests.services import user_env

WORKLOADS = '''
def train(params, report):
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=(params["x"] - 0.5) ** 2 + 1.0 / epoch, train_loss=0.1)


def infinite(params, report):
    """A loss that is infinite from the first epoch: the trial is pruned as diverged, its value inf."""
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=float("inf"), train_loss=float("inf"))


def formulas(params, report):
    """Metric names and text a spreadsheet would run as formulas, beside a negative loss that must stay a number."""
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=-0.5, **{'=HYPERLINK("http://evil.example","x")': 1.0, "@SUM(A1)": 2.0,
                                        "+cmd|' /C calc'!A0": 3.0}, sign=float("-inf"))


def explode(params, report):
    """Gradients that explode at once: the diagnostics pruner stops every trial at epoch 1."""
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=1.0, train_loss=1.0, grad_norm=1e9)
'''


def spec(name: str, workload: str = "train", trials: int = 2) -> str:
    return (f"name: {name}\nworkload: work:{workload}\nstrategy: random\nseed: 1\ntrials: {trials}\nepochs: 3\n"
            "pruner: none\nparams:\n  x: {type: float, low: 0, high: 1}\n")


def tuner(cwd: Path, *args: str, stdin: str | None = "", db: str = "tuner.db") -> subprocess.CompletedProcess[str]:
    script = shutil.which("tuner")
    assert script, "the `tuner` console script is not on PATH: pip install -e '.[dev]'"
    env = user_env(TUNER_STORAGE=f"sqlite:///{cwd / db}", COLUMNS="200", PYTHONPATH=str(cwd))
    return subprocess.run([script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          input=stdin)


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def user(tmp_path: Path) -> Path:
    (tmp_path / "work.py").write_text(WORKLOADS)
    (tmp_path / "s.yaml").write_text(spec("s"))
    return tmp_path


def launched(user: Path, name: str = "s", *extra: str) -> subprocess.CompletedProcess[str]:
    done = tuner(user, "launch", "s.yaml", "--executor", "inline", "--quiet", *extra)
    assert done.returncode == 0, done.stderr
    return done


# ---------------------------------------------------------------------- a study with no result


def test_a_study_with_no_completed_trial_exits_1_with_the_reason_pruned_or_timed_out(user: Path) -> None:
    (user / "p.yaml").write_text(spec("p", "explode").replace("pruner: none\n", ""))
    pruned = tuner(user, "launch", "p.yaml", "--executor", "inline", "--quiet")
    assert pruned.returncode == 1, pruned.stderr
    assert "Traceback" not in pruned.stderr
    assert ("error: study p: no trial completed: all 2 were pruned (diagnostics:exploding_gradients), so none ran "
            "to its end. Fix: see why in `tuner show p`") in one_line(pruned.stderr)

    nothing = tuner(user, "launch", "s.yaml", "--study", "t", "--timeout", "1e-9", "--executor", "inline", "--quiet")
    assert nothing.returncode == 1, nothing.stderr
    assert ("error: study t: no trial completed: no trial ran before its timeout (1e-09 s) passed. Fix: a longer "
            "timeout (--timeout, timeout=), then `tuner resume t`.") in one_line(nothing.stderr)
    assert optuna.load_study(study_name="t", storage=f"sqlite:///{user / 'tuner.db'}").trials == []


# ---------------------------------------------------------------------- study names

CHECKPOINTING = '''
def train(params, report):
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=params["x"] + 1.0 / epoch, checkpoint=f"x={params['x']} epoch={epoch}".encode())
'''


def test_a_study_name_from_a_flag_keeps_the_rule_of_the_specs_name(user: Path, tally) -> None:
    for flag_value in ("../../../pwn", "x" * 1000, "-rf", "a b"):
        refused = tuner(user, "launch", "s.yaml", f"--study={flag_value}", "--executor", "inline", "--quiet")
        assert refused.returncode == 2, refused.stderr
        assert "Traceback" not in refused.stderr
        assert one_line(refused.stderr).startswith(
            "error: --study: a study name must start with a letter or digit and hold only letters, digits, '.', "
            "'_' and '-' (at most 128), but got "), refused.stderr
        assert not (user / "tuner.db").exists()  # refused before the store was opened: nothing written
        tally("hostile input")
    import tuner as api

    with pytest.raises(api.SpecError, match=r"^study=: a study name must start"):
        api.launch(str(user / "s.yaml"), study="../pwn", storage=f"sqlite:///{user / 'api.db'}", executor="inline")
    assert not (user / "api.db").exists()
    tally("hostile input")

    launched(user)
    copy = tuner(user, "copy", "s", "--to", f"sqlite:///{user / 'tuner.db'}", "--name", "../../up")
    assert copy.returncode == 2 and "Traceback" not in copy.stderr, copy.stderr
    assert one_line(copy.stderr).startswith("error: --name: a study name must start with a letter or digit")
    assert [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{user / 'tuner.db'}")] == ["s"]
    tally("hostile input")


def test_a_study_optuna_named_badly_never_leads_tuner_out_of_the_directory_and_hints_are_quoted(user: Path,
                                                                                                 tally) -> None:
    (user / "work.py").write_text(CHECKPOINTING)
    launched(user)
    url = f"sqlite:///{user / 'tuner.db'}"
    # Optuna itself takes any name: a study copied (with its checkpoint records) to a path-like one.
    for name in ("../../../pwn", "my study"):
        optuna.copy_study(from_study_name="s", from_storage=url, to_storage=url, to_study_name=name)
    inside = user / "a" / "b" / "c"  # three levels down: "../../../pwn" would write into user
    inside.mkdir(parents=True)
    done = tuner(inside, "checkpoint", "../../../pwn", "--storage", url)
    assert done.returncode == 0, done.stderr
    written = (inside / done.stdout.strip()).resolve()
    assert written.parent == inside and written.read_bytes().startswith(b"x="), written
    assert sorted(p.name for p in user.iterdir() if p.name.startswith("pwn")) == []
    tally("hostile input")

    resumed = tuner(user, "resume", "my study", "--trials", "3", "--executor", "inline", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert f"next: tuner show 'my study' · tuner report 'my study' -o report.html · tuner dashboard --storage {url}" \
        in one_line(resumed.stdout)
    tally("hostile input")


def test_no_lock_file_is_left_beside_the_store_and_a_held_one_still_refuses(user: Path, tally) -> None:
    launched(user)
    (user / "s2.yaml").write_text(spec("s2"))
    again = tuner(user, "launch", "s2.yaml", "--executor", "inline", "--quiet")
    assert again.returncode == 0, again.stderr
    resumed = tuner(user, "resume", "s", "--trials", "3", "--executor", "inline", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in user.iterdir() if "lock" in p.name) == []
    # The lock still works while it is held, and a file left by a holder killed with -9 is taken over.
    from tuner.store.lock import study_lock

    url = f"sqlite:///{user / 'tuner.db'}"
    (user / "tuner.db.s.lock").write_text("999999")  # a dead holder's leftover
    with study_lock(url, "s"):
        held = tuner(user, "resume", "s", "--trials", "4", "--executor", "inline", "--quiet")
        assert held.returncode == 2, held.stderr
        assert "is being run by another tuner process" in one_line(held.stderr)
        tally("fault")
    assert sorted(p.name for p in user.iterdir() if "lock" in p.name) == []


# ---------------------------------------------------------------------- commands that read create nothing


@pytest.mark.parametrize("command", [
    ["studies"], ["show", "s"], ["show", "s", "--json"], ["best", "s"], ["epochs", "s"], ["report", "s"],
    ["delete", "s", "--yes"], ["schedule", "list"], ["schedule", "show", "nightly"], ["checkpoint", "s"],
    ["enqueue", "s", "p.json"], ["resume", "s", "--executor", "inline"], ["copy", "s", "--to", "sqlite:///b.db"],
    ["launch", "s.yaml", "--warm-start-from", "nope", "--executor", "inline"],
    ["launch", "s.yaml", "--ray-address", "127.0.0.1:1"],  # refused: no cluster answers there
], ids=lambda c: " ".join(c[:3]))
def test_a_command_on_a_mistyped_store_creates_no_file(user: Path, command: list[str], tally) -> None:
    (user / "p.json").write_text('{"x": 0.5}')
    done = tuner(user, *command, "--storage", "sqlite:///tunr.db")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    if command[0] != "launch":
        assert (f"error: no tuner store at sqlite:///tunr.db (from --storage / storage=): the file 'tunr.db' does "
                "not exist. Fix: check the URL") in one_line(done.stderr)
    assert sorted(p.name for p in user.iterdir()) == ["p.json", "s.yaml", "work.py"]
    tally("hostile input")


def test_a_database_without_optunas_tables_gets_none_from_a_read(user: Path) -> None:
    sqlite3.connect(user / "empty.db").close()  # a 0-byte file, as `touch` or a mistyped open makes
    done = tuner(user, "studies", "--storage", "sqlite:///empty.db")
    assert done.returncode == 2, done.stderr
    assert "it holds no studies (no Optuna tables)" in one_line(done.stderr)
    assert (user / "empty.db").stat().st_size == 0


# ---------------------------------------------------------------------- launching again, deleting


def test_launching_onto_an_existing_study_offers_replace_and_a_new_name_and_both_work(user: Path) -> None:
    url = f"sqlite:///{user / 'tuner.db'}"
    launched(user)
    refused = tuner(user, "launch", "s.yaml", "--executor", "inline", "--quiet")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert one_line(refused.stderr) == (
        f"error: study 's' already exists in {url}. Fix: --replace to delete it and launch anew, --new-name to "
        "launch as 's-2', --study NAME for a name of your own, or `tuner resume s` to continue it.")

    renamed = launched(user, "s", "--new-name")
    assert "next: tuner show s-2 " in one_line(renamed.stdout)
    assert tuner(user, "launch", "s.yaml", "--new-name", "--executor", "inline", "--quiet").returncode == 0
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(url))
    assert names == ["s", "s-2", "s-3"]

    old = optuna.load_study(study_name="s", storage=url).trials
    (user / "s.yaml").write_text(spec("s", trials=3))  # the edited spec
    replaced = launched(user, "s", "--replace")
    assert "next: tuner show s " in one_line(replaced.stdout)
    new = optuna.load_study(study_name="s", storage=url)
    assert len(old) == 2 and len(new.trials) == 3
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(url)) == names
    with sqlite3.connect(user / "tuner.db") as conn:  # the replaced study's epochs went with it
        rows = conn.execute("SELECT count(*) FROM tuner_epochs").fetchone()[0]
    assert rows == 3 * (3 + 2 + 2)
    both = tuner(user, "launch", "s.yaml", "--replace", "--new-name")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_the_python_api_names_its_keywords_when_a_study_exists(user: Path) -> None:
    import tuner as api

    url = f"sqlite:///{user / 'api.db'}"

    def one_epoch(params, report):
        report(1, val_loss=params["x"])

    kwargs = dict(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=one_epoch, trials=1, epochs=1,
                  executor="inline", storage=url, study="taken")
    api.launch(**kwargs)
    with pytest.raises(api.StorageError) as refused:
        api.launch(**kwargs)
    assert str(refused.value) == (
        f"study 'taken' already exists in {url}. Fix: if_exists='replace' to delete it and launch anew, "
        "if_exists='new_name' to launch as 'taken-2', study='NAME' for a name of your own, or "
        "tuner.resume('taken') to continue it.")
    assert "--" not in str(refused.value)
    assert api.launch(**kwargs, if_exists="new_name").name == "taken-2"
    assert len(api.launch(**kwargs, if_exists="replace").trials) == 1
    with pytest.raises(api.TunerError, match="if_exists=: must be one of 'error', 'replace', 'new_name'"):
        api.launch(**kwargs, if_exists="overwrite")


def test_delete_asks_on_a_terminal_and_refuses_without_one(user: Path, tally) -> None:
    import os
    import pty

    launched(user)
    url = f"sqlite:///{user / 'tuner.db'}"
    piped = tuner(user, "delete", "s", stdin="y\n")  # stdin is a pipe: no one to ask
    assert piped.returncode == 2 and "Traceback" not in piped.stderr
    assert one_line(piped.stderr) == (
        f"error: delete: would delete study s from {url}: 2 trials, 6 epoch rows, and there is no terminal to "
        "confirm it on. Fix: add --yes to delete without asking (`tuner delete s --yes`).")
    tally("hostile input")

    def on_a_terminal(answer: bytes) -> tuple[int, str]:
        leader, follower = pty.openpty()
        env = user_env(TUNER_STORAGE=url, COLUMNS="200")
        proc = subprocess.Popen([shutil.which("tuner"), "delete", "s"], cwd=user, env=env, stdin=follower,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.close(follower)
        os.write(leader, answer)
        out, err = proc.communicate(timeout=60)
        os.close(leader)
        return proc.returncode, one_line(err + out)

    code, said = on_a_terminal(b"n\n")
    assert code == 1 and said.endswith("[y/N] not confirmed: study s is kept."), said
    assert f"delete study s from {url}: 2 trials, 6 epoch rows? This cannot be undone." in said
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["s"]
    code, said = on_a_terminal(b"y\n")
    assert code == 0 and said.endswith(f"[y/N] deleted study s from {url}: 2 trials, 6 epoch rows"), said
    assert optuna.get_all_study_summaries(url) == []
    assert tuner(user, "delete", "s", "--yes").returncode == 2  # gone


# ---------------------------------------------------------------------- JSON and flags


def strict_json(text: str):
    def refuse(constant: str):
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict_json_and_a_pruned_trials_value_is_no_best_value(user: Path, tally) -> None:
    (user / "inf.yaml").write_text(spec("inf", "infinite").replace("pruner: none\n", ""))
    done = tuner(user, "launch", "inf.yaml", "--executor", "inline", "--quiet")
    assert done.returncode == 1 and "all 2 were pruned (diagnostics:diverged)" in one_line(done.stderr)
    shown = strict_json(tuner(user, "show", "inf", "--json").stdout)
    assert [(t["state"], t["value"]) for t in shown] == [("PRUNED", None), ("PRUNED", None)]
    listed = strict_json(tuner(user, "studies", "--json").stdout)
    assert [(s["study"], s["complete"], s["best value"]) for s in listed] == [("inf", 0, None)]
    rows = strict_json(tuner(user, "epochs", "inf", "--json").stdout)
    assert [(r["trial"], r["epoch"], r["val_loss"]) for r in rows] == [(0, 1, None), (1, 1, None)]
    tally("hostile input")


def test_a_trial_number_flag_refuses_what_is_no_trial_number(user: Path, tally) -> None:
    launched(user)
    for command in ("epochs", "show", "checkpoint"):
        for value in ("1e20", "100000000000000000000", "-1"):
            refused = tuner(user, command, "s", f"--trial={value}")
            assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
            assert (f"error: argument --trial: must be a trial number (0, 1, 2, ...: `tuner show STUDY` lists them), "
                    f"but got '{value}'") in one_line(refused.stderr)
            tally("hostile input")
    missing = tuner(user, "epochs", "s", "--trial", "7")
    assert missing.returncode == 2 and "error: --trial: study 's' has no trial 7 (it has 0..1)." in missing.stderr
    import tuner as api

    assert api.load("s", f"sqlite:///{user / 'tuner.db'}").epochs(10**20) == []  # no trial has it
    unknown = tuner(user, "epochs", "s", "--jsn")
    assert "--jsn: did you mean --json?" in unknown.stderr
    wrong = tuner(user, "best", "s", "--csv", "x.csv")
    assert "--csv: that command has no such option (-h lists its options)" in wrong.stderr
    assert "did you mean --csv" not in wrong.stderr


def test_a_missing_database_driver_is_named_with_the_fix_not_a_server_check(user: Path, tally) -> None:
    # psycopg2 as where it is not installed (tuner's postgres extra installs psycopg 3), whether or not it is here:
    # the user's directory, first on the path, holds a package that is missing it.
    (user / "psycopg2").mkdir()
    (user / "psycopg2" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psycopg2'\", name='psycopg2')\n")
    for command in (["studies"], ["launch", "s.yaml", "--executor", "inline"]):
        done = tuner(user, *command, "--storage", "postgresql+psycopg2://u:secret@127.0.0.1:1/x")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert one_line(done.stderr) == (
            "error: storage postgresql+psycopg2://u:***@127.0.0.1:1/x: its database driver 'psycopg2' is not "
            "installed, so nothing was connected to. Fix: use postgresql+psycopg://... (psycopg 3, which "
            '`pip install "tuner[postgres]"` installs), or pip install psycopg2-binary.')
        assert "server" not in done.stderr and "secret" not in done.stderr
        tally("hostile input")


# ---------------------------------------------------------------------- CSV


def test_csv_cells_and_headers_a_spreadsheet_would_run_are_neutralized(user: Path, tally) -> None:
    import csv

    (user / "f.yaml").write_text(spec("f", "formulas").replace("trials: 2", "trials: 1"))
    assert tuner(user, "launch", "f.yaml", "--executor", "inline", "--quiet").returncode == 0
    assert tuner(user, "epochs", "f", "--csv", "e.csv").returncode == 0
    with (user / "e.csv").open(newline="") as fh:
        header, *rows = list(csv.reader(fh))
    assert header[-4:] == ["'=HYPERLINK(\"http://evil.example\",\"x\")", "'@SUM(A1)", "'+cmd|' /C calc'!A0", "sign"]
    first = dict(zip(header, rows[0]))
    assert first["val_loss"] == "-0.5" and first["sign"] == "-inf"  # numbers stay numbers (-inf: a non-finite one)
    assert not [cell for row in [header, *rows] for cell in row if cell[:1] in ("=", "+", "@")]
    tally("hostile input", 3)

    assert tuner(user, "show", "f", "--csv", "t.csv").returncode == 0
    with (user / "t.csv").open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert table[0]["value"] == "-0.5"
    # A study Optuna was given any name for: `tuner studies --csv` writes it as text.
    url = f"sqlite:///{user / 'tuner.db'}"
    optuna.copy_study(from_study_name="f", from_storage=url, to_storage=url, to_study_name="=cmd|'/C calc'!A0")
    assert tuner(user, "studies", "--csv", "s.csv").returncode == 0
    with (user / "s.csv").open(newline="") as fh:
        assert sorted(r["study"] for r in csv.DictReader(fh)) == ["'=cmd|'/C calc'!A0", "f"]
    tally("hostile input")
