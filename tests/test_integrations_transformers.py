"""tuner.integrations.transformers: a real Hugging Face Trainer reports every evaluation and stops when tuner says so.

The model is examples/transformers_sentiment.py's tiny BERT, built from a
config (nothing downloaded); trials run inline so a test can look at the
Trainer after its trial.
"""

from __future__ import annotations

import functools
import math

import pytest

transformers = pytest.importorskip("transformers")

import tuner
from examples import transformers_sentiment as example
from tests.test_integrations_examples import EXAMPLES, GRADIENT_KEYS
from tuner.integrations.transformers import TunerCallback, eval_metrics

STEPS = 256 // 32  # train_size / batch_size: optimizer steps an epoch


class Counter(transformers.TrainerCallback):
    """What the Trainer really ran: epochs begun, optimizer steps, and its final state."""

    def __init__(self) -> None:
        self.epochs = 0
        self.steps = 0
        self.state = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epochs += 1

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1
        self.state = state


def test_the_example_records_every_evaluation_with_its_gradient_summary(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # `workload: transformers_sentiment:train`, beside the spec
    study = tuner.launch(EXAMPLES / "transformers_sentiment.yaml", trials=2, epochs=2, executor="inline",
                         storage=f"sqlite:///{tmp_path / 's.db'}", fixed={"layers": 1, "train_size": 256})
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:
        rows = study.epochs(trial.number)
        assert [(r["epoch"], r["iterations"]) for r in rows] == [(1, STEPS), (2, 2 * STEPS)]
        for r in rows:
            assert all(math.isfinite(r[k]) for k in ("train_loss", "val_loss", "val_acc", "lr", *GRADIENT_KEYS))
            assert 0 <= r["val_acc"] <= 1 and r["update_ratio"] > 0
            assert "val_runtime" not in r and "val_samples_per_second" not in r  # the Trainer's bookkeeping
        assert trial.value == pytest.approx(min(r["val_loss"] for r in rows))


def test_a_pruner_stop_ends_the_trainer_after_that_evaluation(tmp_path):
    counter = Counter()
    objective = functools.partial(example.train, callbacks=[counter])
    # A val_loss below 0.001 after one epoch is out of reach: the threshold pruner stops the trial at epoch 2.
    study = tuner.launch(space={"lr": {"type": "categorical", "choices": [3e-3]}}, objective=objective, trials=1,
                         epochs=4, executor="inline", storage=f"sqlite:///{tmp_path / 's.db'}",
                         fixed={"hidden": 16, "layers": 1, "train_size": 256},
                         pruner={"type": "threshold", "upper": 0.001, "n_warmup_steps": 2})
    trial = study.trials[0]
    assert trial.state.name == "PRUNED" and trial.user_attrs["prune_rule"] == "threshold"
    assert trial.user_attrs["prune_reason"].startswith("threshold pruner at epoch 2: val_loss")
    assert [r["epoch"] for r in study.epochs()] == [1, 2]
    # The Trainer stopped right there: two epochs of steps, none of the third.
    assert counter.epochs == 2 and counter.steps == 2 * STEPS and counter.state.global_step == 2 * STEPS


def test_a_trainer_that_never_evaluates_is_refused_at_its_start(tmp_path):
    args = transformers.TrainingArguments(output_dir=str(tmp_path), eval_strategy="no", report_to="none")
    with pytest.raises(ValueError, match=r"reports at each evaluation, but TrainingArguments\(eval_strategy='no'\)"):
        TunerCallback(lambda epoch, **m: None).on_train_begin(args, transformers.TrainerState(),
                                                              transformers.TrainerControl())


def test_evaluation_metrics_take_tuner_names_and_drop_the_bookkeeping():
    metrics = {"eval_loss": 0.5, "eval_accuracy": 0.75, "eval_f1": 0.7, "eval_runtime": 0.1,
               "eval_samples_per_second": 900.0, "eval_steps_per_second": 9.0, "epoch": 2.0}
    assert eval_metrics(metrics) == {"val_loss": 0.5, "val_acc": 0.75, "val_f1": 0.7}
