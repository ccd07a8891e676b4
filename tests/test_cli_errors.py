"""A user's mistake on the command line: exit 2, one clear message, no traceback, nothing stored.

These run the real ``tuner`` command in a subprocess. ``-X importtime`` makes
Python list every module it imports on stderr, which lets each test check that
the mistake was caught before Ray was even imported (so before it started).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

import tuner

SPEC = """\
workload: mlp
data: wine
strategy: tpe
trials: 2
epochs: 1
params:
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
"""


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.stdout = proc.stdout
        lines = proc.stderr.splitlines(keepends=True)
        self.imported = [ln.rsplit("|", 1)[-1].strip() for ln in lines if ln.startswith("import time:")]
        self.stderr = "".join(ln for ln in lines if not ln.startswith("import time:"))

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """``tuner ARGS`` in tmp_path, on the store tmp_path/tuner.db unless ``env`` names the storage variables."""
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "TUNER_STORAGE", "OPTUNA_STORAGE")}
    env = {**base, "COLUMNS": "200", **(env if env is not None else {"TUNER_STORAGE": db_url(tmp_path)})}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tuner", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    return Result(proc)


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tuner.db"


def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{db_path(tmp_path)}"


def stored_studies(tmp_path: Path) -> list[str]:
    """Study names in the test's SQLite store, read without creating anything."""
    path = db_path(tmp_path)
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='studies'").fetchone():
            return []
        return [row[0] for row in conn.execute("SELECT study_name FROM studies")]


def assert_rejected(result: Result, tmp_path: Path) -> None:
    """Exit 2, a message, no traceback, Ray never imported, no study stored."""
    assert result.code == 2, result.output
    assert "error:" in result.stderr
    assert "Traceback" not in result.output
    assert "tuner.spec" in result.imported  # the import list was read (the check below means something)
    assert "ray" not in result.imported, "the mistake was caught only after Ray was imported"
    assert stored_studies(tmp_path) == []


def one_epoch(params: dict[str, Any], report: Any) -> None:
    report(1, val_loss=params["x"])


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "wine_space.yaml"
    path.write_text(SPEC)
    return path


# ---------------------------------------------------------------------- spec mistakes


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("workload: mlp\nparams:\n  lr: {type: float, low: 0.1 high: 1}\n")
    result = run_cli(tmp_path, "launch", "broken.yaml")
    assert_rejected(result, tmp_path)
    assert "broken.yaml: YAML syntax error at line 3, column 34" in result.stderr
    assert not db_path(tmp_path).exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(tmp_path: Path, where: str) -> None:
    (tmp_path / "broken.yaml").write_text("workload: mlp\nparams:\n  lr: {type: float, low: 0.1 high: 1}\n")
    args = ["--debug", "launch", "broken.yaml"] if where == "before" else ["launch", "broken.yaml", "--debug"]
    result = run_cli(tmp_path, *args)
    assert result.code != 0
    assert "Traceback" in result.stderr
    assert "SpecError: broken.yaml: YAML syntax error at line 3" in result.stderr


def test_unknown_strategy_lists_the_valid_ones(tmp_path: Path, spec_file: Path) -> None:
    result = run_cli(tmp_path, "launch", spec_file.name, "--strategy", "nope")
    assert_rejected(result, tmp_path)
    assert (
        "error: --strategy: must be one of grid, random, tpe, gp, cmaes, qmc, auto, but got 'nope'."
        in result.stderr
    )


def test_zero_trials_from_a_flag(tmp_path: Path, spec_file: Path) -> None:
    result = run_cli(tmp_path, "launch", spec_file.name, "--trials", "0")
    assert_rejected(result, tmp_path)
    assert "error: --trials: must be > 0, but got 0. Fix: use a value > 0." in result.stderr


def test_several_problems_in_one_run(tmp_path: Path, spec_file: Path) -> None:
    result = run_cli(tmp_path, "launch", spec_file.name, "--epochs", "0", "--parallel", "-1", "--strategy", "grid")
    assert_rejected(result, tmp_path)
    # The grid's need of values for lr shows up with them, not after they are fixed.
    assert "error: wine_space.yaml: 3 problems" in result.stderr
    assert "  - --parallel: must be > 0, but got -1" in result.stderr
    assert "  - --epochs: must be > 0, but got 0" in result.stderr
    assert "  - params.lr: strategy `grid` needs a finite set of values" in result.stderr


# ---------------------------------------------------------------------- storage mistakes


def test_unreachable_storage_masks_the_password(tmp_path: Path, spec_file: Path) -> None:
    # Nothing listens on port 1, so the connection is refused at once.
    url = "postgresql+psycopg://user:s3cr%40t@127.0.0.1:1/db"
    result = run_cli(tmp_path, "launch", spec_file.name, "--storage", url)
    assert_rejected(result, tmp_path)
    assert "storage postgresql+psycopg://user:***@127.0.0.1:1/db cannot be opened" in result.stderr
    assert "in --storage / storage=." in result.stderr
    assert "s3cr" not in result.output
    assert not db_path(tmp_path).exists()


def test_malformed_storage_url(tmp_path: Path, spec_file: Path) -> None:
    result = run_cli(tmp_path, "launch", spec_file.name, "--storage", "postgresql+psycopg://user:s3cr@t@host:notaport/db")
    assert_rejected(result, tmp_path)
    assert "is malformed. Fix: use sqlite:///path/to/file.db or postgresql+psycopg://" in result.stderr
    assert "s3cr" not in result.output
    assert not db_path(tmp_path).exists()


def test_a_path_given_as_storage_is_shown_its_url(tmp_path: Path, spec_file: Path) -> None:
    result = run_cli(tmp_path, "launch", spec_file.name, "--storage", "runs/tuner.db")
    assert_rejected(result, tmp_path)
    assert ("error: storage 'runs/tuner.db' (from --storage / storage=) is a path, not a database URL. "
            "Fix: use sqlite:///runs/tuner.db (or postgresql+psycopg://user@host:5432/dbname).") in result.stderr


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.write_text("not a database\n"),
     "cannot be opened: file is not a database. Fix: point to a SQLite file made by tuner or Optuna, or to a new "
     "file name (tuner creates it)."),
    (lambda p: p.mkdir(),
     "'{name}' is a directory, not a database file. Fix: name a file in it, e.g. sqlite:///{name}/tuner.db."),
], ids=["not-sqlite", "directory"])
def test_a_sqlite_file_that_cannot_be_used_gets_a_file_fix_not_a_server_one(
    tmp_path: Path, spec_file: Path, make: Any, message: str
) -> None:
    make(tmp_path / "other.db")
    result = run_cli(tmp_path, "studies", "--storage", "sqlite:///other.db")
    assert result.code == 2 and "Traceback" not in result.stderr
    assert message.format(name="other.db") in result.stderr
    assert "server" not in result.stderr and "host" not in result.stderr


def test_an_optuna_journal_file_is_named_with_how_to_copy_it(tmp_path: Path) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.log")))
    optuna.create_study(storage=journal, study_name="old-sweep").optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    for given in ("optuna.log", "sqlite:///optuna.log"):
        result = run_cli(tmp_path, "studies", "--storage", given)
        assert result.code == 2 and "Traceback" not in result.stderr
        assert f"storage '{given}' is an Optuna JournalStorage file (studies 'old-sweep')" in result.stderr
        command = result.stderr.split('python -c "', 1)[1].split('"', 1)[0]
        # The printed fix works as printed: it copies the study into tuner's store.
        subprocess.run([sys.executable, "-c", command], cwd=tmp_path, check=True, capture_output=True)
        assert [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'tuner.db'}")] == \
               ["old-sweep"]
        (tmp_path / "tuner.db").unlink()


def test_optuna_storage_is_honoured_after_tuner_storage(tmp_path: Path) -> None:
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="from-optuna-env")
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'tuner-env.db'}", study_name="from-tuner-env")
    seen = run_cli(tmp_path, "studies", "--json", env={"OPTUNA_STORAGE": "sqlite:///optuna.db"})
    assert [s["study"] for s in json.loads(seen.stdout)] == ["from-optuna-env"]
    both = {"OPTUNA_STORAGE": "sqlite:///optuna.db", "TUNER_STORAGE": "sqlite:///tuner-env.db"}
    seen = run_cli(tmp_path, "studies", "--json", env=both)
    assert [s["study"] for s in json.loads(seen.stdout)] == ["from-tuner-env"]


def test_unsupported_database(tmp_path: Path, spec_file: Path) -> None:
    result = run_cli(tmp_path, "launch", spec_file.name, "--storage", "mysql://user:s3cr3t@localhost/db")
    assert_rejected(result, tmp_path)
    assert (
        "storage URL 'mysql://user:***@localhost/db' names the database 'mysql', which tuner does not "
        "support. Fix: use one of sqlite, postgresql." in result.stderr
    )
    assert "s3cr" not in result.output


def test_sqlite_in_a_missing_directory(tmp_path: Path, spec_file: Path) -> None:
    result = run_cli(tmp_path, "launch", spec_file.name, "--storage", f"sqlite:///{tmp_path}/no/such/dir/t.db")
    assert_rejected(result, tmp_path)
    assert "does not exist. Fix: create it or point to another path." in result.stderr
    assert not (tmp_path / "no").exists()


# ---------------------------------------------------------------------- existing study


def test_launch_onto_an_existing_study_points_to_resume(tmp_path: Path, spec_file: Path) -> None:
    tuner.launch(
        space={"x": {"type": "float", "low": 0, "high": 1}}, objective=one_epoch,
        trials=1, epochs=1, executor="inline", storage=db_url(tmp_path), study="taken",
    )
    assert len(tuner.load("taken", db_url(tmp_path)).trials) == 1

    result = run_cli(tmp_path, "launch", spec_file.name, "--study", "taken")
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    assert "ray" not in result.imported
    assert "study 'taken' already exists in sqlite:///" in result.stderr
    assert "--study" in result.stderr and "tuner resume taken" in result.stderr
    assert stored_studies(tmp_path) == ["taken"]
    assert len(tuner.load("taken", db_url(tmp_path)).trials) == 1


def test_api_launch_onto_an_existing_study(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = dict(
        space={"x": {"type": "float", "low": 0, "high": 1}}, objective=one_epoch,
        trials=1, epochs=1, executor="inline", storage=db_url(tmp_path), study="taken",
    )
    tuner.launch(**kwargs)
    pattern = r"study 'taken' already exists .*if_exists='replace' .*study='NAME' .*tuner\.resume\('taken'\)"
    with pytest.raises(tuner.StorageError, match=pattern):
        tuner.launch(**kwargs)
    assert len(tuner.load("taken", db_url(tmp_path)).trials) == 1
