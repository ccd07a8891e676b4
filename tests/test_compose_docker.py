"""The cluster as users start it: the README's docker-compose commands on a real Docker engine.

The commands come from the README's blocks marked ``<!-- cluster-commands -->``
and run as written, in a copy of the repository (so that a checkout's own
``secrets/`` is never touched), with the CPU profile and two ray-workers. Between
them the test looks at the real containers: every service healthy, a scheduled
sweep whose trials ran on the ray-worker containers and landed in PostgreSQL and
the dashboard, a cron firing on its own, a ray-worker killed and PostgreSQL
restarted mid-sweep without a lost or stuck trial, nothing listening beyond
127.0.0.1, and no secret in ``docker inspect``, the logs or the process table.

This machine cannot reach Docker Hub, so ``docker/build-standins.sh`` builds the
two base images locally (Debian bookworm from the apt mirror, by mmdebstrap), and the tuner
image is built once with the host network and the CPU torch wheel that pip
already has (served on 127.0.0.1); the README's ``up --build`` then finds every
layer cached. Docker's layer cache and the stand-ins' content hash make a second
run on the same machine skip both builds.

The engine: a running one is used as it is; otherwise this test starts
``dockerd`` and stops that one (by its pid) at the end. With no Docker the test
skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECT = "tunertest"
WORKERS = 2
SERVICES = {"postgres", "ray-head", "ray-worker-cpu", "dashboard", "scheduler"}
# The sweep each run-now runs: the README's spec, cut down (the scheduler re-reads it at each firing).
TRIALS = 4
TORCH_INDEX_PORT = 47651
pytestmark = pytest.mark.timeout(1200)


def log(message: str) -> None:
    print(f"[compose-docker {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------- the README's commands


def readme_commands() -> list[str]:
    """Every command of the README's bash blocks marked <!-- cluster-commands -->, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"<!-- cluster-commands -->\s*```bash\n(.*?)```", text, re.S)
    assert blocks, "README.md has no ```bash block after <!-- cluster-commands -->"
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()  # a trailing comment (never inside quotes here)
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def command(prefix: str) -> str:
    (found,) = [c for c in readme_commands() if c.startswith(prefix)]
    return found


# ---------------------------------------------------------------------- the engine


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason}. CI={os.environ['CI']}, so this fails instead of skipping.", pytrace=False)
    pytest.skip(reason)


def _engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    tools = ["docker", "docker-compose", "mmdebstrap", "openssl"]
    absent = [t for t in tools if shutil.which(t) is None]
    if absent:
        _missing(f"{', '.join(absent)} not found (Debian: apt-get install docker.io docker-compose mmdebstrap)")
    if _engine_answers():
        log("using the Docker engine that is running")
        yield
        return
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        _missing("no Docker engine answers, and this test can only start one as root with dockerd installed")
    out = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with out.open("w") as sink:
        daemon = subprocess.Popen(["dockerd"], stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    try:
        while not _engine_answers():
            if daemon.poll() is not None or time.monotonic() - started > 60:
                _missing(f"dockerd did not start: {out.read_text()[-2000:]}")
            time.sleep(0.5)
        log(f"started dockerd (pid {daemon.pid}) in {time.monotonic() - started:.1f} s")
        yield
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log(f"stopped dockerd (pid {daemon.pid})")


# ---------------------------------------------------------------------- the cluster


class Cluster:
    """The repository's copy that compose runs in, its environment, and helpers on its containers."""

    def __init__(self, root: Path, env: dict[str, str], postgres_port: int, dashboard_port: int) -> None:
        self.root, self.env = root, env
        self.postgres_port, self.dashboard_port = postgres_port, dashboard_port
        self.timings: dict[str, float] = {}

    def sh(self, line: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        started = time.monotonic()
        result = subprocess.run(["bash", "-c", line], cwd=self.root, env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        log(f"{time.monotonic() - started:5.1f} s  {line[:110]}")
        if check:
            assert result.returncode == 0, f"`{line}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result

    def start(self, line: str) -> subprocess.Popen:
        log(f"started  {line[:110]}")
        return subprocess.Popen(["bash", "-c", line], cwd=self.root, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def containers(self) -> list[dict]:
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                             capture_output=True, text=True, check=True).stdout.split()
        if not ids:
            return []
        out = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    def of(self, service: str) -> list[dict]:
        return sorted((c for c in self.containers() if c["Config"]["Labels"]["com.docker.compose.service"] == service
                       and c["State"]["Running"]), key=lambda c: c["Name"])

    def secret(self, name: str) -> str:
        return (self.root / "secrets" / name).read_text().strip()

    @functools.cached_property
    def url(self) -> str:
        return f"postgresql+psycopg://tuner:{self.secret('postgres_password')}@127.0.0.1:{self.postgres_port}/tuner"

    def query(self, sql: str, *params: object) -> list[tuple]:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.postgres_port, user="tuner", dbname="tuner",
                             password=self.secret("postgres_password"), connect_timeout=5) as conn:
            return conn.execute(sql, params or None).fetchall()

    def runs(self, schedule: str) -> list[dict]:
        """The schedule's runs, newest first (tuner_runs, read as `tuner schedule show` does)."""
        rows = self.query("SELECT r.id, r.trigger, r.study, r.status, r.reason, r.trials FROM tuner_runs r "
                          "JOIN tuner_schedules s ON s.id = r.schedule_id WHERE s.name = %s ORDER BY r.id DESC",
                          schedule)
        return [dict(zip(("id", "trigger", "study", "status", "reason", "trials"), row)) for row in rows]

    def trials(self, study: str) -> list:
        import optuna

        return optuna.load_study(study_name=study, storage=self.url).get_trials(deepcopy=False)


def _copy_repo(dest: Path) -> None:
    """The files a clone has (tracked, and new ones not ignored): never the checkout's secrets/ or databases."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _torch_index(folder: Path) -> Iterator[str]:
    """A PEP 503 index on 127.0.0.1 serving the CPU torch wheel this machine's pip has."""
    version = metadata.version("torch")
    wheels = folder / "simple" / "torch"
    wheels.mkdir(parents=True)
    subprocess.run(["pip", "download", "--no-deps", "-q", "-d", str(wheels), f"torch=={version}"], check=True,
                   capture_output=True, timeout=600)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    try:
        # One port for every run: the index's URL is a build argument, part of the cache key of the
        # image's dependency layer, so a new port would rebuild it.
        server = http.server.ThreadingHTTPServer(("127.0.0.1", TORCH_INDEX_PORT), handler)
    except OSError:  # taken: any port works, at the price of that rebuild
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _build_images(root: Path, env: dict[str, str], timings: dict[str, float]) -> None:
    started = time.monotonic()
    result = subprocess.run(["bash", "docker/build-standins.sh"], cwd=root, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    timings["base images"] = time.monotonic() - started
    log(f"{timings['base images']:5.1f} s  base images: {result.stdout.strip().splitlines()[-1]}")
    started = time.monotonic()
    with _torch_index(root.parent / "torch-index") as index:
        # The same build argument as compose passes, so that its `up --build` finds every layer cached.
        env["TORCH_INDEX_URL"] = index
        result = subprocess.run(["docker", "build", "--network", "host", "--build-arg", f"TORCH_INDEX_URL={index}",
                                 "-t", "tuner:latest", "."], cwd=root, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    timings["tuner image"] = time.monotonic() - started
    log(f"{timings['tuner image']:5.1f} s  tuner image")


def _wait(condition, timeout: float, what: str, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception as exc:  # a database that restarts, a container that is not up yet
            value, last = None, exc
        else:
            last = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last})" if last
                                                                                  else ""))
        time.sleep(every)


def _tcp_listeners() -> dict[tuple[str, int], tuple[int, str]]:
    """Every TCP socket listening in this (the host's) network namespace: (address, port) -> (pid, program)."""
    owners = {}
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                proc = fd.parent.parent
                owners[link[8:-1]] = (int(proc.name), (proc / "comm").read_text().strip())
    found = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            if width == 8:
                ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:
                ip = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            found[ip, int(port, 16)] = owners.get(fields[9], (0, "?"))
    return found


def _spec(name: str, trials: int, epochs: int, cpus: int, data: str, workload: str) -> str:
    return (f"name: {name}\nworkload: {workload}\ndata: {data}\nobjective: {{metric: val_acc, direction: maximize}}\n"
            f"strategy: random\ntrials: {trials}\nparallel: {WORKERS}\nepochs: {epochs}\nseed: 7\n"
            f"resources: {{cpu: {cpus}, gpu: 0}}\npruner: none\nparams:\n"
            "  lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}\n"
            "  width: {type: int, low: 8, high: 32}\n")


@pytest.fixture(scope="module")
def cluster(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("compose") / "tuner"
    root.mkdir()
    _copy_repo(root)
    env = {k: v for k, v in os.environ.items() if k not in ("TUNER_STORAGE", "RAY_ADDRESS", "PYTHONPATH")}
    postgres_port, dashboard_port = _free_port(), _free_port()
    env.update(COMPOSE_PROJECT_NAME=PROJECT, TUNER_POSTGRES_PORT=str(postgres_port),
               TUNER_DASHBOARD_PORT=str(dashboard_port))
    box = Cluster(root, env, postgres_port, dashboard_port)
    subprocess.run(["docker-compose", "--profile", "cpu", "down", "-v", "--remove-orphans"], cwd=root, env=env,
                   capture_output=True, timeout=300)  # a cluster an interrupted run left behind
    started = time.monotonic()
    _build_images(root, env, box.timings)
    try:
        box.sh(command("mkdir -p -m 700 secrets"))
        assert oct((root / "secrets").stat().st_mode & 0o777) == "0o700"
        started_up = time.monotonic()
        box.sh(command("docker-compose --profile cpu up"), timeout=900)
        _wait(lambda: _all_healthy(box), 180, "every service to be healthy")
        box.timings["up to healthy"] = time.monotonic() - started_up
        yield box
    finally:
        logs = subprocess.run(["docker-compose", "--profile", "cpu", "logs", "--no-color"], cwd=root, env=env,
                              capture_output=True, text=True, timeout=120).stdout
        # Kept after the run (pytest's tmp dirs rotate): what each service said, for a failure's post-mortem.
        Path(tempfile.gettempdir(), "tuner-test-compose-docker.log").write_text(logs)
        for container in box.of("scheduler"):  # and its Ray node's own logs
            with Path(tempfile.gettempdir(), "tuner-test-compose-docker-ray-logs.tar").open("wb") as sink:
                subprocess.run(["docker", "exec", container["Id"], "tar", "-C", "/tmp/ray/session_latest", "-c",
                                "logs"], stdout=sink, timeout=60)
        started_down = time.monotonic()
        down = subprocess.run(["bash", "-c", command("docker-compose --profile cpu down")], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)
        box.timings["down -v"] = time.monotonic() - started_down
        box.timings["whole test"] = time.monotonic() - started
        log("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in box.timings.items()))
        assert down.returncode == 0, down.stdout + down.stderr
        assert box.containers() == [], "down -v left containers"
        volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project="
                                  f"{PROJECT}"], capture_output=True, text=True).stdout.split()
        assert volumes == [], f"down -v left volumes {volumes}"


def _all_healthy(box: Cluster) -> bool:
    containers = box.containers()
    services = [c["Config"]["Labels"]["com.docker.compose.service"] for c in containers]
    restarting = [c["Name"] for c in containers if c["State"]["Restarting"] or not c["State"]["Running"]]
    if restarting:
        logs = subprocess.run(["docker", "logs", "--tail", "20", restarting[0].lstrip("/")], capture_output=True,
                              text=True).stderr
        if "error: the secret" in logs:
            pytest.fail(f"{restarting[0]} is not running: {logs}")
    return (set(services) == SERVICES and services.count("ray-worker-cpu") == WORKERS
            and all(c["State"].get("Health", {}).get("Status") == "healthy" for c in containers))


# ---------------------------------------------------------------------- the checks, in the order a user goes


def test_every_service_is_healthy_and_nothing_listens_beyond_loopback(cluster: Cluster):
    containers = cluster.containers()
    assert all(c["State"]["Health"]["Status"] == "healthy" for c in containers), [
        (c["Name"], c["State"]["Health"]["Status"]) for c in containers]
    published = [(c["Config"]["Labels"]["com.docker.compose.service"], b["HostIp"]) for c in containers
                 for bindings in (c["NetworkSettings"]["Ports"] or {}).values() for b in bindings or []]
    assert {service for service, _ in published} == {"postgres", "dashboard"}, published
    assert all(ip == "127.0.0.1" for _, ip in published), published
    # What Docker and the containers listen on in the host's network namespace (a service on the host
    # network would show here); other programs of this machine are not this test's business.
    inside = {int(line.split()[0]) for c in containers for line in subprocess.run(
        ["docker", "top", c["Id"], "-eo", "pid"], capture_output=True, text=True, check=True).stdout.split("\n")[1:]
        if line.strip()}
    docker = {where: program for where, (pid, program) in _tcp_listeners().items()
              if pid in inside or program.startswith(("docker", "containerd"))}
    assert {port for _, port in docker} >= {cluster.postgres_port, cluster.dashboard_port}, docker
    beyond = {where: program for where, program in docker.items()
              if not where[0].startswith("127.") and where[0] != "::1"}
    assert beyond == {}, f"listening beyond loopback on the host: {beyond}"
    # The services run as the unprivileged user; /app is theirs to write in.
    for service in SERVICES - {"postgres"}:
        container = cluster.of(service)[0]["Id"]
        out = subprocess.run(["docker", "exec", container, "sh", "-c", "id -u && touch /app/.w && rm /app/.w"
                              + (" && touch /data/artifacts/.w && rm /data/artifacts/.w" if service == "dashboard"
                                 else "")], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.split()[0] == "1000", (service, out.stdout, out.stderr)


@pytest.fixture(scope="module")
def sweep(cluster: Cluster) -> dict:
    """The README's schedule add and run-now, the spec cut down first; a schedule due in a minute beside it."""
    cpus = int(json.loads(subprocess.run(
        ["docker", "exec", cluster.of("ray-worker-cpu")[0]["Id"], "python", "-c", "import os; print(os.cpu_count())"],
        capture_output=True, text=True, check=True).stdout))
    # A cron firing on its own: the next minute (or the one after, if this one is nearly over), UTC.
    now = datetime.now(timezone.utc)
    at = (now + timedelta(minutes=1 if now.second < 50 else 2)).replace(second=0, microsecond=0)
    (cluster.root / "search_spaces" / "soon.yaml").write_text(_spec("soon", 1, 1, 1, data="iris", workload="mlp"))
    cluster.sh(f"docker-compose exec -T scheduler tuner schedule add soon search_spaces/soon.yaml "
               f"--cron '{at.minute} {at.hour} * * *' --timezone UTC")
    cluster.sh(command("docker-compose exec -T scheduler tuner schedule add nightly"))
    # The spec is re-read at each firing: cut down to a short sweep in which a trial takes a whole
    # worker (all its CPUs), so that two at a time run on the two workers.
    (cluster.root / "search_spaces" / "mnist1d_cnn.yaml").write_text(
        _spec("mnist1d-cnn", TRIALS, 3, cpus, data="digits", workload="mlp"))
    started = time.monotonic()
    result = cluster.sh(command("docker-compose exec -T scheduler tuner schedule run-now nightly"), timeout=600)
    cluster.timings["sweep (run-now, 4 trials)"] = time.monotonic() - started
    (run,) = cluster.runs("nightly")
    assert run["status"] == "succeeded", (run, result.stdout)
    return run


def test_a_scheduled_sweep_runs_on_the_ray_workers_and_lands_in_postgres_and_the_dashboard(cluster, sweep):
    from optuna.trial import TrialState

    trials = cluster.trials(sweep["study"])
    assert [t.state for t in trials] == [TrialState.COMPLETE] * TRIALS
    workers = {c["Config"]["Hostname"] for c in cluster.of("ray-worker-cpu")}
    ran_on = {t.user_attrs["node"].split("/")[0] for t in trials}
    assert ran_on == workers, f"trials ran on {ran_on}; the ray-worker containers are {workers}"
    base = f"http://127.0.0.1:{cluster.dashboard_port}"
    with urllib.request.urlopen(f"{base}/api/studies", timeout=10) as response:
        (seen,) = [s for s in json.load(response)["study_summaries"] if s["study_name"] == sweep["study"]]
    with urllib.request.urlopen(f"{base}/api/studies/{seen['study_id']}", timeout=10) as response:
        assert [t["state"] for t in json.load(response)["trials"]] == ["Complete"] * TRIALS
    # The dashboard attaches each finished trial's learning curves, kept in its artifacts volume.
    dashboard = cluster.of("dashboard")[0]["Id"]
    _wait(lambda: subprocess.run(["docker", "exec", dashboard, "ls", "/data/artifacts"], capture_output=True,
                                 text=True).stdout.split(), 60, "the dashboard to store learning curves")
    shown = cluster.sh(command("docker-compose exec -T scheduler tuner schedule show nightly")).stdout
    assert sweep["study"] in shown and "succeeded" in shown, shown


def _mid_sweep(cluster: Cluster, running: int) -> tuple[subprocess.Popen, str]:
    """A run-now in the background, returned once ``running`` of its trials run."""
    before = {r["id"] for r in cluster.runs("nightly")}
    proc = cluster.start(command("docker-compose exec -T scheduler tuner schedule run-now nightly"))
    run = _wait(lambda: next((r for r in cluster.runs("nightly") if r["id"] not in before), None), 60,
                "the run to start")
    from optuna.trial import TrialState

    _wait(lambda: sum(t.state == TrialState.RUNNING for t in cluster.trials(run["study"])) >= running, 120,
          f"{running} trial(s) of {run['study']} to run", every=0.3)
    return proc, run["study"]


def _finish(cluster: Cluster, proc: subprocess.Popen, study: str) -> list:
    from optuna.trial import TrialState

    out, _ = proc.communicate(timeout=600)
    (run,) = [r for r in cluster.runs("nightly") if r["study"] == study]
    assert proc.returncode == 0 and run["status"] == "succeeded", f"{run}\n{out}"
    trials = cluster.trials(study)
    assert not [t for t in trials if t.state == TrialState.RUNNING], "a trial was left RUNNING"
    assert sum(t.state == TrialState.COMPLETE for t in trials) == TRIALS, [(t.number, t.state) for t in trials]
    return trials


def test_a_postgres_restart_mid_sweep_is_waited_out(cluster, sweep):
    proc, study = _mid_sweep(cluster, running=1)
    started = time.monotonic()
    cluster.sh("docker-compose restart postgres")
    cluster.timings["postgres restart"] = time.monotonic() - started
    _finish(cluster, proc, study)


def _running_a_trial(cluster: Cluster) -> list[dict]:
    """The ray-worker containers a trial runs on now (Ray titles a task's process `ray::TASK`)."""
    busy = []
    for container in cluster.of("ray-worker-cpu"):
        top = subprocess.run(["docker", "top", container["Id"], "-eo", "pid,args"], capture_output=True, text=True)
        if re.search(r"\sray::trial-\d+", top.stdout):
            busy.append(container)
    return busy


def test_a_cron_firing_happens_on_its_own(cluster, sweep):
    run = _wait(lambda: next((r for r in cluster.runs("soon") if r["status"] not in ("queued", "running")), None),
                150, "the schedule `soon` to fire by its cron")
    assert run["trigger"] == "cron" and run["status"] == "succeeded", run


def test_killing_a_ray_worker_mid_sweep_loses_no_trial(cluster, sweep):
    from optuna.trial import TrialState

    proc, study = _mid_sweep(cluster, running=WORKERS)
    busy = _wait(lambda: _running_a_trial(cluster) if len(_running_a_trial(cluster)) == WORKERS else None, 120,
                 "a trial to run on each ray-worker", every=0.3)
    victim = busy[-1]
    cluster.sh(f"docker kill {victim['Id']}")
    trials = _finish(cluster, proc, study)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and all("worker died" in t.user_attrs.get("fail_reason", "") for t in failed), [
        (t.number, t.state, t.user_attrs.get("fail_reason")) for t in failed]
    # Each trial the kill took ran again, with its params, on the worker that is left.
    for lost in failed:
        (again,) = [t for t in trials if t.state == TrialState.COMPLETE and t.params == lost.params
                    and t.number > lost.number]
        assert again.user_attrs["node"].split("/")[0] != victim["Config"]["Hostname"], again.user_attrs


def test_a_driver_on_a_machine_that_is_not_a_ray_node_is_told_how_to_join(cluster, sweep):
    """`docker-compose run` starts a scheduler container without its Ray node: a machine off the cluster."""
    result = cluster.sh("docker-compose run --rm --no-deps -T scheduler tuner launch search_spaces/soon.yaml "
                        "--ray-address ray-head:6379 --storage sqlite:////tmp/off.db", timeout=300, check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "is not a node of the Ray cluster at 'ray-head:6379'" in out, out
    assert "ray start --address=ray-head:6379 --num-cpus=0" in out, out
    assert "Traceback" not in out, out


def test_no_secret_in_docker_inspect_logs_or_processes(cluster, sweep):
    secrets = {name: cluster.secret(name) for name in ("postgres_password", "ray_token")}
    inspected = subprocess.run(["docker", "inspect", *[c["Id"] for c in cluster.containers()], "tuner:latest"],
                               capture_output=True, text=True, check=True).stdout
    logs = subprocess.run(["docker-compose", "--profile", "cpu", "logs", "--no-color"], cwd=cluster.root,
                          env=cluster.env, capture_output=True, text=True, timeout=120).stdout
    assert "scheduler" in logs and len(logs) > 1000
    processes = []
    for proc in Path("/proc").glob("[0-9]*"):  # the host sees every container's processes
        with contextlib.suppress(OSError):
            processes.append((proc / "cmdline").read_bytes().decode(errors="replace")
                             + (proc / "environ").read_bytes().decode(errors="replace"))
    assert len(processes) > 20
    for name, value in secrets.items():
        assert value not in inspected, f"{name} is in docker inspect"
        assert value not in logs, f"{name} is in the services' logs"
        assert not [p for p in processes if value in p], f"{name} is in a process's command line or environment"


def test_an_unreadable_secret_names_the_file_and_the_fix(cluster, tmp_path):
    """A secret kept chmod 600 by another host user: the service says which file and what to do."""
    token = tmp_path / "ray_token"
    token.write_text("x" * 32)
    token.chmod(0o600)
    result = subprocess.run(["docker", "run", "--rm", "-e", "RAY_AUTH_TOKEN_PATH=/run/secrets/ray_token",
                             "-v", f"{token}:/run/secrets/ray_token:ro", "tuner:latest", "ray", "start", "--head"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 78, result.stdout + result.stderr
    assert "the secret /run/secrets/ray_token cannot be read by the tuner services (uid 1000)" in result.stderr
    assert "chmod 644 secrets/ray_token" in result.stderr, result.stderr
