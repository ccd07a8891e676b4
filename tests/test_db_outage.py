"""Waiting out a database outage: one retry layer, one warning, the documented bound, Optuna's wrapped errors too."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

import tuner
from tuner import orchestrator as orch
from tuner import recorder
from tuner.errors import StoreUnreachable
from tuner.executors import make_executor
from tuner.spec import load_spec
from tuner.store import Store
from tests import workloads


def make(url: str) -> orch.Orchestrator:
    spec = load_spec({"name": "o", "workload": "tests.workloads:quadratic", "strategy": "random", "trials": 4,
                      "pruner": "none", "params": {"x": {"type": "float", "low": 0, "high": 1}}})
    store = Store(url)
    study = store.create_study("o", spec.direction, optuna.samplers.RandomSampler(seed=0))
    return orch.Orchestrator(spec, store, study, make_executor("inline"), workloads.quadratic)


def lost_connection() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


@pytest.fixture
def simulated_time(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(recorder.time, "sleep", slept.append)
    return slept


def test_one_outage_is_waited_out_once_within_the_bound_with_one_warning(storage, simulated_time, monkeypatch, caplog):
    o = make(storage)

    def down(*args, **kwargs):
        raise lost_connection()

    monkeypatch.setattr(o.study, "ask", down)  # the database is away for good
    with caplog.at_level(logging.WARNING, logger="tuner"), pytest.raises(StoreUnreachable) as stopped:
        o._launch_more()
    assert isinstance(stopped.value.__cause__.__cause__ or stopped.value.__cause__, sa.exc.OperationalError)
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    print(f"\nan outage that never ends: waited {sum(simulated_time):.0f} simulated s "
          f"(bound {recorder.DB_OUTAGE_SECONDS} s), {len(warnings)} warning(s)")
    assert sum(simulated_time) <= recorder.DB_OUTAGE_SECONDS + recorder.DB_RETRY_SECONDS
    assert sum(simulated_time) >= recorder.DB_OUTAGE_SECONDS
    assert len(warnings) == 1


def test_optunas_storage_internal_error_from_a_lost_connection_is_waited_out(storage, simulated_time, monkeypatch,
                                                                              caplog):
    o = make(storage)
    real_ask, failures = o.study.ask, [3]

    def flaky(*args, **kwargs):
        if failures[0]:
            failures[0] -= 1
            try:
                raise lost_connection()
            except sa.exc.OperationalError as exc:  # what Optuna's RDB storage does with it
                raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc
        return real_ask(*args, **kwargs)

    monkeypatch.setattr(o.study, "ask", flaky)
    with caplog.at_level(logging.WARNING, logger="tuner"):
        trial, params = o.recorder.db(o._ask_next)
    assert simulated_time == [recorder.DB_RETRY_SECONDS] * 3
    assert set(params) == {"x"}
    assert [t.state for t in o.study.get_trials()] == [TrialState.RUNNING]  # asked once, not once per attempt
    assert any("is back" in r.getMessage() for r in caplog.records)


def test_a_storage_error_that_is_no_outage_is_raised_at_once(storage, simulated_time, monkeypatch):
    o = make(storage)

    def too_long(*args, **kwargs):
        try:
            raise sa.exc.DataError("INSERT", {}, Exception("value too long for type character varying(512)"))
        except sa.exc.DataError as exc:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc

    monkeypatch.setattr(o.study, "ask", too_long)
    with pytest.raises(optuna.exceptions.StorageInternalError):
        o.recorder.db(o._ask_next)
    assert simulated_time == []


def test_a_heartbeat_during_a_real_postgres_restart_waits_for_the_server(postgres_server, postgres_url):
    o = make(postgres_url)
    trial = o.study.ask()
    o.store.storage.record_heartbeat(trial._trial_id)  # the pool holds a connection the restart will cut
    restart = threading.Thread(target=postgres_server.restart, kwargs={"down_seconds": 3})
    restart.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the server is down
            try:
                postgres_server.execute("SELECT 1")
                time.sleep(0.1)
            except Exception:
                break
        start = time.monotonic()
        o.recorder.db(o.store.storage.record_heartbeat, trial._trial_id)
        waited = time.monotonic() - start
    finally:
        restart.join()
    print(f"\nheartbeat during a PostgreSQL restart: waited {waited:.1f} s, then recorded")
    assert waited > 0.5
    o.store.close()


class Outage:
    """The database gone for this process: while ``down``, every SQL statement fails as on a lost server."""

    down = False
    fired = False

    @staticmethod
    def refuse(conn, cursor, statement, parameters, context, executemany):
        if Outage.down:
            raise sqlite3.OperationalError("disk I/O error")


@pytest.fixture
def outage():
    Outage.down = Outage.fired = False
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", Outage.refuse)
    yield Outage
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", Outage.refuse)
    Outage.down = False


def goes_away(params, report):
    """Trains three epochs; the first trial's second epoch takes the database away (for good, until a test says)."""
    for epoch in range(1, params["epochs"] + 1):
        if epoch == 2 and not Outage.fired:
            Outage.down = Outage.fired = True
        report(epoch, val_loss=(params["x"] - 0.5) ** 2 + 1.0 / epoch)


def test_an_outage_past_the_bound_stops_once_with_the_resume_command_and_resume_finishes(storage, simulated_time,
                                                                                         outage, caplog, tally):
    spec = {"name": "away", "workload": "tests.test_db_outage:goes_away", "strategy": "random", "trials": 3,
            "epochs": 3, "pruner": "none", "seed": 0, "params": {"x": {"type": "float", "low": 0, "high": 1}}}
    with caplog.at_level(logging.WARNING, logger="tuner"), pytest.raises(StoreUnreachable) as stopped:
        tuner.launch(spec, storage=storage, executor="inline")
    message = str(stopped.value)
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    print(f"\nan outage past the bound: waited {sum(simulated_time):.0f} simulated s in all "
          f"(bound {recorder.DB_OUTAGE_SECONDS} s), {len(warnings)} warning(s), then: {message}")
    # One wait, within the bound: the study's end does not wait a second time.
    assert recorder.DB_OUTAGE_SECONDS <= sum(simulated_time) <= recorder.DB_OUTAGE_SECONDS + recorder.DB_RETRY_SECONDS
    assert len(warnings) == 1
    assert "\n" not in message and "`tuner resume away`" in message and "disk I/O error" in message
    assert stopped.value.exit_code == 1

    outage.down = False  # the database is back
    left = [t.number for t in optuna.load_study(study_name="away", storage=storage).trials
            if t.state == TrialState.RUNNING]
    assert left == [0]  # nothing could be written: the trial is left RUNNING, for the resume
    tuner.resume("away", storage=storage, executor="inline")
    trials = optuna.load_study(study_name="away", storage=storage).trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 3 and TrialState.RUNNING not in states
    assert trials[0].user_attrs["fail_kind"] == "interrupted"
    assert any(t.user_attrs.get("retry_of") == 0 and t.state == TrialState.COMPLETE for t in trials)
    tally("fault")


def test_the_cli_says_an_outage_past_the_bound_in_one_line_and_exits_1(tmp_path, storage, simulated_time, outage,
                                                                        capsys, tally):
    from tuner import cli

    spec = tmp_path / "away.yaml"
    spec.write_text("name: away\nworkload: tests.test_db_outage:goes_away\nstrategy: random\ntrials: 2\nepochs: 3\n"
                    "pruner: none\nparams:\n  x: {type: float, low: 0, high: 1}\n")
    code = cli.main(["launch", str(spec), "--storage", storage, "--executor", "inline", "--quiet"])
    err = capsys.readouterr().err
    # One message a line; a log record wrapped to the terminal's width goes on in indented lines.
    messages = [line for line in err.splitlines() if line.strip() and not line.startswith(" ")]
    print(f"\nthe CLI after an outage past the bound: exit {code}; {messages}")
    assert code == 1
    waited = [m for m in messages if m.startswith("WARNING")]
    assert len(waited) == 1 and "unreachable (disk I/O error); retrying for up to 300 s" in " ".join(err.split())
    (error,) = [m for m in messages if not m.startswith("WARNING")]
    assert error.startswith("error: the study store") and "tuner resume away" in error
    assert "Traceback" not in err
    tally("fault")
