"""Fault injection on PostgreSQL: orchestrators sharing a study, and the server restarted mid-study."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tuner.store import Store, internals
from tuner.store.lock import study_mutex

from tests.services import user_env

REPO = Path(__file__).resolve().parent.parent

GRID = (
    "name: shared\nworkload: tests.workloads:slow\nstrategy: grid\nparallel: 1\nepochs: 3\npruner: none\n"
    "fixed: {sleep: 0.15}\nparams:\n  x: {type: float, low: 0, high: 1, values: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]}\n"
    "  k: {type: categorical, choices: [a, b]}\n"
)


def tuner(cwd: Path, storage: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUNER_STORAGE": storage}
    return subprocess.Popen([sys.executable, "-m", "tuner", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(storage: str, study: str, complete: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            trials = optuna.load_study(study_name=study, storage=storage).trials
            if sum(t.state == TrialState.COMPLETE for t in trials) >= complete:
                return
        except KeyError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"fewer than {complete} COMPLETE trials after {timeout} s")


def advisory_waiters(store: Store) -> int:
    """How many sessions wait for an advisory lock of the store's database."""
    import sqlalchemy as sa

    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
                            ).scalar_one()


def test_two_orchestrators_share_a_grid_study_without_duplicates(postgres_url, tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text(GRID)
    # The schema first: the polling below opens Optuna's storage, whose creation of a new
    # schema would race the orchestrator's (optuna's RDBStorage does not retry that).
    Store(postgres_url).close()
    first = tuner(tmp_path, postgres_url, "launch", str(spec), "--executor", "inline", "--quiet")
    wait_for(postgres_url, "shared", 1)
    second = tuner(tmp_path, postgres_url, "resume", "shared", "--executor", "inline", "--quiet")
    for proc in (first, second):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    points = collections.Counter((t.params["x"], t.params["k"]) for t in complete)
    by = collections.Counter(t.user_attrs["orchestrator"] for t in complete)
    print(f"\ntwo orchestrators on one PostgreSQL study: {len(complete)} COMPLETE of 12 grid points, "
          f"split {sorted(by.values())}, duplicates {sum(c - 1 for c in points.values())}, total trials {len(trials)}")
    assert len(trials) == 12 and len(complete) == 12
    assert set(points.values()) == {1}
    assert len(by) == 2


def test_a_postgres_restart_mid_study_loses_nothing_and_leaves_nothing_running(postgres_server, postgres_url, tmp_path):
    spec = tmp_path / "long.yaml"
    spec.write_text(
        "name: long\nworkload: tests.workloads:slow\nstrategy: random\ntrials: 6\nparallel: 1\nepochs: 5\n"
        "pruner: none\nseed: 0\nfixed: {sleep: 0.2}\nparams:\n  x: {type: float, low: 0, high: 1}\n"
    )
    proc = tuner(tmp_path, postgres_url, "launch", str(spec), "--executor", "inline", "--quiet")
    wait_for(postgres_url, "long", 2)
    postgres_server.restart(down_seconds=3)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    trials = optuna.load_study(study_name="long", storage=postgres_url).trials
    states = collections.Counter(t.state.name for t in trials)
    import tuner as api

    epochs = api.load("long", storage=postgres_url).epochs()
    print(f"\nPostgreSQL restarted mid-study: {states['COMPLETE']} COMPLETE of 6, RUNNING left {states['RUNNING']}, "
          f"epochs recorded {len(epochs)} of 30")
    reasons = {t.number: t.user_attrs.get("fail_reason") for t in trials if t.state.name == "FAIL"}
    assert states == {"COMPLETE": 6}, reasons
    assert len(epochs) == 30
    assert "is unreachable" in err and "retrying" in err
    assert "Traceback" not in err
    assert postgres_server.password not in err


def test_resume_within_the_heartbeat_grace_after_a_kill_finishes_the_budget_exactly(postgres_url, tmp_path):
    """kill -9 of the orchestrator, resumed at once: its trial still has a fresh heartbeat."""
    import shutil
    import signal

    (tmp_path / "work.py").write_text(
        "import time\n\ndef curve(params, report):\n    for epoch in range(1, params['epochs'] + 1):\n"
        "        time.sleep(0.3)\n        report(epoch, val_loss=(params['x'] - 0.3) ** 2 + 1.0 / epoch)\n"
    )
    (tmp_path / "k.yaml").write_text(
        "name: killed\nworkload: work:curve\nstrategy: random\ntrials: 5\nparallel: 1\nepochs: 4\npruner: none\n"
        "seed: 0\nparams:\n  x: {type: float, low: 0, high: 1}\n"
    )
    Store(postgres_url).close()
    env = user_env(TUNER_STORAGE=postgres_url)
    script = shutil.which("tuner")
    first = subprocess.Popen([script, "launch", "k.yaml", "--executor", "inline", "--quiet"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(postgres_url, "killed", 2)
    time.sleep(0.5)  # into the next trial
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    left = [t.number for t in optuna.load_study(study_name="killed", storage=postgres_url).trials
            if t.state == TrialState.RUNNING]
    resumed = subprocess.run([script, "resume", "killed", "--executor", "inline"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    trials = optuna.load_study(study_name="killed", storage=postgres_url).trials
    states = collections.Counter(t.state.name for t in trials)
    print(f"\nkill -9 then resume within the heartbeat grace: RUNNING at kill {left}; after resume "
          f"{dict(states)}, exit {resumed.returncode}")
    assert left, "the kill came between trials"
    assert resumed.returncode == 0, resumed.stderr
    assert states["COMPLETE"] == 5 and states["RUNNING"] == 0
    assert "RUNNING elsewhere" in resumed.stderr
    rerun = {t.user_attrs.get("retry_of"): t.params for t in trials if "retry_of" in t.user_attrs}
    assert all(rerun[n] == trials[n].params for n in left)


def test_concurrent_writes_of_one_trials_attribute_never_collide(postgres_url, tally):
    """Two orchestrators' checkpoint retention rewrites the same trial's attributes at the same moment."""
    import threading

    stores = [Store(postgres_url) for _ in range(2)]
    study = stores[0].create_study("attrs", "minimize")
    trial_id = internals.trial_id(study.ask())
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def rewrite(store: Store, who: int) -> None:
        start.wait()
        try:
            for i in range(150):
                store.set_trial_attrs(trial_id, {"checkpoint": {"by": who, "i": i}, "best_checkpoint": i})
        except BaseException as exc:  # noqa: BLE001 - the test reports what it was
            errors.append(exc)

    threads = [threading.Thread(target=rewrite, args=(store, who)) for who, store in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    attrs = stores[0].storage.get_trial(trial_id).user_attrs
    for store in stores:
        store.close()
    assert not errors, errors[0]
    assert attrs["checkpoint"]["i"] == 149 and attrs["best_checkpoint"] == 149
    tally("fault")


def test_orchestrators_resumed_at_once_finish_the_budget_without_crash_or_repeat(postgres_url, tmp_path, tally):
    """`tuner resume STUDY` twice at once (the multi-orchestrator setup): random search, checkpoints kept."""
    import shutil

    (tmp_path / "work.py").write_text(
        "import time\n\ndef curve(params, report):\n    for epoch in range(1, params['epochs'] + 1):\n"
        "        time.sleep(0.1)\n"
        "        report(epoch, val_loss=(params['x'] - 0.3) ** 2 + 1.0 / epoch, checkpoint=b'x' * 64)\n"
    )
    (tmp_path / "r.yaml").write_text(
        "name: pair\nworkload: work:curve\nstrategy: random\ntrials: 1\nparallel: 1\nepochs: 2\npruner: none\n"
        "seed: 0\ncheckpoints: {keep: 1}\nparams:\n  x: {type: float, low: 0, high: 1}\n"
    )
    Store(postgres_url).close()
    env = user_env(TUNER_STORAGE=postgres_url)
    script = shutil.which("tuner")
    first = subprocess.run([script, "launch", "r.yaml", "--executor", "inline", "--quiet"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    # Both start at the same moment: each has loaded the study (and made its sampler) before either asks,
    # held at the study's mutex (which its recovery of stale trials takes) until both wait there.
    store = Store(postgres_url)
    with study_mutex(store.engine, internals.study_id(store.load_study("pair"))):
        both = [subprocess.Popen([script, "resume", "pair", "--trials", "14", "--executor", "inline", "--quiet"],
                                 cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
        deadline = time.monotonic() + 120
        while advisory_waiters(store) < 2:
            assert time.monotonic() < deadline and all(p.poll() is None for p in both), "the two never met"
            time.sleep(0.1)
    store.close()
    ends = [proc.communicate(timeout=300) for proc in both]
    trials = optuna.load_study(study_name="pair", storage=postgres_url).trials
    states = collections.Counter(t.state.name for t in trials)
    drawn = collections.Counter(t.params["x"] for t in trials if t.state == TrialState.COMPLETE)
    by = collections.Counter(t.user_attrs.get("orchestrator") for t in trials if t.number > 0)
    print(f"\ntwo `tuner resume` at once on PostgreSQL: exits {[p.returncode for p in both]}, {dict(states)}, "
          f"split {sorted(by.values())}, repeated configurations {sum(c - 1 for c in drawn.values())}")
    for proc, (_, err) in zip(both, ends):
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    assert states == {"COMPLETE": 14}
    assert set(drawn.values()) == {1}
    assert len(by) == 2  # both ran trials: the two really shared the study
    kept = [t for t in trials if not t.user_attrs["checkpoint"].get("removed")]
    assert len(kept) == 1  # retention by both still keeps exactly the best one
    tally("fault")


def test_a_trial_left_running_before_its_first_heartbeat_is_recovered_on_postgres(postgres_url, monkeypatch, tally):
    """Its orchestrator stopped between asking it and beating for it (gave up on an outage, kill -9)."""
    from tuner import recovery
    from tuner.executors import make_executor
    from tuner.orchestrator import Orchestrator
    from tuner.spec import load_spec

    spec = load_spec({"name": "unbeaten", "workload": "tests.workloads:quadratic", "strategy": "random",
                      "trials": 2, "pruner": "none", "params": {"x": {"type": "float", "low": 0, "high": 1}}})
    store = Store(postgres_url)
    study = store.create_study("unbeaten", spec.direction)
    orphan = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # RUNNING, no heartbeat ever
    monkeypatch.setattr(recovery, "HEARTBEAT_GRACE", 1)
    resumed = Orchestrator(spec, store, study, make_executor("inline"))
    deadline = time.monotonic() + 20
    while orphan.number in [t.number for t in study.get_trials(states=(TrialState.RUNNING,))]:
        assert time.monotonic() < deadline, "the trial that never had a heartbeat stays RUNNING"
        resumed.recover(every_running=False)  # as a resume on PostgreSQL does while it waits
        time.sleep(0.5)
    (trial,) = study.get_trials()[:1]
    store.close()
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_kind"] == "interrupted"
    tally("fault")
