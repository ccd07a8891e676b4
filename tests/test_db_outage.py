"""Waiting out a database outage: one retry layer, one warning, the documented bound, Optuna's wrapped errors too."""

from __future__ import annotations

import logging
import threading
import time

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from tuner import orchestrator as orch
from tuner import recorder
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
    with caplog.at_level(logging.WARNING, logger="tuner"), pytest.raises(sa.exc.OperationalError):
        o._launch_more()
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
