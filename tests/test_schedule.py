"""Schedules driven by a controllable clock: firing times, catch-up, overlap, warm start, bad input.

Runs execute for real (the run module launches a real study on a real SQLite
file, inline executor) in this process, so the test's clock alone moves time.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner.errors import TunerError
from tuner.schedule import Scheduler, Schedules
from tuner.schedule.run import execute
from tuner.store import Store

SPEC = """\
name: q
workload: tests.workloads:quadratic
strategy: random
trials: 4
epochs: 2
seed: {seed}
pruner: none
params:
  x: {{type: float, low: -5, high: 5}}
"""
T0 = datetime(2026, 12, 1, 0, 0, tzinfo=timezone.utc)


class Clock:
    """The time a test says it is."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, when: datetime) -> Clock:
        self.now = when
        return self


class Finished:
    """A run that went to its end in this process."""

    def __init__(self, code: int) -> None:
        self.pid, self.code = os.getpid(), code

    def poll(self) -> int:
        return self.code

    def interrupt(self) -> None:
        pass

    def tail(self) -> str:
        return ""


class Held:
    """A run that stays running until the test lets it end."""

    def __init__(self) -> None:
        self.pid, self.code = os.getpid(), None

    def poll(self) -> int | None:
        return self.code

    def interrupt(self) -> None:
        self.code = 130

    def tail(self) -> str:
        return "held"


@pytest.fixture
def env(tmp_path: Path):
    clock = Clock(T0)
    store = Store(f"sqlite:///{tmp_path / 'tuner.db'}")
    spec = tmp_path / "q.yaml"
    spec.write_text(SPEC.format(seed=1))

    def inline(url: str, run_id: int, workdir: str | None) -> Finished:
        return Finished(execute(Schedules(Store(url), clock), run_id))

    book = Schedules(store, clock)
    daemon = Scheduler(store, clock, launcher=inline)
    return clock, book, daemon, spec, store


def add(book: Schedules, spec: Path, name: str = "nightly", **kw) -> None:
    kw.setdefault("executor", "inline")
    book.add(name, spec, kw.pop("cron", "0 2 * * *"), **kw)


def statuses(book: Schedules, name: str = "nightly") -> list[tuple[str, str]]:
    return [(r.study, r.status) for r in reversed(book.runs(name))]


def test_fires_at_the_cron_time_in_its_timezone_once(env):
    clock, book, daemon, spec, _ = env
    add(book, spec, timezone="Europe/Berlin")
    # 02:00 in Berlin is 01:00 UTC in winter.
    assert book.get("nightly").next_fire_at == datetime(2026, 12, 1, 1, 0)
    clock.at(T0 + timedelta(minutes=59))
    daemon.tick()
    assert book.runs("nightly") == []
    clock.at(T0 + timedelta(hours=1, seconds=5))
    daemon.tick()
    daemon.tick()  # a second pass at the same time fires nothing more
    clock.at(T0 + timedelta(hours=1, minutes=30))
    daemon.tick()
    assert statuses(book) == [("nightly-20261201T0100Z", "succeeded")]
    (run,) = book.runs("nightly")
    assert run.trigger == "cron" and run.trials == 4 and run.best_value is not None and run.change is None
    assert book.get("nightly").next_fire_at == datetime(2026, 12, 2, 1, 0)


def test_summer_time_moves_the_utc_firing_not_the_local_one(env):
    clock, book, daemon, spec, _ = env
    clock.at(datetime(2027, 3, 27, 12, 0, tzinfo=timezone.utc))
    add(book, spec, timezone="Europe/Berlin")
    assert book.get("nightly").next_fire_at == datetime(2027, 3, 28, 1, 0)  # 02:00 CET: the clocks jump then
    clock.at(datetime(2027, 3, 28, 1, 0, 1, tzinfo=timezone.utc))
    daemon.tick()
    assert book.get("nightly").next_fire_at == datetime(2027, 3, 29, 0, 0)  # 02:00 CEST


def test_a_local_time_that_comes_twice_when_the_clocks_fall_back_fires_once():
    from tuner.schedule.timing import next_after

    first = next_after("0 2 * * *", "Europe/Berlin", datetime(2027, 10, 30, 12, 0))
    assert first == datetime(2027, 10, 31, 0, 0)  # 02:00 CEST
    assert next_after("0 2 * * *", "Europe/Berlin", first) == datetime(2027, 11, 1, 1, 0)  # not 02:00 CET again


def test_the_next_run_is_warm_started_and_records_its_change(env):
    clock, book, daemon, spec, store = env
    add(book, spec, warm_start=2)
    clock.at(T0 + timedelta(hours=2, seconds=1))
    daemon.tick()
    spec.write_text(SPEC.format(seed=2))  # tonight's data: another seed
    clock.at(T0 + timedelta(days=1, hours=2, seconds=1))
    daemon.tick()
    first, second = reversed(book.runs("nightly"))
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert first.warm_started == 0 and second.warm_started == 2
    old = optuna.load_study(study_name=first.study, storage=store.url)
    new = optuna.load_study(study_name=second.study, storage=store.url)
    best_two = sorted(old.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)[:2]
    seeded = [t for t in new.trials if t.user_attrs.get("warm_start")]
    assert [t.params for t in seeded] == [t.params for t in best_two]
    assert [t.number for t in seeded] == [0, 1]  # they run first
    assert len(new.trials) == 4  # and count toward the budget
    assert second.change == pytest.approx(second.best_value - first.best_value)
    assert second.previous_run_id == first.id
    assert second.best_value <= first.best_value  # the old best was tried again


def test_after_downtime_catch_up_once_runs_the_missed_firings_once(env):
    clock, book, daemon, spec, _ = env
    add(book, spec)
    clock.at(T0 + timedelta(days=3, hours=2, minutes=30))  # down since before the first firing
    daemon.tick()
    (run,) = book.runs("nightly")
    assert (run.status, run.trigger) == ("succeeded", "catch-up")
    assert run.reason == "4 missed firing(s) run once (catch_up: once)"
    assert run.study == "nightly-20261204T0200Z"
    assert book.get("nightly").next_fire_at == datetime(2026, 12, 5, 2, 0)


def test_after_downtime_catch_up_skip_records_the_miss_and_runs_nothing(env):
    clock, book, daemon, spec, store = env
    add(book, spec, catch_up="skip")
    clock.at(T0 + timedelta(days=1, hours=3))
    daemon.tick()
    (run,) = book.runs("nightly")
    assert run.status == "skipped"
    assert run.reason == ("missed 2 firing(s) while no scheduler ran, the last at 2026-12-02 02:00 UTC; "
                          "catch_up: skip")
    assert not store.has_study(run.study)
    clock.at(T0 + timedelta(days=2, hours=2, seconds=3))  # on time again: it runs
    daemon.tick()
    assert statuses(book)[-1] == ("nightly-20261203T0200Z", "succeeded")


def held_daemon(env):
    clock, book, _, spec, store = env
    held: list[Held] = []

    def launcher(url, run_id, workdir):
        held.append(Held())
        return held[-1]

    return Scheduler(store, clock, launcher=launcher), held


@pytest.mark.parametrize("overlap", ["skip", "queue"])
def test_a_firing_while_the_last_run_goes_is_skipped_or_queued(env, overlap):
    clock, book, _, spec, _ = env
    daemon, held = held_daemon(env)
    add(book, spec, cron="0 * * * *", overlap=overlap)
    clock.at(T0 + timedelta(hours=1, seconds=1))
    daemon.tick()
    clock.at(T0 + timedelta(hours=2, seconds=1))
    daemon.tick()
    first, second = reversed(book.runs("nightly"))
    assert first.status == "running"
    if overlap == "skip":
        assert second.status == "skipped"
        assert second.reason == f"run {first.id} (nightly-20261201T0100Z) was still running; overlap: skip"
        return
    assert second.status == "queued"
    assert second.reason == f"waits for run {first.id} (nightly-20261201T0100Z); overlap: queue"
    assert len(held) == 1
    book.finish(first.id, "succeeded")
    held[0].code = 0
    daemon.tick()
    assert len(held) == 2  # the queued run started once the first ended
    assert book.run(second.id)[0].status == "running"


def test_a_spec_that_no_longer_validates_fails_its_run_and_the_schedule_goes_on(env):
    clock, book, daemon, spec, _ = env
    add(book, spec)
    spec.write_text(SPEC.format(seed=1).replace("low: -5", "low: 9"))
    clock.at(T0 + timedelta(hours=2, seconds=1))
    daemon.tick()
    (run,) = book.runs("nightly")
    assert run.status == "failed"
    assert f"{spec}: params.x: `low <= high` must hold, but got low=9.0, high=5.0" in run.reason
    spec.write_text(SPEC.format(seed=1))
    clock.at(T0 + timedelta(days=1, hours=2, seconds=1))
    daemon.tick()
    assert [s for _, s in statuses(book)] == ["failed", "succeeded"]


def test_a_run_whose_study_completed_no_trial_is_failed_with_the_reason(env):
    clock, book, daemon, spec, _ = env
    spec.write_text(SPEC.format(seed=1) + "timeout: 1.0e-9\n")  # no trial starts before it passes
    add(book, spec)
    clock.at(T0 + timedelta(hours=2, seconds=1))
    daemon.tick()
    (run,) = book.runs("nightly")
    assert (run.status, run.trials, run.best_value) == ("failed", 0, None)
    assert run.reason.startswith("no trial completed: no trial ran before its timeout (1e-09 s) passed.")


def test_an_unreachable_cluster_fails_the_run_and_the_next_firing_tries_again(env, monkeypatch):
    clock, book, _, spec, store = env
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # where tests.workloads imports from
    add(book, spec, executor="ray", ray_address=f"127.0.0.1:{port}")
    # The run in its own process, as the daemon runs it: a Ray this test process may hold plays no part.
    daemon = Scheduler(store, clock)
    clock.at(T0 + timedelta(hours=2, seconds=1))
    daemon.tick()
    while daemon.children:
        time.sleep(0.2)
        daemon._watch()
    (run,) = book.runs("nightly")
    assert run.status == "failed"
    assert run.reason.startswith(f"cannot start or reach the Ray cluster at '127.0.0.1:{port}'")
    assert book.get("nightly").next_fire_at == datetime(2026, 12, 2, 2, 0)


def test_the_snapshot_runs_when_the_spec_file_is_gone(env):
    clock, book, daemon, spec, _ = env
    add(book, spec)
    spec.unlink()
    clock.at(T0 + timedelta(hours=2, seconds=1))
    daemon.tick()
    assert statuses(book) == [("nightly-20261201T0200Z", "succeeded")]


def test_a_paused_schedule_does_not_fire_and_resumes_from_now(env):
    clock, book, daemon, spec, _ = env
    add(book, spec)
    book.set_enabled("nightly", False)
    clock.at(T0 + timedelta(days=2, hours=3))
    daemon.tick()
    assert book.runs("nightly") == []
    book.set_enabled("nightly", True)
    assert book.get("nightly").next_fire_at == datetime(2026, 12, 4, 2, 0)  # not the paused days


def test_a_run_whose_daemon_died_is_marked_interrupted_and_resumed_or_reported(env):
    clock, book, daemon, spec, store = env
    add(book, spec, name="resumes")
    add(book, spec, name="reports", on_interrupt="report")
    dead, held = held_daemon(env)
    clock.at(T0 + timedelta(hours=2, seconds=1))
    dead.tick()
    assert len(held) == 2
    dead.children.clear()  # the daemon is gone; its runs' records still say running
    clock.at(T0 + timedelta(hours=2, minutes=10))  # its heartbeat is past the grace
    daemon.tick()
    resumes = list(reversed(book.runs("resumes")))
    assert [(r.attempt, r.status, r.trigger) for r in resumes] == [(1, "interrupted", "cron"),
                                                                  (2, "succeeded", "resume")]
    assert resumes[0].reason == "the scheduler that ran it stopped (killed, or its machine went down)"
    assert resumes[1].study == resumes[0].study
    assert len(optuna.load_study(study_name=resumes[1].study, storage=store.url).trials) == 4
    (reported,) = book.runs("reports")
    assert reported.status == "interrupted" and reported.handled


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize("cron, message", [
    ("0 25 * * *", "--cron: field 2 (hour) of '0 25 * * *' is '25', which is not valid: the hour takes 0-23"),
    ("61 2 * * *", "--cron: field 1 (minute) of '61 2 * * *' is '61', which is not valid: the minute takes 0-59"),
    ("0 2 * * funday", "field 5 (day of week) of '0 2 * * funday' is 'funday', which is not valid: the day of "
                       "week takes 0-6 or sun-sat"),
    ("0 2 * *", "--cron: a cron expression has 5 fields (minute hour day-of-month month day-of-week), but "
                "'0 2 * *' has 4. Fix: e.g. --cron \"0 2 * * *\""),
    ("0 2 30 2 *", "--cron: '0 2 30 2 *' never fires"),
])
def test_a_bad_cron_expression_names_the_field(env, cron, message):
    _, book, _, spec, _ = env
    with pytest.raises(TunerError, match=_literal(message)):
        book.add("bad", spec, cron)
    assert book.all() == []


def test_bad_schedule_options_are_refused_before_anything_is_written(env, tmp_path):
    _, book, _, spec, _ = env
    cases = [
        (dict(timezone="Europe/Berln"), "--timezone: 'Europe/Berln' is not a known IANA timezone. Did you mean "
                                        "Europe/Berlin"),
        (dict(overlap="wait"), "--overlap: must be one of skip, queue, but got 'wait'. Fix: e.g. --overlap skip."),
        (dict(catch_up="all"), "--catch-up: must be one of once, skip, but got 'all'."),
        (dict(warm_start=-1), "--warm-start: the number of best configurations to carry over must be a whole "
                              "number >= 0, but got -1."),
        (dict(storage="sqlite://"), "storage URL 'sqlite://' has no file"),
    ]
    for options, message in cases:
        with pytest.raises(TunerError, match=_literal(message)):
            book.add("bad", spec, "0 2 * * *", **options)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: b\nstratgy: tpe\nparams:\n  x: {type: float, low: 0, high: 1}\n")
    with pytest.raises(TunerError, match="unknown key 'stratgy'. Did you mean 'strategy'"):
        book.add("bad", broken, "0 2 * * *")
    with pytest.raises(TunerError, match="schedule name: must start with a letter or digit"):
        book.add("no spaces", spec, "0 2 * * *")
    assert book.all() == []


def test_a_duplicate_name_is_refused(env):
    _, book, _, spec, _ = env
    add(book, spec)
    with pytest.raises(TunerError, match=r"schedule 'nightly' already exists in sqlite:///.*\. Fix: choose another "
                                         r"name, or `tuner schedule remove nightly` first to replace it."):
        add(book, spec)


def test_an_unknown_schedule_lists_the_known_ones(env):
    _, book, _, spec, _ = env
    add(book, spec)
    with pytest.raises(TunerError, match=r"no schedule named 'nighty' in .*Schedules there: nightly\."):
        book.set_enabled("nighty", False)


def _literal(text: str) -> str:
    import re

    return re.escape(text)


def test_warm_start_keeps_only_the_configurations_that_fit_the_space_now():
    from tuner.spec import load_spec
    from tuner.strategies import fits

    spec = load_spec({"name": "s", "workload": "tests.workloads:quadratic", "params": {
        "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
        "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
        "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"opt": "sgd"}},
        "depth": {"type": "int", "low": 1, "high": 4},
    }})
    assert fits(spec, {"lr": 0.01, "opt": "sgd", "momentum": 0.9, "depth": 2})
    assert fits(spec, {"lr": 0.01, "opt": "adam", "depth": 4})
    assert not fits(spec, {"lr": 0.5, "opt": "adam", "depth": 2})  # the range shrank
    assert not fits(spec, {"lr": 0.01, "opt": "rmsprop", "depth": 2})  # a choice was dropped
    assert not fits(spec, {"lr": 0.01, "opt": "adam", "momentum": 0.9, "depth": 2})  # momentum is unused now
    assert not fits(spec, {"lr": 0.01, "opt": "sgd", "depth": 2})  # a param was added
    assert not fits(spec, {"lr": 0.01, "opt": "adam", "depth": 2.5})


def test_on_postgresql_an_interrupted_run_is_resumed_once_its_trials_heartbeats_have_aged(postgres_url, tmp_path):
    clock = Clock(T0)
    store = Store(postgres_url)
    spec = tmp_path / "q.yaml"
    spec.write_text(SPEC.format(seed=1))
    book = Schedules(store, clock)
    add(book, spec)
    dead, held = held_daemon((clock, book, None, spec, store))
    clock.at(T0 + timedelta(hours=2, seconds=1))
    dead.tick()
    dead.children.clear()
    daemon = Scheduler(store, clock, launcher=lambda url, run_id, workdir: Finished(
        execute(Schedules(Store(url), clock), run_id)))
    clock.at(T0 + timedelta(hours=2, minutes=10))
    daemon.tick()  # marked interrupted now; its trials may look alive for the orchestrator's grace
    assert [(r.attempt, r.status) for r in reversed(book.runs("nightly"))] == [(1, "interrupted")]
    clock.at(T0 + timedelta(hours=2, minutes=11))
    daemon.tick()
    assert [(r.attempt, r.status) for r in reversed(book.runs("nightly"))] == [(1, "interrupted"), (2, "succeeded")]
