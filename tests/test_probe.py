"""The learning-rate range test (tuner/probe.py): the installed `tuner probe`, narrowing, errors, user workloads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import optuna
import pytest

import tuner
from tests.services import user_env
from tuner import probe
from tuner.errors import SpecError
from tuner.spec import load_spec

TUNER = shutil.which("tuner")
# SGD with momentum on wine: lr 100 blows up within a few steps, so the probe must cut the top.
WIDE = {"type": "float", "low": 1.0e-7, "high": 100.0, "log": True}
SPEC = """\
name: wine-probe
workload: mlp
data: wine
epochs: 1
trials: 2
seed: 3
fixed: {optimizer: sgd, momentum: 0.9}
probe: {steps: 60}
params:
  lr: {type: float, low: 1.0e-7, high: 100.0, log: true}
  width: {type: int, low: 8, high: 32}
"""
# A user workload whose loss at each learning rate is known: flat, falling from 1e-3, NaN from 1.
WORKLOAD = """\
import math

LOSS = {-5: 2.0, -4: 2.0, -3: 1.5, -2: 1.0, -1: 0.8}
seen = []

def train(params, report):
    exponent = round(math.log10(params["lr"]))
    with open("calls.txt", "a") as f:
        f.write(f"{params['lr']:.3g} {params['epochs']} {params['width']}\\n")
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, train_loss=LOSS.get(exponent, math.nan), val_acc=0.5)
"""
USER_SPEC = """\
name: mine
workload: mymod:train
epochs: 5
probe: {points: 8, epochs: 2}
params:
  lr: {type: float, low: 1.0e-5, high: 100.0, log: true}
  width: {type: int, low: 10, high: 1000, log: true}
"""


def tuner_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # One torch thread, as Ray gives a trial: two threads of a busy machine run a tiny model 70x slower.
    env = user_env(COLUMNS="200", OMP_NUM_THREADS="1")
    return subprocess.run([TUNER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_tuner_probe_narrow_runs_the_probe_then_the_study_on_the_range_it_found(tmp_path):
    (tmp_path / "s.yaml").write_text(SPEC)
    run = tuner_cli(tmp_path, "probe", "s.yaml", "--narrow", "--executor", "inline", "--storage", "sqlite:///t.db")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "lr range test of wine-probe" in run.stderr and "blows up at" in run.stderr
    assert (tmp_path / "wine-probe-probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    study = optuna.load_study(study_name="wine-probe", storage=f"sqlite:///{tmp_path / 't.db'}")
    evidence = study.user_attrs[probe.ATTR]
    assert evidence["original"] == {"low": 1e-7, "high": 100.0}
    assert evidence["blowup"] is not None and evidence["fall"] is not None
    low, high = evidence["narrowed"]["low"], evidence["narrowed"]["high"]
    assert 1e-7 < low < high < 100.0  # both ends cut: the loss fell well above 1e-6 and blew up below 100
    assert study.user_attrs["tuner.spec"]["params"]["lr"] == {**WIDE, "low": low, "high": high}
    assert study.user_attrs["tuner.spec"]["probe"]["narrow"] is True
    assert len(study.trials) == 2 and all(low <= t.params["lr"] <= high for t in study.trials)


@pytest.fixture
def one_thread():
    """One torch thread in this process while the study trains inline, as in tuner_cli."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_probe_true_records_the_evidence_and_keeps_the_bounds(tmp_path, one_thread):
    spec = load_spec(str(_write(tmp_path, SPEC.replace("probe: {steps: 60}", "probe: true"))))
    assert spec.probe is not None and not spec.probe.narrow
    study = tuner.launch(str(tmp_path / "s.yaml"), trials=1, executor="inline",
                         storage=f"sqlite:///{tmp_path / 'k.db'}", probe={"steps": 40})
    assert study.spec["params"]["lr"] == WIDE
    evidence = study.optuna.user_attrs[probe.ATTR]
    assert evidence["narrowed"] is not None and len(evidence["lrs"]) == len(evidence["losses"]) <= 40
    assert evidence["lrs"] == sorted(evidence["lrs"]) and evidence["lrs"][0] == pytest.approx(1e-7)


def test_a_user_workload_is_probed_by_short_runs_one_per_learning_rate(tmp_path):
    (tmp_path / "mymod.py").write_text(WORKLOAD)
    (tmp_path / "u.yaml").write_text(USER_SPEC)
    run = tuner_cli(tmp_path, "probe", "u.yaml", "-o", "plot.png")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "8 short runs" not in run.stdout  # it stopped at the first NaN: 6 runs, not all 8
    assert "6 short runs" in run.stdout
    assert "loss starts to fall at lr 0.001, is lowest at 0.1, blows up at 1" in run.stdout
    assert "lr [1e-05, 1e+02] -> [0.0001, 0.1]" in run.stdout
    # Each run: its lr, the probe's epochs (not the spec's 5), the other param at its geometric centre.
    calls = (tmp_path / "calls.txt").read_text().split("\n")[:-1]
    assert calls == [f"{lr} 2 100" for lr in ("1e-05", "0.0001", "0.001", "0.01", "0.1", "1")]
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_a_bad_probe_value_is_refused_with_the_field_the_rule_and_the_fix(tmp_path):
    (tmp_path / "s.yaml").write_text(SPEC.replace("probe: {steps: 60}", "probe: sometimes"))
    run = tuner_cli(tmp_path, "probe", "s.yaml")
    assert run.returncode == 2
    assert ("s.yaml: probe: must be true, false or a mapping of its options, but got 'sometimes'. "
            "Fix: e.g. probe: true, or probe: {narrow: true}.") in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "tuner.db").exists()
    with pytest.raises(SpecError, match=r"probe.steps: must be >= 10, but got 3"):
        load_spec(SPEC_DICT | {"probe": {"steps": 3}})
    with pytest.raises(SpecError, match=r"probe.narow: unknown key 'narow'. Did you mean 'narrow'\?"):
        load_spec(SPEC_DICT | {"probe": {"narow": True}})
    with pytest.raises(SpecError, match=r"probe: needs a continuous float param lr with 0 < low < high"):
        load_spec(SPEC_DICT | {"params": {"width": WIDTH}})
    with pytest.raises(SpecError, match=r"probe.params: .* got 'widht', which is not among them. Did you mean"):
        load_spec(SPEC_DICT | {"probe": {"params": {"widht": 3}}, "params": {"lr": WIDE, "width": WIDTH}})


WIDTH = {"type": "int", "low": 8, "high": 32}
SPEC_DICT = {"workload": "mlp", "data": "wine", "probe": True, "params": {"lr": WIDE}}


def test_a_workload_that_reports_no_loss_cannot_be_probed():
    def train(params, report):
        report(1, val_acc=0.5)

    spec = load_spec({"workload": "callable:x:train", "probe": True, "params": {"lr": WIDE}})
    with pytest.raises(tuner.TunerError, match=r"probe: the workload .*train must report train_loss \(or "
                                               r"val_loss\), but reported \['val_acc'\]. Fix: call report"):
        probe.run(spec, train)


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "s.yaml").write_text(text)
    return tmp_path / "s.yaml"


def test_with_no_blow_up_in_the_bounds_the_narrowed_range_still_ends_at_the_lowest_loss(one_thread):
    # A real probe of the built-in MLP: SGD with momentum on wine falls from lr ~0.02, is lowest near 0.86 and
    # rises again by lr 1 (it blows up at ~1.8 when the bounds reach that far), so nothing blows up below 1.
    spec = load_spec(SPEC_DICT | {"probe": {"steps": 60}, "seed": 3, "fixed": {"optimizer": "sgd", "momentum": 0.9},
                                  "params": {"lr": {**WIDE, "low": 1e-4, "high": 1.0}, "width": WIDTH}})
    found = probe.run(spec, spec.workload_target)
    assert found.blowup is None and found.fall is not None
    assert found.best < 1.0 and found.smoothed[-1] > min(found.smoothed)  # the loss rose past its lowest
    assert found.narrowed == (pytest.approx(found.fall / probe.LOW_MARGIN), found.best)
    assert probe.narrowed(spec, found).params["lr"].high == found.best
