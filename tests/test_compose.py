"""The cluster of docker-compose.yml: its file checked, and its topology brought up natively.

The fast check. The compose file is validated against the Compose
specification's schema and held to its security rules, and the same topology
(PostgreSQL, a Ray head, a Ray worker node, the dashboard and the scheduler)
runs as real processes on 127.0.0.1. tests/test_compose_docker.py runs the
file itself, on a real Docker engine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.services import free_port, nodes, ray_cluster, ray_env
from tuner.schedule import Schedules
from tuner.store import Store

REPO = Path(__file__).resolve().parent.parent
SERVICES = {"postgres", "ray-head", "ray-worker", "ray-worker-cpu", "dashboard", "scheduler"}
TUNER_SERVICES = SERVICES - {"postgres"}
RAY_NODES = {"ray-head", "ray-worker", "ray-worker-cpu", "scheduler"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_the_compose_file_follows_the_compose_specification():
    checker = shutil.which("check-jsonschema")
    assert checker, "check-jsonschema is a dev dependency: pip install -e '.[dev]'"
    result = subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.yml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_file_has_the_services_and_their_order(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert rule == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services[dependency], f"{name} waits on {dependency}, which has no healthcheck"
    assert set(services["scheduler"]["depends_on"]) == {"postgres", "ray-head"}
    assert set(services["dashboard"]["depends_on"]) == {"postgres"}
    assert set(services["ray-worker"]["depends_on"]) == set(services["ray-worker-cpu"]["depends_on"]) == {"ray-head"}
    assert "pgdata" in compose["volumes"]
    assert any(v.startswith("pgdata:") for v in services["postgres"]["volumes"])
    assert (REPO / "Dockerfile").is_file()
    for name in TUNER_SERVICES:
        service = services[name]
        assert service["build"]["context"] == "." and service["image"] == "tuner:latest", name
        # docker-compose ps says "healthy" of each, and a restart brings a dead one back.
        assert "healthcheck" in service and service["restart"] == "unless-stopped", name
        assert service.get("init") is True, f"{name}: Ray's orphaned processes need an init to reap them"
    for name in RAY_NODES:
        assert services[name].get("shm_size"), f"{name} is a Ray node: its object store lives in /dev/shm"
    # The scheduler is a Ray node without CPUs: each scheduled run is a driver, which needs a raylet beside it.
    script = (REPO / "docker" / "scheduler.sh").read_text()
    assert services["scheduler"]["command"][0].endswith("/scheduler.sh")
    assert '--num-cpus=0' in script and "tuner scheduler" in script


def test_the_ray_workers_come_as_a_gpu_and_a_cpu_profile_and_scale(compose):
    services = compose["services"]
    gpu, cpu = services["ray-worker"], services["ray-worker-cpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    # An override cannot take a device reservation away (lists merge), so the CPU worker has none.
    assert "deploy" not in cpu
    assert gpu["command"] == cpu["command"] and "--address=ray-head:6379" in cpu["command"]
    # --scale needs services without a fixed name or host port.
    for worker in (gpu, cpu):
        assert "container_name" not in worker and "ports" not in worker


def test_the_compose_file_publishes_nothing_beyond_loopback_and_keeps_secrets_out(compose):
    services = compose["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"
        env = service.get("environment", {})
        assert not any("PASSWORD" in k and not k.endswith("_FILE") for k in env), f"{name} has a password in its env"
        assert "RAY_AUTH_TOKEN" not in env, f"{name} has the Ray token in its environment"
        assert not any("@" in str(v) and ":" in str(v).split("@")[0].split("//")[-1] for v in env.values()), \
            f"{name} has a URL with a password"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    # Each secret only where it is used: Ray nodes hold the token, the store's clients the password.
    for name in TUNER_SERVICES:
        env, secrets = services[name]["environment"], set(services[name]["secrets"])
        if name in RAY_NODES:
            assert env["RAY_AUTH_MODE"] == "token", name
            assert env["RAY_AUTH_TOKEN_PATH"] == "/run/secrets/ray_token" and "ray_token" in secrets, name
        else:
            assert "RAY_AUTH_TOKEN_PATH" not in env and "ray_token" not in secrets, name
        if name in ("dashboard", "scheduler"):
            assert env["TUNER_STORAGE_PASSWORD_FILE"] == "/run/secrets/postgres_password", name
            assert "postgres_password" in secrets, name
        else:  # workers never touch the database
            assert "TUNER_STORAGE" not in env and "postgres_password" not in secrets, name
    assert {s["file"] for s in compose["secrets"].values()} == {"./secrets/postgres_password", "./secrets/ray_token"}
    assert "secrets/" in (REPO / ".gitignore").read_text().split()
    assert any(line.startswith("USER ") and "root" not in line for line in (REPO / "Dockerfile").read_text().splitlines())


# ---------------------------------------------------------------------- the topology, natively


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_the_compose_topology_runs_a_scheduled_sweep_on_the_ray_worker(postgres_server, tmp_path):
    """PostgreSQL, a Ray head (no CPUs), a Ray worker node, the dashboard and the scheduler, as real processes."""
    database = postgres_server.create_database()
    secret = tmp_path / "postgres_password"
    secret.write_text(postgres_server.password + "\n")
    env = {**ray_env(), "TUNER_STORAGE": f"postgresql+psycopg://{postgres_server.user}@127.0.0.1:"
                                         f"{postgres_server.port}/{database}",
           "TUNER_STORAGE_PASSWORD_FILE": str(secret)}
    procs: list[subprocess.Popen] = []
    try:
        with ray_cluster(env, head_cpus=0, workers=1) as address:
            env["RAY_ADDRESS"] = address
            store = Store(postgres_server.url(database))
            spec = tmp_path / "nightly.yaml"
            spec.write_text("name: nightly\nworkload: mlp\ndata: iris\nstrategy: random\ntrials: 3\nepochs: 3\n"
                            "parallel: 1\npruner: none\nparams:\n  lr: {type: float, low: 1.0e-3, high: 1.0e-1, "
                            "log: true}\n  width: {type: int, low: 8, high: 32}\n")
            # Added yesterday, so its firing is due now.
            Schedules(store, clock=lambda: datetime.now(timezone.utc) - timedelta(days=1)).add(
                "nightly", spec, "0 * * * *")
            port = free_port()
            procs.append(_tuner(env, tmp_path, "dashboard", "--port", str(port)))
            procs.append(_tuner(env, tmp_path, "scheduler", "--interval", "1"))
            book = Schedules(store)
            run = _wait(lambda: next((r for r in book.runs("nightly") if r.status not in ("queued", "running")), None),
                        300, "the scheduled run to end", procs)
            assert run.status == "succeeded", f"{run.status}: {run.reason}"
            cluster_nodes = nodes(env, address)
            (worker,) = [node for node, cpus in cluster_nodes.items() if cpus > 0]
            study = optuna.load_study(study_name=run.study, storage=store.url)
            assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
            ran_on = {t.user_attrs["node"].split("/")[-1] for t in study.trials}
            assert ran_on == {worker[:12]}, f"trials ran on {ran_on}; the worker is {worker[:12]}"
            base = f"http://127.0.0.1:{port}"
            listed = _wait(lambda: _dashboard_studies(base), 60, "the dashboard to answer", procs)
            (seen,) = [s for s in listed if s["study_name"] == run.study]
            trials = get_json(f"{base}/api/studies/{seen['study_id']}")["trials"]
            assert [t["state"] for t in trials] == ["Complete"] * 3
            print(f"\ncompose topology: run {run.id} {run.status}, study {run.study}, 3 trials on worker "
                  f"{worker[:12]}, seen by the dashboard")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        postgres_server.drop_database(database)


def _tuner(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen:
    log = (cwd / f"{args[0]}.log").open("w")
    return subprocess.Popen([sys.executable, "-m", "tuner", *args], cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _dashboard_studies(base: str) -> list[dict] | None:
    try:
        return get_json(f"{base}/api/studies")["study_summaries"]
    except OSError:
        return None


def _wait(condition, timeout: float, what: str, procs: list[subprocess.Popen]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        dead = [p.args[3] for p in procs if p.poll() is not None]
        assert not dead, f"{dead} exited while waiting for {what}"
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
