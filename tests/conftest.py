"""Shared fixtures: a real local Ray instance, real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import itertools
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray instance for the whole session (tuner reuses a running one)."""
    import ray

    # Workers import test workloads as `tests.workloads`, from the repo root.
    os.chdir(REPO)
    ray.init(
        # A new instance of our own, even when another one runs on this machine
        # (`ray start` leaves an address in /tmp/ray that a bare init() joins).
        address="local",
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    yield ray
    ray.shutdown()


@pytest.fixture
def storage(tmp_path: Path) -> str:
    """A fresh SQLite study store."""
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty study store on each database tuner supports: contract tests take this."""
    if request.param == "sqlite":
        return request.getfixturevalue("storage")
    return request.getfixturevalue("postgres_url")


# ---------------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresServer:
    """A throw-away PostgreSQL server on 127.0.0.1 with a password-protected test role."""

    port: int
    admin_password: str = field(repr=False)
    data: Path
    start_command: list[str] = field(repr=False)
    # Tests log in as this role. Its password needs URL-encoding, as real ones often do.
    user: str = "tuner_test"
    password: str = field(default="p@ss:w/rd%", repr=False)
    _names: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def url(self, database: str, password: str | None = None, port: int | None = None) -> str:
        """The test role's URL for ``database`` (the password URL-encoded)."""
        secret = quote(self.password if password is None else password, safe="")
        return f"postgresql+psycopg://{self.user}:{secret}@127.0.0.1:{port or self.port}/{database}"

    def execute(self, statement: object, params: tuple = (), database: str = "postgres") -> list[tuple]:
        """Run one statement as the superuser (outside a transaction: CREATE DATABASE needs that)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password=self.admin_password,
                             dbname=database, autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(statement, params or None)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def create_database(self) -> str:
        from psycopg import sql

        name = f"tuner_{os.getpid()}_{next(self._names)}"
        self.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(self.user)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, cutting the sessions a test's stores still hold; a leftover does no harm."""
        import psycopg
        from psycopg import sql

        try:
            self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            warnings.warn(f"could not drop the test database {name}: {exc}", stacklevel=2)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server (fast: every session is cut), stay down ``down_seconds``, start it on the same port."""
        _stop_postgres(self.data, remove=False)
        time.sleep(down_seconds)
        _run(self.start_command, self.data)

    def terminate_connections(self, database: str) -> int:
        """Cut every session on ``database``, as a server restart or a network drop would."""
        rows = self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
        return len(rows)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, from the distribution's binaries, stopped at the end.

    Debian's `postgresql` package (or any install whose `initdb` is on PATH or under
    /usr/lib/postgresql/*/bin) is enough: the data directory is a throw-away tmp
    dir, the port a free one, and nothing is left behind. With no binaries the
    tests skip, except under CI=true, where they fail: CI must not pass by not testing.
    """
    bindir = _postgres_bindir()
    if bindir is None:
        _missing("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin; "
                 "install them (Debian: apt-get install postgresql)")
    as_postgres = _as_postgres_user()
    # A second try in a new dir and on a new port: the free port may be taken
    # before the server binds it.
    for attempt in (1, 2):
        root = _server_dir(tmp_path_factory, as_postgres)
        try:
            server = _start_postgres(bindir, as_postgres, root)
            break
        except RuntimeError as exc:
            if as_postgres:
                shutil.rmtree(root, ignore_errors=True)
            if attempt == 2:
                pytest.fail(f"PostgreSQL did not start: {exc}", pytrace=False)
    try:
        server.execute(_create_role(server))
        yield server
    finally:
        _stop_postgres(server.data)
        if as_postgres:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, owned by the test role."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason}. CI={os.environ['CI']}, so this fails instead of skipping.", pytrace=False)
    pytest.skip(reason)


def _postgres_bindir() -> Path | None:
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).parent] if on_path else []
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    return next((d for d in candidates if (d / "initdb").exists() and (d / "pg_ctl").exists()), None)


def _as_postgres_user() -> list[str]:
    """The command prefix that runs the server binaries as a non-root user (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        _missing("running as root, and there is no `postgres` system user to run the PostgreSQL server as")
    if shutil.which("runuser") is None:
        _missing("running as root, and `runuser` (util-linux) is missing to run PostgreSQL as `postgres`")
    return ["runuser", "-u", "postgres", "--"]


def _server_dir(tmp_path_factory: pytest.TempPathFactory, as_postgres: list[str]) -> Path:
    """A new dir for the server's files: a pytest tmp dir, unless the server runs as `postgres`.

    pytest's tmp root is private to this user (0700), and every pytest session that
    starts on the machine makes it so again, so `postgres` cannot count on reaching a
    dir under it. Its dir then lives in the system temp dir, and is removed at the end.
    """
    if not as_postgres:
        return tmp_path_factory.mktemp("postgres")
    root = Path(tempfile.mkdtemp(prefix="tuner-test-postgres-"))
    user = pwd.getpwnam("postgres")
    os.chown(root, user.pw_uid, user.pw_gid)
    return root


def _start_postgres(bindir: Path, as_postgres: list[str], root: Path) -> PostgresServer:
    data, log, pwfile = root / "data", root / "server.log", root / "pwfile"
    admin_password = secrets.token_urlsafe(16)
    pwfile.write_text(admin_password + "\n")
    pwfile.chmod(0o600)
    if as_postgres:
        shutil.chown(pwfile, "postgres", "postgres")
    port = _free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' "
        # A throw-away server: durability buys nothing and costs seconds.
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    initdb = [*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
              "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]
    start = [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60",
             "start"]
    _run(initdb, data)
    _run(start, data)
    pwfile.unlink()
    return PostgresServer(port=port, admin_password=admin_password, data=data, start_command=start)


def _run(command: list[str], data: Path) -> None:
    """Run a server binary; if it fails, stop what it started and raise with the server's log."""
    done = subprocess.run(command, capture_output=True, text=True, cwd=data.parent)
    if done.returncode != 0:
        log = data.parent / "server.log"
        output = f"{done.stdout}{done.stderr}{log.read_text() if log.exists() else ''}"
        _stop_postgres(data)
        raise RuntimeError(f"`{' '.join(command)}` exited {done.returncode}:\n{output}")


def _stop_postgres(data: Path, remove: bool = True) -> None:
    """Fast shutdown (SIGINT to the postmaster), sent as this user: root may signal `postgres`."""
    pidfile = data / "postmaster.pid"
    try:
        os.kill(int(pidfile.read_text().split()[0]), signal.SIGINT)
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + 30
    while pidfile.exists() and time.monotonic() < deadline:  # the postmaster removes it last
        time.sleep(0.05)
    if remove:
        shutil.rmtree(data, ignore_errors=True)


def _create_role(server: PostgresServer) -> object:
    from psycopg import sql

    return sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(server.user), sql.Literal(server.password))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Hostile inputs and faults: how many each run tried, said at the end of the run ---

_TRIED: dict[str, dict[str, int]] = {}  # kind -> test node id -> cases tried
_FAILED: set[str] = set()


class Tally:
    """Counts the hostile inputs or injected faults one test tries; the run's summary adds them up."""

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid

    def __call__(self, kind: str, n: int = 1) -> None:
        per_test = _TRIED.setdefault(kind, {})
        per_test[self.nodeid] = per_test.get(self.nodeid, 0) + n


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Tally:
    """``tally("hostile input")`` per case a test tries (``tally("fault", 3)`` for several)."""
    return Tally(request.node.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        _FAILED.add(item.nodeid)
    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    for kind in sorted(_TRIED):
        per_test = _TRIED[kind]
        failed = sorted(set(per_test) & _FAILED)
        verdict = "all passed" if not failed else f"{len(failed)} test(s) failed: {', '.join(failed)}"
        terminalreporter.write_line(
            f"{kind}s tried: {sum(per_test.values())} in {len(per_test)} tests; {verdict}")
