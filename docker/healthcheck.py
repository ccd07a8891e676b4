"""Healthchecks of tuner's containers, cheap enough to run every few seconds (no Ray import).

    healthcheck.py head ADDRESS       this node started, its GCS and raylet run, the GCS answers
    healthcheck.py node ADDRESS       this node started, its raylet runs, the head's GCS answers
    healthcheck.py scheduler ADDRESS  that, and the `tuner scheduler` daemon runs here

"Started" is `ray start`'s own word: it writes /tmp/ray/ray_current_cluster once its
node has registered with the GCS (the entrypoint removes the file a previous start of
the container left). A head whose processes run but that has not registered can still
give up (Ray allows a raylet 30 s); nodes that joined it then would be left stranded.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

STARTED = Path("/tmp/ray/ray_current_cluster")


def commands() -> list[list[str]]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            found.append([a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a])
        except OSError:  # gone meanwhile
            continue
    return [c for c in found if c]


def running(program: str, *args: str) -> bool:
    return any(any(Path(part).name == program for part in cmd[:2]) and all(a in cmd for a in args)
               for cmd in commands())


def answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError:
        return False
    return True


def main(kind: str, address: str) -> str | None:
    """What is wrong, or None when healthy."""
    if not STARTED.exists():
        return "the Ray node has not started yet"
    wanted = {"head": ["gcs_server", "raylet"], "node": ["raylet"], "scheduler": ["raylet"]}[kind]
    missing = [p for p in wanted if not running(p)]
    if missing:
        return f"{', '.join(missing)} not running"
    if kind == "scheduler" and not running("tuner", "scheduler"):
        return "the `tuner scheduler` daemon is not running"
    if not answers(address):
        return f"the Ray head's GCS at {address} does not answer"
    return None


if __name__ == "__main__":
    problem = main(sys.argv[1], sys.argv[2])
    if problem:
        print(problem, file=sys.stderr)
    sys.exit(1 if problem else 0)
