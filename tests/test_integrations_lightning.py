"""tuner.integrations.lightning: a real Lightning Trainer reports every epoch and stops when tuner says so.

Trials run inline (one process), so a test can look at the Trainer after its
trial: how many epochs and batches it really ran. The example module and its
data are examples/lightning_mnist1d.py's.
"""

from __future__ import annotations

import math

import pytest

pl = pytest.importorskip("pytorch_lightning")

import tuner
from examples.lightning_mnist1d import MLP, loaders
from tests.test_integrations_examples import EXAMPLES
from tuner.integrations.lightning import TunerCallback

TRAIN_SIZE, BATCH = 256, 64  # 4 steps an epoch: enough to summarize, fast enough for CI


class Counter(pl.Callback):
    """What the Trainer really ran: epochs started and training batches."""

    def __init__(self) -> None:
        self.epochs = 0
        self.batches = 0

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches += 1


RUNS: list[tuple[pl.Trainer, Counter]] = []


def counted(params, report):
    """The example's module in a Trainer that also counts what it ran."""
    counter = Counter()
    trainer = pl.Trainer(
        max_epochs=params["epochs"], callbacks=[TunerCallback(report, monitor=params.get("monitor", "val_loss")), counter],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, accelerator="cpu",
    )
    RUNS.append((trainer, counter))
    trainer.fit(MLP(lr=params["lr"], width=32, depth=2), *loaders(0, BATCH, TRAIN_SIZE))


def test_the_example_records_every_epoch_with_its_gradient_summary(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # `workload: lightning_mnist1d:train` is imported from beside the spec
    study = tuner.launch(EXAMPLES / "lightning_mnist1d.yaml", trials=2, epochs=3, parallel=1, executor="inline",
                         storage=f"sqlite:///{tmp_path / 's.db'}", fixed={"depth": 1, "train_size": TRAIN_SIZE})
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:
        rows = study.epochs(trial.number)
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        steps = math.ceil(TRAIN_SIZE / trial.params["batch_size"])
        assert [r["iterations"] for r in rows] == [steps, 2 * steps, 3 * steps]
        for r in rows:
            assert all(math.isfinite(r[k]) for k in ("train_loss", "val_loss", "train_acc", "val_acc"))
            assert r["gap_loss"] == pytest.approx(r["val_loss"] - r["train_loss"])
            assert r["lr"] == pytest.approx(trial.params["lr"])
            assert r["grad_norm"] > 0 and r["update_ratio"] > 0 and 0 <= r["grad_zero_frac"] < 1
        # tuner's objective (val_loss, best epoch) was read from what the module logged
        assert trial.value == pytest.approx(min(r["val_loss"] for r in rows))
        assert trial.user_attrs["diagnosis"] and trial.user_attrs["epochs"] == 3


def test_a_diverging_trial_is_pruned_by_diagnostics_and_trains_no_further(tmp_path):
    RUNS.clear()
    study = tuner.launch(space={"lr": {"type": "categorical", "choices": [30.0]}}, objective=counted, trials=1,
                         epochs=4, executor="inline", storage=f"sqlite:///{tmp_path / 's.db'}", pruner="none")
    trial = study.trials[0]
    assert trial.state.name == "PRUNED"
    # lr=30 blows the gradients up within two epochs: the summary the callback added is what catches it.
    assert trial.user_attrs["prune_rule"] in ("diagnostics:exploding_gradients", "diagnostics:diverged")
    stopped_at = trial.user_attrs["prune_epoch"]
    assert stopped_at < 4 and f"at epoch {stopped_at}:" in trial.user_attrs["prune_reason"]
    trainer, counter = RUNS[0]
    # The stop took effect before the next epoch: the Trainer ran exactly the epochs it reported.
    assert counter.epochs == stopped_at and counter.batches == stopped_at * (TRAIN_SIZE // BATCH)
    assert trainer.should_stop and [r["epoch"] for r in study.epochs()] == list(range(1, stopped_at + 1))


def test_a_pruner_stop_from_the_orchestrator_ends_the_trainer_after_that_epoch(tmp_path):
    RUNS.clear()
    # No val_loss of MNIST-1D is below 0.01 at epoch 2: the threshold pruner stops the trial there.
    study = tuner.launch(space={"lr": {"type": "categorical", "choices": [0.05]}}, objective=counted, trials=1,
                         epochs=5, executor="inline", storage=f"sqlite:///{tmp_path / 's.db'}",
                         pruner={"type": "threshold", "upper": 0.01, "n_warmup_steps": 2})
    trial = study.trials[0]
    assert trial.state.name == "PRUNED" and trial.user_attrs["prune_rule"] == "threshold"
    assert trial.user_attrs["prune_reason"].startswith("threshold pruner at epoch 2")
    _, counter = RUNS[0]
    assert counter.epochs == 2 and counter.batches == 2 * (TRAIN_SIZE // BATCH)
    assert [r["epoch"] for r in study.epochs()] == [1, 2]


def test_a_monitor_the_module_never_logs_fails_the_trial_naming_what_it_logged(tmp_path):
    study = tuner.launch(space={"lr": {"type": "categorical", "choices": [0.05]}}, objective=counted, trials=1,
                         epochs=2, executor="inline", storage=f"sqlite:///{tmp_path / 's.db'}",
                         fixed={"monitor": "val_los"})
    trial = study.trials[0]
    assert trial.state.name == "FAIL"
    assert trial.user_attrs["fail_reason"] == (
        "ValueError: TunerCallback(monitor='val_los'): epoch 1 logged no 'val_los'; it logged train_acc, "
        "train_loss, val_acc, val_loss. Fix: self.log('val_los', ...) in validation_step (validate every epoch), "
        "or pass monitor= one of those, or monitor=None."
    )


def test_importing_tuner_loads_no_trainer_or_tracker_library():
    import subprocess
    import sys

    code = ("import sys, tuner, tuner.integrations; "
            "print(sorted(m for m in ('pytorch_lightning', 'lightning', 'transformers', 'mlflow', 'wandb', "
            "'tensorboard', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
