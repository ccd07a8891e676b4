"""A real two-node Ray cluster on 127.0.0.1 with token authentication: trials land on both nodes."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.services import free_port, ray_cluster, ray_env

REPO = Path(__file__).resolve().parent.parent


TUNER = shutil.which("tuner")


def tuner_launch(spec: Path, address: str, storage: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`tuner launch SPEC --ray-address ADDRESS` as a user runs it: the installed script, from the spec's directory."""
    assert TUNER is not None, "the `tuner` console script is not installed: pip install -e ."
    return subprocess.run([TUNER, "launch", str(spec), "--ray-address", address, "--storage", storage],
                          cwd=spec.parent, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def cluster():
    """A Ray head and a second node, both in token mode with one shared token."""
    env = ray_env()
    with ray_cluster(env) as address:
        yield address, env


def test_a_study_runs_on_both_nodes_of_a_cluster(cluster, tmp_path):
    address, env = cluster
    spec = tmp_path / "spread.yaml"
    spec.write_text(
        "name: spread\nworkload: tests.workloads:slow\nstrategy: random\ntrials: 6\nparallel: 2\nepochs: 3\n"
        "pruner: none\nfixed: {sleep: 0.4}\nresources: {cpu: 1}\nparams:\n  x: {type: float, low: 0, high: 1}\n"
    )
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    result = tuner_launch(spec, address, storage, env)
    assert result.returncode == 0, result.stderr
    assert env["RAY_AUTH_TOKEN"] not in result.stdout + result.stderr
    trials = optuna.load_study(study_name="spread", storage=storage).trials
    nodes = collections.Counter(t.user_attrs["node"] for t in trials)
    print(f"\ntwo-node cluster: trials per node {dict(nodes)}")
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len(nodes) == 2
    assert all(t.user_attrs["device"] == "cpu" for t in trials)


def test_no_epoch_runs_after_a_stop_on_a_cluster(cluster, tmp_path):
    """The verdict a worker waits for crosses nodes: still 0 epochs after a stop (see test_stop_before_next_epoch)."""
    address, env = cluster
    tally = tmp_path / "tally"
    tally.mkdir()
    spec = tmp_path / "stops.yaml"
    spec.write_text(
        "name: stops\nworkload: tests.workloads:tallied\nstrategy: random\nseed: 3\ntrials: 4\nparallel: 2\n"
        f"epochs: 4\nresources: {{cpu: 1}}\nfixed: {{tally: '{tally}'}}\n"
        "pruner: {type: threshold, upper: 1.0, n_warmup_steps: 2}\nparams:\n  x: {type: float, low: 0, high: 1}\n"
    )
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    result = tuner_launch(spec, address, storage, env)
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="stops", storage=storage).trials
    ran = {f.name: len(f.read_text().split()) for f in tally.iterdir()}
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    print(f"\ntwo-node cluster: {len(pruned)} of {len(trials)} pruned on nodes "
          f"{sorted({t.user_attrs.get('node', '?') for t in trials})}; epochs run {sorted(ran.values())}")
    assert pruned
    for t in trials:
        assert ran[f"{t.params['x']:.12f}"] == len(t.intermediate_values), (t.number, t.state)


def test_an_unreachable_cluster_is_a_clear_error(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nworkload: tests.workloads:quadratic\nparams:\n  x: {type: float, low: 0, high: 1}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = tuner_launch(spec, f"127.0.0.1:{free_port()}", f"sqlite:///{tmp_path / 't.db'}", env)
    assert result.returncode == 2
    assert "cannot start or reach the Ray cluster at '127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not optuna.get_all_study_names(f"sqlite:///{tmp_path / 't.db'}")


def test_asking_for_gpus_on_a_cluster_without_any_is_refused_before_any_trial(ray_local, storage):
    import tuner
    from tuner.errors import TunerError

    with pytest.raises(TunerError, match=r"resources.gpu: each trial asks for 0.25 GPU, but this machine's Ray "
                                         r"instance has 0. Fix: set resources.gpu to at most 0 \(0 runs on the CPU\)"):
        tuner.launch(space={"x": {"type": "float", "low": 0, "high": 1}}, objective=__import__("tests.workloads").workloads.quadratic,
                     resources={"gpu": 0.25}, storage=storage, study="gpu")
    assert not optuna.get_all_study_names(storage)
