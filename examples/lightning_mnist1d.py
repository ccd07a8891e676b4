"""A PyTorch Lightning module on MNIST-1D, tuned by tuner: ``tuner launch lightning_mnist1d.yaml``.

The module is ordinary Lightning; tuning it takes one line, the
``TunerCallback(report)`` handed to the Trainer. It reports each epoch's
logged metrics and gradient summary, and stops the Trainer when tuner prunes
the trial. The data is MNIST-1D, built locally by the ``mnist1d`` package
(``mnist1d.data.make_dataset``, cached on disk by tuner's loader), never downloaded.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tuner.integrations.lightning import TunerCallback
from workers.data import load


class MLP(pl.LightningModule):
    def __init__(self, lr: float, width: int, depth: int, n_features: int = 40, n_classes: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(n_features if i == 0 else width, width), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(width if depth else n_features, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        # on_epoch=True: the epoch's mean reaches the callback (training metrics default to per step).
        self.log(f"{split}_loss", loss, on_step=False, on_epoch=True)
        self.log(f"{split}_acc", (logits.argmax(1) == y).float().mean(), on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def loaders(seed: int, batch_size: int, train_size: int = 0) -> tuple[DataLoader, DataLoader]:
    """MNIST-1D's train and validation splits, standardized with the train split's statistics."""
    data = load("mnist1d", seed)
    x_train, y_train = torch.tensor(data.x_train), torch.tensor(data.y_train)
    if train_size:
        x_train, y_train = x_train[:train_size], y_train[:train_size]
    mean, std = x_train.mean(), x_train.std()
    train = TensorDataset((x_train - mean) / std, y_train)
    val = TensorDataset((torch.tensor(data.x_val) - mean) / std, torch.tensor(data.y_val))
    shuffle = torch.Generator().manual_seed(seed)
    return DataLoader(train, batch_size=batch_size, shuffle=True, generator=shuffle), DataLoader(val, batch_size=1024)


def train(params: dict, report) -> None:
    """tuner's workload: ``params`` holds the sampled values plus epochs, seed and the spec's fixed keys."""
    seed = params.get("seed") or 0
    pl.seed_everything(seed, verbose=False)
    train_loader, val_loader = loaders(seed, int(params["batch_size"]), int(params.get("train_size", 0)))
    model = MLP(lr=params["lr"], width=int(params["width"]), depth=int(params.get("depth", 2)))
    trainer = pl.Trainer(
        max_epochs=params["epochs"],
        callbacks=[TunerCallback(report, monitor="val_loss")],
        accelerator="auto", devices=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, train_loader, val_loader)
