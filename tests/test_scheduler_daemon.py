"""The scheduler as users run it: real daemon processes, real SQLite and PostgreSQL, real runs."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from tuner.schedule import Schedules
from tuner.store import Store

REPO = Path(__file__).resolve().parent.parent
PAST = datetime(2025, 12, 31, 12, 0, tzinfo=timezone.utc)  # schedules added then are due now
SPEC = """\
name: s
workload: tests.workloads:{workload}
strategy: random
trials: {trials}
epochs: 3
pruner: none
fixed: {{sleep: 0.5}}
params:
  x: {{type: float, low: -5, high: 5}}
"""


def tuner(*args: str, cwd: Path, storage: str, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner", *args], cwd=cwd, env=_env(storage), capture_output=True,
                          text=True, timeout=timeout, **popen)


def daemon(cwd: Path, storage: str, *args: str) -> subprocess.Popen:
    # A session of its own: a test can kill the daemon and its runs at once, as a machine going down does.
    return subprocess.Popen([sys.executable, "-m", "tuner", "scheduler", *args], cwd=cwd, env=_env(storage),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _env(storage: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TUNER_STORAGE": storage, "COLUMNS": "250"}


def add_due(storage: str, spec: Path, name: str, **kw) -> None:
    """A yearly schedule added last year: its 1 January firing is due (and missed) now."""
    kw.setdefault("executor", "inline")
    Schedules(Store(storage), clock=lambda: PAST).add(name, spec, "0 0 1 1 *", **kw)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def write_spec(tmp_path: Path, workload: str = "quadratic", trials: int = 2) -> Path:
    spec = tmp_path / f"{workload}.yaml"
    spec.write_text(SPEC.format(workload=workload, trials=trials))
    return spec


def test_two_daemons_on_postgresql_fire_each_schedule_exactly_once(postgres_url, tmp_path):
    spec = write_spec(tmp_path)
    names = [f"team-{i}" for i in range(6)]
    for name in names:
        add_due(postgres_url, spec, name)
    daemons = [daemon(tmp_path, postgres_url, "--once", "--interval", "1") for _ in range(2)]
    outputs = [d.communicate(timeout=300)[0] for d in daemons]
    assert [d.returncode for d in daemons] == [0, 0], outputs
    runs = Schedules(Store(postgres_url)).runs()
    per_schedule = collections.Counter(r.schedule_id for r in runs)
    by_daemon = collections.Counter(r.daemon.rsplit(":", 2)[1] for r in runs)
    print(f"\ntwo daemons, {len(names)} due schedules: {len(runs)} runs; runs per daemon pid {dict(by_daemon)}")
    assert len(runs) == len(names) and set(per_schedule.values()) == {1}
    assert all(r.status == "succeeded" and r.trials == 2 for r in runs), [(r.status, r.reason) for r in runs]
    studies = optuna.get_all_study_names(postgres_url)
    assert sorted(studies) == sorted(f"{n}-20260101T0000Z" for n in names)


def test_a_second_daemon_on_sqlite_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    first = daemon(tmp_path, storage, "--interval", "1")
    try:
        wait_for(lambda: "scheduler on" in first.stdout.readline(), 60, "the first daemon to start")
        second = tuner("scheduler", "--once", cwd=tmp_path, storage=storage, timeout=60)
        assert second.returncode == 2
        assert (f"error: another tuner scheduler (pid {first.pid}) is running on this SQLite store. SQLite allows "
                "one scheduler daemon per store. Fix: stop it first, or use a PostgreSQL store") in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 130


@pytest.mark.parametrize("killed", ["daemon", "daemon and run"])
def test_a_daemon_killed_mid_run_leaves_an_interrupted_run_that_the_next_daemon_resumes(tmp_path, killed):
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    add_due(storage, write_spec(tmp_path, "slow", trials=6), "nightly")
    book = Schedules(Store(storage))
    first = daemon(tmp_path, storage, "--interval", "1")
    run = wait_for(lambda: next((r for r in book.runs("nightly") if r.pid), None), 60, "the run to start")

    def some_trial_done():
        studies = optuna.get_all_study_names(storage)
        return studies and any(t.state == TrialState.COMPLETE
                               for t in optuna.load_study(study_name=run.study, storage=storage).trials)

    wait_for(some_trial_done, 120, "a first trial to complete")
    if killed == "daemon":
        first.kill()  # kill -9: no clean-up in the daemon
    else:  # both at once, as when the machine goes down: nobody records anything
        os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    if killed == "daemon":  # the run gets SIGINT as its daemon dies, and records itself interrupted
        wait_for(lambda: book.run(run.id)[0].status == "interrupted", 60, "the run to record itself interrupted")
        study = optuna.load_study(study_name=run.study, storage=storage)
        assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    else:
        wait_for(lambda: not _alive(run.pid), 30, "the run's process to end")
        assert book.run(run.id)[0].status == "running"  # what a dead machine leaves behind

    second = daemon(tmp_path, storage, "--once", "--interval", "1")
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0, output
    runs = list(reversed(book.runs("nightly")))
    assert [(r.attempt, r.trigger, r.status) for r in runs] == [(1, "catch-up", "interrupted"),
                                                               (2, "resume", "succeeded")], output
    if killed == "daemon and run":
        assert runs[0].reason == "the scheduler that ran it stopped (killed, or its machine went down)"
    assert runs[1].study == run.study and runs[1].reason.startswith(f"resumes run {run.id}, interrupted")
    study = optuna.load_study(study_name=run.study, storage=storage)
    states = collections.Counter(t.state for t in study.trials)
    counted = [t for t in study.trials if t.state == TrialState.COMPLETE]
    print(f"\n{killed} killed mid-run, then resumed: trial states {dict((s.name, n) for s, n in states.items())}")
    assert len(counted) == 6 and states[TrialState.RUNNING] == 0
    assert f"schedule nightly: run {runs[1].id} started, study {run.study}" in output


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of a dead parent is reaped by init; until then it is a zombie.
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_the_schedule_commands(tmp_path):
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    spec = write_spec(tmp_path)
    added = tuner("schedule", "add", "nightly", str(spec), "--cron", "0 2 * * *", "--timezone", "Europe/Berlin",
                  "--warm-start", "2", "--executor", "inline", cwd=tmp_path, storage=storage)
    assert added.returncode == 0, added.stderr
    assert "schedule nightly: 0 2 * * * (Europe/Berlin) · next firing" in added.stdout
    now = tuner("schedule", "run-now", "nightly", cwd=tmp_path, storage=storage)
    assert now.returncode == 0, now.stderr
    assert "run 1 of nightly: succeeded, study nightly-" in now.stdout
    listed = tuner("schedule", "list", cwd=tmp_path, storage=storage)
    assert "nightly" in listed.stdout and "enabled" in listed.stdout and "succeeded" in listed.stdout
    assert tuner("schedule", "pause", "nightly", cwd=tmp_path, storage=storage).stdout.strip() == \
        "schedule nightly paused"
    assert "paused" in tuner("schedule", "list", cwd=tmp_path, storage=storage).stdout
    assert "resumed; next firing" in tuner("schedule", "resume", "nightly", cwd=tmp_path, storage=storage).stdout
    shown = tuner("schedule", "show", "nightly", cwd=tmp_path, storage=storage)
    assert "overlap: skip · catch_up: once · on_interrupt: resume · warm start: 2" in shown.stdout
    assert "manual" in shown.stdout and "succeeded" in shown.stdout
    # Piped (120 columns) and in a narrow terminal, the run's study name stays whole: the user types it next.
    study = now.stdout.split("study ", 1)[1].split()[0].rstrip(",.")
    for columns in (None, "80"):
        env = {k: v for k, v in _env(storage).items() if k != "COLUMNS"} | ({"COLUMNS": columns} if columns else {})
        for command in (["schedule", "show", "nightly"], ["schedule", "list"]):
            narrow = subprocess.run([sys.executable, "-m", "tuner", *command], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=120)
            assert narrow.returncode == 0 and study in narrow.stdout, narrow.stdout
            if columns is None:  # piped: every column whole, no row cut at the pipe's width
                assert "…" not in narrow.stdout and str(spec) in narrow.stdout, narrow.stdout
    removed = tuner("schedule", "remove", "nightly", cwd=tmp_path, storage=storage)
    assert "schedule nightly removed (its studies stay in the store)" in removed.stdout
    assert optuna.get_all_study_names(storage)  # the study of the run stays


@pytest.mark.parametrize("args, message", [
    (["--cron", "0 2 * * 8"], "error: --cron: field 5 (day of week) of '0 2 * * 8' is '8', which is not valid"),
    (["--cron", "0 2 * * *", "--timezone", "Mars/Olympus"], "error: --timezone: 'Mars/Olympus' is not a known IANA "
                                                            "timezone."),
    (["--cron", "0 2 * * *", "--overlap", "wait"], "error: --overlap: must be one of skip, queue, but got 'wait'."),
])
def test_a_bad_schedule_on_the_command_line_is_one_clear_error(tmp_path, args, message):
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    result = tuner("schedule", "add", "nightly", str(write_spec(tmp_path)), *args, cwd=tmp_path, storage=storage)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert Schedules(Store(storage)).all() == []


def test_run_now_is_refused_while_a_run_goes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    add_due(storage, write_spec(tmp_path, "slow", trials=4), "nightly")
    first = daemon(tmp_path, storage, "--once", "--interval", "1")
    try:
        book = Schedules(Store(storage))
        run = wait_for(lambda: next(iter(book.runs("nightly")), None), 60, "the run to start")
        result = tuner("schedule", "run-now", "nightly", cwd=tmp_path, storage=storage, timeout=60)
        assert result.returncode == 2
        assert (f"error: schedule 'nightly' has a run still running (run {run.id}, study {run.study}). Fix: wait "
                "for it to end") in result.stderr
    finally:
        first.communicate(timeout=300)


def test_the_daemon_waits_out_a_database_outage(postgres_server, postgres_url, tmp_path, caplog):
    import threading

    import psycopg

    from tuner.schedule import Scheduler

    add_due(postgres_url, write_spec(tmp_path), "nightly")
    started: list[int] = []

    class Held:
        pid = os.getpid()

        def poll(self):
            return None

        def interrupt(self):
            pass

        def tail(self):
            return ""

    scheduler = Scheduler(Store(postgres_url), interval=1,
                          launcher=lambda url, run_id, workdir: started.append(run_id) or Held())
    outage = threading.Thread(target=postgres_server.restart, args=(4.0,))
    outage.start()

    def down() -> bool:
        try:
            psycopg.connect(postgres_url.replace("+psycopg", ""), connect_timeout=2).close()
            return False
        except psycopg.OperationalError:
            return True

    wait_for(down, 30, "the server to go down")
    with caplog.at_level("WARNING", logger="tuner"):
        scheduler._tick_through_outages()  # no exception: the daemon lives on
    assert "did not answer" in caplog.text and "trying again in 1 s" in caplog.text
    assert postgres_server.password not in caplog.text
    outage.join()
    wait_for(lambda: not down(), 60, "the server to come back")
    scheduler._tick_through_outages()
    assert len(started) == 1 and [r.status for r in Schedules(Store(postgres_url)).runs()] == ["running"]


def test_two_daemons_racing_pass_for_pass_on_postgresql_claim_each_firing_once(postgres_url, tmp_path):
    """Two daemons tick at the same instants, hour after hour: every firing is recorded exactly once."""
    import threading
    from datetime import timedelta

    from tuner.schedule import Scheduler

    spec = write_spec(tmp_path)
    now = [datetime(2026, 12, 1, 0, 30, tzinfo=timezone.utc)]
    for i in range(4):
        Schedules(Store(postgres_url), clock=lambda: now[0]).add(f"hourly-{i}", spec, "0 * * * *",
                                                                  executor="inline")
    claimed: list[tuple[str, int]] = []

    class Done:
        pid = os.getpid()

        def poll(self):
            return 0

        def interrupt(self):
            pass

        def tail(self):
            return ""

    def launcher_of(who: str):
        def launch(url, run_id, workdir):
            claimed.append((who, run_id))
            Schedules(Store(url)).finish(run_id, "succeeded")
            return Done()
        return launch

    daemons = [Scheduler(Store(postgres_url), clock=lambda: now[0], launcher=launcher_of(w)) for w in "ab"]
    hours = 12
    for _ in range(hours):
        now[0] += timedelta(hours=1)
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=lambda d=d: (barrier.wait(), d.tick())) for d in daemons]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    runs = Schedules(Store(postgres_url)).runs()
    firings = collections.Counter((r.schedule_id, r.scheduled_for) for r in runs)
    print(f"\ntwo racing daemons, 4 hourly schedules x {hours} hours: {len(runs)} runs, claimed by "
          f"{dict(collections.Counter(w for w, _ in claimed))}")
    assert len(runs) == 4 * hours and set(firings.values()) == {1}
    assert sorted(run_id for _, run_id in claimed) == sorted(r.id for r in runs)  # each started once
    assert all(r.status == "succeeded" for r in runs)


def test_a_schedules_study_store_is_kept_without_its_password_and_runs_with_the_daemons(postgres_server,
                                                                                         postgres_url, tmp_path):
    spec = write_spec(tmp_path)
    daemon_store = f"sqlite:///{tmp_path / 'schedules.db'}"
    added = tuner("schedule", "add", "nightly", str(spec), "--cron", "0 2 * * *", "--executor", "inline",
                  "--study-storage", postgres_url, cwd=tmp_path, storage=daemon_store)
    assert added.returncode == 0, added.stderr
    (stored,) = Store(daemon_store).engine.connect().execute(sa.text("SELECT storage FROM tuner_schedules")).one()
    print(f"\nstored study storage: {stored}")
    assert make_url(stored).password is None
    assert make_url(stored).username == make_url(postgres_url).username and "tuner_" in stored
    # The daemon's own store is the same server and user: it supplies the password at run time.
    secret = tmp_path / "pg-password"
    secret.write_text(postgres_server.password)
    env = {**_env(daemon_store), "TUNER_STORAGE_PASSWORD_FILE": str(secret)}
    ran = subprocess.run([sys.executable, "-m", "tuner", "schedule", "run-now", "nightly"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "succeeded" in ran.stdout
    assert [n for n in optuna.get_all_study_names(postgres_url) if n.startswith("nightly-")]


def test_the_daemon_supplies_its_own_password_only_to_a_study_store_on_its_server_and_user():
    from tuner.schedule.secrets import study_storage, without_password

    daemon = "postgresql+psycopg://tuner:s%40cret@db:5432/schedules"
    stored = without_password("postgresql+psycopg://tuner:s%40cret@db:5432/studies")
    assert stored == "postgresql+psycopg://tuner@db:5432/studies"
    assert make_url(study_storage(stored, daemon)).password == "s@cret"
    assert make_url(study_storage("postgresql+psycopg://other@db:5432/studies", daemon)).password is None
    assert make_url(study_storage("postgresql+psycopg://tuner@elsewhere:5432/studies", daemon)).password is None
    assert study_storage(None, daemon) == daemon


def test_two_run_nows_in_one_minute_launch_two_studies(tmp_path):
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    spec = write_spec(tmp_path, trials=1)
    assert tuner("schedule", "add", "nightly", str(spec), "--cron", "0 2 * * *", "--executor", "inline",
                 cwd=tmp_path, storage=storage).returncode == 0
    first = tuner("schedule", "run-now", "nightly", cwd=tmp_path, storage=storage)
    second = tuner("schedule", "run-now", "nightly", cwd=tmp_path, storage=storage)
    assert first.returncode == 0 and second.returncode == 0, first.stdout + first.stderr + second.stdout + second.stderr
    studies = optuna.get_all_study_names(storage)
    print(f"\ntwo run-nows: studies {studies}")
    assert len(studies) == 2 and all(s.startswith("nightly-") for s in studies)
