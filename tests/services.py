"""Real services for tests, started as processes on 127.0.0.1: Ray nodes in token mode; a user's environment."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def user_env(**extra: str) -> dict[str, str]:
    """A user's shell for the installed `tuner` script: none of the test run's PYTHONPATH, store or cluster."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TUNER_STORAGE", "RAY_ADDRESS")}
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env() -> dict[str, str]:
    """The environment of every node and driver of a test cluster: token mode, one shared token."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(24),
            "PYTHONPATH": str(REPO)}


def ray_node(env: dict[str, str], *args: str, cpus: int = 1) -> subprocess.Popen:
    # --block keeps the node in the foreground: the test owns its process group and
    # stops exactly these processes (`ray stop` would stop every Ray on the machine).
    return subprocess.Popen(["ray", "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus),
                             "--disable-usage-stats", *args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def nodes(env: dict[str, str], address: str) -> dict[str, float]:
    """Alive nodes of the cluster at ``address``: node id -> its CPUs ({} while it does not answer)."""
    code = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); "
            "print(json.dumps({n['NodeID']: n['Resources'].get('CPU', 0.0) for n in ray.nodes() if n['Alive']}))")
    out = subprocess.run([sys.executable, "-c", code % address], env=env, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else {}


@contextlib.contextmanager
def ray_cluster(env: dict[str, str], head_cpus: int = 1, workers: int = 1) -> Iterator[str]:
    """A Ray head and ``workers`` more nodes on 127.0.0.1; yields the head's address, stops them all."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    procs = [ray_node(env, "--head", "--port", str(port), "--include-dashboard", "false", cpus=head_cpus)]
    try:
        deadline = time.monotonic() + 90
        _wait(lambda: len(nodes(env, address)) >= 1, deadline, procs[0], "head did not start")
        for i in range(workers):
            procs.append(ray_node(env, "--address", address))
            _wait(lambda: len(nodes(env, address)) >= i + 2, deadline, procs[-1], "a node was refused")
        yield address
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _wait(ready, deadline: float, proc: subprocess.Popen, what: str) -> None:
    while not ready():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{what}: {proc.stderr.read() if proc.poll() is not None else 'timed out'}")
        time.sleep(1)


def wait_for_epochs(db: Path, proc: subprocess.Popen, count: int = 2, timeout: float = 60) -> None:
    """Wait until the SQLite store ``db`` holds ``count`` epoch rows (trials are running), ``proc`` ends, or
    ``timeout`` seconds pass."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                if conn.execute("select count(*) from tuner_epochs").fetchone()[0] >= count:
                    return
        except sqlite3.OperationalError:  # not made yet, or its tables not yet
            pass
