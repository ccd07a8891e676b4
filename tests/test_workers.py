"""The built-in workloads, their data and their gradient summary: real training, kept small."""

from __future__ import annotations

import math
import random
import socket
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from workers import cnn, data, mlp
from workers.config import Config
from workers import gradients, training
from workers.gradients import SUMMARY_STEPS, EpochGradients, snapshot, summarize, update_ratio
from workers.training import random_shift

CONTRACT_KEYS = {"train_loss", "val_loss", "train_acc", "val_acc", "lr", "iterations"}
GRADIENT_KEYS = {"grad_norm", "grad_first", "grad_last", "grad_ratio", "grad_zero_frac", "update_ratio"}


@pytest.fixture(autouse=True, scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Keep the mnist1d disk cache out of the user's home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def run(train: Any, **params: Any) -> list[dict[str, float]]:
    """Train with ``params`` over quick defaults; the reported rows, epoch included."""
    rows: list[dict[str, float]] = []
    params = {"epochs": 2, "data": "iris", "seed": 0, **params}
    returned = train(params, lambda epoch, **metrics: rows.append({"epoch": epoch, **metrics}))
    assert returned is None
    return rows


# --------------------------------------------------------------------------- data


def test_mnist1d_is_generated_offline_cached_on_disk_and_leaves_global_rng_alone(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mnist1d.data

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("mnist1d must be built without network access")

    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(mnist1d.data, "get_dataset", no_network)
    monkeypatch.setattr(mnist1d.data.requests, "get", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    data._mnist1d.cache_clear()
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)

    x, y, x_test, y_test = data._mnist1d()
    assert (x.shape, y.shape, x_test.shape, y_test.shape) == ((4000, 40), (4000,), (1000, 40), (1000,))
    assert (np.random.random(), random.random()) == expected
    assert [p.suffix for p in tmp_path.iterdir()] == [".npz"]  # no temporary file left

    # A second process finds the file and builds nothing.
    data._mnist1d.cache_clear()
    monkeypatch.setattr(data, "_build_mnist1d", no_network)
    assert np.array_equal(data._mnist1d()[0], x)


def test_unknown_data_set_raises() -> None:
    with pytest.raises(ValueError, match="`data` must be one of mnist1d, digits, wine, breast_cancer, iris"):
        data.load("cifar10")


@pytest.mark.parametrize("name", data.DATASETS)
def test_splits_are_stratified_typed_and_read_only(name: str) -> None:
    ds = data.load(name, seed=0)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.shape[1] == ds.x_val.shape[1] == ds.x_test.shape[1] == ds.n_features
    assert set(np.unique(ds.y_val)) == set(range(ds.n_classes))
    with pytest.raises(ValueError, match="read-only"):
        ds.x_train[0, 0] = 1.0
    other = data.load(name, seed=1)
    assert not np.array_equal(other.x_train, ds.x_train)
    assert np.array_equal(other.x_test, ds.x_test)  # test scores compare across seeds


def test_mnist1d_split_sizes() -> None:
    ds = data.load("mnist1d")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (3200, 800, 1000)
    assert (ds.n_features, ds.n_classes, ds.signal_shape) == (40, 10, (40,))


def test_standardization_uses_one_scale_for_signals_and_one_per_feature_for_tables() -> None:
    from workers.training import to_splits

    for name in ("digits", "wine"):
        train, _ = to_splits(data.load(name), standardize=True, device=torch.device("cpu"))
        per_feature_std = train.x.std(dim=0)
        if name == "wine":
            assert torch.allclose(per_feature_std, torch.ones_like(per_feature_std), atol=1e-2)
        else:
            assert train.x.std().item() == pytest.approx(1.0, abs=1e-2)
            assert per_feature_std.min().item() == 0.0  # always-blank pixels stay constant


# --------------------------------------------------------------------------- training


def test_mlp_learns_digits() -> None:
    rows = run(mlp.train, data="digits", epochs=3)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(CONTRACT_KEYS | GRADIENT_KEYS <= set(r) for r in rows)
    assert all(math.isfinite(r[k]) for r in rows for k in r)
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert rows[-1]["val_acc"] > 0.5  # chance is 0.1


def test_builtin_workloads_report_their_models_size_as_n_params() -> None:
    """n_params (a size objective) is the model's trainable parameters: iris's 4 inputs, 3 classes, one layer."""
    for width in (8, 64):
        rows = run(mlp.train, depth=1, width=width)
        assert {r["n_params"] for r in rows} == {float((4 * width + width) + (width * 3 + 3))}


def test_cnn_trains_on_mnist1d() -> None:
    rows = run(cnn.train, data="mnist1d", epochs=2)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in rows)
    assert rows[-1]["iterations"] == 2 * math.ceil(3200 / 64)
    assert rows[-1]["val_acc"] > 0.2  # chance is 0.1


@pytest.mark.parametrize("train", [mlp.train, cnn.train])
def test_cnn_and_mlp_fit_any_depth_on_tiny_inputs(train: Any) -> None:
    # iris has 4 features: 5 stride-2 conv blocks must not shrink them to nothing.
    rows = run(train, depth=5, epochs=1, norm="batch")
    assert math.isfinite(rows[0]["val_loss"])


@pytest.mark.parametrize(
    ("batch_size", "steps_per_epoch"),
    [("full", 1), (1, 90), ("30", 3), (30, 3), (1000, 1)],  # iris: 90 training examples
)
def test_iterations_follow_batch_size(batch_size: Any, steps_per_epoch: int) -> None:
    assert len(data.load("iris").y_train) == 90
    rows = run(mlp.train, batch_size=batch_size, epochs=2)
    assert [r["iterations"] for r in rows] == [steps_per_epoch, 2 * steps_per_epoch]


def test_same_params_and_seed_give_the_same_curve() -> None:
    params = dict(data="digits", dropout=0.3, augment_noise=0.1, augment_shift=1)
    first, again = run(mlp.train, **params), run(mlp.train, **params)
    assert first == again
    assert run(mlp.train, **params, seed=1) != first


def test_deep_sigmoid_gradients_vanish() -> None:
    sigmoid = run(mlp.train, data="digits", depth=8, activation="sigmoid", epochs=1)[0]
    relu = run(mlp.train, data="digits", depth=8, activation="relu", epochs=1)[0]
    assert sigmoid["grad_ratio"] < 1e-3
    assert relu["grad_ratio"] > 100 * sigmoid["grad_ratio"]


def test_divergence_is_reported_and_ends_the_run() -> None:
    rows = run(mlp.train, data="digits", optimizer="sgd", lr=1e3, epochs=10)
    assert 1 <= len(rows) <= 2
    assert not math.isfinite(rows[-1]["train_loss"])


def test_an_exception_from_report_propagates() -> None:
    class Pruned(Exception):
        pass

    calls = []

    def report(epoch: int, **metrics: float) -> None:
        calls.append(epoch)
        raise Pruned

    with pytest.raises(Pruned):
        mlp.train({"epochs": 3, "data": "iris", "seed": 0}, report)
    assert calls == [1]


@pytest.mark.parametrize(
    ("base", "change"),
    [
        ({}, {"lr": 1e-2}),
        ({}, {"optimizer": "sgd"}),
        ({}, {"optimizer": "rmsprop"}),
        ({}, {"optimizer": "adagrad"}),
        ({"optimizer": "sgd"}, {"momentum": 0.9}),
        ({"optimizer": "sgd", "momentum": 0.9}, {"nesterov": True}),
        ({}, {"depth": 1}),
        ({}, {"width": 16}),
        ({}, {"activation": "tanh"}),
        ({}, {"activation": "sigmoid"}),
        ({}, {"activation": "gelu"}),
        ({}, {"activation": "leaky_relu"}),
        ({}, {"activation": "elu"}),
        ({}, {"dropout": 0.5}),
        ({}, {"weight_decay": 0.1}),
        ({}, {"l1": 0.01}),
        ({}, {"norm": "batch"}),
        ({}, {"norm": "layer"}),
        ({}, {"standardize": False}),
        ({}, {"augment_noise": 0.5}),
        ({}, {"grad_clip": 0.01}),
        ({}, {"lr_schedule": "cosine"}),
        ({"data": "mnist1d", "batch_size": "full"}, {"augment_shift": 3}),
        ({"data": "digits", "batch_size": "full"}, {"augment_shift": 1}),
    ],
)
def test_every_hyperparameter_changes_the_curve(base: dict[str, Any], change: dict[str, Any]) -> None:
    # A hyperparameter read but never wired into training would leave the curve as it was.
    assert run(mlp.train, **base, **change) != run(mlp.train, **base)


@pytest.mark.parametrize("change", [{"kernel_size": 3}, {"norm": "layer"}, {"width": 8}])
def test_cnn_hyperparameters_change_the_curve(change: dict[str, Any]) -> None:
    assert run(cnn.train, **change) != run(cnn.train)


@pytest.mark.parametrize(
    ("schedule", "lrs"), [("none", [1e-3] * 3), ("cosine", [1e-3, 7.5e-4, 2.5e-4]), ("step", [1e-3, 1e-4, 1e-5])]
)
def test_lr_schedules_report_the_lr_of_each_epoch(schedule: str, lrs: list[float]) -> None:
    rows = run(mlp.train, lr_schedule=schedule, epochs=3)
    assert [r["lr"] for r in rows] == pytest.approx(lrs)


@pytest.mark.parametrize(("module", "width"), [(mlp, 128), (cnn, 32)])
def test_default_width(module: Any, width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    widths = []
    build = module.build

    def spy(cfg: Config, ds: data.Dataset) -> nn.Module:
        widths.append(cfg.width)
        return build(cfg, ds)

    monkeypatch.setattr(module, "build", spy)
    run(module.train, epochs=1)
    assert widths == [width]


@pytest.mark.parametrize(("module", "width"), [(mlp, 128), (cnn, 32)])
def test_the_final_score_builds_the_model_train_builds(
    module: Any, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A report's retrain (train+validation, then the test split) must get the workload's defaults too.
    built = []
    build = module.build

    def spy(cfg: Config, ds: data.Dataset) -> nn.Module:
        built.append((cfg.width, len(ds.y_train)))
        return build(cfg, ds)

    monkeypatch.setattr(module, "build", spy)
    loss, acc = module.final_score({"epochs": 1, "data": "iris", "seed": 0})
    iris = data.load("iris", 0)
    assert built == [(width, len(iris.y_train) + len(iris.y_val))]
    assert math.isfinite(loss) and 0.0 <= acc <= 1.0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"data": "mnist2d"}, "`data` must be one of mnist1d, digits, wine, breast_cancer, iris, but got 'mnist2d'"),
        ({"optimizer": "adamw"}, "`optimizer` must be one of sgd, adam, rmsprop, adagrad, but got 'adamw'. Did you mean 'adam'?"),
        ({"activation": "swish"}, "`activation` must be one of relu, tanh, sigmoid, gelu, leaky_relu, elu, but got 'swish'"),
        ({"norm": "group"}, "`norm` must be one of none, batch, layer"),
        ({"lr_schedule": "linear"}, "`lr_schedule` must be one of none, cosine, step"),
        ({"learning_rate": 0.1}, "`learning_rate` is not a hyperparameter .* Did you mean 'lr'?"),
        ({"batch_size": "half"}, "`batch_size` must be an int >= 1 or 'full', but got 'half'"),
        ({"batch_size": 0}, "`batch_size` must be an int >= 1 or 'full', but got 0"),
        ({"depth": 2.5}, "`depth` must be an int, but got 2.5"),
        ({"lr": 0}, "`lr` must be > 0 and finite, but got 0.0"),
        ({"dropout": 1}, r"`dropout` must be in \[0, 1\), but got 1.0"),
        ({"nesterov": "maybe"}, "`nesterov` must be true or false, but got 'maybe'"),
        ({"norm": "batch", "batch_size": 1}, "`norm: batch` needs at least 2 examples per batch"),
        ({"augment_shift": 2}, "`augment_shift` applies to signals and images .* data='iris' is tabular"),
    ],
)
def test_bad_params_raise_value_error_naming_the_valid_values(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(mlp.train, **params)


def test_lenient_types_from_yaml() -> None:
    cfg = Config.from_params({"batch_size": "64", "depth": 3.0, "nesterov": "true", "norm": None})
    assert (cfg.batch_size, cfg.depth, cfg.nesterov, cfg.norm) == (64, 3, True, "none")


# --------------------------------------------------------------------------- augmentation


def test_random_shift_rolls_signals_and_images() -> None:
    gen = torch.Generator().manual_seed(0)
    signals = torch.arange(2 * 40, dtype=torch.float32).reshape(2, 40)
    shifted = random_shift(signals, 3, (40,), gen)
    for before, after in zip(signals, shifted):
        assert any(torch.equal(torch.roll(before, s), after) for s in range(-3, 4))
    images = torch.arange(5 * 64, dtype=torch.float32).reshape(5, 64)
    moved = random_shift(images, 2, (8, 8), gen)
    for before, after in zip(images.view(5, 8, 8), moved.view(5, 8, 8)):
        rolls = [torch.roll(before, (dy, dx), (0, 1)) for dy in range(-2, 3) for dx in range(-2, 3)]
        assert any(torch.equal(r, after) for r in rolls)
    assert not torch.equal(moved, images)


# --------------------------------------------------------------------------- gradients


def test_summarize_reads_weight_gradients_first_to_last() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.LayerNorm(2), nn.Linear(2, 3))
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)  # biases and the norm scale must not count
    model[0].weight.grad = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # norm 5
    model[3].weight.grad = torch.zeros(3, 2)
    model[3].weight.grad[0, 0] = 10.0
    summary = summarize(model)
    assert summary == pytest.approx(
        {"grad_norm": math.hypot(5, 10), "grad_first": 5.0, "grad_last": 10.0,
         "grad_ratio": 0.5, "grad_zero_frac": 7 / 10}
    )


def test_update_ratio_is_the_largest_relative_step() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    before = snapshot(model)
    with torch.no_grad():
        model[0].weight.mul_(1.5)  # moved by half its size
        model[1].weight.mul_(1.1)
    assert update_ratio(model, before) == pytest.approx(0.5)


@pytest.mark.parametrize("batch_size", [1, 7, 30])  # iris: 90, 13 and 3 steps an epoch
def test_an_epoch_summarizes_at_most_summary_steps_spread_over_it(
    batch_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    summarized: list[int] = []
    real = gradients.summarize

    def counted(model: nn.Module) -> dict[str, float]:
        summarized.append(1)
        return real(model)

    monkeypatch.setattr(training, "summarize", counted)
    steps = math.ceil(90 / batch_size)
    rows = run(mlp.train, batch_size=batch_size, epochs=1)
    # The summary costs a sizeable share of a small step: more than SUMMARY_STEPS an
    # epoch is what made it cost ~20% of an epoch at batch 64.
    assert len(summarized) == min(steps, SUMMARY_STEPS)
    assert rows[0]["grad_norm"] > 0


def test_epoch_gradients_average_values_and_keep_the_worst_update() -> None:
    acc = EpochGradients()
    for norm, update in ((1.0, 0.1), (3.0, math.nan), (2.0, 0.2)):
        acc.add({"grad_norm": norm})
        acc.add_update(update)
    result = acc.result()
    assert result["grad_norm"] == 2.0
    assert math.isnan(result["update_ratio"])
