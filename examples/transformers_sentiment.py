"""A tiny BERT trained with the Hugging Face ``Trainer``, tuned by tuner: ``tuner launch transformers_sentiment.yaml``.

Nothing comes from the Hub: the model is built from a ``BertConfig`` (random
weights, two small layers), the text is made up here (short "reviews" whose
label is the polarity most of their opinion words share) and the tokenizer is
a word-level vocabulary of those words. Tuning it takes one line, the
``TunerCallback(report)`` in the Trainer's callbacks.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, PrinterCallback, Trainer, TrainingArguments

from tuner.integrations.transformers import TunerCallback

FILLER = ("the", "a", "movie", "plot", "was", "and", "it", "film", "actors", "story", "scene", "music", "ending",
          "really", "quite", "very", "this", "of", "with", "but")
POSITIVE = ("great", "good", "wonderful", "superb", "fun", "moving")
NEGATIVE = ("bad", "awful", "boring", "dull", "poor", "clumsy")
SPECIAL = ("[PAD]", "[CLS]", "[SEP]")
VOCAB = {word: i for i, word in enumerate(SPECIAL + FILLER + POSITIVE + NEGATIVE)}
MAX_LEN = 24


def reviews(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` made-up reviews and their labels (1: positive): a few opinion words among filler."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        major, minor = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
        k = int(rng.integers(2, 4))  # opinion words of the label's polarity; fewer (0 or 1) of the other
        words = list(rng.choice(FILLER, size=int(rng.integers(8, 16))))
        words += list(rng.choice(major, size=k)) + list(rng.choice(minor, size=int(rng.integers(0, k - 1))))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def tokenize(text: str) -> dict[str, torch.Tensor]:
    """Word-level ids with [CLS] and [SEP], padded to MAX_LEN, and the attention mask."""
    ids = [VOCAB["[CLS]"], *(VOCAB[w] for w in text.split()[: MAX_LEN - 2]), VOCAB["[SEP]"]]
    mask = [1] * len(ids) + [0] * (MAX_LEN - len(ids))
    ids += [VOCAB["[PAD]"]] * (MAX_LEN - len(ids))
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


class Reviews(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        texts, labels = reviews(n, seed)
        self.items = [{**tokenize(t), "labels": torch.tensor(y)} for t, y in zip(texts, labels)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def train(params: dict, report, callbacks: tuple = ()) -> None:
    """tuner's workload: ``params`` holds the sampled values plus epochs, seed and the spec's fixed keys.

    ``callbacks``: more TrainerCallbacks (tuner passes none; the tests count what the Trainer ran).
    """
    seed = params.get("seed") or 0
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=int(params["hidden"]), num_hidden_layers=int(params.get("layers", 2)),
        num_attention_heads=2, intermediate_size=2 * int(params["hidden"]), max_position_embeddings=MAX_LEN,
        hidden_dropout_prob=float(params.get("dropout", 0.1)), num_labels=2,
    )
    model = BertForSequenceClassification(config)
    with tempfile.TemporaryDirectory() as out:  # the Trainer wants an output_dir; nothing is saved in it
        args = TrainingArguments(
            output_dir=out, num_train_epochs=params["epochs"], learning_rate=params["lr"],
            per_device_train_batch_size=int(params.get("batch_size", 32)), per_device_eval_batch_size=256,
            eval_strategy="epoch", logging_strategy="epoch", save_strategy="no", report_to="none",
            max_grad_norm=float(params.get("max_grad_norm", 1.0)), disable_tqdm=True, seed=seed,
        )
        trainer = Trainer(
            model=model, args=args, compute_metrics=accuracy, callbacks=[TunerCallback(report), *callbacks],
            train_dataset=Reviews(int(params.get("train_size", 512)), seed),
            eval_dataset=Reviews(256, seed + 1),
        )
        trainer.remove_callback(PrinterCallback)  # tuner records the metrics; no need to print each log
        trainer.train()
