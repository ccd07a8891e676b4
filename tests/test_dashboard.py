"""`tuner dashboard` in a real headless Chromium: the real optuna-dashboard on a study from a real run.

Screenshots of every page checked are kept in $TUNER_TEST_ARTIFACTS, else
build/test-artifacts/ (ignored by git). Without Chromium these tests skip,
except under CI=true, where they fail: CI must not pass by not testing.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import tuner
from tuner import dashboard
from tuner.store import Store

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("TUNER_TEST_ARTIFACTS") or REPO / "build" / "test-artifacts")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SPACE = {"x": {"type": "float", "low": -2.0, "high": 2.0}}


# ---------------------------------------------------------------------- a headless browser


@dataclass
class Page:
    """What Chromium rendered: the DOM after scripts ran, console messages, and a screenshot."""

    dom: str
    console: list[str]
    screenshot: Path


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    reason = f"no Chromium on PATH ({', '.join(CHROMIUM_NAMES)}); install it (Debian: apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}. CI=true, so the browser tests fail instead of skipping.", pytrace=False)
    pytest.skip(reason)


def render(url: str, name: str, height: int = 1000, budget_ms: int = 10000) -> Page:
    """Load ``url`` in headless Chromium, let its scripts and requests run, and keep a screenshot."""
    browser = chromium()
    shot = ARTIFACTS / f"{name}.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="tuner-chromium-")
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", f"--window-size=1400,{height}",
        f"--virtual-time-budget={budget_ms}", f"--screenshot={shot}", "--dump-dom", url,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, f"chromium exited {done.returncode}:\n{done.stderr[-3000:]}"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return Page(done.stdout, console, shot)


def errors(page: Page) -> list[str]:
    return [line for line in page.console if re.search(r"Uncaught|error", line, re.IGNORECASE)]


# ---------------------------------------------------------------------- a study and its dashboard


def curves(params, report):
    """Train and validation curves whose shape depends on x.

    x > 1.5 fails; x < -1 diverges at epoch 2 (the diagnostics pruner stops it);
    0.5 < x overfits (validation best near epoch 3, then rising); the rest are healthy.
    """
    x = params["x"]
    if x > 1.5:
        raise RuntimeError(f"x={x:.3f}: the data loader ran out of shards")
    for epoch in range(1, params["epochs"] + 1):
        if x < -1 and epoch == 2:
            report(epoch, train_loss=math.nan, val_loss=math.nan)
            return
        train = 1.0 / epoch + 0.1 * abs(x)
        val = train + 0.05 + (0.08 * (epoch - 3) * x if x > 0.5 and epoch > 3 else 0.0)
        report(epoch, train_loss=train, val_loss=val)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_dashboard(cwd: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    log = cwd / f"dashboard-{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "dashboard", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))
    return proc, log


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A real study (inline executor) and `tuner dashboard` serving it on a free port on 127.0.0.1."""
    chromium()  # skip (or fail under CI) before the work, not after
    cwd = tmp_path_factory.mktemp("dashboard")
    storage = f"sqlite:///{cwd / 'tuner.db'}"
    study = tuner.launch(space=SPACE, objective=curves, study="curves", strategy="random", trials=8, epochs=8,
                         seed=4, pruner="none", executor="inline", storage=storage)
    states = {t.state for t in study.trials}
    assert {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL} <= states, [t.state for t in study.trials]
    port = free_port()
    proc, log = start_dashboard(cwd, "--storage", storage, "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    study_id = study.optuna._study_id
    deadline = time.monotonic() + 90
    while True:  # until it serves, and the annotator has written every trial's note
        assert proc.poll() is None, f"tuner dashboard exited {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no annotated dashboard after 90 s:\n{log.read_text()}"
        try:
            trials = get_json(f"{base}/api/studies/{study_id}")["trials"]
            if all(t["note"]["body"] for t in trials):
                break
        except OSError:
            pass
        time.sleep(0.3)
    yield base, study, cwd, log
    assert stop(proc) == 0, log.read_text()


def test_the_study_list_shows_the_study(served):
    base, study, _, log = served
    page = render(f"{base}/dashboard", "dashboard/study-list")
    assert study.name in page.dom
    assert not errors(page), page.console
    assert "127.0.0.1" in log.read_text() and "warning" not in log.read_text()


def test_the_study_page_shows_its_trials_and_intermediate_values(served):
    base, study, _, _ = served
    sid = study.optuna._study_id
    page = render(f"{base}/dashboard/studies/{sid}", "dashboard/study", height=2400)
    assert "Intermediate values" in page.dom
    chart = page.dom.split('id="graph-intermediate-values"', 1)[1].split('id="graph-', 1)[0]
    finite = [t for t in study.trials if t.intermediate_values
              and all(math.isfinite(v) for v in t.intermediate_values.values())]
    # One line per trial whose values are all finite (plotly draws each as a scatter trace;
    # the dashboard leaves out a trial with a NaN).
    assert chart.count('class="trace scatter') >= len(finite) > 0
    assert 'id="plot-history"' in page.dom  # the optimization history
    assert not errors(page), page.console

    listing = render(f"{base}/dashboard/studies/{sid}/trials", "dashboard/trial-list")
    for trial in study.trials:
        assert f"Trial {trial.number}" in listing.dom


@pytest.mark.parametrize("state", [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
def test_a_trial_page_shows_its_learning_curves_and_diagnosis(served, state):
    base, study, _, _ = served
    sid = study.optuna._study_id
    # An unhealthy one where there is one: its note has the most to show.
    trial = min((t for t in study.trials if t.state == state), key=lambda t: t.user_attrs.get("diagnosis") == "healthy")
    page = render(f"{base}/dashboard/studies/{sid}/trials?numbers={trial.number}",
                  f"dashboard/trial-{trial.number}-{state.name.lower()}", height=1400)
    a = trial.user_attrs
    assert f"Trial {trial.number}: {state.name.lower()}" in page.dom  # the note's heading, rendered
    if state == TrialState.FAIL:
        assert "ran out of shards" in page.dom
        return
    assert a["diagnosis"] in page.dom and a.get("diagnosis_detail", "").split(":")[0] in page.dom
    if "final_gap" in a:  # a diverged trial's last gap is NaN, and not recorded
        assert "overfitting gap" in page.dom
    if state == TrialState.PRUNED:
        assert a["prune_reason"].split(":")[0] in page.dom
    # The learning-curve image, served by the dashboard from tuner's artifact store.
    src = re.search(rf'<img [^>]*src="(/artifacts/{sid}/{trial._trial_id}/[0-9a-f-]+)"', page.dom)
    assert src, "no learning-curve image in the trial's note"
    with urllib.request.urlopen(base + src.group(1), timeout=10) as response:
        assert response.headers["Content-Type"] == "image/png"
        assert response.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not errors(page), page.console


def test_annotations_are_written_once_and_keep_a_users_note(tmp_path):
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import get_note, save_note

    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    study = tuner.launch(space=SPACE, objective=curves, study="s", strategy="random", trials=3, epochs=4, seed=1,
                         executor="inline", storage=storage)
    store = Store(storage)
    assert dashboard.artifacts_dir(store) == tmp_path / "tuner-artifacts"
    (tmp_path / "tuner-artifacts").mkdir()
    artifacts = FileSystemArtifactStore(str(tmp_path / "tuner-artifacts"))
    first = study.trials[0]
    live = optuna.trial.Trial(study.optuna, first._trial_id)
    save_note(live, "my own note")
    assert dashboard.annotate(study.optuna, store, artifacts) == 3
    assert dashboard.annotate(study.optuna, store, artifacts) == 0
    assert get_note(live) == "my own note"
    assert len(list((tmp_path / "tuner-artifacts").iterdir())) == 3  # each trial still gets its curve


def empty_store(tmp_path: Path) -> str:
    """A store tuner made with no study in it yet: the dashboard serves only a store that exists."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    Store(url).close()
    return url


def test_a_port_in_use_is_refused_naming_the_port(tmp_path, capsys):
    from tuner.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["dashboard", "--storage", empty_store(tmp_path), "--port", str(port)])
    stderr = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert f"--port: port {port} on 127.0.0.1 is already in use" in stderr
    assert re.search(r"Fix: choose another port, e\.g\. --port \d+", stderr) and "Traceback" not in stderr


@pytest.mark.parametrize("args, message", [
    (["--port", "99999"], "--port: a port is between 1 and 65535, but got 99999. Fix: e.g. --port 8080."),
    (["--host", "no-such-host.invalid"], "--host: cannot listen on 'no-such-host.invalid'"),
])
def test_a_bad_port_or_host_is_refused(tmp_path, capsys, args, message):
    from tuner.cli import main

    assert main(["dashboard", "--storage", empty_store(tmp_path), *args]) == 2
    stderr = " ".join(capsys.readouterr().err.split())
    assert message in stderr and "Traceback" not in stderr and "warning" not in stderr


def test_another_host_than_loopback_warns_that_anyone_can_modify_studies(tmp_path):
    proc, log = start_dashboard(tmp_path, "--storage", empty_store(tmp_path), "--host", "0.0.0.0",
                                "--port", str(free_port()))
    deadline = time.monotonic() + 60
    while "optuna-dashboard on" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stop(proc) == 0
    text = " ".join(log.read_text().split())
    assert "warning: the dashboard listens on 0.0.0.0" in text
    assert "no authentication" in text and "modify and delete studies" in text
    assert dashboard.is_loopback("127.0.0.1") and dashboard.is_loopback("::1") and not dashboard.is_loopback("0.0.0.0")


def sized(params, report):
    """val_loss falls with the model's size, which costs n_params: a trade-off with a front of several trials."""
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, train_loss=1.0 / (epoch * params["size"]), val_loss=1.0 / (epoch * params["size"]) + 0.01,
               n_params=100.0 * params["size"])


def test_a_two_objective_studys_pareto_front_is_drawn_with_its_metric_names(tmp_path):
    chromium()
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    spec = {"name": "sized", "strategy": "grid", "epochs": 2,
            "objective": [{"metric": "val_loss"}, {"metric": "n_params", "direction": "minimize"}],
            "params": {"size": {"type": "categorical", "choices": [1, 2, 4, 8]}}}
    study = tuner.launch(spec, objective=sized, executor="inline", storage=storage)
    front = study.pareto_front()
    assert len(front) == 4  # every size is a trade-off: smaller is cheaper, larger is better
    port = free_port()
    proc, log = start_dashboard(tmp_path, "--storage", storage, "--port", str(port))
    base, sid = f"http://127.0.0.1:{port}", study.optuna._study_id
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, f"tuner dashboard exited {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no dashboard after 90 s:\n{log.read_text()}"
        try:
            served = get_json(f"{base}/api/studies/{sid}")
            break
        except OSError:
            time.sleep(0.3)
    try:
        assert len(served["directions"]) == 2
        page = render(f"{base}/dashboard/studies/{sid}", "dashboard/pareto", height=2400, budget_ms=15000)
        panel, chart = page.dom.split(">Pareto Front<", 1)[1].split('id="graph-pareto-front"', 1)
        chart = chart.split(">History<", 1)[0]  # the next panel
        assert chart.count('class="point"') == len(front)  # plotly drew one point a trial of the front
        assert "val_loss" in panel and "n_params" in panel  # its axes chosen by the objectives' names
        assert "Objective 0" not in panel
        assert not errors(page), page.console
    finally:
        assert stop(proc) == 0, log.read_text()


# ---------------------------------------------------------------------- user text in notes


# A workload's error as the trial's note shows it: each part would make the viewer's browser fetch from {url}
# (or, relative, from the dashboard's own address) if the note took it for markdown or HTML. optuna-dashboard's
# Content-Security-Policy lets a page load images from its own address alone, so that is where these point.
HOSTILE_REASON = ('![t]({url}/track/image.png) <img src="/track/html.png"> `` ![t](/track/code-span.png) `` '
                  "**bold** [see]({url}/track/link.png) ![t][r] <{url}/track/autolink.png>")
# A reason of several lines (a traceback) goes in a code block: this one tries to close it early.
HOSTILE_TRACEBACK = ("Traceback (most recent call last):\n```\n![t](/track/fence.png)\n````\n"
                     '<img src="/track/fence.png">')


class Tracker:
    """A proxy on 127.0.0.1 in front of the dashboard that records every request for a path under /track/."""

    def __init__(self, upstream: str) -> None:
        import http.server
        import threading

        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (the base class's name)
                if self.path.startswith("/track/"):
                    hits.append(self.path)
                    self.send_response(404)
                    self.end_headers()
                    return
                try:
                    with urllib.request.urlopen(upstream + self.path, timeout=30) as response:
                        status, headers, body = response.status, response.headers, response.read()
                except urllib.error.HTTPError as exc:
                    status, headers, body = exc.code, exc.headers, exc.read()
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_workloads_error_in_a_note_is_shown_as_text_and_loads_nothing(tmp_path, tally):
    from optuna_dashboard import save_note

    chromium()
    port = free_port()
    tracker = Tracker(f"http://127.0.0.1:{port}")
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"

    def hostile(params, report):
        report(1, val_loss=1.0)
        if params["case"] == 0:
            raise ValueError(HOSTILE_REASON.format(url=tracker.url))

    space = {"case": {"type": "categorical", "choices": [0, 1]}}
    study = tuner.launch(space=space, objective=hostile, study="hostile", strategy="grid", epochs=1, pruner="none",
                         executor="inline", storage=storage)
    study.optuna.add_trial(optuna.trial.create_trial(
        state=TrialState.FAIL, user_attrs={"fail_reason": HOSTILE_TRACEBACK.format(url=tracker.url)}))
    # The control: a note the user wrote keeps its markdown, so its image loads: the tracker sees a browser's fetch.
    done = next(t for t in study.optuna.trials if t.state == TrialState.COMPLETE)
    save_note(optuna.trial.Trial(study.optuna, done._trial_id), "my own note ![mine](/track/control.png)")
    trials = study.optuna.trials
    proc, log = start_dashboard(tmp_path, "--storage", storage, "--port", str(port))
    base, sid = tracker.url, study.optuna._study_id  # the browser goes through the tracker
    try:
        deadline = time.monotonic() + 90
        while True:  # until it serves, and the annotator has written every trial's note
            assert proc.poll() is None, f"tuner dashboard exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no annotated dashboard after 90 s:\n{log.read_text()}"
            try:
                if all(t["note"]["body"] for t in get_json(f"{base}/api/studies/{sid}")["trials"]):
                    break
            except OSError:
                pass
            time.sleep(0.3)
        pages = {t.number: render(f"{base}/dashboard/studies/{sid}/trials?numbers={t.number}",
                                  f"dashboard/hostile-note-{t.number}", height=1400, budget_ms=5000) for t in trials}
    finally:
        assert stop(proc) == 0, log.read_text()
        tracker.close()
    print(f"\nrequests the trial pages made for /track/: {sorted(set(tracker.hits))}")
    assert set(tracker.hits) == {"/track/control.png"}  # the user's own image, and nothing a workload wrote
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 2
    for trial in failed:
        note = pages[trial.number].dom.split(">Note<", 1)[1].split("Written by", 1)[0]  # not the attributes' table
        text = html.unescape(re.sub(r"<[^>]+>", "", note))  # what a reader sees
        for line in trial.user_attrs["fail_reason"].splitlines():  # every line of it, as it was written
            assert line in text, (line, text[:3000])
        tally("hostile input")
