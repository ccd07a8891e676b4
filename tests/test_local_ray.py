"""A local Ray that tuner starts keeps to itself: reachable from this machine alone, its session files in a
folder it made, its messages in its own log files. One launch through the installed `tuner` script, looked at
from outside while a trial holds it open."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from tests.conftest import _missing
from tests.services import user_env

TUNER = shutil.which("tuner")

WORKLOAD = '''
import os
import signal
import time
from pathlib import Path


def hold(params, report):
    """x=1: the worker dies, which Ray's raylet reports. x=0: waits while the test looks at the running Ray."""
    if params["x"] == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    Path({ready!r}).touch()
    deadline = time.monotonic() + 120
    while not Path({go!r}).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    report(1, val_loss=0.0)
'''
# What Ray prints when it prints: its raylet's messages, a worker's prefix, its dedup note, its log lines.
RAY_LINE = re.compile(r"raylet|\(pid=|ray::|Worker ID|Ray deduplicates|\[repeated \d+x|RAY_"
                      r"|^\[?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+[DIWEF]", re.IGNORECASE)


def own_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (read from its interfaces; nothing is sent)."""
    return sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                   if a.family == socket.AF_INET and not a.address.startswith("127.")})


def answer(host: str, port: int) -> str | None:
    """What a request from this machine's own address to host:port gets: None when nothing accepts it."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return None
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=3) as response:
            return f"HTTP {response.status}: {response.read(60)!r}"
    except Exception as exc:  # a gRPC port, or an HTTP server that wants a token: still reachable
        return f"accepted, then {type(exc).__name__}"


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """A study of two trials on tuner's own local Ray; one holds it while the test looks, one's worker dies."""
    assert TUNER is not None, "the `tuner` console script is not installed: pip install -e ."
    addresses = own_addresses()
    if not addresses:
        _missing("this machine has no address other than loopback to reach a local Ray from")
    cwd = tmp_path_factory.mktemp("local-ray")
    ready, go = cwd / "ready", cwd / "go"
    (cwd / "work.py").write_text(WORKLOAD.format(ready=str(ready), go=str(go)))
    (cwd / "s.yaml").write_text("name: l\nworkload: work:hold\nstrategy: grid\ntrials: 2\nparallel: 2\nepochs: 1\n"
                                "pruner: none\nretries: 0\nparams:\n  x: {type: categorical, choices: [0, 1]}\n")
    victim = cwd / "victim"
    victim.mkdir()
    env = user_env(TUNER_STORAGE=f"sqlite:///{cwd / 'tuner.db'}")
    proc = subprocess.Popen([TUNER, "launch", "s.yaml"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # Another user's link, in place before tuner starts, under the name tuner used for its Ray's folder.
    link = Path(tempfile.gettempdir(), f"tuner-ray-{proc.pid}")
    link.symlink_to(victim)
    seen: dict = {"addresses": addresses, "pid": proc.pid}
    try:
        deadline = time.monotonic() + 180
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), f"no trial started: {proc.poll()=}"
        time.sleep(3)  # Ray's agents and metrics servers are up by the time a worker runs: give them their time
        processes = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        seen["listening"] = sorted({(p.name(), c.laddr.ip, c.laddr.port) for p in processes
                                    for c in _connections(p) if c.status == psutil.CONN_LISTEN})
        # A port where another process of this machine (another Ray) listens beyond loopback answers for it.
        ours = {p.pid for p in processes}
        theirs = {c.laddr.port for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
                  and c.pid not in ours and not c.laddr.ip.startswith(("127.", "::ffff:127.", "::1"))}
        seen["answers"] = {(name, port, host): answer(host, port) for name, _, port in seen["listening"]
                           for host in addresses if port not in theirs}
        # The folders in the temp folder that Ray's processes hold files open in (other than the launch
        # directory's, with the study's database): how each looks from outside.
        temp = Path(tempfile.gettempdir())
        roots = {temp / Path(f.path).relative_to(temp).parts[0] for p in processes for f in _open_files(p)
                 if Path(f.path).is_relative_to(temp)}
        roots = {root for root in roots if not cwd.is_relative_to(root)}
        seen["folders"] = {root: (root.is_symlink(), root.is_dir(), root.lstat().st_uid, root.lstat().st_mode & 0o777)
                           for root in roots}
        seen["victim"] = sorted(p.name for p in victim.iterdir())
        go.touch()
        out, err = proc.communicate(timeout=120)
    finally:
        go.touch()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        link.unlink()
    trials = optuna.load_study(study_name="l", storage=env["TUNER_STORAGE"]).trials
    return seen, proc.returncode, out, err, trials


def _connections(process: psutil.Process) -> list:
    try:
        return process.net_connections(kind="inet")
    except psutil.Error:  # gone meanwhile
        return []


def _open_files(process: psutil.Process) -> list:
    try:
        return process.open_files()
    except psutil.Error:
        return []


def test_a_local_rays_servers_listen_on_loopback_and_nothing_answers_from_the_network(launched, tally):
    seen, code, _, err, _ = launched
    reached = {key: got for key, got in seen["answers"].items() if got is not None}
    print(f"\nlocal Ray: {len(seen['listening'])} listening sockets on "
          f"{sorted({ip for _, ip, _ in seen['listening']})}; from {seen['addresses']}: {len(reached)} answered "
          f"{reached}")
    assert code == 0, err
    assert len(seen["listening"]) >= 5, f"the look saw no Ray (GCS, raylet, workers, agents): {seen['listening']}"
    assert {ip for _, ip, _ in seen["listening"]} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, seen["listening"]
    assert reached == {}
    tally("hostile input", len(seen["answers"]))


def test_a_local_rays_session_folder_is_one_tuner_made_never_one_found_in_place(launched, tally):
    seen, code, _, err, _ = launched
    pid = seen["pid"]
    print(f"\nRay's session folders: {sorted(map(str, seen['folders']))}; the planted link's target holds "
          f"{seen['victim']}")
    assert code == 0, err
    assert seen["victim"] == [], "Ray's session went through a link planted under tuner's folder name"
    assert len(seen["folders"]) == 1, seen["folders"]
    (root, (link, folder, uid, mode)), = seen["folders"].items()
    assert root.name.startswith(f"tuner-ray-{pid}") and root != Path(tempfile.gettempdir(), f"tuner-ray-{pid}")
    assert (link, folder, uid, mode) == (False, True, os.getuid(), 0o700)
    assert not root.exists(), "the folder outlived its Ray"
    tally("hostile input")


def test_ray_prints_nothing_on_tuners_output_when_a_worker_dies(launched):
    _, code, out, err, trials = launched
    ray_lines = [line for line in (out + err).splitlines() if RAY_LINE.search(line)]
    print(f"\nRay's lines on tuner's output: {ray_lines}")
    assert code == 0, err
    assert ray_lines == []
    assert sorted(t.state for t in trials) == sorted([TrialState.COMPLETE, TrialState.FAIL])
    died = next(t for t in trials if t.state == TrialState.FAIL)
    assert "worker died" in died.user_attrs["fail_reason"]  # tuner's record says it, once, where it belongs
    assert out.strip() and "best trial" in out


ON_START_RAISES = """
import ray, tuner

def train(params, report):
    report(1, val_loss=params["x"])

def on_start(spec, study):
    raise RuntimeError("the user's callback broke")

try:
    tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=train, trials=1, epochs=1,
                 on_start=on_start, progress=False)
except RuntimeError as exc:
    print("raised:", exc)
print("ray still up:", ray.is_initialized())
"""


def test_a_launch_that_fails_after_its_local_ray_started_takes_that_ray_down(tmp_path, tally):
    """A user's on_start that raises (after tuner started its local Ray): the launch raises it, and the Ray it
    started is gone, so the next launch in that process starts, and stops, its own."""
    (tmp_path / "user.py").write_text(ON_START_RAISES)
    done = subprocess.run([shutil.which("python") or "python", "user.py"], cwd=tmp_path, env=user_env(),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "raised: the user's callback broke" in done.stdout
    assert "ray still up: False" in done.stdout, done.stdout
    tally("fault")
