"""What Ray workers can see, and how a study stops on SIGTERM: through the installed `tuner` script."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tests.services import user_env

TUNER = shutil.which("tuner")

WORKLOAD = '''
import time
from pathlib import Path


SECRETS = {"TUNER_STORAGE", "TUNER_STORAGE_PASSWORD_FILE", "OPTUNA_STORAGE", "PGPASSWORD", "PGPASSFILE",
           "PGSERVICEFILE", "PGSERVICE", "PGSSLKEY", "MYSQL_PWD"}


def probe(params, report):
    """Fails, naming them, when the worker's own environment (as the kernel holds it) holds a database secret."""
    environ = Path("/proc/self/environ").read_bytes().split(b"\\0")
    names = {item.split(b"=", 1)[0].decode() for item in environ if item}
    if names & SECRETS:
        raise ValueError(f"the worker sees {sorted(names & SECRETS)}")
    report(1, val_loss=0.0)


def slow(params, report):
    for epoch in range(1, params["epochs"] + 1):
        time.sleep(0.3)
        report(epoch, val_loss=params["x"] + 1.0 / epoch)
'''


def setup(tmp_path: Path, spec: str) -> dict[str, str]:
    assert TUNER is not None, "the `tuner` console script is not installed: pip install -e ."
    (tmp_path / "work.py").write_text(WORKLOAD)
    (tmp_path / "s.yaml").write_text(spec)
    secret = tmp_path / "password"
    secret.write_text("not-used-by-sqlite")
    return user_env(TUNER_STORAGE=f"sqlite:///{tmp_path / 'tuner.db'}", TUNER_STORAGE_PASSWORD_FILE=str(secret),
                    OPTUNA_STORAGE=f"sqlite:///{tmp_path / 'tuner.db'}")


def test_ray_workers_never_see_the_study_stores_url_or_password(tmp_path, tally):
    env = setup(tmp_path, "name: p\nworkload: work:probe\nstrategy: random\ntrials: 2\nparallel: 2\nepochs: 1\n"
                          "pruner: none\nmax_failed_trials: 2\nparams:\n  x: {type: float, low: 0, high: 1}\n")
    # libpq's and MySQL's own password variables too, as a user's shell may hold them for psql or mysql.
    (tmp_path / "pgpass").write_text("*:*:*:*:secret\n")
    env.update(PGPASSWORD="secret", PGPASSFILE=str(tmp_path / "pgpass"), PGSERVICEFILE=str(tmp_path / "pgservice"),
               PGSERVICE="tuner", PGSSLKEY=str(tmp_path / "client.key"), MYSQL_PWD="secret")
    result = subprocess.run([TUNER, "launch", "s.yaml", "--quiet"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    trials = optuna.load_study(study_name="p", storage=env["TUNER_STORAGE"]).trials
    print(f"\ndatabase secrets seen by Ray workers: {[t.user_attrs.get('fail_reason', 'none') for t in trials]}")
    assert [t.user_attrs.get("fail_reason") for t in trials] == [None, None]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert result.returncode == 0, result.stderr
    tally("hostile input")


def test_sigterm_stops_the_study_quietly_with_nothing_left_running(tmp_path):
    env = setup(tmp_path, "name: t\nworkload: work:slow\nstrategy: random\ntrials: 6\nparallel: 2\nepochs: 8\n"
                          "pruner: none\nparams:\n  x: {type: float, low: 0, high: 1}\n")
    proc = subprocess.Popen([TUNER, "launch", "s.yaml", "--quiet"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            study = optuna.load_study(study_name="t", storage=env["TUNER_STORAGE"])
            if any(t.state == TrialState.RUNNING and t.intermediate_values for t in study.trials):
                break
        except Exception:  # not created yet
            pass
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    states = collections.Counter(t.state.name for t in optuna.load_study(study_name="t",
                                                                         storage=env["TUNER_STORAGE"]).trials)
    print(f"\nSIGTERM mid-study: exit {proc.returncode}, states {dict(states)}, stderr {err.strip()!r}")
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1] == (
        "stopped by SIGTERM: running trials were marked FAIL; `tuner resume` continues the study.")
    assert "Traceback" not in err and "SIGTERM received" not in err and len(err.strip().splitlines()) == 1
    assert states["RUNNING"] == 0 and states["FAIL"] >= 1
    reasons = {t.user_attrs.get("fail_reason") for t in optuna.load_study(
        study_name="t", storage=env["TUNER_STORAGE"]).trials if t.state == TrialState.FAIL}
    assert reasons == {"stopped by SIGTERM"}


def holders(folder: Path) -> list[int]:
    """The processes with a file open under ``folder``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if any(os.readlink(fd).startswith(f"{folder}/") for fd in (proc / "fd").iterdir()):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_local_rays_session_files_go_with_it_and_a_kill_9s_are_swept_by_the_next_start(tmp_path):
    import tempfile

    spec = ("name: r{}\nworkload: work:slow\nstrategy: random\ntrials: 4\nparallel: 1\nepochs: 20\n"
            "pruner: none\nparams:\n  x: {{type: float, low: 0, high: 1}}\n")
    env = setup(tmp_path, spec.format(0))
    for attempt in range(3):  # a kill whose Ray processes all exit on their own in time tests no sweep: kill again
        (tmp_path / "s.yaml").write_text(spec.format(attempt))
        proc = subprocess.Popen([TUNER, "launch", "s.yaml", "--quiet"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        folder = Path(tempfile.gettempdir(), f"tuner-ray-{proc.pid}-?")
        while time.monotonic() < deadline and not holders(folder):  # its Ray is up
            time.sleep(0.3)
            folder = next(Path(tempfile.gettempdir()).glob(f"tuner-ray-{proc.pid}-*"), folder)
        assert list(folder.glob("*/session_*")), "the local Ray kept its session files elsewhere"
        time.sleep(3)  # its agents are up too
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        left = sum(1 for _ in folder.rglob("*"))
        assert folder.exists()
        time.sleep(2)
        survivors = holders(folder)
        if survivors:
            break

    (tmp_path / "s.yaml").write_text("name: r2\nworkload: work:slow\nstrategy: random\ntrials: 1\nepochs: 1\n"
                                     "pruner: none\nparams:\n  x: {type: float, low: 0, high: 1}\n")
    second = subprocess.run([TUNER, "launch", "s.yaml", "--quiet"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    print(f"\nkill -9 left {left} Ray session files and folders and {len(survivors)} Ray processes; after the "
          f"next launch: {'gone' if not folder.exists() else 'still there'}, {len(holders(folder))} processes")
    assert second.returncode == 0, second.stderr
    assert not folder.exists()
    assert survivors, "nothing outlived the kill -9: the sweep is not tested"
    assert holders(folder) == []
    for other in Path(tempfile.gettempdir()).glob("tuner-ray-*"):  # only live orchestrators' remain
        os.kill(int(other.name.removeprefix("tuner-ray-").partition("-")[0]), 0)
