"""A plain PyTorch training loop, tuned by tuner: ``tuner launch plain_loop.yaml``.

A workload is a function ``train(params, report)``: ``params`` holds the
sampled values (plus epochs, seed and the spec's fixed keys), and
``report(epoch, **metrics)`` records one epoch. ``report`` raises when tuner
stops the trial (an optuna.TrialPruned), so the loop needs no code for pruning.
``workers.gradients.summarize`` adds the gradient summary tuner's diagnoses read
(vanishing or exploding gradients). The data is scikit-learn's bundled digits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from workers.gradients import EpochGradients, summarize


def splits(seed: int) -> tuple[torch.Tensor, ...]:
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x / 16.0, y, test_size=0.25, stratify=y, random_state=seed)
    return (torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train),
            torch.tensor(x_val, dtype=torch.float32), torch.tensor(y_val))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def train(params: dict, report) -> None:
    seed = params.get("seed") or 0
    torch.manual_seed(seed)
    x_train, y_train, x_val, y_val = splits(seed)
    width = int(params["width"])
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=0.9)
    batch = int(params.get("batch_size", 64))
    for epoch in range(1, params["epochs"] + 1):
        # 1. one pass over shuffled batches, summarizing the gradients after each backward()
        model.train()
        grads = EpochGradients()
        for index in torch.randperm(len(y_train)).split(batch):
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            grads.add(summarize(model))
            optimizer.step()
        # 2. evaluate both splits, then 3. report (it raises if tuner stops the trial)
        train_loss, train_acc = evaluate(model, x_train, y_train)
        val_loss, val_acc = evaluate(model, x_val, y_val)
        report(epoch, train_loss=train_loss, val_loss=val_loss, train_acc=train_acc, val_acc=val_acc,
               lr=params["lr"], **grads.result())
