"""A learning-rate range test before the search (Smith 2015, arXiv 1506.01186; 2017, arXiv 1803.09820).

Raise the learning rate geometrically over a short run, watch the training
loss, and read off where it starts to fall and where it blows up. Learning
rates above the blow-up waste whole trials (they diverge); far below where the
loss starts to fall, a short budget barely moves. ``probe: {narrow: true}``
cuts the spec's ``lr`` bounds to what the probe found before the study starts.

Two ways of running it, one analysis:

- the built-in workloads (``mlp``, ``cnn``) run the test as Smith did: one run,
  the learning rate raised at every optimizer step (``steps`` of them), built
  from ``workers/training.py``'s own pieces (:class:`~workers.training.Run`,
  :func:`~workers.training.optimize`);
- any other workload is run as it is, once per learning rate (``points`` of
  them, spaced geometrically over the bounds) for ``epochs`` epochs each; the
  last ``train_loss`` it reports (else ``val_loss``) is that rate's loss. It
  needs no code of its own for this: a short trial is a probe point.

Every other param is held at its centre (see :func:`centre`) unless
``probe.params`` pins it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.errors import TunerError
from tuner.spec import CategoricalParam, IntParam, StudySpec

ATTR = "tuner.probe"  # the study user attribute that holds the evidence
# The built-in workloads run their probe as one run, lr raised every step: the model builder and its defaults.
BUILTIN_BUILDS = {"workers.mlp:train": ("workers.mlp", {}), "workers.cnn:train": ("workers.cnn", {"width": 32})}
# Per-step batch losses are noisy; an exponential average over ~5 steps (a fifth of a decade at
# 200 steps over 9 decades) follows the trend without lagging past the blow-up. fastai uses 0.98
# over its 100 steps of a narrower range; a heavier average here would move the edges by a decade.
SMOOTHING = 0.8
# The loss "blows up" once its smoothed value exceeds this many times its lowest so far (fastai's rule).
BLOWUP = 4.0
# The loss "starts to fall" once it is this fraction below where it started.
FALL = 0.05
# A narrowed lower bound keeps a decade below where the loss started to fall: a short probe
# undersells slow starters that a full trial's budget lets catch up.
LOW_MARGIN = 10.0
log = logging.getLogger("tuner")


@dataclass(frozen=True)
class Finding:
    """What one probe measured (lr, loss pairs) and the range it reads from them."""

    mode: str  # "steps": one run, lr raised every step; "runs": one short run per lr
    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    bounds: tuple[float, float]  # the spec's lr bounds, as probed
    cost_epochs: float  # compute spent, in epochs over the training split
    seconds: float
    fall: float | None = None  # lr where the loss starts to fall
    best: float | None = None  # lr of the lowest (smoothed) loss before the blow-up
    blowup: float | None = None  # lr where it blows up (None: not within the bounds)

    @property
    def narrowed(self) -> tuple[float, float] | None:
        """Bounds the evidence supports, within the original ones; None when it supports none."""
        low, high = self.bounds
        if self.fall is None:
            return None  # the loss never fell: nothing says where good rates are
        new_low = max(low, self.fall / LOW_MARGIN)
        # Smith's upper bound (where the loss stops falling; fastai's suggestions stay below it too), with or
        # without a blow-up in the bounds: past the lowest loss a short ramp is already worse, and a fixed
        # rate held for a whole trial is less stable still. A loss still falling at `high` has it there.
        new_high = min(high, self.best) if self.best is not None else high
        return (new_low, new_high) if new_low < new_high else None

    def evidence(self) -> dict[str, Any]:
        """JSON for the study's user attributes (non-finite losses as None)."""
        narrowed = self.narrowed
        return {
            "mode": self.mode, "original": {"low": self.bounds[0], "high": self.bounds[1]},
            "narrowed": None if narrowed is None else {"low": narrowed[0], "high": narrowed[1]},
            "fall": self.fall, "best": self.best, "blowup": self.blowup,
            "cost_epochs": round(self.cost_epochs, 3), "seconds": round(self.seconds, 3),
            "lrs": list(self.lrs), "losses": [_json(v) for v in self.losses],
        }

    @classmethod
    def from_evidence(cls, ev: Mapping[str, Any]) -> Finding:
        losses = tuple(math.nan if v is None else float(v) for v in ev["losses"])
        return cls(ev["mode"], tuple(ev["lrs"]), losses, _smooth(losses, ev["mode"]),
                   (ev["original"]["low"], ev["original"]["high"]), ev["cost_epochs"], ev["seconds"],
                   ev["fall"], ev["best"], ev["blowup"])

    def summary(self, name: str = "") -> str:
        """A few lines: what ran, the edges it found, and the bounds it supports."""
        from tuner.report.figures import sparkline

        low, high = self.bounds
        ran = f"{len(self.lrs)} steps" if self.mode == "steps" else f"{len(self.lrs)} short runs"
        edges = (f"loss starts to fall at lr {_g(self.fall)}, is lowest at {_g(self.best)}, "
                 f"blows up at {_g(self.blowup) if self.blowup else f'none up to {_g(high)}'}")
        narrowed = self.narrowed
        cut = (f"lr [{_g(low)}, {_g(high)}] -> [{_g(narrowed[0])}, {_g(narrowed[1])}]" if narrowed
               else f"lr [{_g(low)}, {_g(high)}] kept: the loss never fell by {FALL:.0%} in the probe")
        return "\n".join([
            f"lr range test{' of ' + name if name else ''}: {ran}, lr {_g(low)} -> {_g(self.lrs[-1])}, "
            f"{self.seconds:.1f} s ({self.cost_epochs:.2g} epochs of compute)",
            f"  {edges}",
            f"  loss over lr (log): {sparkline(self._clipped(), width=40)}",
            f"  supported range: {cut}",
        ])

    def _clipped(self) -> list[float]:
        """Smoothed losses up to a quarter above the first: past it, one blown-up value flattens the rest."""
        top = 1.25 * next((v for v in self.smoothed if math.isfinite(v)), math.inf)
        return [min(v, top) for v in self.smoothed]

    def figure(self, name: str = "") -> Any:
        """Loss against learning rate (log scale), the edges marked and the supported range shaded."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4), dpi=100)
        ax = fig.add_subplot()
        finite = [(lr, v) for lr, v in zip(self.lrs, self.losses) if math.isfinite(v)]
        if finite:
            ax.plot(*zip(*finite), ".", color="0.6", markersize=3, label="loss")
        ax.plot(self.lrs, self.smoothed, color="C0", label="smoothed" if self.mode == "steps" else "loss per run")
        for lr, label, color in ((self.fall, "starts to fall", "C2"), (self.best, "lowest", "C1"),
                                 (self.blowup, "blows up", "C3")):
            if lr:
                ax.axvline(lr, color=color, linestyle="--", label=f"{label} ({_g(lr)})")
        if self.narrowed:
            ax.axvspan(*self.narrowed, color="C2", alpha=0.1, label="supported range")
        ax.set_xscale("log")
        shown = [v for v in self._clipped() if math.isfinite(v)]
        if shown:
            ax.set_ylim(0, max(shown) * 1.05)
        ax.set(xlabel="learning rate", ylabel="training loss", title=f"lr range test {name}".strip())
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def save_png(self, path: str | Path, name: str = "") -> Path:
        path = Path(path)
        self.figure(name).savefig(path)
        return path


def before_study(spec: StudySpec, workload: Any) -> tuple[StudySpec, Finding | None]:
    """Run the probe the spec asks for (none: the spec as it is); with ``narrow``, the spec on its bounds."""
    if spec.probe is None:
        return spec, None
    found = run(spec, workload)
    log.info("%s", found.summary(spec.name))
    return (narrowed(spec, found) if spec.probe.narrow else spec), found


def narrowed(spec: StudySpec, found: Finding) -> StudySpec:
    """``spec`` with ``params.lr`` cut to the range ``found`` supports (unchanged when it supports none)."""
    if found.narrowed is None:
        return spec
    low, high = found.narrowed
    lr = spec.params["lr"].model_copy(update={"low": low, "high": high})
    return spec.model_copy(update={"params": {**spec.params, "lr": lr}})


def run(spec: StudySpec, workload: Any) -> Finding:
    """Probe ``workload`` (a callable or ``module:function``) over the spec's lr bounds."""
    settings = spec.probe or _default_settings()
    lr = spec.params["lr"]
    params = {**spec.context(), **centre(spec), **settings.params}
    started = time.perf_counter()
    with _one_thread():
        if isinstance(workload, str) and workload in BUILTIN_BUILDS:
            lrs, losses, cost = _one_run(workload, params, lr.low, lr.high, settings.steps)
        else:
            lrs, losses, cost = _short_runs(workload, params, lr.low, lr.high, settings.points, settings.epochs)
    mode = "steps" if isinstance(workload, str) and workload in BUILTIN_BUILDS else "runs"
    smoothed = _smooth(losses, mode)
    return Finding(mode, tuple(lrs), tuple(losses), smoothed, (lr.low, lr.high), cost,
                   time.perf_counter() - started, *edges(lrs, smoothed))


def centre(spec: StudySpec) -> dict[str, Any]:
    """A value for every param but lr: the middle of a range (geometric when log), a categorical's first choice.

    A conditional param is set only where its condition holds, as a trial would have it.
    """
    chosen: dict[str, Any] = {}
    for name, p in spec.params.items():  # in dependency order: a `when` names params already chosen
        if name == "lr" or any(chosen.get(k) != v for k, v in (p.when or {}).items()):
            continue
        if isinstance(p, CategoricalParam):
            chosen[name] = p.choices[0]
        elif p.values:
            chosen[name] = p.values[len(p.values) // 2]
        else:
            mid = math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2
            chosen[name] = round(mid) if isinstance(p, IntParam) else mid
    return chosen


def edges(lrs: list[float], smoothed: tuple[float, ...]) -> tuple[float | None, float | None, float | None]:
    """(fall, best, blowup): the lr where the loss first falls FALL below its start, the lr of
    its lowest value before blowing up, and the first lr where it is not finite or above BLOWUP x
    its lowest so far."""
    start = next((v for v in smoothed if math.isfinite(v)), math.nan)
    fall = best = blowup = None
    lowest = math.inf
    for lr, v in zip(lrs, smoothed):
        if not math.isfinite(v) or v > BLOWUP * lowest:
            blowup = lr
            break
        if v < lowest:
            lowest, best = v, lr
        if fall is None and v <= (1 - FALL) * start:
            fall = lr
    return fall, (best if fall is not None else None), blowup


# --------------------------------------------------------------------------- the two ways of running


def _one_run(target: str, params: dict[str, Any], low: float, high: float, steps: int) -> tuple[list, list, float]:
    """A built-in workload, trained once with the lr raised geometrically every step, up to a blow-up."""
    import importlib

    import torch.nn.functional as F

    from workers.config import Config
    from workers.training import Run, dataset, optimize

    module, defaults = BUILTIN_BUILDS[target]
    cfg = Config.from_params(params, **defaults)
    run = Run.start(cfg, dataset(cfg), importlib.import_module(module).build)
    lrs, losses, lowest = [], [], math.inf
    for lr, index in zip(_geometric(low, high, steps), _batches(run)):
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        run.model.train()
        x = run.train.x[index]
        loss = F.cross_entropy(run.model(run.augment(x) if run.augment else x), run.train.y[index])
        lrs.append(lr)
        losses.append(loss.item())
        average = _smooth(losses[-5 * round(1 / (1 - SMOOTHING)):], "steps")[-1]  # the last few dominate
        lowest = min(lowest, average)
        if not math.isfinite(average) or average > BLOWUP * lowest:
            break  # blown up: the rest of the range says nothing more
        optimize(run.model, run.optimizer, loss, cfg, None)
    return lrs, losses, len(lrs) * run.batch_size / len(run.train.y)


def _batches(run: Any) -> Iterator[Any]:
    """Shuffled training batches, epoch after epoch, as a trial draws them."""
    import torch

    while True:
        yield from torch.randperm(len(run.train.y), generator=run.order).to(run.train.y.device).split(run.batch_size)


def _short_runs(
    workload: Any, params: dict[str, Any], low: float, high: float, points: int, epochs: int
) -> tuple[list, list, float]:
    """Any workload, run as it is for ``epochs`` epochs at each of ``points`` learning rates."""
    from tuner.trial.worker import resolve

    train = resolve(workload)
    lrs, losses, spent, errors = [], [], 0, []
    for lr in _geometric(low, high, points):
        seen: list[dict[str, Any]] = []
        try:
            train({**params, "lr": lr, "epochs": epochs}, lambda epoch, **metrics: seen.append(metrics))
        except Exception as exc:  # a rate that breaks the run (NaN checks, overflow) is a blown-up rate
            errors.append(f"{type(exc).__name__}: {exc}")
            seen.append({"train_loss": math.inf})
        spent += epochs
        lrs.append(lr)
        losses.append(_loss_of(seen, workload))
        if not math.isfinite(losses[-1]):
            break
    if len(errors) == len(lrs):
        raise TunerError(f"probe: the workload failed at every learning rate it was run with; the first: "
                         f"{errors[0]}. Fix: run one trial (tuner launch SPEC --trials 1 --debug) to see why.")
    return lrs, losses, float(spent)


def _loss_of(seen: list[dict[str, Any]], workload: Any) -> float:
    """The last train_loss a run reported (else val_loss); a workload that reports neither cannot be probed."""
    for key in ("train_loss", "val_loss"):
        values = [m[key] for m in seen if m.get(key) is not None]
        if values:
            return float(values[-1]) if all(math.isfinite(float(v)) for v in values) else math.inf
    name = getattr(workload, "__qualname__", workload)
    raise TunerError(
        f"probe: the workload {name} must report train_loss (or val_loss), but reported "
        f"{sorted({k for m in seen for k in m}) or 'nothing'}. Fix: call report(epoch, train_loss=...) each "
        "epoch (or step), or set probe: false."
    )


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread, as Ray gives a trial: a small model's steps on two threads of a busy
    machine measured 70x slower (125 ms against 1.8 ms), so the probe would cost more than it saves."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _geometric(low: float, high: float, n: int) -> list[float]:
    return [low * (high / low) ** (i / (n - 1)) for i in range(n)]


def _smooth(losses: tuple[float, ...] | list[float], mode: str) -> tuple[float, ...]:
    """Bias-corrected exponential average of per-step losses; short runs are independent and kept as they are."""
    if mode != "steps":
        return tuple(losses)
    out, average = [], 0.0
    for i, v in enumerate(losses, start=1):
        average = SMOOTHING * average + (1 - SMOOTHING) * v
        out.append(average / (1 - SMOOTHING**i))
    return tuple(out)


def _default_settings() -> Any:
    from tuner.spec import Probe

    return Probe()


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


def _json(value: float) -> float | None:
    return value if math.isfinite(value) else None
