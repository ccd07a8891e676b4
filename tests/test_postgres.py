"""PostgreSQL as the study store: the CLI on it, passwords kept out of every output, clear errors, dropped connections.

The store's contract on PostgreSQL (and SQLite) is in test_store.py; this file
holds what only a server has: a password, a network, connections that drop.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
from optuna.trial import TrialState

import tuner
from tuner.api import Study
from tests import workloads
from tests.conftest import REPO, PostgresServer, _free_port
from tuner.errors import StorageError
from tuner.store import Store, safe_url
from tuner.store.sql import _unreachable

SPEC = """\
name: tiny
workload: tests.workloads:quadratic
strategy: random
trials: 2
epochs: 2
seed: 1
pruner: none
params:
  x: {type: float, low: 0, high: 4}
"""


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **env}
    environ.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "tuner", *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=120)


def assert_no_secret(text: str, password: str) -> None:
    """Neither the password nor its URL-encoding, nor a telling piece of either, is in ``text``."""
    unwrapped = "".join(text.split())  # rich wraps long lines, also in the middle of a URL
    for secret in (password, quote(password, safe=""), password[:4], quote(password, safe="")[-6:]):
        assert secret not in text
        assert secret not in unwrapped


def masked(server: PostgresServer, database: str, port: int | None = None) -> str:
    return f"postgresql+psycopg://{server.user}:***@127.0.0.1:{port or server.port}/{database}"


# ---------------------------------------------------------------------- the CLI on PostgreSQL


def test_cli_launch_and_studies_never_show_the_password(postgres_server, postgres_url, tmp_path):
    database = postgres_url.rsplit("/", 1)[1]
    (tmp_path / "tiny.yaml").write_text(SPEC)
    launched = run_cli("launch", "tiny.yaml", "--executor", "inline", "--storage", postgres_url, cwd=tmp_path)
    listed = run_cli("studies", cwd=tmp_path, TUNER_STORAGE=postgres_url)
    assert launched.returncode == 0, launched.stderr
    assert listed.returncode == 0, listed.stderr
    assert f"store {masked(postgres_server, database)}" in launched.stderr  # the progress header
    assert f"tuner dashboard --storage '{masked(postgres_server, database)}'" in launched.stdout
    assert masked(postgres_server, database) in "".join(listed.stdout.split())  # the table's title, wrapped
    assert "tiny" in listed.stdout
    for output in (launched.stdout, launched.stderr, listed.stdout, listed.stderr):
        assert_no_secret(output, postgres_server.password)
    trials = optuna.load_study(study_name="tiny", storage=postgres_url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2


def test_the_python_api_takes_the_store_from_tuner_storage_and_logs_no_password(
    postgres_server, postgres_url, monkeypatch, caplog, capfd
):
    monkeypatch.setenv("TUNER_STORAGE", postgres_url)
    optuna.logging.enable_propagation()  # Optuna's messages into caplog, too
    caplog.set_level(logging.DEBUG)
    try:
        study = tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=workloads.quadratic,
                             trials=2, epochs=2, executor="inline", pruner="none", study="from-env")
    finally:
        optuna.logging.disable_propagation()
    assert study.store.url == postgres_url
    assert postgres_server.password not in repr(study)
    assert tuner.load("from-env").best_value == study.best_value
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err, repr(study)):
        assert_no_secret(text, postgres_server.password)


# ---------------------------------------------------------------------- clear errors, no password


def test_a_wrong_password_exits_2_naming_the_storage_and_what_to_check(postgres_server, postgres_url, tmp_path):
    database = postgres_url.rsplit("/", 1)[1]
    wrong = "n0t-it@:/%"
    result = run_cli("studies", "--storage", postgres_server.url(database, password=wrong), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"error: storage {masked(postgres_server, database)} cannot be opened: connection failed: "
    )
    assert f'password authentication failed for user "{postgres_server.user}". Fix: check the user name and ' \
           "password in --storage / storage=, and URL-encode special characters in the password (@ as %40, " \
           ": as %3A, / as %2F, % as %25)." in result.stderr
    assert "Traceback" not in result.stderr
    assert_no_secret(result.stderr, wrong)
    assert_no_secret(result.stderr, postgres_server.password)


def test_an_unreachable_server_exits_2_naming_the_storage(postgres_server, tmp_path):
    port = _free_port()  # nothing listens there
    result = run_cli("studies", "--storage", postgres_server.url("db", port=port), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: storage {masked(postgres_server, 'db', port)} cannot be opened: ")
    assert "Connection refused" in result.stderr
    assert "Fix: check that the database server is running and reachable at that host and port, and the user, " \
           "password and database name in --storage / storage=." in result.stderr
    assert_no_secret(result.stderr, postgres_server.password)


def test_a_missing_database_says_to_create_it(postgres_server):
    with pytest.raises(StorageError) as caught:
        Store(postgres_server.url("no_such_db"))
    assert str(caught.value) == (
        f"storage {masked(postgres_server, 'no_such_db')} cannot be opened: connection failed: connection to "
        f'server at "127.0.0.1", port {postgres_server.port} failed: FATAL:  database "no_such_db" does not '
        "exist. Fix: check the user and database names in --storage / storage=; create a new database "
        "first (createdb NAME)."
    )


def test_a_password_typed_without_url_encoding_is_refused_and_not_shown(postgres_server):
    raw = f"postgresql+psycopg://{postgres_server.user}:{postgres_server.password}@127.0.0.1:{postgres_server.port}/db"
    with pytest.raises(StorageError, match=r"is malformed\. Fix: use sqlite:///path/to/file\.db or postgresql"):
        Store(raw)
    at_only = f"postgresql+psycopg://{postgres_server.user}:ab@cd@127.0.0.1:{postgres_server.port}/db"
    with pytest.raises(StorageError) as caught:
        Store(at_only)
    assert str(caught.value) == (
        f"storage URL '{masked(postgres_server, 'db')}' (from --storage / storage=) is malformed: its host "
        "holds an '@'. Fix: URL-encode special characters in the password (@ as %40, : as %3A, / as %2F, "
        "% as %25)."
    )


def test_an_unsupported_database_is_named_with_the_supported_ones():
    with pytest.raises(StorageError) as caught:
        Store("mysql+pymysql://user:s3cr3t@localhost/db")
    assert str(caught.value) == (
        "storage URL 'mysql+pymysql://user:***@localhost/db' names the database 'mysql', which tuner does not "
        "support. Fix: use one of sqlite, postgresql."
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:p%40ss%3Aw%2Frd%25@db.example:5432/t", "postgresql+psycopg://u:***@db.example:5432/t"),
        ("postgresql+psycopg://u:p@ss:w/rd%@db.example:5432/t", "postgresql+psycopg://u:***@db.example:5432/t"),
        ("postgresql://u:ab@cd@host/t?sslmode=require", "postgresql://u:***@host/t?sslmode=require"),
        ("postgresql://u@host/t?sslmode=require&password=hunter2",
         "postgresql://u@host/t?sslmode=require&password=***"),
        ("postgresql://u@host/t", "postgresql://u@host/t"),
        ("sqlite:////data/a:b@2024/tuner.db", "sqlite:////data/a:b@2024/tuner.db"),
        ("user:hunter2@host/db", "user:***@host/db"),
    ],
    ids=["encoded", "not-encoded", "at-in-password", "query-password", "no-password", "sqlite-path", "no-scheme"],
)
def test_safe_url_masks_every_password(url, shown):
    assert safe_url(url) == shown


def test_store_safe_url_masks_the_password(postgres_server, postgres_url):
    store = Store(postgres_url)
    assert store.safe_url == masked(postgres_server, postgres_url.rsplit("/", 1)[1])
    assert_no_secret(repr(Study(store.create_study("s", "minimize"), store)), postgres_server.password)
    assert store.redact(f"login as {postgres_url} with password={postgres_server.password}") == (
        f"login as {postgres_url.replace(quote(postgres_server.password, safe=''), '***')} with password=***"
    )


@pytest.mark.parametrize(
    "echo",
    [
        "could not connect: user=tuner password=p@ss:w/rd% host=db",
        "invalid connection option in \"user='tuner' password='p@ss:w/rd%' host='db'\"",
        "failed for postgresql://tuner:p%40ss%3Aw%2Frd%25@db/t",
        "authentication with p@ss:w/rd% failed\nsecond line p@ss:w/rd%",
    ],
    ids=["conninfo", "quoted-conninfo", "url-encoded", "bare"],
)
def test_driver_messages_lose_the_password(echo):
    message = _unreachable("postgresql+psycopg://tuner:p%40ss%3Aw%2Frd%25@db/t", RuntimeError(echo), "--storage")
    assert message.startswith("storage postgresql+psycopg://tuner:***@db/t cannot be opened: ")
    assert_no_secret(message, "p@ss:w/rd%")


# ---------------------------------------------------------------------- a dropped connection


def test_the_store_survives_the_server_dropping_its_connections(postgres_server, postgres_url):
    database = postgres_url.rsplit("/", 1)[1]
    store = Store(postgres_url)
    study = store.create_study("s", "minimize")
    trial = study.ask()
    store.record_epochs([{"trial_id": trial._trial_id, "epoch": 1, "val_loss": 1.0}], "val_loss")
    assert postgres_server.terminate_connections(database) >= 1
    store.record_epochs([{"trial_id": trial._trial_id, "epoch": 2, "val_loss": 0.5}], "val_loss")
    assert postgres_server.terminate_connections(database) >= 1
    store.set_trial_attrs(trial._trial_id, {"after": "drop"})
    study.tell(trial, 0.5)  # Optuna's own writes reconnect too
    (stored,) = store.load_study("s").trials
    assert stored.intermediate_values == {1: 1.0, 2: 0.5}
    assert stored.user_attrs == {"after": "drop"}
    assert [r["epoch"] for r in store.epochs(study)] == [1, 2]


def test_the_store_survives_a_server_restart_between_batches(postgres_server, postgres_url):
    store = Store(postgres_url)
    study = store.create_study("s", "minimize")
    trial = study.ask()
    store.record_epochs([{"trial_id": trial._trial_id, "epoch": 1, "val_loss": 1.0}], "val_loss")
    postgres_server.restart()
    store.record_epochs([{"trial_id": trial._trial_id, "epoch": 2, "val_loss": 0.5}], "val_loss")
    assert [r["epoch"] for r in store.epochs(study)] == [1, 2]
