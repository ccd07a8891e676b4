"""The benchmarks must keep running: reduced sizes, asserting that they produce results (not their values)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(script: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--quick", "--out", str(out), *args],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = out.glob("*.json")
    return json.loads(path.read_text())


def test_overhead_benchmark_runs_tuner_and_optuna(tmp_path):
    payload = run("overhead.py", tmp_path, "--sides", "optuna,tuner")
    sides = {row["side"]: row for row in payload["results"]}
    assert set(sides) == {"optuna", "tuner"}
    for row in sides.values():
        assert row["trials_per_s"] > 0
        assert row["epochs_recorded"] == row["epochs_expected"]


def test_store_benchmark_runs_tuner_and_optuna(tmp_path):
    payload = run("store_throughput.py", tmp_path)
    rows = [row for table in payload["results"].values() for row in table] if isinstance(payload["results"], dict) \
        else payload["results"]
    assert {row["side"].split()[0] for row in rows} >= {"optuna", "tuner"}
    assert all(row["values_recorded"] > 0 and row["locked_errors"] == 0 for row in rows)


def test_scale_benchmark_runs_tuner_and_optuna(tmp_path):
    payload = run("scale.py", tmp_path)
    text = json.dumps(payload)
    assert "tuner" in text and "optuna" in text


def test_mnist1d_table_scores_the_mlp_and_cnn_presets_against_the_paper(tmp_path):
    payload = run("mnist1d_table.py", tmp_path)
    rows = {row["model"]: row for row in payload["results"]}
    assert set(rows) == {"MLP", "CNN"}
    assert payload["paper"] == {"logistic regression": 0.32, "MLP": 0.68, "CNN": 0.94, "GRU": 0.91,
                                "human expert": 0.96}
    for model, row in rows.items():
        assert 0.0 <= row["test_acc"] <= 1.0
        assert row["paper_test_acc"] == payload["paper"][model]
        assert row["trials_run"] > 0 and row["best_params"]


def test_quality_benchmark_has_results_for_every_side_and_family(tmp_path):
    payload = run("quality.py", tmp_path)
    runs = payload["runs"]
    for family in ("bbob", "bayesmark", "mnist1d"):
        sides = {r["side"] for r in runs if r["family"] == family and r["evals"] > 0}
        expected = {"tuner_auto", "optuna_tpe", "optuna_random"} if family == "mnist1d" else set(payload["sides"])
        assert sides == expected, family
    assert {row["side"] for row in payload["summary"]} == set(payload["sides"])


def test_first_result_benchmark_times_tuner_with_ray_and_inline_and_plain_optuna(tmp_path):
    payload = run("first_result.py", tmp_path)
    sides = {row["side"]: row for row in payload["results"]}
    assert set(sides) == {"optuna", "tuner-inline", "tuner-ray"}
    assert all(row["seconds_median"] > 0 and row["repeats"] == 1 for row in sides.values())


def test_compute_to_target_runs_every_side_and_counts_false_prunes(tmp_path):
    payload = run("compute_to_target.py", tmp_path)
    (task,) = payload["tasks"].values()
    sides = {row["side"] for row in task["summary"]}
    assert sides == {"tuner", "tuner_hyperband", "tuner_median", "tuner_extrapolating", "optuna", "optuna_sh",
                     "ray_tune_asha", "topk"}
    assert all(r["epochs_run"] > 0 and "good_pruned" in r for r in payload["runs"])
    assert payload["target_evidence"]["mnist1d_mlp"]["how"].startswith("98th percentile")


def test_diagnostics_benchmark_runs_both_sides_and_times_the_gradient_summary(tmp_path):
    payload = run("diagnostics.py", tmp_path)
    sides = {row["side"]: row for row in payload["results"]}
    assert set(sides) == {"diagnostics_off", "diagnostics_on"}
    assert all(row["seeds"] == 1 and row["epochs_run_median"] > 0 for row in sides.values())
    assert len(payload["overhead"]) == 3
    assert all(row["epoch_s_summary_on"] > 0 and 0 < row["overhead_inside_calls"] < 1 for row in payload["overhead"])


def test_probe_benchmark_runs_with_and_without_the_range_test(tmp_path):
    payload = run("probe.py", tmp_path)
    sides = {row["side"]: row for row in payload["results"]}
    assert set(sides) == {"no_probe", "probe"}
    assert sides["no_probe"]["probe_epochs"] == 0 and sides["probe"]["probe_epochs"] > 0
    assert sides["probe"]["narrowed_lr"].startswith("[")
