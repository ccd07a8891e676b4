"""``tuner dashboard``: the real optuna-dashboard on tuner's store, with each trial's learning curves.

optuna-dashboard draws one intermediate value per epoch, the objective. tuner
records more: training and validation curves, a diagnosis, the overfitting gap,
why a trial was pruned or failed. :func:`annotate` puts them on every finished
trial's page with the dashboard's own features: a learning-curve PNG as a trial
artifact, and a markdown note that shows it with the diagnosis. The dashboard
calls it in a background thread while it serves, so trials that finish while a
study runs get theirs within seconds.

Finished trials are immutable in Optuna's storage (``set_trial_system_attr``
refuses them), so the artifact's record goes where optuna-dashboard also looks
for trial artifacts, the study's system attributes (``dashboard:artifacts:<trial
id>:<artifact id>``), and the note too is kept there, as the dashboard keeps
every note. Both are mutable while a study runs and survive a dashboard restart.
"""

from __future__ import annotations

import errno
import io
import ipaddress
import json
import re
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner import report
from tuner.errors import TunerError
from tuner.store import Store
from tuner.store import internals

# Seconds between two passes of the annotator over the store: a finished trial's
# page gets its curve this long after it ends at most.
ANNOTATE_SECONDS = 5.0
# Study system attribute that marks a trial as annotated (value: its artifact id, or "").
DONE_KEY = "tuner:annotated:{trial_id}"
# Where optuna-dashboard looks for a trial's artifacts among the study's system attributes.
ARTIFACT_KEY = "dashboard:artifacts:{trial_id}:{artifact_id}"
LOOPBACK_NAMES = ("localhost", "ip6-localhost")
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def artifacts_dir(store: Store, given: str | Path | None = None) -> Path:
    """Where artifacts go: ``given``, else ``<db>-artifacts/`` next to a SQLite file, else ./tuner-artifacts."""
    if given is not None:
        return Path(given)
    if store.backend == "sqlite":
        db = Path(store.engine.url.database or "tuner.db").expanduser().resolve()
        return db.with_name(f"{db.stem}-artifacts")
    return Path("tuner-artifacts")


def annotate(study: optuna.Study, store: Store, artifacts: Any) -> int:
    """Give every finished trial of ``study`` without one a learning-curve artifact and a note.

    ``artifacts`` is an Optuna artifact store. A note the user already wrote is
    kept as is. Returns the number of trials annotated.
    """
    storage, sid = internals.storage_of(study), internals.study_id(study)
    attrs = storage.get_study_system_attrs(sid)
    todo = [t for t in study.get_trials(deepcopy=False, states=_FINISHED)
            if DONE_KEY.format(trial_id=internals.trial_id(t)) not in attrs]
    if not todo:
        return 0
    curves = report.collect_curves(store.epochs(study, [t.number for t in todo]))
    for trial in todo:
        rows = curves.get(trial.number, [])
        artifact_id = _upload_curve(study, trial, rows, artifacts) if rows else ""
        tid = internals.trial_id(trial)
        if internals.dashboard_note_key(tid) not in attrs:
            internals.save_dashboard_note(storage, sid, tid, note(study, trial, artifact_id))
        storage.set_study_system_attr(sid, DONE_KEY.format(trial_id=tid), artifact_id)
    return len(todo)


def annotate_all(store: Store, artifacts: Any) -> int:
    """:func:`annotate` every study tuner launched in the store (others have no epochs to draw)."""
    from tuner.api import SPEC_ATTR

    done = 0
    for summary in store.storage.get_all_studies():
        if SPEC_ATTR in summary.user_attrs:
            study = optuna.load_study(study_name=summary.study_name, storage=store.storage)
            done += annotate(study, store, artifacts)
    return done


def note(study: optuna.Study, trial: FrozenTrial, artifact_id: str) -> str:
    """The markdown note of a finished trial: its curves, diagnosis, gap and why it stopped.

    What a trial recorded (a workload's error, a metric's name) shows as the text it
    is, never as markdown: a reason that reads ``![t](http://host/x.png)`` would
    otherwise make every browser that opens the page fetch that address.
    """
    a = trial.user_attrs
    lines = [f"## Trial {trial.number}: {trial.state.name.lower()}, {_text(a.get('diagnosis', 'not diagnosed'))}", ""]
    if artifact_id:
        url = f"/artifacts/{internals.study_id(study)}/{internals.trial_id(trial)}/{artifact_id}"
        lines += [f"![learning curves of trial {trial.number}: training and validation loss]({url})", ""]
    diagnosis = None
    if a.get("diagnosis"):
        at = f" at epoch {_text(a['diagnosis_epoch'])}" if a.get("diagnosis_epoch") else ""
        diagnosis = (f"**{_text(a['diagnosis'])}**{at}"
                     + (f": {_text(a['diagnosis_detail'])}" if a.get("diagnosis_detail") else ""))
    facts = [
        ("diagnosis", diagnosis),
        ("overfitting gap (validation − training loss, last epoch)", report.fmt(a.get("final_gap"))),
        ("best epoch", report.fmt(a.get("best_epoch"))),
        ("pruned because", a.get("prune_reason")),
        ("failed because", a.get("fail_reason")),
        ("stopped because", a.get("stop_reason")),
        ("epochs · wall seconds", f"{a['epochs']} · {report.fmt(a.get('wall_seconds'))}" if "epochs" in a else None),
    ]
    for name, value in facts:
        if value in (None, ""):
            continue
        text = str(value)
        if name == "diagnosis":  # already markdown, its parts made text above
            lines.append(f"- {name}: {text}")
        elif "\n" in text or "\r" in text:  # a traceback keeps its lines in a code block
            fence = "`" * max(3, 1 + max((len(run) for run in re.findall("`+", text)), default=0))
            lines.append(f"- {name}:\n\n{fence}\n{text}\n{fence}")
        else:  # a sentence stays in the list
            lines.append(f"- {name}: {_text(text)}")
    lines += ["", "_Written by `tuner dashboard` from tuner's per-epoch records._"]
    return "\n".join(lines)


def _text(value: object) -> str:
    """``value`` as markdown that shows it as it is: every ASCII punctuation mark escaped (CommonMark's rule),
    so no image, link, HTML or emphasis can start in it."""
    return _PUNCTUATION.sub(r"\\\g<0>", str(value))


_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")


# ---------------------------------------------------------------------- serving


def serve(
    store: Store,
    host: str = "127.0.0.1",
    port: int = 8080,
    artifacts: str | Path | None = None,
    on_ready: Callable[[str, Path], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Serve optuna-dashboard on ``host:port`` until interrupted, annotating trials meanwhile."""
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    if not 1 <= port <= 65535:
        raise TunerError(f"--port: a port is between 1 and 65535, but got {port}. Fix: e.g. --port 8080.")
    directory = artifacts_dir(store, artifacts)
    report.check_directory(directory, "--artifacts")
    artifact_store = FileSystemArtifactStore(str(directory))
    server = _bind(host, port, wsgi(store.storage, artifact_store=artifact_store))
    if not is_loopback(host) and warn is not None:
        warn(f"the dashboard listens on {host}:{port}, where other machines may reach it. It has no "
             "authentication, and anyone who reaches it can modify and delete studies. Fix: keep the default "
             f"--host 127.0.0.1 and reach it through an SSH tunnel (ssh -L {port}:127.0.0.1:{port} HOST).")
    stop = threading.Event()
    annotator = threading.Thread(target=_annotate_loop, args=(store.url, artifact_store, stop, warn),
                                 name="tuner-annotate", daemon=True)
    annotator.start()
    if on_ready is not None:
        on_ready(f"http://{_url_host(host)}:{server.server_port}/dashboard", directory)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stop.set()
        server.server_close()


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per request, as optuna-dashboard's own CLI serves: a slow plot blocks no page."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
        pass  # no line per request: the terminal stays readable


def _bind(host: str, port: int, app: Any) -> WSGIServer:
    """A server listening on host:port, or an error that names the port and a free one."""
    try:
        return make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise TunerError(
                f"--port: port {port} on {host} is already in use (another dashboard or server listens there). "
                f"Fix: choose another port, e.g. --port {_free_port(host, port)}."
            ) from None
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise TunerError(f"--host: cannot listen on {host!r}: {exc.strerror or exc}. Fix: use an address "
                             "of this machine, e.g. 127.0.0.1 (the default).") from None
        raise TunerError(f"--port: cannot listen on {host}:{port}: {exc.strerror or exc}. "
                         "Fix: choose another port above 1023.") from None


def _free_port(host: str, taken: int) -> int:
    for candidate in range(taken + 1, min(taken + 50, 65535)):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            try:
                sock.bind((host, candidate))
                return candidate
            except OSError:
                continue
    return taken + 1


def _annotate_loop(url: str, artifacts: Any, stop: threading.Event, warn: Callable[[str], None] | None) -> None:
    """Annotate new finished trials every ANNOTATE_SECONDS; a failure is reported once, not fatal."""
    store = Store(url)  # an engine of its own: the server's threads keep theirs
    reported = False
    while not stop.is_set():
        try:
            annotate_all(store, artifacts)
        except Exception as exc:  # the dashboard must keep serving whatever the annotator meets
            if warn is not None and not reported:
                warn(f"could not add learning curves to trial pages: {type(exc).__name__}: {exc}")
            reported = True
        stop.wait(ANNOTATE_SECONDS)
    store.close()


def _upload_curve(study: optuna.Study, trial: FrozenTrial, rows: list[dict[str, Any]], artifacts: Any) -> str:
    artifact_id = str(uuid.uuid4())
    artifacts.write(artifact_id, io.BytesIO(report.learning_curve_png(trial, rows)))
    meta = {"artifact_id": artifact_id, "filename": f"learning-curves-trial-{trial.number}.png",
            "mimetype": "image/png", "encoding": None}
    internals.storage_of(study).set_study_system_attr(
        internals.study_id(study), ARTIFACT_KEY.format(trial_id=internals.trial_id(trial), artifact_id=artifact_id),
        json.dumps(meta))
    return artifact_id


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host



