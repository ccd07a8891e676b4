"""Where a spec's `workload:` is found: beside the spec as well as where tuner runs, or by its file path.

`module:function` imports from the working directory, else the spec file's
folder, else installed packages; `./train.py:train` and
`path/to/train.py:train` name a file relative to the spec file's folder. A
workload found beside the spec is saved by its absolute path, which Ray
workers and a later `tuner resume` from anywhere import as it is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import tuner
from tests.services import user_env
from tuner import SpecError, load_spec

TRAIN = '''\
def train(params, report):
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=float(params["x"]) + OFFSET)


OFFSET = {offset}
'''
PACKAGED = '''\
from .scale import OFFSET


def train(params, report):
    report(1, val_loss=float(params["x"]) + OFFSET)
'''
SPACE = "epochs: 1\ntrials: 2\nseed: 0\nparams:\n  x: {type: float, low: 0.0, high: 1.0}\n"


def project(root: Path, workload: str, offset: int = 0) -> Path:
    """root/proj/space.yaml naming ``workload``, with train.py and a package models/ beside it."""
    proj = root / "proj"
    (proj / "models").mkdir(parents=True)
    (proj / "train.py").write_text(TRAIN.format(offset=offset))
    (proj / "models" / "__init__.py").write_text("")
    (proj / "models" / "scale.py").write_text(f"OFFSET = {offset}\n")
    (proj / "models" / "net.py").write_text(PACKAGED)
    (proj / "space.yaml").write_text(f"workload: {workload}\n" + SPACE)
    return proj / "space.yaml"


@pytest.fixture(autouse=True)
def _own_imports(tmp_path: Path):
    """Each test imports its own train.py and models/: what an earlier one imported is forgotten."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def tuner_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shutil.which("tuner") or "tuner", *args], cwd=cwd, env=user_env(COLUMNS="200"),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("workload", "file"), [
    ("train:train", "train.py"),
    ("./train.py:train", "train.py"),
    ("models/net.py:train", "models/net.py"),
    ("models.net:train", "models/net.py"),
])
def test_a_spec_launched_from_its_parent_directory_finds_its_workload(tmp_path: Path, workload: str,
                                                                       file: str) -> None:
    spec = project(tmp_path, workload)
    proc = tuner_cli(tmp_path, "launch", "proj/space.yaml", "--executor", "inline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    saved = study.user_attrs["tuner.spec"]["workload"]
    assert saved == f"{spec.parent / file}:train"
    # Saved by its absolute path: resumed from anywhere else, it is found again.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = tuner_cli(elsewhere, "resume", "space", "--trials", "3", "--executor", "inline",
                     "--storage", f"sqlite:///{tmp_path / 'tuner.db'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(optuna.load_study(study_name="space", storage=f"sqlite:///{tmp_path / 'tuner.db'}").trials) == 3


def test_ray_workers_import_a_workload_found_beside_the_spec(ray_local, storage: str, tmp_path: Path) -> None:
    # The session's Ray runs in the repository, where no train.py is: only the saved path finds it.
    study = tuner.launch(project(tmp_path, "train:train", offset=10), storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert all(t.value == pytest.approx(t.params["x"] + 10) for t in study.trials)


def test_the_working_directory_comes_before_the_specs_folder(tmp_path: Path, monkeypatch) -> None:
    spec = project(tmp_path / "spec", "train:train")
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "train.py").write_text(TRAIN.format(offset=0))
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.syspath_prepend(str(tmp_path / "cwd"))  # as the tuner command puts it there
    assert load_spec(spec).workload == "train:train"


def test_two_studies_whose_files_share_a_module_name_each_run_their_own(tmp_path: Path) -> None:
    first = tuner.launch(project(tmp_path / "a", "./train.py:train", offset=0), executor="inline",
                         storage=f"sqlite:///{tmp_path / 'a.db'}")
    second = tuner.launch(project(tmp_path / "b", "./train.py:train", offset=100), executor="inline",
                          storage=f"sqlite:///{tmp_path / 'b.db'}")
    assert all(t.value < 1 for t in first.trials) and all(t.value >= 100 for t in second.trials)


def test_a_relative_module_name_is_refused_by_the_tuner_command_with_both_fixes(tmp_path: Path, tally) -> None:
    project(tmp_path, ".train:train")
    proc = tuner_cli(tmp_path, "launch", "proj/space.yaml", "--executor", "inline")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.stderr.strip() == (
        "error: proj/space.yaml: `workload` must name a module or a .py file, but '.train:train' is a relative "
        "module name, which has no package to be relative to. Fix: name the file (workload: ./train.py:train) "
        "or the module (workload: train:train).")
    assert not list(tmp_path.glob("tuner.db*"))
    tally("hostile input")


@pytest.mark.parametrize(("workload", "expected"), [
    ("./trian.py:train", "`workload` names the file {proj}/trian.py, which does not exist. Fix: check the path; "
                         "a relative one is read from the spec file's folder."),
    ("./space.yaml:train", "`workload` names the file {proj}/space.yaml, which is not a Python (.py) file."),
    ("models/net.py:fit", "`workload` '{proj}/models/net.py:fit' does not import: module '{proj}/models/net.py' "
                          "has no function 'fit'. Fix: correct the file, or name the function it defines."),
    ("models:train", "`workload` '{proj}/models/__init__.py:train' does not import: module "
                     "'{proj}/models/__init__.py' has no function 'train'."),
    ("nowhere:train", "does not import: ModuleNotFoundError: No module named 'nowhere'. Fix: check the spelling; "
                      "tuner imports the module from the directory it runs in, else from the spec file's folder, "
                      "else from installed packages"),
])
def test_a_workload_that_is_not_there_names_where_it_was_looked_for(tmp_path: Path, workload: str, expected: str,
                                                                     tally) -> None:
    spec = project(tmp_path, workload)
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert len(caught.value.problems) == 1
    assert expected.format(proj=spec.parent) in caught.value.problems[0], caught.value.problems
    tally("hostile input")
