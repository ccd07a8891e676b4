"""examples/: each one runs as a real study, through the installed `tuner` script in a fresh directory and through tuner.launch.

The Lightning example goes through a local Ray, as `tuner launch` runs by
default; the other two run inline (`--executor inline`) to keep CI short: Ray's
side of a user's workload is the same for all three (the module beside the
spec, imported by the worker). Each also runs through tuner.launch: here
(plain loop) and in test_integrations_lightning.py / _transformers.py.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

import tuner
from tests.services import user_env

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TUNER = shutil.which("tuner")
GRADIENT_KEYS = {"grad_norm", "grad_first", "grad_last", "grad_ratio", "grad_zero_frac"}


def run(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    assert TUNER is not None, "the `tuner` console script is not installed: pip install -e ."
    result = subprocess.run([TUNER, *args], cwd=cwd, env=user_env(WANDB_MODE="offline"), capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    return result


def epochs_csv(cwd: Path, study: str) -> list[dict[str, str]]:
    run(cwd, "epochs", study, "--csv", f"{study}.csv")
    return list(csv.DictReader((cwd / f"{study}.csv").open()))


@pytest.mark.slow
def test_the_examples_run_as_studies_through_the_tuner_script(tmp_path):
    pytest.importorskip("pytorch_lightning")
    pytest.importorskip("transformers")
    for path in [*EXAMPLES.glob("*.py"), *EXAMPLES.glob("*.yaml")]:
        shutil.copy(path, tmp_path)
    spec = tmp_path / "lightning_mnist1d.yaml"  # a fifth of MNIST-1D's training split: CI-sized epochs
    spec.write_text(spec.read_text().replace("train_size: 0}", "train_size: 640}"))

    # One Ray worker runs both Lightning trials (it imports Lightning once); the other two run inline.
    run(tmp_path, "launch", "lightning_mnist1d.yaml", "--trials", "2", "--parallel", "1", "--epochs", "2", "--quiet")
    run(tmp_path, "launch", "transformers_sentiment.yaml", "--trials", "1", "--epochs", "2", "--quiet",
        "--executor", "inline")
    run(tmp_path, "launch", "plain_loop.yaml", "--trials", "1", "--epochs", "2", "--quiet", "--executor", "inline")

    for study, trials, accuracy in (("lightning-mnist1d", 2, "train_acc"), ("transformers-sentiment", 1, "val_acc"),
                                    ("plain-loop", 1, "train_acc")):
        shown = json.loads(run(tmp_path, "show", study, "--json").stdout)
        assert [t["state"] for t in shown] == ["COMPLETE"] * trials, shown
        rows = epochs_csv(tmp_path, study)
        assert sorted((int(r["trial"]), int(r["epoch"])) for r in rows) == [
            (t, e) for t in range(trials) for e in (1, 2)], study
        for row in rows:  # every epoch: both losses, an accuracy and the gradient summary
            assert all(math.isfinite(float(row[k])) for k in ("train_loss", "val_loss", accuracy, *GRADIENT_KEYS))
        for trial in shown:  # the objective (val_loss, best epoch) is what the example reported
            assert trial["value"] == pytest.approx(min(float(r["val_loss"]) for r in rows if int(r["trial"]) == trial["#"]))


def test_the_plain_loop_example_through_tuner_launch(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # `workload: plain_loop:train` is imported from beside the spec
    study = tuner.launch(EXAMPLES / "plain_loop.yaml", trials=3, epochs=2, executor="inline",
                         storage=f"sqlite:///{tmp_path / 's.db'}", pruner="none")
    rows = study.epochs()
    assert len(rows) == 6 and all(GRADIENT_KEYS <= set(r) for r in rows)
    assert all(r["lr"] == pytest.approx(study.trials[r["trial"]].params["lr"]) for r in rows)
    assert study.best_value == min(r["val_loss"] for r in rows)
