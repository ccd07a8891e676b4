"""`tuner epochs --csv`, `tuner delete` and `tuner copy` as a user runs them: the installed script in a
directory of theirs, a workload of their own (inline executor: fast), a real SQLite file."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import optuna
import pytest

WORKLOAD = '''
def train(params, report):
    """A user's loop: its own metrics, one of them only from the second epoch on."""
    for epoch in range(1, params["epochs"] + 1):
        metrics = {"val_loss": params["x"] ** 2 + 1.0 / epoch, "my_metric": 10 * params["x"] + epoch}
        if epoch >= 2:
            metrics["late_metric"] = float(epoch)
        report(epoch, **metrics)
'''


def tuner(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    script = shutil.which("tuner")
    assert script, "the `tuner` console script is not on PATH: pip install -e '.[dev]'"
    # PYTHONPATH: the user's module imports as with `python -c 'import mywork'` run in their directory.
    env = {**os.environ, "PYTHONPATH": str(cwd), "TUNER_STORAGE": f"sqlite:///{cwd / 'tuner.db'}"}
    return subprocess.run([script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def launch(cwd: Path, name: str, trials: int = 3, seed: int = 1) -> None:
    (cwd / "mywork.py").write_text(WORKLOAD)
    spec = cwd / f"{name}.yaml"
    spec.write_text(f"name: {name}\nworkload: mywork:train\nstrategy: random\ntrials: {trials}\nepochs: 3\n"
                    f"seed: {seed}\npruner: {{type: none}}\nparams:\n  x: {{type: float, low: -1, high: 1}}\n")
    done = tuner("launch", str(spec), "--executor", "inline", "--quiet", cwd=cwd)
    assert done.returncode == 0, done.stderr


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_epochs_csv_has_a_column_for_every_metric_a_user_workload_reports(tmp_path):
    launch(tmp_path, "mine")
    done = tuner("epochs", "mine", "--csv", "e.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote 9 epoch rows to e.csv" in done.stderr
    header, rows = read_csv(tmp_path / "e.csv")
    print(f"tuner epochs --csv: {len(rows)} rows, columns {header}")
    # The store's columns first (every one, empty or not, so every study's file has them), then the
    # workload's own metrics where they first appear.
    assert header == ["trial", "epoch", "iterations", "train_loss", "val_loss", "train_acc", "val_acc", "gap_loss",
                      "gap_acc", "lr", "seconds", "device", "my_metric", "late_metric"]
    assert [(r["trial"], r["epoch"]) for r in rows] == [(str(t), str(e)) for t in range(3) for e in range(1, 4)]
    assert [r["late_metric"] for r in rows[:3]] == ["", "2.0", "3.0"]
    study = optuna.load_study(study_name="mine", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    for row in rows:
        x = study.trials[int(row["trial"])].params["x"]
        assert float(row["my_metric"]) == pytest.approx(10 * x + int(row["epoch"]))
        assert float(row["val_loss"]) == pytest.approx(x ** 2 + 1 / int(row["epoch"]))
    one = tuner("epochs", "mine", "--trial", "1", "--csv", "one.csv", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert read_csv(tmp_path / "one.csv")[0] == header


def test_copy_and_delete_keep_every_studys_epochs_its_own(tmp_path):
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    backup = f"sqlite:///{tmp_path / 'backup.db'}"
    launch(tmp_path, "a")
    assert tuner("epochs", "a", "--csv", "a.csv", cwd=tmp_path).returncode == 0
    a_rows = read_csv(tmp_path / "a.csv")[1]

    copied = tuner("copy", "a", "--to", backup, cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    assert one_line(copied.stdout) == f"copied study a to a in {backup}: 3 trials, 9 epoch rows"
    assert tuner("epochs", "a", "--storage", backup, "--csv", "backup.csv", cwd=tmp_path).returncode == 0
    assert read_csv(tmp_path / "backup.csv")[1] == a_rows

    renamed = tuner("copy", "a", "--to", url, "--name", "b", cwd=tmp_path)  # a rename: copy, then delete
    assert renamed.returncode == 0, renamed.stderr
    deleted = tuner("delete", "a", "--yes", cwd=tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    assert one_line(deleted.stdout) == f"deleted study a from {url}: 3 trials, 9 epoch rows"
    assert tuner("epochs", "b", "--csv", "b.csv", cwd=tmp_path).returncode == 0
    assert read_csv(tmp_path / "b.csv")[1] == a_rows

    # The repro: Optuna's own CLI deletes b (its engine sets no foreign-key pragma), a new study's
    # trials then take b's trial ids, and `tuner show NEW --trial 0` must show only NEW's epochs.
    gone = subprocess.run(["optuna", "delete-study", "--study-name", "b", "--storage", url], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert gone.returncode == 0, gone.stderr
    launch(tmp_path, "new", trials=2, seed=9)
    assert tuner("epochs", "new", "--csv", "new.csv", cwd=tmp_path).returncode == 0
    new_rows = read_csv(tmp_path / "new.csv")[1]
    x = optuna.load_study(study_name="new", storage=url).trials[0].params["x"]
    show = tuner("show", "new", "--trial", "0", cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "tuner.db") as conn:
        total = conn.execute("select count(*) from tuner_epochs").fetchone()[0]
    print(f"tuner copy/delete: a {len(a_rows)} rows; backup copy {len(a_rows)}; b (copy, then a deleted) "
          f"{len(a_rows)}; after `optuna delete-study b`, new {len(new_rows)} rows, tuner_epochs {total} in all")
    assert len(new_rows) == 6 and total == 6
    assert [float(r["my_metric"]) for r in new_rows[:3]] == pytest.approx([10 * x + e for e in (1, 2, 3)])
    assert f"{10 * x + 1:.4g}" in show.stdout
    for old in a_rows[:3]:  # none of a's (or b's) values shows up on the new trial, as a number of its own
        # (not as part of another: a time such as 1.342e-05 s contains "1.34")
        shown = re.escape(f"{float(old['my_metric']):.4g}")
        assert not re.search(rf"(?<![\d.]){shown}(?![\d.e])", show.stdout), (old, show.stdout)


def test_delete_and_copy_name_what_is_wrong(tmp_path):
    launch(tmp_path, "a", trials=1)
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    missing = tuner("delete", "zz", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"error: no study named 'zz' in {url}. Studies there: a." in one_line(missing.stderr)
    onto = tuner("copy", "a", "--to", url, cwd=tmp_path)
    assert onto.returncode == 2 and "Traceback" not in onto.stderr
    assert (f"error: study 'a' already exists in {url}. Fix: pass --name NEW_NAME to copy it under another name, "
            "or delete that study first (`tuner delete a`).") in one_line(onto.stderr)
    no_target = tuner("copy", "a", cwd=tmp_path)
    assert no_target.returncode == 2 and "the following arguments are required: --to" in no_target.stderr


SLOW = """
import time

def train(params, report):
    for epoch in range(1, params["epochs"] + 1):
        time.sleep(0.4)
        report(epoch, val_loss=params["x"] ** 2 + 1.0 / epoch)
"""


@pytest.mark.parametrize("runner", ["launch", "resume"])
def test_delete_is_refused_while_a_tuner_process_runs_the_study_and_that_run_finishes(tmp_path, runner, tally):
    (tmp_path / "mywork.py").write_text(SLOW)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nworkload: mywork:train\nstrategy: random\ntrials: 1\nepochs: 3\nseed: 1\n"
                    "pruner: {type: none}\nparams:\n  x: {type: float, low: -1, high: 1}\n")
    if runner == "resume":
        assert tuner("launch", str(spec), "--executor", "inline", "--quiet", cwd=tmp_path).returncode == 0
        command = ["resume", "s", "--trials", "4"]
    else:
        command = ["launch", str(spec), "--trials", "3"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "TUNER_STORAGE": f"sqlite:///{tmp_path / 'tuner.db'}"}
    running = subprocess.Popen([shutil.which("tuner"), *command, "--executor", "inline", "--quiet"], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = tmp_path / "tuner.db.s.lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.exists(), "the run never took the study's lock"
        refused = tuner("delete", "s", "--yes", cwd=tmp_path)
        assert running.poll() is None, "the run ended before delete was tried: make its workload slower"
    finally:
        out, errors = running.communicate(timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert (f"error: study 's' is being run by another tuner process (pid {running.pid}) on this SQLite file. "
            "Fix: wait for it to finish, or stop it, then delete it (`tuner delete s`).") in one_line(refused.stderr)
    assert running.returncode == 0 and "Traceback" not in errors, errors
    done = optuna.load_study(study_name="s", storage=env["TUNER_STORAGE"]).get_trials()
    assert [t.state.name for t in done] == ["COMPLETE"] * (4 if runner == "resume" else 3)
    deleted = tuner("delete", "s", "--yes", cwd=tmp_path)  # once the run is over, it goes
    assert deleted.returncode == 0 and "deleted study s" in deleted.stdout, deleted.stderr
    tally("fault")


def test_on_postgresql_delete_and_replace_are_refused_while_a_trial_has_a_fresh_heartbeat(tmp_path, postgres_url,
                                                                                          tally):
    from tuner.store import internals

    (tmp_path / "mywork.py").write_text(SLOW)
    (tmp_path / "s.yaml").write_text("name: s\nworkload: mywork:train\nstrategy: random\ntrials: 1\nepochs: 1\n"
                                     "pruner: {type: none}\nparams:\n  x: {type: float, low: -1, high: 1}\n")
    pg = ["--storage", postgres_url]
    launched = tuner("launch", "s.yaml", "--executor", "inline", "--quiet", *pg, cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr
    # What an orchestrator on another machine leaves while it runs: a RUNNING trial whose heartbeat it keeps fresh.
    storage = optuna.storages.RDBStorage(postgres_url)
    trial = optuna.load_study(study_name="s", storage=storage).ask()
    storage.record_heartbeat(internals.trial_id(trial))
    refused = tuner("delete", "s", "--yes", *pg, cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert ("error: study 's' is being run by another tuner process: 1 of its trials RUNNING had a heartbeat in the "
            "last 30 s. Fix: wait for it to finish, or stop it, then delete it (`tuner delete s`), or `tuner delete "
            "s --force` if that process is gone.") in one_line(refused.stderr)
    replaced = tuner("launch", "s.yaml", "--replace", "--executor", "inline", "--quiet", *pg, cwd=tmp_path)
    assert replaced.returncode == 2 and "Traceback" not in replaced.stderr, replaced.stderr
    assert ("then replace it, or `tuner delete s --force` first if that process is gone.") in one_line(replaced.stderr)
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 2  # nothing deleted
    tally("fault")
    forced = tuner("delete", "s", "--yes", "--force", *pg, cwd=tmp_path)
    assert forced.returncode == 0 and "deleted study s" in forced.stdout, forced.stderr


CHECKPOINTING = '''
def train(params, report):
    """Saves its "model" (bytes) every epoch; validation is best at epoch 2, then it overfits."""
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=params["x"] ** 2 + 1 + 0.1 * (epoch - 2) ** 2,
               checkpoint=f"x={params['x']} epoch={epoch}".encode())
'''


def test_tuner_checkpoint_writes_the_best_trials_model_from_its_best_epoch(tmp_path):
    (tmp_path / "mywork.py").write_text(CHECKPOINTING)
    (tmp_path / "saves.yaml").write_text("name: saves\nworkload: mywork:train\nstrategy: random\ntrials: 3\n"
                                         "epochs: 4\nseed: 1\npruner: {type: none}\n"
                                         "params:\n  x: {type: float, low: -1, high: 1}\n")
    done = tuner("launch", "saves.yaml", "--executor", "inline", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    trials = optuna.load_study(study_name="saves", storage=f"sqlite:///{tmp_path / 'tuner.db'}").trials
    best = min(trials, key=lambda t: t.value)

    done = tuner("checkpoint", "saves", "-o", "best.bin", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "best.bin"
    assert (tmp_path / "best.bin").read_bytes() == f"x={best.params['x']} epoch=2".encode()
    other = next(t for t in trials if t.number != best.number)
    done = tuner("checkpoint", "saves", "--trial", str(other.number), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert Path(tmp_path, done.stdout.strip()).read_bytes() == f"x={other.params['x']} epoch=2".encode()

    refused = tuner("checkpoint", "saves", "-o", "best.bin", cwd=tmp_path)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "-o: best.bin exists already, and tuner does not overwrite it. Fix: remove it or name another file." \
        in one_line(refused.stderr)
