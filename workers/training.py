"""The training loop the built-in workloads share.

A workload is ``train(params, report) -> float | None``; ``mlp.py`` and
``cnn.py`` only build a model and hand it to :func:`fit`, which trains it and
calls ``report(epoch, train_loss=..., val_loss=..., ...)`` once per epoch.
:func:`fit_final` is the same training on train+validation, scored once on the
test split (a report's test score). Both drive one :class:`Run`: whatever a
trial's epochs do, the retrain's do too.

``report`` may raise (tuner stops a pruned trial that way), so nothing here
catches exceptions. A diverged run (NaN or inf loss) is reported and ends
quietly: it is a result to record, not a crash.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workers.config import Config
from workers.data import Dataset, load
from workers.gradients import EpochGradients, snapshot, summarize, summary_every, update_ratio, weights

Report = Callable[..., None]  # report(epoch: int, **metrics: float)
Build = Callable[[Config, Dataset], nn.Module]
Augment = Callable[[torch.Tensor], torch.Tensor]
# Evaluation batch: large for speed, bounded for memory.
EVAL_BATCH = 4096


@dataclass(frozen=True)
class Split:
    """Inputs and labels of one split, on the training device."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class Epoch:
    """One pass over the training batches, before any evaluation."""

    number: int  # from 1
    lr: float  # the learning rate it trained with
    loss: float  # mean batch loss during the pass (train mode)
    iterations: int  # optimizer steps so far, this epoch's included
    grads: dict[str, float]  # gradient summary of the pass


@dataclass
class Run:
    """A model, its optimizer and schedule, and its splits, set up from a config: what every epoch works on."""

    cfg: Config
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any
    train: Split
    val: Split
    batch_size: int
    order: torch.Generator
    augment: Augment | None
    noise: torch.Generator | None = None  # the augmentation's own generator
    # Where epochs() starts: epoch 1, or the one after a restored checkpoint, with the steps made before it.
    first: int = 1
    steps_before: int = 0

    @classmethod
    def start(cls, cfg: Config, data: Dataset, build: Build) -> Run:
        """Everything before the first epoch, seeded: same config and data, same run."""
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        train, val = to_splits(data, cfg.standardize, device)
        batch_size = len(train.y) if cfg.batch_size == "full" else min(cfg.batch_size, len(train.y))
        torch.manual_seed(cfg.seed)  # same params and seed: same init, dropout, curve
        model = build(cfg, data).to(device)
        optimizer = make_optimizer(cfg, model)
        # A generator of its own, so that turning augmentation on keeps the batch order.
        noise = torch.Generator().manual_seed(cfg.seed + 1)
        return cls(
            cfg, model, optimizer, make_schedule(cfg, optimizer), train, val, batch_size,
            order=torch.Generator().manual_seed(cfg.seed), augment=make_augment(cfg, data, noise), noise=noise,
        )

    def state(self, epoch: Epoch) -> dict[str, Any]:
        """Everything the epochs after ``epoch`` depend on (weights, optimizer, schedule, random streams)."""
        return {
            "epoch": epoch.number, "iterations": epoch.iterations, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict() if self.schedule is not None else None,
            "order": self.order.get_state(), "noise": self.noise.get_state() if self.noise is not None else None,
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Go on from a :meth:`state`: the next epoch is the one after it, as if the run had never stopped."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None and state["schedule"] is not None:
            self.schedule.load_state_dict(state["schedule"])
            self.schedule.step()  # the state was taken before its epoch's step (step 5 of epochs())
        self.order.set_state(state["order"])
        if self.noise is not None and state["noise"] is not None:
            self.noise.set_state(state["noise"])
        torch.set_rng_state(state["torch"])
        if state.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        self.first, self.steps_before = int(state["epoch"]) + 1, int(state["iterations"])

    def epochs(self) -> Iterator[Epoch]:
        """Train epoch after epoch, up to ``cfg.epochs``; the caller evaluates, reports or stops between them."""
        iterations = self.steps_before
        for number in range(self.first, self.cfg.epochs + 1):
            lr = self.optimizer.param_groups[0]["lr"]
            # 1. one pass over the shuffled training batches
            loss, steps, grads = train_epoch(
                self.model, self.optimizer, self.train, self.cfg, self.batch_size, self.order, self.augment
            )
            iterations += steps
            yield Epoch(number, lr, loss, iterations, grads)
            # 5. the learning rate for the next epoch (steps 2-4 are the caller's)
            if self.schedule is not None:
                self.schedule.step()


def fit(params: Mapping[str, Any], report: Report, build: Build, **defaults: Any) -> None:
    """Train ``build(config, data)`` as ``params`` say, reporting every epoch.

    With tuner's ``report`` (it has ``restored``), each epoch offers its state
    as a checkpoint, and a trial run again after its worker died goes on from
    the last one kept instead of epoch 1.
    """
    cfg = Config.from_params(params, **defaults)
    run = Run.start(cfg, dataset(cfg), build)
    keeps = hasattr(report, "restored")  # a plain callable (a test's, a user's) gets metrics only
    if keeps and report.restored is not None:  # type: ignore[attr-defined]
        run.restore(report.restored.load())  # type: ignore[attr-defined]
    n_params = float(sum(p.numel() for p in run.model.parameters() if p.requires_grad))  # a size objective
    for epoch in run.epochs():
        # 2. evaluate on both splits, in eval mode (no dropout, no augmentation)
        train_loss, train_acc = evaluate(run.model, run.train)
        val_loss, val_acc = evaluate(run.model, run.val)
        diverged = not all(math.isfinite(v) for v in (epoch.loss, train_loss, val_loss))
        if diverged and math.isfinite(train_loss):
            train_loss = epoch.loss  # weights still finite, but a step's loss was not
        # 3. report; an exception from report (a pruned trial) propagates
        report(
            epoch.number, train_loss=train_loss, val_loss=val_loss, train_acc=train_acc,
            val_acc=val_acc, lr=epoch.lr, iterations=epoch.iterations, n_params=n_params, **epoch.grads,
            **({"checkpoint": functools.partial(run.state, epoch)} if keeps else {}),
        )
        # 4. a diverged run cannot recover: stop here, without raising
        if diverged:
            return None
    return None


def fit_final(params: Mapping[str, Any], build: Build, **defaults: Any) -> tuple[float, float]:
    """Train as :func:`fit` does, on train+validation, for ``epochs``; then (test loss, test accuracy).

    The test split is scored once, after the last epoch: nothing during the
    run looks at it (nor stops on it), so the score stays an unbiased one.
    """
    cfg = Config.from_params(params, **defaults)
    run = Run.start(cfg, final_splits(dataset(cfg)), build)
    for _ in run.epochs():
        pass
    return evaluate(run.model, run.val)


def checkpoint_score(params: Mapping[str, Any], build: Build, state: Mapping[str, Any], **defaults: Any
                     ) -> tuple[float, float]:
    """A trial's saved model (a :meth:`Run.state`) scored once on the test split: (test loss, test accuracy).

    Inputs are standardized with the trial's own training split, as it trained.
    """
    cfg = Config.from_params(params, **defaults)
    data = dataset(cfg)
    run = Run.start(cfg, dataclasses.replace(data, x_val=data.x_test, y_val=data.y_test), build)
    run.model.load_state_dict(state["model"])
    return evaluate(run.model, run.val)


def saved_model(params: Mapping[str, Any], build: Build, state: Mapping[str, Any], **defaults: Any) -> nn.Module:
    """A trial's saved model (a :meth:`Run.state`) as a module on the CPU, in eval mode.

    It takes the data set's features as :func:`workers.data.load` gives them:
    with ``standardize`` (the default) it is a :class:`Standardized` that
    scales them with the trial's training split, as the trial trained;
    otherwise the network itself.
    """
    cfg = Config.from_params(params, **defaults)
    data = dataset(cfg)
    network = build(cfg, data)
    network.load_state_dict(state["model"])
    scaling = input_scaling(data) if cfg.standardize else None
    model = network if scaling is None else Standardized(network, *scaling)
    return model.eval()


class Standardized(nn.Module):
    """A network and the standardization its inputs had in training: ``network((x - mean) / std)``."""

    def __init__(self, network: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network((x - self.mean) / self.std)


def dataset(cfg: Config) -> Dataset:
    """The data set a config trains on: loaded, its training split cut to ``train_size``."""
    return shrink(load(cfg.data, cfg.seed), cfg.train_size, cfg.seed)


def final_splits(data: Dataset) -> Dataset:
    """Train on train+validation, and put the test split where validation was (what a final fit scores)."""
    return dataclasses.replace(
        data, x_train=np.concatenate([data.x_train, data.x_val]), y_train=np.concatenate([data.y_train, data.y_val]),
        x_val=data.x_test, y_val=data.y_test,
    )


def shrink(data: Dataset, size: int, seed: int) -> Dataset:
    """The data set with a random ``size`` of its training examples (all when 0 or more)."""
    if not size or size >= len(data.y_train):
        return data
    keep = np.random.default_rng(seed).permutation(len(data.y_train))[:size]
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])


def to_splits(data: Dataset, standardize: bool, device: torch.device) -> tuple[Split, Split]:
    """Train and val tensors, standardized with the train split's statistics.

    Signals and images get one mean and std for all features, which keeps their
    shape (and makes a shift mean the same everywhere); tabular features get
    one each, as scikit-learn's StandardScaler does.
    """
    x_train, x_val = data.x_train, data.x_val
    if standardize:
        mean, std = input_scaling(data)
        x_train, x_val = (x_train - mean) / std, (x_val - mean) / std

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        # np.array copies: the data set's arrays are shared and read-only.
        x_t = torch.from_numpy(np.array(x, dtype=np.float32)).to(device)
        return Split(x_t, torch.from_numpy(np.array(y, dtype=np.int64)).to(device))

    return split(x_train, data.y_train), split(x_val, data.y_val)


def input_scaling(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The mean and std that standardize inputs: the train split's, one for all features of a signal or image,
    one per feature of a table (see :func:`to_splits`)."""
    axis = None if data.signal_shape else 0
    mean, std = data.x_train.mean(axis=axis), data.x_train.std(axis=axis)
    return mean, np.where(std > 0, std, 1.0)  # a constant feature stays constant


def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    params, lr, wd, momentum = model.parameters(), cfg.lr, cfg.weight_decay, cfg.momentum
    if cfg.optimizer == "sgd":
        # Nesterov with zero momentum is plain SGD; torch refuses the pair, but a
        # search space that samples both independently should not fail on it.
        nesterov = cfg.nesterov and momentum > 0
        return torch.optim.SGD(params, lr, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr, momentum=momentum, weight_decay=wd)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr, weight_decay=wd)
    return torch.optim.Adam(params, lr, weight_decay=wd)


def make_schedule(cfg: Config, optimizer: torch.optim.Optimizer) -> Any:
    """Per-epoch schedule: cosine decays to 0 over the run; step divides by 10 every third of it."""
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, cfg.epochs // 3), gamma=0.1)
    return None


def make_augment(cfg: Config, data: Dataset, gen: torch.Generator) -> Augment | None:
    """Noise and/or random circular shifts for training batches; None when both are off.

    Shifts move mnist1d signals along their 40 samples, and digits images along
    both axes of their 8x8 grid (each axis by its own random amount).
    """
    if cfg.augment_shift and data.signal_shape is None:
        raise ValueError(
            f"`augment_shift` applies to signals and images (mnist1d, digits), but data="
            f"{data.name!r} is tabular. Fix: set augment_shift to 0 or drop it."
        )
    if not cfg.augment_noise and not cfg.augment_shift:
        return None

    def augment(x: torch.Tensor) -> torch.Tensor:
        if cfg.augment_shift:
            x = random_shift(x, cfg.augment_shift, data.signal_shape or (), gen)
        if cfg.augment_noise:
            x = x + cfg.augment_noise * torch.randn(x.shape, generator=gen).to(x.device)
        return x

    return augment


def random_shift(x: torch.Tensor, max_shift: int, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Roll each row of ``x`` (viewed as ``shape``) by up to ``max_shift`` along every axis."""
    n = len(x)
    x = x.reshape(n, *shape)
    for axis, size in enumerate(shape, start=1):
        shifts = torch.randint(-max_shift, max_shift + 1, (n, 1), generator=gen).to(x.device)
        index = (torch.arange(size, device=x.device) - shifts) % size  # (n, size)
        view = [n] + [size if a == axis else 1 for a in range(1, len(shape) + 1)]
        x = x.gather(axis, index.view(view).expand_as(x))
    return x.reshape(n, -1)


def train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, train: Split, cfg: Config,
    batch_size: int, gen: torch.Generator, augment: Augment | None,
) -> tuple[float, int, dict[str, float]]:
    """One pass over shuffled batches: (mean batch loss, steps, gradient summary)."""
    model.train()
    batches = list(torch.randperm(len(train.y), generator=gen).to(train.y.device).split(batch_size))
    if cfg.norm == "batch" and len(batches) > 1 and len(batches[-1]) == 1:
        # Batch norm cannot train on one example: fold a lone last one into the batch before.
        batches[-2:] = [torch.cat(batches[-2:])]
    every = summary_every(len(batches))
    grads = EpochGradients()
    total = torch.zeros((), device=train.y.device)  # summed on the device: no sync per step
    for step, index in enumerate(batches):
        x, y = train.x[index], train.y[index]
        loss = F.cross_entropy(model(augment(x) if augment is not None else x), y)
        total += loss.detach() * len(y)
        optimize(model, optimizer, loss, cfg, grads if step % every == 0 else None)
    return total.item() / len(train.y), len(batches), grads.result()


def optimize(
    model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, cfg: Config,
    grads: EpochGradients | None,
) -> None:
    """One optimizer step on ``loss`` plus the L1 penalty; summarized into ``grads`` if given."""
    optimizer.zero_grad(set_to_none=True)
    penalty = cfg.l1 * l1_norm(model) if cfg.l1 else 0.0
    (loss + penalty).backward()
    if grads is not None:
        grads.add(summarize(model))  # raw gradients, before clipping
        before = snapshot(model)
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    if grads is not None:
        grads.add_update(update_ratio(model, before))


def l1_norm(model: nn.Module) -> torch.Tensor:
    """sum(|w|) over weight matrices and kernels (not biases or norm scales)."""
    return sum(w.abs().sum() for w in weights(model))


@torch.no_grad()
def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on ``split``, in eval mode."""
    model.eval()
    loss = torch.zeros((), device=split.y.device)
    correct = torch.zeros((), device=split.y.device)
    for x, y in zip(split.x.split(EVAL_BATCH), split.y.split(EVAL_BATCH)):
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(dim=1) == y).sum()
    n = len(split.y)
    return loss.item() / n, correct.item() / n
