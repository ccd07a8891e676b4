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
