"""Run trials as Ray tasks, locally or on a cluster. The only module that imports ray.

Each trial is one Ray task with the spec's ``cpu``/``gpu`` resources (Ray sets
CUDA_VISIBLE_DEVICES for it). Ray Tune's per-trial machinery is not used: a
plain task costs milliseconds, which is what makes short trials cheap.
Epoch rows go from the worker to a small actor, which the driver drains; so
workers never touch the database and need no route to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tuner.errors import TunerError
from tuner.executors.base import Executor
from tuner.trial.messages import FLUSH_SECONDS, Call, Ended, Epochs, Event, Failed, TrialJob
from tuner.trial.worker import crashed, run_trial


# Trials that can wait for a verdict at once (each waits in a thread of the channel); more queue.
WAITING_TRIALS = 128


@ray.remote(num_cpus=0, concurrency_groups={"verdicts": WAITING_TRIALS})
class EpochChannel:
    """Rows and calls pushed by workers until the driver drains them; the driver's answers on the way back.

    ``push``, ``ask``, ``drain`` and ``answer`` run one at a time, in order;
    ``verdict`` calls (a worker waiting at an epoch where it may be stopped)
    and ``reply`` calls (a worker waiting for the driver's Optuna trial to
    answer a ``suggest_*``) wait in threads of their own until the driver has
    answered.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.stopped: set[int] = set()  # trial ids the driver ended
        self.judged: dict[int, int] = {}  # trial id -> the last epoch whose rows the driver has handled
        self.calls: list[Call] = []  # asked by workers, not drained yet
        self.replies: dict[tuple[int, int], tuple[Any, ...]] = {}  # (trial id, seq) -> the driver's reply
        self.changed = threading.Condition()

    def push(self, rows: list[dict[str, Any]]) -> set[int]:
        with self.changed:
            self.rows.extend(rows)
            return set(self.stopped)

    def ask(self, call: Call) -> None:
        with self.changed:
            self.calls.append(call)

    def drain(self) -> tuple[list[dict[str, Any]], list[Call]]:
        with self.changed:
            rows, self.rows = self.rows, []
            calls, self.calls = self.calls, []
            return rows, calls

    def answer(self, judged: dict[int, int], stopped: list[int],
               replies: dict[tuple[int, int], tuple[Any, ...]] | None = None) -> None:
        with self.changed:
            self.stopped.update(stopped)
            self.replies.update(replies or {})
            for trial_id, epoch in judged.items():
                self.judged[trial_id] = max(epoch, self.judged.get(trial_id, -1))
            self.changed.notify_all()

    @ray.method(concurrency_group="verdicts")
    def verdict(self, trial_id: int, epoch: int, timeout: float) -> bool | None:
        """Whether the trial must stop once the driver has handled ``epoch`` (None: not yet, after ``timeout``)."""
        with self.changed:
            self.changed.wait_for(lambda: trial_id in self.stopped or self.judged.get(trial_id, -1) >= epoch, timeout)
            if trial_id in self.stopped:
                return True
            return False if self.judged.get(trial_id, -1) >= epoch else None

    @ray.method(concurrency_group="verdicts")
    def reply(self, trial_id: int, seq: int, timeout: float) -> tuple[Any, ...] | None:
        """The driver's reply to the trial's call ``seq`` (None: not yet, after ``timeout``)."""
        key = (trial_id, seq)
        with self.changed:
            self.changed.wait_for(lambda: key in self.replies or trial_id in self.stopped, timeout)
            if key in self.replies:
                return self.replies.pop(key)
            return ("stop", "the trial was stopped") if trial_id in self.stopped else None


class _Pusher:
    """The worker's ``deliver``: push rows; where a verdict may fall, wait for it, elsewhere do not.

    Without waiting, a stop is learnt one push later; with it, before the next epoch.
    """

    def __init__(self, channel: Any, trial_id: int) -> None:
        self.channel = channel
        self.trial_id = trial_id
        self.last: Any = None
        self.stopped: set[int] = set()
        self.epoch: int | None = None  # the last epoch pushed
        self.calls = 0

    def __call__(self, rows: list[dict[str, Any]], wait: bool) -> bool:
        if rows:
            self.epoch = rows[-1]["epoch"]
        if wait:
            self.last = None
            if self.trial_id in ray.get(self.channel.push.remote(rows)):
                return True
            epoch = self.epoch
            if epoch is None:  # nothing pushed yet: there is nothing to judge
                return False
            while True:
                verdict = ray.get(self.channel.verdict.remote(self.trial_id, epoch, VERDICT_WAIT_SECONDS))
                if verdict is not None:
                    return verdict
        if self.last is not None:
            ready, _ = ray.wait([self.last], timeout=0)
            if ready:
                self.stopped = ray.get(ready[0])
        self.last = self.channel.push.remote(rows)
        return self.trial_id in self.stopped

    def ask(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The worker's ``ask``: the call goes with the rows (after those pushed before it); wait for its reply."""
        self.calls += 1
        self.channel.ask.remote(Call(self.trial_id, self.calls, method, args, kwargs))
        while True:
            reply = ray.get(self.channel.reply.remote(self.trial_id, self.calls, VERDICT_WAIT_SECONDS))
            if reply is not None:
                return reply

    def settle(self) -> None:
        # The driver drains the channel after it sees this task finish, so
        # every push must have landed before the task returns.
        if self.last is not None:
            ray.get(self.last)


@ray.remote(max_retries=0)
def _remote_trial(job: TrialJob, channel: Any) -> Ended:
    pusher = _Pusher(channel, job.trial_id)
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    ended = run_trial(job, pusher, node=node, ask=pusher.ask)
    pusher.settle()
    return ended


# Trials that stream every epoch (a pruner or early stopping judges them) are
# drained this often, and a worker waiting for a verdict asks again this often.
STREAM_DRAIN_SECONDS = 0.02
VERDICT_WAIT_SECONDS = 1.0


class RayExecutor(Executor):
    """Trials as Ray tasks; starts a quiet local Ray on 127.0.0.1 unless given an address."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.started_ray = False
        self.refs: dict[Any, tuple[TrialJob, float]] = {}
        self.last_drain = 0.0
        self.seen: dict[int, int] = {}  # the last epoch of each trial returned by poll: handled by the next
        self.stops: list[int] = []
        self.replies: dict[tuple[int, int], tuple[Any, ...]] = {}

    @property
    def capacity(self) -> int:  # type: ignore[override]
        return 1_000_000  # Ray queues what the cluster cannot run yet

    def check_workload(self, workload: Any) -> None:
        """A Python function travels to the workers pickled: one that holds a lock, an open file or a
        connection cannot, and Ray would say so in a long traceback once the study exists."""
        if not callable(workload):
            return  # "module:function": each worker imports it
        try:
            ray.cloudpickle.dumps(workload)
        except Exception as exc:  # cloudpickle raises TypeError, PicklingError, and more
            name = getattr(workload, "__qualname__", type(workload).__name__)
            raise TunerError(
                f"objective: {name!r} cannot be sent to Ray workers, because it cannot be pickled: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}. It (or a "
                "global it uses) holds state that lives in this process: a lock, an open file, a database "
                "connection. Fix: create that state inside the function or at module level in an importable "
                "module (and name it `module:function` in a spec), or run with --executor inline "
                "(executor='inline')."
            ) from None

    def start(self, resources: dict[str, float], parallel: int) -> None:
        self.started_ray = _connect(self.address)
        self.task_options = {"num_cpus": resources.get("cpu", 1.0), "num_gpus": resources.get("gpu", 0.0)}
        try:
            _check_resources(self.task_options, self.address)
        except TunerError:
            self.close()
            raise
        # On the driver's own node: a worker node that dies (killed, out of memory) must not take
        # the channel, and with it the study, along (the driver's node dies only with the driver).
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.channel = EpochChannel.options(scheduling_strategy=here).remote()
        # Up before any trial starts: a worker's rows wait in its own process until the channel is, and a
        # worker that dies meanwhile would take them along.
        ray.get(self.channel.drain.remote())

    def submit(self, job: TrialJob) -> None:
        ref = _remote_trial.options(**self.task_options, name=f"trial-{job.number}").remote(job, self.channel)
        self.refs[ref] = (job, time.monotonic())

    def poll(self, timeout: float) -> list[Event]:
        self._answer()
        if not self.refs:
            return []
        refs = list(self.refs)
        now = time.monotonic()
        streaming = any(job.flush_seconds == 0 for job, _ in self.refs.values())
        interval = STREAM_DRAIN_SECONDS if streaming else FLUSH_SECONDS
        ready, _ = ray.wait(refs, num_returns=1, timeout=min(timeout, interval))
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        now = time.monotonic()
        events: list[Event] = []
        # Workers push each epoch as it is reported: a trial that ended (a dead worker's too) has its rows here.
        if ready or now - self.last_drain >= interval:
            events += self.delivered()
        return events + [self._outcome(ref) for ref in ready]  # the rows first: a trial's rows precede its end

    def delivered(self) -> list[Event]:
        self.last_drain = time.monotonic()
        rows, calls = ray.get(self.channel.drain.remote())
        for row in rows:
            self.seen[row["trial_id"]] = max(row["epoch"], self.seen.get(row["trial_id"], -1))
        return ([Epochs(rows)] if rows else []) + list(calls)

    def handled(self) -> None:
        self._answer()

    def _answer(self) -> None:
        """What the last poll returned is handled now: tell the waiting workers, with the stops, in one call."""
        if self.seen or self.stops or self.replies:
            self.channel.answer.remote(self.seen, self.stops, self.replies)
            self.seen, self.stops, self.replies = {}, [], {}

    def reply(self, call: Call, reply: tuple[Any, ...]) -> None:
        self.replies[(call.trial_id, call.seq)] = reply

    def stop(self, trial_ids: Iterable[int]) -> None:
        self.stops.extend(trial_ids)

    def _outcome(self, ref: Any) -> Ended:
        job, _ = self.refs.pop(ref)
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            # run_trial catches the workload's exceptions, so this one came from
            # unpacking the job on the worker: usually a workload it cannot import.
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            return Ended(job.number, job.trial_id, Failed(
                f"the trial could not start on its Ray worker: {type(cause).__name__}: "
                f"{str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}. Fix: make the workload "
                "importable on every node (launch from the directory that holds its module, or install it)."
            ))
        except ray.exceptions.RayError as exc:
            # The worker process or its node died (killed, out of memory): the
            # workload never got to say why, so say what Ray saw.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return crashed(job, f"worker died: {type(exc).__name__}: {reason}")

    def cancel(self, trial_ids: Iterable[int]) -> None:
        wanted = set(trial_ids)
        for ref, (job, _) in list(self.refs.items()):
            if job.trial_id in wanted:
                ray.cancel(ref, force=True)
                del self.refs[ref]

    def close(self) -> None:
        for ref in list(self.refs):
            ray.cancel(ref, force=True)
        self.refs.clear()
        if getattr(self, "channel", None) is not None:
            ray.kill(self.channel)
            self.channel = None
        if self.started_ray:
            try:
                ray.shutdown()
            finally:  # Ray's default, whatever its shutdown raised
                _print_ray_messages(True)
                self.started_ray = False
            for folder in _temp_dirs(os.getpid()):
                shutil.rmtree(folder, ignore_errors=True)


def _connect(address: str | None) -> bool:
    """Connect to ``address`` or start a local Ray; True when this call started one."""
    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    if address:
        _check_reachable(address)
        _check_node(address)
    try:
        with _keep_sigterm_handler():
            if address:
                ray.init(address=address, **quiet)
            else:
                # address="local": a new instance of our own, never one that a
                # `ray start` on this machine left recorded in /tmp/ray. Token
                # authentication stays on (Ray's default).
                with _worker_environment(), _on_loopback():
                    ray.init(address="local", _node_ip_address="127.0.0.1", _temp_dir=_own_temp_dir(), **quiet)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        if "No node info found" in str(exc):
            raise TunerError(_not_a_node(address)) from None
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        raise TunerError(
            f"cannot start or reach {where}: {str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__}. "
            "Fix: check --ray-address / RAY_ADDRESS (e.g. 127.0.0.1:6379) and that the cluster "
            "is up (`ray status`), or use --executor inline."
        ) from None
    _print_ray_messages(False)
    return True


def _print_ray_messages(on: bool) -> None:
    """Whether a driver prints the messages Ray's raylets publish to it (on tuner's own stdout).

    log_to_driver=False keeps the workers' output in Ray's log files, but a driver
    still prints every "(raylet) A worker died or was killed ..." line it is sent,
    amid tuner's output. They are in the raylet's log file too, and the trial's
    record says why it ended; Ray's own switch for them is the one its debugger
    turns off at a breakpoint.
    """
    ray._private.worker._worker_logs_enabled = on


# A local Ray keeps its session files (logs, sockets, spilled objects) under a folder
# of its own, named by the orchestrator's pid: removed when it stops, and by the
# next local start when a kill -9 left it behind (Ray itself never removes them).
TEMP_PREFIX = "tuner-ray-"


def _own_temp_dir() -> str:
    """Ray's temp folder for a local Ray: inside a new folder that this process made, which only it may enter.

    Made anew, never taken as found: a folder, or a link to one, that another user
    put in the shared temp folder under a name tuner would use would otherwise get
    Ray's sockets and logs, and that user their contents. Ray makes its own folders
    writable by everyone (0777), so they go one level down, behind the private one.
    """
    for folder in _temp_dirs():
        owner = folder.name.removeprefix(TEMP_PREFIX).partition("-")[0]
        if not _alive(int(owner)):
            _kill_holders(folder)
            shutil.rmtree(folder, ignore_errors=True)
    return os.path.join(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"), "ray")


def _temp_dirs(pid: int | None = None) -> list[Path]:
    """The session folders of local Rays (of ``pid``'s alone, if given) in the temp folder: this user's own."""
    found = []
    for folder in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}{pid if pid is not None else ''}*"):
        owner = folder.name.removeprefix(TEMP_PREFIX).partition("-")[0]
        try:
            info = folder.lstat()
        except OSError:  # gone meanwhile
            continue
        if owner.isdigit() and (pid is None or int(owner) == pid) and stat.S_ISDIR(info.st_mode) \
                and info.st_uid == os.getuid():
            found.append(folder)
    return found


def _kill_holders(folder: Path) -> None:
    """Kill the processes of a dead orchestrator's local Ray that outlived it.

    After a kill -9 of the orchestrator, Ray's dashboard and runtime-env agents
    live on (they ignore SIGTERM); they are known by their log files, open
    under that orchestrator's own folder.
    """
    prefix = f"{folder}/"
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if proc.stat().st_uid != os.getuid():
                continue
            if any(os.readlink(fd).startswith(prefix) for fd in (proc / "fd").iterdir()):
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:  # gone meanwhile, or not ours to read
            continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def _worker_environment() -> Iterator[None]:
    """The environment a local Ray's processes start with (they inherit it): the driver's, less the store's.

    Workers never touch the study store, so the processes of a local Ray (and the
    user code its workers run) never see the database's URL or password.
    """
    from tuner.store.sql import SECRET_VARIABLES  # the driver's: workers never import the store

    saved = {k: os.environ.pop(k) for k in (*SECRET_VARIABLES, *LOCAL_RAY_VARIABLES) if k in os.environ}
    os.environ.update(LOCAL_RAY_VARIABLES)
    try:
        yield
    finally:
        for name in LOCAL_RAY_VARIABLES:
            os.environ.pop(name, None)
        os.environ.update(saved)


# Ray's settings (RayConfig reads RAY_<name>) for the processes of a local Ray: no metrics
# collection, so no Prometheus exporter in its dashboard agent (tuner reads none of it).
LOCAL_RAY_VARIABLES = {"RAY_enable_metrics_collection": "0"}


@contextlib.contextmanager
def _on_loopback() -> Iterator[None]:
    """Keep every server of a local Ray on 127.0.0.1, unreachable from other machines.

    Ray replaces a node address of 127.0.0.1 with the machine's own, so that other
    machines may join, and its servers then listen on every interface: gRPC (GCS,
    raylet, each worker), and the autoscaler's and dashboard's Prometheus metrics,
    which answer anyone, token or not. Where Ray runs single-node clusters only
    (macOS and Windows, or RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), it keeps the
    loopback address, and each of those servers listens on 127.0.0.1 alone. A local
    Ray of tuner's never takes other nodes, so it starts that way; Ray reads the
    setting once, at import, so its constant is set for the start (once the node
    exists, Ray takes its address from the node).
    """
    constants = ray._private.ray_constants
    saved = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = saved


@contextlib.contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """Keep tuner's SIGTERM handler: ray.init installs its own, which exits mid-trial with a stack dump."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_reachable(address: str) -> None:
    """Fail in seconds on a dead address; ray.init would retry for minutes."""
    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise TunerError(
            f"cannot start or reach the Ray cluster at {address!r}: {exc}. Fix: check --ray-address / "
            "RAY_ADDRESS (the head's GCS address, e.g. 127.0.0.1:6379) and that the cluster is up "
            "(`ray status`), or leave it out to start a local Ray."
        ) from None


def _check_node(address: str) -> None:
    """A driver needs a Ray node on its own machine; without one, ray.init looks for a minute, then fails."""
    if address == "auto" or "://" in address:
        return
    find = getattr(getattr(ray._private, "services", None), "find_node_ids", None)  # greps for local raylets
    if find is not None and not find():
        raise TunerError(_not_a_node(address))


def _not_a_node(address: str | None) -> str:
    return (
        f"this machine is not a node of the Ray cluster at {address!r}, and a Ray driver (tuner launch, a "
        "scheduled run) needs a Ray node on its own machine. Fix: join it to the cluster as a node without "
        f"CPUs first (`ray start --address={address} --num-cpus=0`, with the cluster's RAY_AUTH_TOKEN), "
        "or launch from one of its nodes (docker-compose: `docker-compose exec scheduler tuner launch ...`), "
        "or leave --ray-address out to start a local Ray."
    )


def _check_resources(options: dict[str, float], address: str | None) -> None:
    """Refuse a request the cluster can never satisfy, instead of hanging on it."""
    total = ray.cluster_resources()
    where = f"the Ray cluster at {address}" if address else "this machine's Ray instance"
    for key, name in (("num_gpus", "GPU"), ("num_cpus", "CPU")):
        want, have = options[key], total.get(name, 0.0)
        if want > have:
            raise TunerError(
                f"resources.{name.lower()}: each trial asks for {want:g} {name}, but {where} has "
                f"{have:g}. Fix: set resources.{name.lower()} to at most {have:g}"
                + (" (0 runs on the CPU)" if name == "GPU" else "")
                + ", or join a cluster that has them (--ray-address)."
            )
