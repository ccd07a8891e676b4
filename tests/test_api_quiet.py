"""`tuner.launch`/`tuner.resume` from a user's Python process print no Optuna chatter, as the CLI does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import optuna, tuner
from tests import workloads

optuna.logging.set_verbosity({verbosity})
space = {{"x": {{"type": "float", "low": 0.0, "high": 1.0}}}}
where = dict(executor="inline", storage="sqlite:///q.db", progress=False)
tuner.launch(space=space, objective=workloads.quadratic, trials=1, epochs=1, study="q", strategy="tpe", **where)
tuner.resume("q", objective=workloads.quadratic, trials=2, **where)
print("verbosity after:", optuna.logging.get_verbosity())
optuna.create_study()  # the user's own Optuna logs as the user set it
"""


def test_launch_and_resume_from_python_are_silent_and_leave_optunas_verbosity_as_the_user_set_it(tmp_path):
    for verbosity in ("optuna.logging.INFO", "optuna.logging.DEBUG"):
        (tmp_path / "q.db").unlink(missing_ok=True)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-c", SCRIPT.format(verbosity=verbosity)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"verbosity after: {20 if verbosity.endswith('INFO') else 10}"
        # Only the user's own create_study speaks: no "A new study created in RDB", no ExperimentalWarning.
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "A new study created in memory with name:" in lines[0], done.stderr
