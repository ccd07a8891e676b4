"""What a new user meets first, through the installed `tuner` script from their own directory:
a spec the probe cannot run on, a pruner that does not exist, launch output in a pipe, `show --trial`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.services import user_env

TUNER = shutil.which("tuner")

NO_LR = """name: nolr
workload: mlp
data: iris
objective: {metric: val_loss, direction: minimize}
params:
  width: {type: int, low: 8, high: 32}
"""
OK = """name: ok
workload: mlp
data: iris
epochs: 1
trials: 1
params:
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
"""
CATEGORICAL_LR = NO_LR.replace("width: {type: int, low: 8, high: 32}", "lr: {type: categorical, choices: [0.1, 0.01]}")


def tuner(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert TUNER is not None, "the `tuner` console script is not installed: pip install -e ."
    return subprocess.run([TUNER, *args], cwd=cwd, env=user_env(**env), capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("narrow", [False, True], ids=["probe", "probe-narrow"])
@pytest.mark.parametrize("text", [NO_LR, CATEGORICAL_LR], ids=["no-lr", "categorical-lr"])
def test_probe_refuses_a_spec_without_a_float_lr_as_launch_does(tmp_path: Path, tally, text: str,
                                                                 narrow: bool) -> None:
    (tmp_path / "s.yaml").write_text(text)
    probed = tuner(tmp_path, "probe", "s.yaml", *(["--narrow"] if narrow else []))
    (tmp_path / "p.yaml").write_text(text.replace("workload:", "probe: true\nworkload:"))
    launched = tuner(tmp_path, "launch", "p.yaml", "--executor", "inline")
    assert probed.returncode == 2, probed.stderr
    assert "Traceback" not in probed.stderr, probed.stderr
    # The same rule, word for word, as `probe: true` under `tuner launch`.
    rule = launched.stderr.strip().split("p.yaml: ", 1)[1]
    assert rule.startswith("probe: needs a continuous float param lr") and "Fix:" in rule, launched.stderr
    assert probed.stderr.strip() == f"error: s.yaml: {rule}", probed.stderr
    assert not (tmp_path / "nolr-probe.png").exists()
    assert not (tmp_path / "tuner.db").exists() or "nolr" not in tuner(tmp_path, "studies").stdout  # nothing stored
    tally("hostile input")


@pytest.mark.parametrize("given, fix", [
    (["--pruner", "bogus"], "error: --pruner: `pruner.type` must be one of none, median, percentile, "
     "successive_halving, hyperband, threshold, extrapolating, but got 'bogus'. Fix: use one of them, "
     "e.g. --pruner median."),
    (["pruner: bogus"], "error: ok.yaml: `pruner.type` must be one of none, median, percentile, "
     "successive_halving, hyperband, threshold, extrapolating, but got 'bogus'. Fix: use one of them, "
     "e.g. pruner: {type: median}."),
], ids=["flag", "spec"])
def test_an_unknown_pruner_gets_a_fix_in_the_form_it_was_given(tmp_path: Path, tally, given: list[str],
                                                               fix: str) -> None:
    text = OK if given[0].startswith("--") else OK + given.pop() + "\n"
    (tmp_path / "ok.yaml").write_text(text)
    launched = tuner(tmp_path, "launch", "ok.yaml", "--executor", "inline", *given)
    assert launched.returncode == 2, launched.stderr
    assert launched.stderr.strip() == fix
    assert not (tmp_path / "tuner.db").exists() or "ok" not in tuner(tmp_path, "studies").stdout  # nothing stored
    tally("hostile input")


def test_an_unknown_pruner_keyword_gets_a_keyword_fix(tmp_path: Path, tally) -> None:
    import tuner as api
    from tuner.errors import SpecError

    (tmp_path / "ok.yaml").write_text(OK)
    with pytest.raises(SpecError) as refused:
        api.launch(str(tmp_path / "ok.yaml"), pruner="bogus", executor="inline", storage=f"sqlite:///{tmp_path}/t.db")
    assert str(refused.value).endswith("but got 'bogus'. Fix: use one of them, e.g. pruner=\"median\".")
    assert str(refused.value).startswith("pruner=: ")
    tally("hostile input")


CHECKPOINTED = '''
import torch  # so that checkpoints are saved with torch.save, as checkpoint.pt


def train(params, report):
    if params["x"] > 2.5:
        raise RuntimeError("diverged")
    for epoch in range(1, 4):
        report(epoch, val_loss=(params["x"] - 2) ** 2 + 1 / epoch, checkpoint={"epoch": epoch, "w": list(range(3000))})
'''


def test_show_trial_reads_as_text_and_checkpoints_are_octet_streams(tmp_path: Path) -> None:
    import optuna
    from optuna.artifacts import get_all_artifact_meta
    from rich.filesize import decimal

    (tmp_path / "ck.py").write_text(CHECKPOINTED)
    (tmp_path / "ck.yaml").write_text("name: ck\nworkload: ck:train\nepochs: 3\ntrials: 6\npruner: none\n"
                                      "strategy: random\nseed: 3\nparams:\n  x: {type: float, low: 0, high: 4}\n")
    launched = tuner(tmp_path, "launch", "ck.yaml", "--executor", "inline", "--quiet")
    assert launched.returncode == 0, launched.stderr
    study = optuna.load_study(study_name="ck", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    assert {t.state.name for t in study.trials} == {"COMPLETE", "FAIL"}
    for t in study.trials:
        out = tuner(tmp_path, "show", "ck", "--trial", str(t.number)).stdout
        if t.state.name == "FAIL":
            assert out.startswith(f"trial {t.number}: FAIL, value none (failed), params x="), out
            continue
        assert out.startswith(f"trial {t.number}: COMPLETE, value {t.value:.4g}, params x="), out
        meta = t.user_attrs["checkpoint"]
        assert f"  checkpoint: epoch 3, {decimal(meta['bytes'])}\n" in out, out
        assert "{" not in out and "artifact_id" not in out, out
        stored = get_all_artifact_meta(t, storage=study._storage)
        assert stored and {(m.filename, m.mimetype) for m in stored} == {("checkpoint.pt", "application/octet-stream")}
