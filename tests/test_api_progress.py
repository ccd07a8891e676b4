"""tuner.launch / tuner.resume show the CLI's progress: by default in a terminal, not in a log; on or off when asked.

Each case runs a user's script in its own process, its stderr a real pseudo-terminal or a pipe.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import optuna
import pytest

import tuner
from tests.services import user_env
from tuner.errors import TunerError

SCRIPT = '''
import sys
import tuner

def train(params, report):
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=params["x"] + 1.0 / epoch)

keywords = eval(sys.argv[1])
tuner.launch(space={{"x": {{"type": "float", "low": 0, "high": 1}}}}, objective=train, study="p", trials=3,
             epochs=2, strategy="random", pruner="none", executor="inline", storage="sqlite:///p.db", **keywords)
tuner.resume("p", objective=train, storage="sqlite:///p.db", trials=4, executor="inline", **keywords)
print("done")
'''


def run(cwd: Path, keywords: str, terminal: bool) -> str:
    """The script's stderr, written to a pseudo-terminal of 120 columns or to a pipe."""
    (cwd / "script.py").write_text(SCRIPT.format())
    env = {k: v for k, v in user_env(TERM="xterm-256color").items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR",
                                                                                 "TTY_COMPATIBLE", "NO_COLOR")}
    if not terminal:
        done = subprocess.run([sys.executable, "script.py", keywords], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
        return done.stderr
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the terminal closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc = subprocess.Popen([sys.executable, "script.py", keywords], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=secondary, text=True)
    os.close(secondary)
    out, _ = proc.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(primary)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))  # no colours
    assert proc.returncode == 0 and out.strip() == "done", text
    return text


def test_in_a_terminal_the_progress_shows_by_default(tmp_path):
    err = run(tmp_path, "{}", terminal=True)
    assert "study p · random search · no pruner · minimize val_loss · 3 trials, 1 in parallel" in err, err
    assert "━" in err and "3/3" in err and "4/4" in err, err  # the launch's bar, then the resume's


def test_in_a_terminal_progress_false_shows_nothing(tmp_path):
    err = run(tmp_path, "{'progress': False}", terminal=True)
    assert "study p" not in err and "━" not in err and "trials" not in err, err


def test_in_a_log_the_progress_is_off_unless_asked_then_a_line_a_trial(tmp_path):
    assert "trials" not in run(tmp_path, "{}", terminal=False)
    (tmp_path / "p.db").unlink()
    err = run(tmp_path, "{'progress': True}", terminal=False)
    lines = [line for line in err.splitlines() if line.startswith("trials ")]
    assert "study p · random search · no pruner" in " ".join(err.split()), err
    # The launch's 3 trials, then the resume's: maybe where it starts (3 of 4 done), then its end.
    counts = [line.split(" · ")[0] for line in lines]
    assert counts[:3] == ["trials 1/3", "trials 2/3", "trials 3/3"] and counts[-1] == "trials 4/4", err
    assert set(counts[3:-1]) <= {"trials 3/4"}, err


@pytest.mark.parametrize("bad", ["yes", 1, "false"])
def test_progress_takes_true_false_or_none(tmp_path, bad, tally):
    with pytest.raises(TunerError, match=r"progress=: must be True .* but got .*Fix: e\.g\. progress=False"):
        tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=lambda p, r: 0.0, study="bad",
                     trials=1, executor="inline", storage=f"sqlite:///{tmp_path / 'p.db'}", progress=bad)
    db = tmp_path / "p.db"
    assert not db.exists() or "bad" not in optuna.get_all_study_names(f"sqlite:///{db}")  # nothing created
    tally("hostile input")


def test_the_header_shows_a_store_path_with_brackets_as_written(tmp_path, tally):
    """rich markup in a store's path ("[dim]") is text in the header, not a style that swallows it."""
    folder = tmp_path / "runs [bold]"
    folder.mkdir()
    (folder / "script.py").write_text(SCRIPT.format().replace('"sqlite:///p.db"', '"sqlite:///runs[dim]x.db"'))
    done = subprocess.run([sys.executable, "script.py", "{'progress': True}"], cwd=folder, env=user_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
    assert "store sqlite:///runs[dim]x.db" in " ".join(done.stderr.split()), done.stderr
    tally("hostile input")
