"""Small workloads for tests: user functions with the `train(params, report)` signature."""

from __future__ import annotations

import math
import time


def quadratic(params, report):
    """A learning curve that converges to (x - 2)^2: fast, deterministic."""
    x = params["x"]
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, train_loss=(x - 2) ** 2 + 1.0 / epoch, val_loss=(x - 2) ** 2 + 1.5 / epoch)


def noop(params, report):
    for epoch in range(1, params["epochs"] + 1):
        report(epoch, val_loss=float(epoch))


def returns_value(params, report):
    report(1, val_loss=5.0)
    return params["x"] * 10


def broken(params, report):
    raise RuntimeError("the data loader could not find its files")


def fails_when_negative(params, report):
    if params["x"] < 0:
        raise ValueError(f"x={params['x']} is negative")
    report(1, val_loss=params["x"])


def slow(params, report):
    for epoch in range(1, params["epochs"] + 1):
        time.sleep(params.get("sleep", 0.5))
        report(epoch, val_loss=1.0 / epoch)


def nan_loss(params, report):
    report(1, train_loss=1.0, val_loss=math.nan)


def diverges_above_one(params, report):
    """Loss falls with log(lr) until lr = 1, where training blows up (NaN)."""
    import math as _m

    lr = params["lr"]
    for epoch in range(1, params["epochs"] + 1):
        if lr > 1.0:
            report(epoch, train_loss=_m.nan, val_loss=_m.nan)
            return
        loss = (_m.log10(lr) + 1.5) ** 2 + 1.0 / epoch
        report(epoch, train_loss=loss, val_loss=loss + 0.1)


def overfits_after_three(params, report):
    """Training loss keeps falling; validation loss is best at epoch 3, then rises."""
    for epoch in range(1, params["epochs"] + 1):
        train = 1.0 / epoch
        val = 0.5 + 0.1 * abs(epoch - 3) + params.get("x", 0.0)
        report(epoch, train_loss=train, val_loss=val)


def returns_only(params, report):
    return params["x"]


def hangs(params, report):
    """A trial that never ends (a deadlocked data loader, say)."""
    report(1, val_loss=1.0)
    while True:
        time.sleep(0.1)


def slow_with_pid(params, report):
    """Writes its worker's pid where a test can kill it, then trains slowly."""
    import os
    from pathlib import Path

    # Written whole, then renamed: the test never reads a half-written file.
    tmp = Path(params["pid_dir"], f".{os.getpid()}-{time.time_ns()}")
    tmp.write_text(str(os.getpid()))
    tmp.rename(tmp.with_name(tmp.name[1:]))
    for epoch in range(1, params["epochs"] + 1):
        time.sleep(params.get("sleep", 0.2))
        report(epoch, val_loss=(params["x"] - 0.5) ** 2 + 1.0 / epoch)


def tallied(params, report):
    """Writes each epoch it starts to a file named by its x, so a test can count the epochs it ran.

    val_loss is x + 1/epoch (a higher x is worse at every epoch); with `rises: true` it gets worse
    after epoch 1 (early stopping's case).
    """
    from pathlib import Path

    tally = Path(params["tally"]) / f"{params['x']:.12f}"
    for epoch in range(1, params["epochs"] + 1):
        with tally.open("a") as f:
            f.write(f"{epoch}\n")
        time.sleep(0.02)
        loss = params["x"] + (epoch if params.get("rises") else 1.0 / epoch)
        report(epoch, val_loss=loss, train_loss=loss)


def checkpointed_with_pid(params, report):
    """Saves its state every epoch and resumes from ``report.restored``; notes its pid and each epoch it runs.

    The pid goes to ``pid_dir`` (written whole, then renamed) for a test to kill the worker; each epoch it
    starts is a line of ``tally``.
    """
    import os
    from pathlib import Path

    tmp = Path(params["pid_dir"], f".{os.getpid()}-{time.time_ns()}")
    tmp.write_text(str(os.getpid()))
    tmp.rename(tmp.with_name(tmp.name[1:]))
    start = report.restored.load()["epoch"] + 1 if report.restored is not None else 1
    for epoch in range(start, params["epochs"] + 1):
        with open(params["tally"], "a") as tally:
            tally.write(f"{epoch}\n")
        time.sleep(params.get("sleep", 0.2))
        # Best at epoch 2, then rising: a re-run's model stays the one its dead worker saved at epoch 2.
        report(epoch, val_loss=(params["x"] - 0.5) ** 2 + 1 + 0.1 * (epoch - 2) ** 2, checkpoint={"epoch": epoch})
